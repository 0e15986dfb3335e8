//! A throwaway PostgreSQL server for tests (Debian's `postgresql` package): started on a
//! temporary directory and a loopback port, with fsync off, and stopped when the test process
//! ends, even when it ends by a panic or a signal (a shell holding the end of a pipe stops it).
//! Each [`TestServer::database`] is a new empty database, so tests run in parallel on one
//! server. Only built with the `testing` feature.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running test server.
pub struct TestServer {
    bin: PathBuf,
    port: u16,
    dir: PathBuf,
    /// Closing this pipe (dropping it, or the process ending) stops the server.
    guard: Mutex<Option<(Child, ChildStdin)>>,
    serial: AtomicU64,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("port", &self.port)
            .finish()
    }
}

fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap_or_else(|_| {
            panic!("PostgreSQL is not installed: apt-get install postgresql (.ci/run does)")
        })
        .map(|e| e.unwrap().path().join("bin"))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL version with a postgres binary")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// A command run as `postgres` when we are root (the server refuses to run as root).
fn as_postgres(program: &str) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", program]);
        command
    } else {
        Command::new(program)
    }
}

impl TestServer {
    /// The server shared by every test of this process, started on first use.
    pub fn shared() -> &'static TestServer {
        static SHARED: OnceLock<TestServer> = OnceLock::new();
        SHARED.get_or_init(TestServer::start)
    }

    /// A server of its own (for tests that stop and restart it).
    pub fn start() -> TestServer {
        let bin = postgres_bin();
        let dir = tempfile::Builder::new()
            .prefix("cloudlet-pg-")
            .tempdir()
            .unwrap()
            .keep();
        let data = dir.join("data");
        std::fs::create_dir(&data).unwrap();
        if is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&dir)
                .status();
        }
        let init = as_postgres(bin.join("initdb").to_str().unwrap())
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "cloudlet",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = TestServer {
            bin,
            port,
            dir,
            guard: Mutex::new(None),
            serial: AtomicU64::new(0),
        };
        server.resume();
        server
    }

    /// Starts the server again after [`TestServer::stop`], on the same port and data.
    pub fn resume(&self) {
        let postgres = self.bin.join("postgres");
        let data = self.dir.join("data");
        // The shell runs the server until its standard input closes, then stops it (fast
        // shutdown) and removes the directory unless `stop` asked to keep it for a restart.
        let script = format!(
            "{postgres} -D {data} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=400 \
             -k {dir} >{dir}/log 2>&1 & pid=$!; cat >/dev/null; kill -INT $pid; wait $pid; \
             [ -e {dir}/keep ] || rm -rf {dir}",
            postgres = postgres.display(),
            data = data.display(),
            port = self.port,
            dir = self.dir.display(),
        );
        let mut child = as_postgres("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        *self.guard.lock().unwrap() = Some((child, stdin));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.psql("postgres", "SELECT 1").status.success() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: see {}/log",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown) and waits for it to exit.
    pub fn stop(&self) {
        std::fs::write(self.dir.join("keep"), b"").unwrap();
        self.halt();
        let _ = std::fs::remove_file(self.dir.join("keep"));
    }

    fn halt(&self) {
        if let Some((mut child, stdin)) = self.guard.lock().unwrap().take() {
            drop(stdin);
            let _ = child.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://cloudlet@127.0.0.1:{}/{name}", self.port)
    }

    /// A new empty database; returns its URL.
    pub fn database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            self.serial.fetch_add(1, Ordering::Relaxed)
        );
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// The name of the database of `url`.
    pub fn database_name(url: &str) -> &str {
        url.rsplit('/').next().unwrap_or(url)
    }

    /// Everything stored in the database of `url`, as `pg_dump` writes it (byte strings as
    /// hex).
    pub fn dump(&self, url: &str) -> String {
        let output = Command::new(self.bin.join("pg_dump"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "cloudlet",
            ])
            .arg(Self::database_name(url))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `sql` in database `db` with psql; panics with its error if it fails.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let output = self.psql(db, sql);
        assert!(
            output.status.success(),
            "{sql}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs `sql` in database `db` in a `psql` session that stays connected (its input stays
    /// open) until the returned [`Session`] is released or dropped: for example `BEGIN; LOCK
    /// TABLE …;` to hold a lock while a test does something else.
    pub fn session(&self, db: &str, sql: &str) -> Session {
        let mut child = self.psql_command(db).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // A psql that could not connect has exited: `release` returns its error.
        let _ = stdin
            .write_all(sql.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"));
        Session {
            child: Some((child, stdin)),
        }
    }

    /// `psql` on database `db`, reading SQL from its standard input.
    fn psql_command(&self, db: &str) -> Command {
        let mut command = Command::new(self.bin.join("psql"));
        command
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "cloudlet",
                "-d",
                db,
            ])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .env("PGCONNECT_TIMEOUT", "2")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn psql(&self, db: &str, sql: &str) -> std::process::Output {
        let mut child = self.psql_command(db).spawn().unwrap();
        // psql exits without reading its input when it can not connect (as while `resume`
        // waits for the server): the write then fails with a broken pipe, and the exit status
        // says what happened.
        let _ = child.stdin.take().unwrap().write_all(sql.as_bytes());
        child.wait_with_output().unwrap()
    }

    /// The data directory's parent (the log is `log` in it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A `psql` session of [`TestServer::session`], connected until released or dropped.
pub struct Session {
    child: Option<(Child, ChildStdin)>,
}

impl Session {
    /// Ends the session (its open transaction rolls back, its locks are released) and returns
    /// what psql wrote: its output, and its errors if it failed.
    pub fn release(mut self) -> Result<String, String> {
        self.end()
    }

    fn end(&mut self) -> Result<String, String> {
        let Some((child, stdin)) = self.child.take() else {
            return Ok(String::new());
        };
        drop(stdin);
        let output = child.wait_with_output().unwrap();
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.end();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.halt();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
