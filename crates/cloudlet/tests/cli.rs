//! The `cloudlet` binary as a user runs it: `serve` in a child process, the `app` commands
//! against it, configuration layering, the data directory lock and graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_cloudlet");
const TOKEN: &str = "cli-test-admin-token-42";

/// A `cloudlet serve` child process.
struct Server {
    child: Child,
    addr: String,
    /// Everything it printed on stdout up to "listening".
    banner: String,
    stderr: mpsc::Receiver<String>,
}

impl Server {
    // Every path waits for the child: the error path here, the others in `Drop`.
    #[allow(clippy::zombie_processes)]
    fn start(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .args(["--data-dir", data_dir.to_str().unwrap()])
            .args(args)
            .env_remove("CLOUDLET_ADMIN_TOKEN")
            .env_remove("CLOUDLET_LISTEN")
            .env("CLOUDLET_LOG_LEVEL", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !args.contains(&"--listen") && !envs.iter().any(|(k, _)| *k == "CLOUDLET_LISTEN") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let (err_tx, stderr) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut banner = String::new();
        loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let status = child.wait();
                let errors: Vec<String> = stderr.try_iter().collect();
                panic!(
                    "serve exited ({status:?}) before listening: {banner}\n{}",
                    errors.join("\n")
                );
            }
            banner.push_str(&line);
            if let Some(addr) = line.trim().strip_prefix("Cloudlet is listening on http://") {
                let addr = addr.to_owned();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut stdout, &mut std::io::sink());
                });
                return Server {
                    child,
                    addr,
                    banner,
                    stderr,
                };
            }
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs `cloudlet app …` against this server.
    fn app(&self, args: &[&str], token: Option<&str>) -> Output {
        let mut command = Command::new(BIN);
        command
            .arg("app")
            .args(args)
            .env("CLOUDLET_SERVER", self.url())
            .env_remove("CLOUDLET_TOKEN")
            .stdin(Stdio::null());
        if let Some(token) = token {
            command.env("CLOUDLET_TOKEN", token);
        }
        command.output().unwrap()
    }

    /// Runs `cloudlet <args>` (any command) against this server with `token`.
    fn run(&self, args: &[&str], token: &str) -> Output {
        Command::new(BIN)
            .args(args)
            .env("CLOUDLET_SERVER", self.url())
            .env("CLOUDLET_TOKEN", token)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Sends SIGTERM, as a service manager stopping the server does.
    fn send_sigterm(&self) {
        let pid = self.child.id().to_string();
        let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(kill.success());
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        self.send_sigterm();
        self.child.wait().unwrap()
    }

    fn stderr_lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command that is expected to exit by itself; kills it (failing the test) if it has not
/// within 30 seconds, so that a server which starts when it should not can not hang the suite.
fn exits(command: &mut Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command:?} did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Asserts that a command failed and said `expected` on stderr.
fn fails_with(output: &Output, expected: &str) {
    assert!(!output.status.success(), "it should have failed");
    assert!(stderr(output).contains(expected), "{}", stderr(output));
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", stderr(output));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn temp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    (dir, data)
}

#[test]
fn first_start_prints_a_token_once_and_the_app_commands_use_it() {
    let (_dir, data) = temp();
    let mut server = Server::start(&data, &[], &[]);
    let token = server
        .banner
        .split_whitespace()
        .find(|w| w.starts_with("cla_"))
        .expect("the generated admin token is printed")
        .to_owned();

    let created = server.app(&["create", "todo"], Some(&token));
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(stdout(&created).contains("Created app todo"));
    assert!(stdout(&created).contains("cls_"));

    let listed = server.app(&["list"], Some(&token));
    assert!(
        stdout(&listed).lines().any(|l| l.starts_with("todo ")),
        "{}",
        stdout(&listed)
    );
    let listed = json(&server.app(&["list", "--json"], Some(&token)));
    assert_eq!(listed[0]["name"], "todo");

    let shown = json(&server.app(&["show", "todo", "--json"], Some(&token)));
    assert_eq!(shown["name"], "todo");
    let rotated = json(&server.app(&["rotate-key", "todo", "--json"], Some(&token)));
    let key = rotated["secret_key"].as_str().unwrap();
    // The app's secret key works for its own app in the CLI too.
    assert_eq!(
        json(&server.app(&["show", "todo", "--json"], Some(key)))["name"],
        "todo"
    );

    let refused = server.app(&["delete", "todo"], Some(&token));
    fails_with(&refused, "without --yes");
    let deleted = server.app(&["delete", "todo", "--yes"], Some(&token));
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    let gone = server.app(&["show", "todo"], Some(&token));
    fails_with(&gone, "(app_not_found)");

    assert!(server.terminate().success());
    let again = Server::start(&data, &[], &[]);
    assert!(
        !again.banner.contains("cla_"),
        "the token is printed only once: {}",
        again.banner
    );
}

#[test]
fn app_commands_report_server_errors_with_their_codes() {
    let (_dir, data) = temp();
    let server = Server::start(&data, &[], &[("CLOUDLET_ADMIN_TOKEN", TOKEN)]);
    let cases: [(&[&str], Option<&str>, &str); 4] = [
        (&["list"], None, "(missing_credentials); set CLOUDLET_TOKEN"),
        (
            &["list"],
            Some("wrong-token-wrong-token"),
            "(invalid_credentials)",
        ),
        (&["create", "Bad_Name"], Some(TOKEN), "(invalid_app_name)"),
        (&["show", "../x"], Some(TOKEN), "is not an app name"),
    ];
    for (args, token, expected) in cases {
        fails_with(&server.app(args, token), expected);
    }
    let created = server.app(&["create", "dup"], Some(TOKEN));
    assert!(created.status.success());
    fails_with(
        &server.app(&["create", "dup"], Some(TOKEN)),
        "(app_already_exists)",
    );

    let unreachable = exits(
        Command::new(BIN)
            .args(["app", "list", "--server", "http://127.0.0.1:9"])
            .env("CLOUDLET_TOKEN", TOKEN),
    );
    fails_with(&unreachable, "could not reach the server");
}

#[test]
fn a_second_server_on_the_same_data_dir_exits_with_a_clear_message() {
    let (_dir, data) = temp();
    let mut first = Server::start(&data, &[], &[("CLOUDLET_ADMIN_TOKEN", TOKEN)]);
    assert!(
        first
            .app(&["create", "precious"], Some(TOKEN))
            .status
            .success()
    );
    let second = exits(Command::new(BIN).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]));
    fails_with(&second, "is in use by another cloudlet process");
    fails_with(&second, &format!("pid {}", first.child.id()));
    // The first server and its data are untouched.
    assert_eq!(
        json(&first.app(&["list", "--json"], Some(TOKEN)))[0]["name"],
        "precious"
    );
    assert!(first.terminate().success());
}

#[test]
fn sigterm_drains_an_in_flight_request_then_exits_zero() {
    let (_dir, data) = temp();
    let mut server = Server::start(&data, &[], &[("CLOUDLET_ADMIN_TOKEN", TOKEN)]);
    let body = r#"{"name":"late"}"#;
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    write!(
        stream,
        "POST /v1/admin/apps HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        &body[..5]
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    server.send_sigterm();
    std::thread::sleep(Duration::from_millis(200));
    // The request was in flight when the signal came: it still completes.
    stream.write_all(&body.as_bytes()[5..]).unwrap();
    let mut response = String::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");

    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let logs = server.stderr_lines().join("\n");
    assert!(logs.contains("cloudlet stopped"), "{logs}");

    // The write was flushed: a new server sees the app.
    let restarted = Server::start(&data, &[], &[("CLOUDLET_ADMIN_TOKEN", TOKEN)]);
    assert_eq!(
        json(&restarted.app(&["show", "late", "--json"], Some(TOKEN)))["name"],
        "late"
    );
}

#[test]
fn settings_come_from_defaults_then_file_then_environment_then_flags() {
    let (dir, data) = temp();
    let config = dir.path().join("cloudlet.toml");
    std::fs::write(
        &config,
        "listen = \"192.0.2.1:9\"\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();

    // The file's listen (a documentation address, not bindable here) is overridden by the environment, and the
    // environment by the flag.
    let from_env = Server::start(
        &data,
        &["--config", config],
        &[
            ("CLOUDLET_LISTEN", "127.0.0.1:0"),
            ("CLOUDLET_ADMIN_TOKEN", TOKEN),
        ],
    );
    // The file's log format applies: every log line is a JSON object.
    drop(from_env.app(&["list"], Some(TOKEN)));
    std::thread::sleep(Duration::from_millis(100));
    let logs = from_env.stderr_lines();
    assert!(!logs.is_empty());
    for line in &logs {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(parsed["level"].is_string(), "{line}");
    }
    drop(from_env);

    let flag_wins = exits(
        Command::new(BIN)
            .args([
                "serve",
                "--config",
                config,
                "--data-dir",
                data.to_str().unwrap(),
            ])
            .args(["--listen", "192.0.2.1:9"])
            .env("CLOUDLET_LISTEN", "127.0.0.1:0"),
    );
    fails_with(&flag_wins, "could not listen on 192.0.2.1:9");
}

#[test]
fn bad_configuration_is_refused_before_anything_starts() {
    let (dir, data) = temp();
    let cases = [
        ("lisen = \"127.0.0.1:0\"\n", "unknown field `lisen`"),
        ("[apps]\nmax_open = 0\n", "apps.max_open"),
        (
            "[http]\ncors_origins = [\"example.com\"]\n",
            "http.cors_origins",
        ),
        ("listen = 8700\n", "invalid type"),
    ];
    for (text, expected) in cases {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, text).unwrap();
        let output = exits(Command::new(BIN).args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]));
        assert!(!output.status.success(), "{text}");
        assert!(
            stderr(&output).contains(expected),
            "{text}: {}",
            stderr(&output)
        );
    }
    let missing =
        exits(Command::new(BIN).args(["serve", "--config", "/nonexistent/cloudlet.toml"]));
    assert!(
        stderr(&missing).contains("could not read config file"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn reset_token_replaces_a_lost_admin_token_and_is_refused_while_serving() {
    let (_dir, data) = temp();
    let mut server = Server::start(&data, &[], &[("CLOUDLET_ADMIN_TOKEN", TOKEN)]);
    let refused = exits(Command::new(BIN).args([
        "admin",
        "reset-token",
        "--data-dir",
        data.to_str().unwrap(),
    ]));
    fails_with(&refused, "in use by another cloudlet process");
    assert!(server.terminate().success());

    let reset = exits(Command::new(BIN).args([
        "admin",
        "reset-token",
        "--data-dir",
        data.to_str().unwrap(),
    ]));
    assert!(reset.status.success(), "{}", stderr(&reset));
    let token = stdout(&reset)
        .split_whitespace()
        .find(|w| w.starts_with("cla_"))
        .unwrap()
        .to_owned();
    let server = Server::start(&data, &[], &[]);
    assert!(server.app(&["list"], Some(&token)).status.success());
    fails_with(&server.app(&["list"], Some(TOKEN)), "(invalid_credentials)");

    let nowhere = dir_that_does_not_exist();
    let mistyped = exits(Command::new(BIN).args(["admin", "reset-token", "--data-dir", &nowhere]));
    fails_with(&mistyped, "is not a Cloudlet data directory");
    assert!(
        !Path::new(&nowhere).exists(),
        "a mistyped path is not created"
    );
}

fn dir_that_does_not_exist() -> String {
    let dir = tempfile::tempdir().unwrap();
    dir.path().join("typo").to_str().unwrap().to_owned()
}

#[test]
fn fn_commands_deploy_a_folder_call_it_roll_it_back_and_logs_show_the_calls() {
    let (dir, data) = temp();
    let server = Server::start(&data, &[], &[("CLOUDLET_ADMIN_TOKEN", TOKEN)]);
    let ok = |output: Output| {
        assert!(output.status.success(), "{}", stderr(&output));
        output
    };
    ok(server.app(&["create", "shop"], Some(TOKEN)));
    let folder = dir.path().join("greet");
    std::fs::create_dir_all(folder.join("lib")).unwrap();
    std::fs::write(
        folder.join("index.js"),
        "import { hello } from './lib/hello.js';\nexport default async (e) => { console.log('called'); return hello(e.name); };",
    )
    .unwrap();
    std::fs::write(
        folder.join("lib/hello.js"),
        "export const hello = (n) => `hello ${n}`;",
    )
    .unwrap();
    let folder = folder.to_str().unwrap();

    let deployed = ok(server.run(&["fn", "deploy", "shop", "greet", folder], TOKEN));
    assert!(
        stdout(&deployed).contains("Deployed greet version 1"),
        "{}",
        stdout(&deployed)
    );
    let called = ok(server.run(
        &[
            "fn",
            "invoke",
            "shop",
            "greet",
            "--data",
            r#"{"name":"Ada"}"#,
        ],
        TOKEN,
    ));
    assert_eq!(json(&called), "hello Ada");

    let single = dir.path().join("v2.js");
    std::fs::write(&single, "export default async () => 'v2';").unwrap();
    ok(server.run(
        &["fn", "deploy", "shop", "greet", single.to_str().unwrap()],
        TOKEN,
    ));
    let called = ok(server.run(&["fn", "invoke", "shop", "greet"], TOKEN));
    assert_eq!(json(&called), "v2");
    let listed = ok(server.run(&["fn", "list", "shop", "--json"], TOKEN));
    assert_eq!(json(&listed)["items"][0]["version"], 2);

    let rolled = ok(server.run(&["fn", "rollback", "shop", "greet", "1"], TOKEN));
    assert!(stdout(&rolled).contains("now runs version 1"));
    let called = ok(server.run(
        &[
            "fn",
            "invoke",
            "shop",
            "greet",
            "--data",
            r#"{"name":"Bo"}"#,
        ],
        TOKEN,
    ));
    assert_eq!(json(&called), "hello Bo");

    // The log is written a moment after each call.
    let mut printed = String::new();
    for _ in 0..50 {
        printed = stdout(&ok(
            server.run(&["logs", "shop", "--function", "greet"], TOKEN)
        ));
        if printed.matches(" greet ").count() == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(printed.matches(" greet ").count(), 3, "{printed}");
    assert!(printed.contains("info  called"), "{printed}");

    let bad = server.run(
        &["fn", "invoke", "shop", "greet", "--data", "{not json"],
        TOKEN,
    );
    fails_with(&bad, "--data is not JSON");
    let broken = dir.path().join("broken.js");
    std::fs::write(&broken, "export default async () => {").unwrap();
    let refused = server.run(
        &["fn", "deploy", "shop", "broken", broken.to_str().unwrap()],
        TOKEN,
    );
    fails_with(&refused, "(function_syntax_error)");
    ok(server.run(&["fn", "delete", "shop", "greet"], TOKEN));
    let gone = server.run(&["fn", "invoke", "shop", "greet"], TOKEN);
    fails_with(&gone, "(function_not_found)");
}

/// A GET over a plain socket: the status line and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    http_request(addr, "GET", path, None, None)
}

#[test]
fn init_and_deploy_bring_an_app_in_line_with_a_project_and_a_second_deploy_changes_nothing() {
    let (dir, data) = temp();
    let server = Server::start(&data, &[], &[("CLOUDLET_ADMIN_TOKEN", TOKEN)]);
    let project = dir.path().join("shop");
    let project_arg = project.to_str().unwrap();
    let run = |args: &[&str]| server.run(args, TOKEN);

    let created = run(&["init", project_arg, "--template", "todo"]);
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(
        stdout(&created).contains("for app \"shop\""),
        "{}",
        stdout(&created)
    );
    assert!(project.join("miniprogram/lib/cloudlet-sdk.js").is_file());
    let again = run(&["init", project_arg]);
    fails_with(&again, "already holds a project");

    let planned = run(&["deploy", project_arg, "--dry-run"]);
    assert!(planned.status.success(), "{}", stderr(&planned));
    assert!(
        stdout(&planned).contains("+ create app shop"),
        "{}",
        stdout(&planned)
    );
    assert!(
        server.app(&["show", "shop"], Some(TOKEN)).status.code() == Some(1),
        "a dry run creates nothing"
    );

    let deployed = run(&["deploy", project_arg]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    let printed = stdout(&deployed);
    for step in [
        "create app shop",
        "declare bucket photos",
        "create collection todos",
        "upload function stats",
        "upload function cleanup (with 1 schedule)",
        "upload site/index.html",
        "Deployed app shop: 9 changes.",
    ] {
        assert!(printed.contains(step), "{step}: {printed}");
    }
    let second = run(&["deploy", project_arg]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(
        stdout(&second).trim(),
        "Nothing to change: app shop is up to date."
    );

    let (status, page) = http_get(&server.addr, "/sites/shop/");
    assert!(status.contains("200"), "{status}");
    assert!(page.contains("<title>Todo"), "{page}");
    let (status, _) = http_get(&server.addr, "/sdk/cloudlet.js");
    assert!(status.contains("200"), "{status}");

    // A change to a function and a removed site file are planned and applied; dropping a field
    // loses data and needs --force.
    let toml = std::fs::read_to_string(project.join("cloudlet.toml")).unwrap();
    std::fs::write(
        project.join("cloudlet.toml"),
        toml.replace("  { name = \"done_at\", type = \"datetime\" },\n", ""),
    )
    .unwrap();
    std::fs::write(
        project.join("functions/stats/index.js"),
        "export default async () => ({ total: 0, open: 0, done: 0 });",
    )
    .unwrap();
    std::fs::remove_file(project.join("site/style.css")).unwrap();
    let refused = run(&["deploy", project_arg]);
    fails_with(&refused, "--force");
    let printed = stdout(&refused);
    assert!(
        printed.contains("! alter collection todos, LOSING DATA"),
        "{printed}"
    );
    assert!(printed.contains("+ update function stats"), "{printed}");
    assert!(printed.contains("+ remove site/style.css"), "{printed}");
    let forced = run(&["deploy", project_arg, "--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert!(stdout(&forced).contains("Deployed app shop: 3 changes."));
    let (status, _) = http_get(&server.addr, "/sites/shop/style.css");
    assert!(status.contains("404"), "{status}");
    let last = run(&["deploy", project_arg]);
    assert_eq!(
        stdout(&last).trim(),
        "Nothing to change: app shop is up to date."
    );

    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("cloudlet.toml"),
        "app = \"broken\"\ncolour = 1\n",
    )
    .unwrap();
    fails_with(
        &run(&["deploy", broken.to_str().unwrap()]),
        "unknown key \"colour\"",
    );
    std::fs::write(
        broken.join("cloudlet.toml"),
        "app = \"broken\"\n[functions.ghost]\n",
    )
    .unwrap();
    fails_with(
        &run(&["deploy", broken.to_str().unwrap()]),
        "neither functions/ghost/",
    );

    // A project folder from elsewhere may not reach another app's paths, send Cloudlet's own
    // token as a provider's secret, or publish a file outside the folder through a link.
    for (toml, refused) in [
        (
            "[collections.\"../../prod/collections/todos\"]\n",
            "is not a name Cloudlet takes",
        ),
        (
            "[providers.\"%2e%2e\"]\nenabled = true\n",
            "is not a name Cloudlet takes",
        ),
        (
            "[providers.wechat]\nappid = \"wx1\"\nsecret = { env = \"CLOUDLET_TOKEN\" }\n",
            "is Cloudlet's own variable",
        ),
    ] {
        std::fs::write(
            broken.join("cloudlet.toml"),
            format!("app = \"broken\"\n{toml}"),
        )
        .unwrap();
        fails_with(&run(&["deploy", broken.to_str().unwrap()]), refused);
    }
    // A login pointed at an address off this machine waits for --force, and says where.
    std::fs::write(
        broken.join("cloudlet.toml"),
        "app = \"broken\"\n[providers.wechat]\nappid = \"wx1\"\nsecret = \"s\"\nbase_url = \"https://wx.example.com\"\n",
    )
    .unwrap();
    let waits = run(&["deploy", broken.to_str().unwrap()]);
    fails_with(&waits, "run again with --force");
    assert!(
        stdout(&waits).contains(
            "! configure login wechat, its calls (and secret) going to https://wx.example.com"
        ),
        "{}",
        stdout(&waits)
    );
    std::fs::write(broken.join("cloudlet.toml"), "app = \"broken\"\n").unwrap();
    std::fs::create_dir_all(broken.join("site")).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", broken.join("site/env.txt")).unwrap();
    fails_with(
        &run(&["deploy", broken.to_str().unwrap()]),
        "a symbolic link",
    );
    std::fs::remove_file(broken.join("site/env.txt")).unwrap();
    // The site folder itself a link (to ~/.ssh, say): refused too.
    std::fs::remove_dir_all(broken.join("site")).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("id_ed25519"), "a private key").unwrap();
    std::os::unix::fs::symlink(&elsewhere, broken.join("site")).unwrap();
    fails_with(
        &run(&["deploy", broken.to_str().unwrap()]),
        "a symbolic link",
    );
    std::fs::remove_file(broken.join("site")).unwrap();
    std::fs::create_dir_all(broken.join("site/%2e%2e")).unwrap();
    std::fs::write(broken.join("site/%2e%2e/index.html"), "<p>x</p>").unwrap();
    fails_with(
        &run(&["deploy", broken.to_str().unwrap()]),
        "is not a name Cloudlet takes",
    );
}

#[test]
fn dev_serves_a_project_with_the_dev_login_and_deploys_every_change() {
    let (dir, _) = temp();
    let project = dir.path().join("notes");
    let init = Command::new(BIN)
        .args(["init", project.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", stderr(&init));
    let mut child = Command::new(BIN)
        .args([
            "dev",
            project.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--emulator",
            "127.0.0.1:0",
        ])
        .env("CLOUDLET_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("dev prints its address").unwrap();
        if let Some(addr) = line.strip_prefix("Cloudlet (development) is listening on http://") {
            break addr.to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let wait_for = |path: &str, wanted: &str| {
        for _ in 0..100 {
            let (status, body) = http_get(&addr, path);
            if status.contains("200") && body.contains(wanted) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{path} never answered with {wanted:?}");
    };
    // Deployed at start: the site is up.
    wait_for("/sites/notes/", "<title>Todo");
    // The dev login is on.
    let mut stream = TcpStream::connect(&addr).unwrap();
    let body = r#"{"provider":"dev","user":"alice"}"#;
    write!(
        stream,
        "POST /v1/apps/notes/auth/sessions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    // A change to the folder is deployed.
    std::fs::write(project.join("site/hello.txt"), "hello from dev").unwrap();
    wait_for("/sites/notes/hello.txt", "hello from dev");

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn deploy_declares_queues_and_the_queue_commands_inspect_send_and_purge() {
    let (dir, data) = temp();
    let server = Server::start(&data, &[], &[("CLOUDLET_ADMIN_TOKEN", TOKEN)]);
    let project = dir.path().join("jobs");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(
        project.join("cloudlet.toml"),
        "app = \"jobs\"\n\n[queues.mail]\nmax_attempts = 2\n",
    )
    .unwrap();
    let project_arg = project.to_str().unwrap();
    let run = |args: &[&str]| server.run(args, TOKEN);

    let deployed = run(&["deploy", project_arg]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    assert!(
        stdout(&deployed).contains("declare queue mail"),
        "{}",
        stdout(&deployed)
    );
    let again = run(&["deploy", project_arg]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(!stdout(&again).contains("queue mail"), "{}", stdout(&again));
    std::fs::write(
        project.join("cloudlet.toml"),
        "app = \"jobs\"\n\n[queues.mail]\nmax_attempts = 3\n",
    )
    .unwrap();
    let changed = run(&["deploy", project_arg]);
    assert!(
        stdout(&changed).contains("change queue mail"),
        "{}",
        stdout(&changed)
    );

    let sent = run(&[
        "queue",
        "send",
        "jobs",
        "mail",
        r#"{"to": "kim"}"#,
        "--key",
        "k1",
    ]);
    assert!(sent.status.success(), "{}", stderr(&sent));
    assert!(stdout(&sent).starts_with("Sent msg_"), "{}", stdout(&sent));
    let twice = run(&[
        "queue",
        "send",
        "jobs",
        "mail",
        r#"{"to": "kim"}"#,
        "--key",
        "k1",
    ]);
    assert!(stdout(&twice).contains("Not sent"), "{}", stdout(&twice));
    let listed = run(&["queue", "ls", "jobs"]);
    let line = stdout(&listed)
        .lines()
        .find(|l| l.starts_with("mail"))
        .unwrap_or_default()
        .to_owned();
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(columns, ["mail", "1", "0", "0", "0"], "{}", stdout(&listed));
    let peeked = run(&["queue", "peek", "jobs", "mail"]);
    assert!(
        stdout(&peeked).contains(r#"{"to":"kim"}"#),
        "{}",
        stdout(&peeked)
    );
    let dead = run(&["queue", "dlq", "jobs", "mail"]);
    assert_eq!(stdout(&dead), "");
    let purged = run(&["queue", "purge", "jobs", "mail"]);
    assert!(
        stdout(&purged).contains("Purged 1 messages"),
        "{}",
        stdout(&purged)
    );
    fails_with(&run(&["queue", "peek", "jobs", "nope"]), "queue_not_found");
    fails_with(&run(&["queue", "peek", "jobs", "../x"]), "not a queue name");
}

/// `POST path` with a JSON body and an optional bearer token: (status line, body).
fn http_post(addr: &str, path: &str, body: &str, token: Option<&str>) -> (String, String) {
    http_request(addr, "POST", path, Some(body), token)
}

/// One request on a new connection: (status line, body).
fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let content = body
        .map(|b| {
            format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                b.len()
            )
        })
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{auth}{content}\r\n{}",
        body.unwrap_or_default()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.lines().next().unwrap_or("").to_owned();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn the_shop_template_deploys_and_its_price_function_prices_client_orders() {
    let (dir, data) = temp();
    let server = Server::start(&data, &[], &[("CLOUDLET_ADMIN_TOKEN", TOKEN)]);
    let project = dir.path().join("tea");
    let project_arg = project.to_str().unwrap();
    let run = |args: &[&str]| server.run(args, TOKEN);
    let created = run(&["init", project_arg, "--template", "shop"]);
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(
        stdout(&created).contains("for app \"tea\""),
        "{}",
        stdout(&created)
    );
    assert!(project.join("miniprogram/lib/cloudlet-sdk.js").is_file());
    let deployed = run(&["deploy", project_arg]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    let printed = stdout(&deployed);
    for step in [
        "create collection products",
        "create collection sales",
        "upload function price",
        "upload function record",
        "upload function seed",
    ] {
        assert!(printed.contains(step), "{step}: {printed}");
    }
    let seeded = run(&["fn", "invoke", "tea", "seed"]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    assert!(
        stdout(&seeded).contains("\"added\": 3") || stdout(&seeded).contains("\"added\":3"),
        "{}",
        stdout(&seeded)
    );

    // A buyer: the price function reads the product; a product it does not sell is refused,
    // and one it sells is priced, then refused only for want of a merchant.
    let (status, grant) = http_post(
        &server.addr,
        "/v1/apps/tea/auth/users",
        r#"{"email":"kim@example.com","password":"a long and unusual passphrase 42"}"#,
        None,
    );
    assert!(status.contains("201"), "{status} {grant}");
    let grant: serde_json::Value = serde_json::from_str(&grant).unwrap();
    let token = grant["access_token"].as_str().unwrap();
    let (_, products) = http_get(
        &server.addr,
        "/v1/apps/tea/collections/products/records?sort=name",
    );
    let products: serde_json::Value = serde_json::from_str(&products).unwrap();
    let tea = products["items"][0]["id"].as_str().unwrap();
    let (status, body) = http_post(
        &server.addr,
        "/v1/apps/tea/pay/orders",
        r#"{"data":{"product":"nope"}}"#,
        Some(token),
    );
    assert!(
        status.contains("422") && body.contains("no such product"),
        "{status} {body}"
    );
    let (status, body) = http_post(
        &server.addr,
        "/v1/apps/tea/pay/orders",
        &format!(r#"{{"data":{{"product":"{tea}","qty":2}}}}"#),
        Some(token),
    );
    assert!(
        status.contains("404") && body.contains("pay_not_configured"),
        "{status} {body}"
    );
    // Clients write no products.
    let (status, _) = http_post(
        &server.addr,
        "/v1/apps/tea/collections/products/records",
        r#"{"name":"Free tea","price_fen":1}"#,
        Some(token),
    );
    assert!(status.contains("403"), "{status}");
}

#[test]
fn pay_commands_reach_the_orders_routes_and_refuse_ids_that_are_not_ids() {
    let (_dir, data) = temp();
    let server = Server::start(&data, &[], &[("CLOUDLET_ADMIN_TOKEN", TOKEN)]);
    let run = |args: &[&str]| server.run(args, TOKEN);
    assert!(run(&["app", "create", "shop"]).status.success());
    let listed = run(&["pay", "orders", "shop", "--state", "paid"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stdout(&listed).starts_with("ORDER"), "{}", stdout(&listed));
    let as_json = run(&["pay", "--json", "orders", "shop"]);
    assert_eq!(json(&as_json)["items"], serde_json::json!([]));
    fails_with(
        &run(&["pay", "show", "shop", "ord_missing"]),
        "order_not_found",
    );
    fails_with(
        &run(&[
            "pay",
            "refund",
            "shop",
            "ord_missing",
            "100",
            "--reason",
            "cold",
        ]),
        "order_not_found",
    );
    fails_with(
        &run(&["pay", "close", "shop", "ord_missing"]),
        "order_not_found",
    );
    fails_with(&run(&["pay", "show", "shop", "../x"]), "not an order id");
    fails_with(&run(&["pay", "orders", "nope"]), "app_not_found");

    // Kept notifications and their replay; reconciliation reports.
    let callbacks = run(&["pay", "callbacks", "shop", "--order", "ord_1"]);
    assert!(callbacks.status.success(), "{}", stderr(&callbacks));
    assert!(
        stdout(&callbacks).starts_with("CALLBACK"),
        "{}",
        stdout(&callbacks)
    );
    fails_with(
        &run(&["pay", "replay", "shop", "cb_missing"]),
        "callback_not_found",
    );
    fails_with(
        &run(&["pay", "replay", "shop", "../x"]),
        "not a callback id",
    );
    fails_with(
        &run(&["pay", "callbacks", "shop", "--order", "a&b=c"]),
        "not an order id",
    );
    fails_with(
        &run(&["pay", "reconcile", "shop", "2026-02-30"]),
        "invalid_bill_date",
    );
    fails_with(
        &run(&[
            "pay",
            "reconcile",
            "shop",
            "2026-11-30",
            "--provider",
            "alipay",
        ]),
        "pay_not_configured",
    );
    fails_with(&run(&["pay", "report", "shop", "../../x.."]), "not a date");
    fails_with(
        &run(&["pay", "report", "shop", "2026-11-30"]),
        "report_not_found",
    );
    let reports = run(&["pay", "reports", "shop"]);
    assert!(reports.status.success(), "{}", stderr(&reports));
    assert!(
        stdout(&reports).starts_with("PROVIDER"),
        "{}",
        stdout(&reports)
    );
}

#[test]
fn deploy_sets_the_realtime_settings_once() {
    let (dir, data) = temp();
    let server = Server::start(&data, &[], &[("CLOUDLET_ADMIN_TOKEN", TOKEN)]);
    let project = dir.path().join("chat");
    std::fs::create_dir(&project).unwrap();
    let config = |count: u64| {
        format!(
            "app = \"chat\"\n\n[realtime]\ndirect = \"to != @auth.id\"\n\n\
             [realtime.channels.room]\nrules = {{ join = \"\", publish = \"@auth.id != null\" }}\n\
             history = {{ count = {count} }}\n"
        )
    };
    std::fs::write(project.join("cloudlet.toml"), config(500)).unwrap();
    let project_arg = project.to_str().unwrap();
    let run = |args: &[&str]| server.run(args, TOKEN);
    let deployed = run(&["deploy", project_arg]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    assert!(
        stdout(&deployed).contains("set the realtime settings"),
        "{}",
        stdout(&deployed)
    );
    let again = run(&["deploy", project_arg]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(!stdout(&again).contains("realtime"), "{}", stdout(&again));
    std::fs::write(project.join("cloudlet.toml"), config(600)).unwrap();
    let changed = run(&["deploy", project_arg]);
    assert!(
        stdout(&changed).contains("set the realtime settings"),
        "{}",
        stdout(&changed)
    );
    // A rule that does not check is the server's refusal, with the field it names.
    std::fs::write(
        project.join("cloudlet.toml"),
        "app = \"chat\"\n\n[realtime.channels.room.rules]\njoin = \"nope = 1\"\n",
    )
    .unwrap();
    let refused = run(&["deploy", project_arg]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("channels.room.rules.join"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn deploy_declares_buckets_and_the_files_commands_put_list_get_and_remove() {
    let (dir, data) = temp();
    let server = Server::start(&data, &[], &[("CLOUDLET_ADMIN_TOKEN", TOKEN)]);
    let project = dir.path().join("pics");
    std::fs::create_dir(&project).unwrap();
    let config = |max: u64| {
        format!(
            "app = \"pics\"\n\n[buckets.photos]\ntypes = [\"image/*\"]\nmax_bytes = {max}\n\n\
             [buckets.photos.rules]\nview = \"\"\n"
        )
    };
    std::fs::write(project.join("cloudlet.toml"), config(1000)).unwrap();
    let project_arg = project.to_str().unwrap();
    let run = |args: &[&str]| server.run(args, TOKEN);

    let deployed = run(&["deploy", project_arg]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    assert!(
        stdout(&deployed).contains("declare bucket photos"),
        "{}",
        stdout(&deployed)
    );
    let again = run(&["deploy", project_arg]);
    assert!(
        !stdout(&again).contains("bucket photos"),
        "{}",
        stdout(&again)
    );
    std::fs::write(project.join("cloudlet.toml"), config(2000)).unwrap();
    let changed = run(&["deploy", project_arg]);
    assert!(
        stdout(&changed).contains("change bucket photos"),
        "{}",
        stdout(&changed)
    );
    // A rule taken out of the project goes back to its default: the public view is undone.
    std::fs::write(
        project.join("cloudlet.toml"),
        "app = \"pics\"\n\n[buckets.photos]\ntypes = [\"image/*\"]\nmax_bytes = 2000\n",
    )
    .unwrap();
    let private = run(&["deploy", project_arg]);
    assert!(
        stdout(&private).contains("change bucket photos"),
        "{}",
        stdout(&private)
    );
    let settled = run(&["deploy", project_arg]);
    assert!(
        !stdout(&settled).contains("bucket photos"),
        "{}",
        stdout(&settled)
    );
    std::fs::write(project.join("cloudlet.toml"), config(2000)).unwrap();
    run(&["deploy", project_arg]);

    let png = dir.path().join("dot.png");
    let bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
    std::fs::write(&png, bytes).unwrap();
    let put = run(&["files", "put", "pics", "photos", png.to_str().unwrap()]);
    assert!(put.status.success(), "{}", stderr(&put));
    let out = stdout(&put);
    assert!(
        out.starts_with("Stored fil_") && out.contains("image/png"),
        "{out}"
    );
    let id = out.split_whitespace().nth(1).unwrap().to_owned();

    let listed = run(&["files", "ls", "pics", "photos"]);
    assert!(
        stdout(&listed).contains(&id) && stdout(&listed).contains("dot.png"),
        "{}",
        stdout(&listed)
    );
    let buckets = run(&["files", "ls", "pics"]);
    assert!(stdout(&buckets).contains("photos"), "{}", stdout(&buckets));
    let back = dir.path().join("back.png");
    let got = run(&[
        "files",
        "get",
        "pics",
        "photos",
        &id,
        "--out",
        back.to_str().unwrap(),
    ]);
    assert!(got.status.success(), "{}", stderr(&got));
    assert_eq!(std::fs::read(&back).unwrap(), bytes);
    let removed = run(&["files", "rm", "pics", "photos", &id]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    fails_with(
        &run(&["files", "get", "pics", "photos", &id]),
        "file_not_found",
    );
    fails_with(
        &run(&["files", "put", "pics", "photos", project_arg]),
        "could not read",
    );
    fails_with(&run(&["files", "ls", "pics", "../x"]), "not a bucket name");
    std::fs::write(&png, b"<html></html>").unwrap();
    fails_with(
        &run(&["files", "put", "pics", "photos", png.to_str().unwrap()]),
        "file_type_not_allowed",
    );
}
