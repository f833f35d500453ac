//! `pgincr`: PostgreSQL 17/18 block-level incremental backup.
//!
//! A thin binary: it parses arguments, calls the library crates and prints. Exit codes: 0 on
//! success, 1 on failure (the error is printed to stderr), 2 on a usage error.

use clap::{Parser, Subcommand};

mod backup_cmd;
mod combine_cmd;
mod summary_cmd;

#[derive(Parser)]
#[command(
    name = "pgincr",
    version,
    about = "PostgreSQL 17/18 block-level incremental backup"
)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Take a full or incremental base backup over the replication protocol.
    Backup(backup_cmd::Args),
    /// Reconstruct a full backup from a chain of incremental backups.
    Combine(combine_cmd::Args),
    /// Inspect WAL summary files.
    #[command(subcommand)]
    Summary(summary_cmd::Command),
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Backup(args) => backup_cmd::run(args),
        Command::Combine(args) => combine_cmd::run(args),
        Command::Summary(cmd) => summary_cmd::run(cmd),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("pgincr: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
