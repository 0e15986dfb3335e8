//! The compiled SQL run on a real PostgreSQL server, started by this test on a temporary data
//! directory and a loopback port (Debian's `postgresql` package), so that the scale-out backend
//! starts from a language that already works there. The filters and the rows are those of the
//! SQLite test: both databases must return the same rows for every filter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cloudlet_query::{Dialect, Limits, Param, SqlBuilder, Value, parse};

/// A PostgreSQL server on a temporary directory; stopped when dropped.
struct Postgres {
    server: Child,
    bin: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

fn postgres_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
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

/// Runs a PostgreSQL tool as the `postgres` user when we are root (the server refuses root).
fn as_postgres(program: &Path) -> Command {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if is_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Postgres {
    fn start() -> Postgres {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        // The server runs as `postgres`: let it own its directories.
        let _ = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir.path())
            .status();
        let _ = Command::new("chmod").arg("755").arg(dir.path()).status();
        let init = as_postgres(&bin.join("initdb"))
            .args(["-D"])
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
        let server = as_postgres(&bin.join("postgres"))
            .args(["-D"])
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ])
            .args(["-k"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let postgres = Postgres {
            server,
            bin,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !postgres.psql("SELECT 1").status.success() {
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        postgres
    }

    fn psql(&self, sql: &str) -> std::process::Output {
        Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "cloudlet",
                "-d",
                "postgres",
            ])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "2")
            .output()
            .unwrap()
    }

    fn query(&self, sql: &str) -> String {
        let output = self.psql(sql);
        assert!(
            output.status.success(),
            "{sql}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// A parameter as a SQL literal, for `EXECUTE` in this test (the server binds it as a value).
fn literal(param: &Param) -> String {
    let text = |t: &str| format!("'{}'", t.replace('\'', "''"));
    match param {
        Param::Value(Value::Null) | Param::RequestData(_) => "NULL".into(),
        Param::Value(Value::Bool(b)) => b.to_string(),
        Param::Value(Value::Int(i)) => i.to_string(),
        Param::Value(Value::Float(f)) => format!("{f:?}"),
        Param::Value(Value::Text(t)) => text(t),
        Param::AuthId => text(common::AUTH_ID),
        Param::AuthProvider => text(common::AUTH_PROVIDER),
        Param::Now => common::NOW_MS.to_string(),
    }
}

#[test]
fn postgres_returns_the_same_rows_as_sqlite_for_every_filter() {
    let pg = Postgres::start();
    pg.query(&format!(
        "CREATE TABLE todos (id text, created_at bigint, updated_at bigint, owner text, title text,
            done boolean, priority bigint, score float8, meta jsonb, due bigint);
         INSERT INTO todos VALUES {};",
        common::ROWS
    ));
    for (n, (filter, expected)) in common::CASES.iter().enumerate() {
        let expr = parse(filter, Limits::default()).unwrap();
        let mut sql = SqlBuilder::new(Dialect::Postgres);
        let condition = sql.compile(&expr, &common::schema()).unwrap();
        let arguments: Vec<String> = sql.params().iter().map(literal).collect();
        let execute = if arguments.is_empty() {
            format!("EXECUTE q{n}")
        } else {
            format!("EXECUTE q{n}({})", arguments.join(", "))
        };
        let out = pg.query(&format!(
            "PREPARE q{n} AS SELECT id FROM todos WHERE {condition} ORDER BY id; {execute};"
        ));
        let ids: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(ids, *expected, "{filter}\n{condition}");
    }
}
