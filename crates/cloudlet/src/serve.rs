//! `cloudlet serve`: merges flags and environment over the config file, sets up logging, starts
//! the server and shuts it down gracefully on SIGINT or SIGTERM.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use cloudlet_server::config::{Config, DatabaseUrl, LogFormat};
use cloudlet_server::{AdminTokenSetup, StartOptions, start};
use tracing_subscriber::EnvFilter;

#[derive(Args)]
pub struct ServeArgs {
    /// A TOML config file; flags and environment variables override it.
    #[arg(long, env = "CLOUDLET_CONFIG")]
    config: Option<PathBuf>,
    /// Where data lives [default: cloudlet-data]
    #[arg(long, env = "CLOUDLET_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A `postgres://` URL to keep apps' data in PostgreSQL (one node per database for now)
    /// [default: SQLite files in the data directory]
    #[arg(long, env = "CLOUDLET_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// Where uploaded files' bytes live: `s3://bucket[/prefix]` (with `[files]` settings or
    /// `CLOUDLET_S3_*` keys) [default: the data directory's `files/`]
    #[arg(long, env = "CLOUDLET_FILES")]
    files: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8700]
    #[arg(long, env = "CLOUDLET_LISTEN")]
    listen: Option<SocketAddr>,
    /// The web console's address, or `off` [default: the API's address, next port]
    #[arg(long, env = "CLOUDLET_CONSOLE_LISTEN")]
    console_listen: Option<String>,
    /// Log line format [default: text]
    #[arg(long, env = "CLOUDLET_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormatArg>,
    /// Log filter, e.g. `info` or `cloudlet_server=debug,info` [default: info]
    #[arg(long, env = "CLOUDLET_LOG_LEVEL")]
    log_level: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

pub async fn run(args: ServeArgs) -> Result<(), String> {
    let mut config = Config::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(url) = args.database {
        config.database.url = DatabaseUrl::parse(&url).map_err(|e| format!("--database: {e}"))?;
    }
    if let Some(url) = args.files {
        config.files.url = url;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(console) = args.console_listen {
        config.console.listen = console;
    }
    if let Some(format) = args.log_format {
        config.log.format = match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        };
    }
    if let Some(level) = args.log_level {
        config.log.level = level;
    }
    init_logging(&config)?;

    let options = StartOptions {
        admin_token: std::env::var("CLOUDLET_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        master_key: std::env::var("CLOUDLET_MASTER_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
    };
    let running = start(config, options).await.map_err(|e| e.to_string())?;
    if let AdminTokenSetup::Generated(token) = running.admin_token() {
        println!(
            "\nAdmin token (shown once, store it now; `cloudlet admin reset-token` makes a new one):\n\n    {token}\n\nUse it with: export CLOUDLET_TOKEN={token}\n"
        );
    }
    println!("Cloudlet is listening on http://{}", running.local_addr());
    if let Some(console) = running.console_addr() {
        println!("The console is at http://{console}/console/");
    }

    let shutdown = running.shutdown_handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        shutdown.trigger();
    });
    running.wait().await;
    Ok(())
}

fn init_logging(config: &Config) -> Result<(), String> {
    let filter = EnvFilter::try_new(&config.log.level)
        .map_err(|e| format!("invalid log level {:?}: {e}", config.log.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = match config.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| format!("could not set up logging: {e}"))
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
