//! The `cloudlet` binary: command-line parsing, logging setup, and dispatch to the server
//! (`serve`) or to the admin API client (`app …`). No business logic lives here.

mod client;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

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
    /// Offline administration of a data directory.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Replace the admin token with a new one and print it (the server must be stopped).
    ResetToken(DataDirArg),
}

#[derive(Args)]
struct DataDirArg {
    /// Data directory.
    #[arg(long, env = "CLOUDLET_DATA_DIR", default_value = "cloudlet-data")]
    data_dir: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::App {
            connection,
            command,
        } => client::run(connection, command).await,
        Command::Admin {
            command: AdminCommand::ResetToken(args),
        } => reset_token(&args.data_dir).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn reset_token(data_dir: &std::path::Path) -> Result<(), String> {
    let token = cloudlet_server::reset_admin_token(data_dir)
        .await
        .map_err(|e| e.to_string())?;
    println!("New admin token (shown once, store it now):\n\n    {token}\n");
    Ok(())
}
