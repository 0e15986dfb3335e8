//! The `cloudlet` binary: command-line parsing, logging setup, and dispatch to the server
//! (`serve`) or to the admin API client (`app …`). No business logic lives here.

mod client;
mod dev;
mod files;
mod functions;
mod pay;
mod project;
mod queues;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// mimalloc serves the server's many small, short-lived allocations (requests, frames, JSON)
/// faster than glibc's allocator: twice the rate on the hot data path, 15 % on warm function
/// calls. It is built without transparent huge pages, which held several times the memory
/// (docs/performance.md, "Many tenants").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "cloudlet",
    version,
    about = "A self-hosted serverless backend for mini programs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded defaults: ./cloudlet-data, SQLite, 127.0.0.1:8700).
    Serve(serve::ServeArgs),
    /// Create, list, show, delete apps and rotate their keys on a running server.
    App {
        #[command(flatten)]
        connection: client::Connection,
        #[command(subcommand)]
        command: client::AppCommand,
    },
    /// Deploy, list, show, roll back, call and delete an app's functions.
    Fn {
        #[command(flatten)]
        connection: client::Connection,
        #[command(subcommand)]
        command: functions::FnCommand,
    },
    /// Inspect an app's queues: ls, peek, send, dlq, replay, purge.
    Queue {
        #[command(flatten)]
        connection: client::Connection,
        #[command(subcommand)]
        command: queues::QueueCommand,
    },
    /// An app's payments: orders, show, refund, close.
    Pay {
        #[command(flatten)]
        connection: client::Connection,
        #[command(subcommand)]
        command: pay::PayCommand,
    },
    /// An app's buckets and files: ls, put, get, rm.
    Files {
        #[command(flatten)]
        connection: client::Connection,
        #[command(subcommand)]
        command: files::FilesCommand,
    },
    /// Print an app's function log; `--follow` keeps printing new entries.
    Logs {
        #[command(flatten)]
        connection: client::Connection,
        app: String,
        /// Only this function's invocations.
        #[arg(long)]
        function: Option<String>,
        /// Only invocations that ended so: ok, error, timeout, memory_limit, result_too_large.
        #[arg(long)]
        outcome: Option<String>,
        /// How many of the newest entries to print first.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Keep printing new entries as they come.
        #[arg(long, short)]
        follow: bool,
    },
    /// Create a project folder from a template.
    Init {
        dir: PathBuf,
        /// The template: `todo` or `shop`.
        #[arg(long, default_value = "todo")]
        template: String,
        /// The app's name (the folder's name by default).
        #[arg(long)]
        app: Option<String>,
    },
    /// Bring an app in line with a project folder: print the plan, then apply it.
    Deploy {
        #[command(flatten)]
        connection: client::Connection,
        dir: PathBuf,
        /// Apply a plan that loses data (dropping or retyping a field).
        #[arg(long)]
        force: bool,
        /// Print the plan only.
        #[arg(long)]
        dry_run: bool,
    },
    /// Develop a project: a local server and emulator, the dev login on, deployed on every change.
    Dev {
        dir: PathBuf,
        /// Address of the server.
        #[arg(long, default_value = "127.0.0.1:8700")]
        listen: std::net::SocketAddr,
        /// Address of the platform emulator.
        #[arg(long, default_value = "127.0.0.1:8701")]
        emulator: std::net::SocketAddr,
    },
    /// Run the platform emulator: a local WeChat, QQ, Douyin and Alipay login server.
    Emulator(EmulatorArgs),
    /// A function worker process, started by the server (not by hand): it reads invocations on
    /// stdin and answers on stdout.
    #[command(hide = true)]
    Worker {
        /// A function's warm runtime unused this long is dropped, in seconds.
        #[arg(long, default_value_t = 60.0)]
        idle_secs: f64,
    },
    /// Offline administration of a data directory.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Move an instance from its data directory (SQLite) into PostgreSQL, verified by counts
    /// and checksums; the server must be stopped. Running it again after an interruption
    /// finishes the job.
    Migrate {
        #[command(flatten)]
        source: DataDirArg,
        /// The PostgreSQL database to move into: empty, or filled by an earlier run.
        #[arg(long, env = "CLOUDLET_DATABASE", hide_env_values = true)]
        to: String,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Replace the admin token with a new one and print it (the server must be stopped).
    ResetToken(DataDirArg),
}

#[derive(Args)]
struct EmulatorArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "CLOUDLET_EMULATOR_LISTEN",
        default_value = "127.0.0.1:8701"
    )]
    listen: std::net::SocketAddr,
    /// How long a login code stays valid, in seconds.
    #[arg(long, default_value_t = 300)]
    code_ttl_secs: u64,
}

#[derive(Args)]
struct DataDirArg {
    /// Data directory.
    #[arg(long, env = "CLOUDLET_DATA_DIR", default_value = "cloudlet-data")]
    data_dir: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // A worker is single-threaded and runs no async runtime.
        Command::Worker { idle_secs } => {
            let idle = std::time::Duration::try_from_secs_f64(idle_secs).map_err(|e| e.to_string());
            idle.and_then(|idle| cloudlet_js::worker::run(idle).map_err(|e| e.to_string()))
        }
        command => match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime.block_on(run(command)),
            Err(e) => Err(format!("could not start the async runtime: {e}")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve(args) => serve::run(args).await,
        Command::App {
            connection,
            command,
        } => client::run(connection, command).await,
        Command::Fn {
            connection,
            command,
        } => functions::run(connection, command).await,
        Command::Queue {
            connection,
            command,
        } => queues::run(connection, command).await,
        Command::Files {
            connection,
            command,
        } => files::run(connection, command).await,
        Command::Pay {
            connection,
            command,
        } => pay::run(connection, command).await,
        Command::Logs {
            connection,
            app,
            function,
            outcome,
            limit,
            follow,
        } => functions::logs(connection, app, function, outcome, limit, follow).await,
        Command::Init { dir, template, app } => project::init(&dir, &template, app.as_deref()),
        Command::Deploy {
            connection,
            dir,
            force,
            dry_run,
        } => project::deploy(connection, &dir, force, dry_run).await,
        Command::Dev {
            dir,
            listen,
            emulator,
        } => dev::run(dir, listen, emulator).await,
        Command::Emulator(args) => run_emulator(args).await,
        Command::Admin {
            command: AdminCommand::ResetToken(args),
        } => reset_token(&args.data_dir).await,
        Command::Migrate { source, to } => migrate(&source.data_dir, &to).await,
        Command::Worker { .. } => Err("a worker runs outside the async runtime".into()),
    }
}

async fn migrate(data_dir: &std::path::Path, to: &str) -> Result<(), String> {
    let report = cloudlet_server::migrate::migrate_to_postgres(data_dir, to, |app, moved| {
        let rows: u64 = moved.tables.iter().map(|t| t.rows).sum();
        let what = if moved.copied {
            "copied"
        } else {
            "already there, verified"
        };
        println!(
            "{app}: {what} ({} tables, {rows} rows, checksums equal)",
            moved.tables.len()
        );
    })
    .await
    .map_err(|e| e.to_string())?;
    let people = report
        .console
        .iter()
        .find(|check| check.table == "console_people")
        .map_or(0, |check| check.rows);
    println!(
        "Done: {} apps, {} settings and {people} console people (with their roles and the audit \
         log; they log in again) are in PostgreSQL. Start the server with --database.",
        report.apps.len(),
        report.settings
    );
    Ok(())
}

async fn run_emulator(args: EmulatorArgs) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("could not listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let options = cloudlet_emulator::EmulatorOptions {
        code_ttl: std::time::Duration::from_secs(args.code_ttl_secs),
        ..Default::default()
    };
    println!("Cloudlet emulator is listening on http://{addr}");
    println!("  WeChat base_url: http://{addr}/wechat");
    println!("  QQ base_url:     http://{addr}/qq");
    println!("  Douyin base_url: http://{addr}/douyin");
    println!("  Alipay base_url: http://{addr}/alipay/gateway.do");
    println!("  WeChat Pay base_url: http://{addr}/wechatpay");
    cloudlet_emulator::serve(listener, options, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(|e| e.to_string())
}

async fn reset_token(data_dir: &std::path::Path) -> Result<(), String> {
    let token = cloudlet_server::reset_admin_token(data_dir)
        .await
        .map_err(|e| e.to_string())?;
    println!("New admin token (shown once, store it now):\n\n    {token}\n");
    Ok(())
}
