//! What the binary's tests share: `cloudlet serve` as a child process, and requests to it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_cloudlet");
pub const TOKEN: &str = "test-admin-token-for-serve-42";

/// `cloudlet serve` on `data_dir` (and `database`, if given); stopped when dropped.
pub struct Serve {
    child: Child,
    pub base: String,
    /// The web console's address (`http://…`), unless it is off.
    pub console: Option<String>,
}

impl Serve {
    pub fn start(data_dir: &Path, database: Option<&str>) -> Serve {
        Serve::start_with(data_dir, database, &[])
    }

    /// With extra arguments (`--config FILE`, say).
    pub fn start_with(data_dir: &Path, database: Option<&str>, args: &[&str]) -> Serve {
        // Its log, beside the data directory: told when it does not start.
        let log_path = data_dir.with_extension("serve.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("CLOUDLET_ADMIN_TOKEN", TOKEN)
            .env_remove("CLOUDLET_DATABASE")
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(url) = database {
            command.args(["--database", url]);
        }
        command.args(args);
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            let Some(line) = lines.next() else {
                let status = child.wait().unwrap();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("serve ended ({status}) before it said where it listens; its log:\n{log}");
            };
            let line = line.unwrap();
            if let Some(addr) = line.trim().strip_prefix("Cloudlet is listening on ") {
                break addr.to_owned();
            }
        };
        // The console's line follows at once, if it listens.
        let off = args.windows(2).any(|w| w == ["--console-listen", "off"])
            || std::env::var("CLOUDLET_CONSOLE_LISTEN").is_ok_and(|v| v == "off");
        let console = if off {
            None
        } else {
            lines.next().and_then(Result::ok).and_then(|line| {
                line.trim()
                    .strip_prefix("The console is at ")
                    .and_then(|url| url.strip_suffix("/console/"))
                    .map(str::to_owned)
            })
        };
        std::thread::spawn(move || for _ in lines {});
        Serve {
            child,
            base,
            console,
        }
    }

    /// SIGTERM: a graceful stop.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// SIGKILL: the process ends at once, as in a crash or a power cut.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request with `token`; the status and the JSON body.
pub async fn call(
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
