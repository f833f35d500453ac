//! `pgincr`: PostgreSQL 17/18 block-level incremental backup.
//!
//! A thin binary: it parses arguments, calls the library crates and prints. Exit codes: 0 on
//! success, 1 on failure (the error is printed to stderr), 2 on a usage error.

use clap::{Parser, Subcommand};

mod archive_cmd;
mod backup_cmd;
mod combine_cmd;
mod restore_cmd;
mod rotation_cmd;
mod summary_cmd;
mod verify_cmd;

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
    /// Verify a backup against its manifest, or check visibility maps, offline.
    Verify(verify_cmd::Args),
    /// One step of the rotation: a full or incremental backup into the repository, then
    /// retention, WAL cleanup, report and notifications (exit 0 done, 1 failed, 2 usage,
    /// 3 another run holds the lock).
    Run(rotation_cmd::RunArgs),
    /// Rounds, backups, repository size and the recoverable window (text, JSON, Prometheus).
    Info(rotation_cmd::InfoArgs),
    /// Check the server and the repository before the first run, each failure with its fix.
    Check(rotation_cmd::CheckArgs),
    /// Restore a backup chain from the repository into a data directory, with point-in-time
    /// recovery settings; optionally start it.
    Restore(Box<restore_cmd::RestoreArgs>),
    /// Test a restore: restore into a throwaway server, check it, record RTO and RPO.
    Drill(Box<restore_cmd::DrillArgs>),
    /// Archive one WAL file into the WAL archive (for archive_command).
    ArchivePush(archive_cmd::PushArgs),
    /// Restore one WAL file from the WAL archive (for restore_command).
    ArchiveGet(archive_cmd::GetArgs),
    /// Show the WAL archive's segments per timeline, its gaps, and how far recovery can get.
    ArchiveCheck(archive_cmd::CheckArgs),
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Backup(args) => backup_cmd::run(args),
        Command::Combine(args) => combine_cmd::run(args),
        Command::Summary(cmd) => summary_cmd::run(cmd),
        Command::Verify(args) => verify_cmd::run(args),
        Command::Run(args) => rotation_cmd::run(args),
        Command::Info(args) => rotation_cmd::info(args),
        Command::Check(args) => rotation_cmd::check(args),
        Command::Restore(args) => restore_cmd::restore(*args),
        Command::Drill(args) => restore_cmd::drill(*args),
        Command::ArchivePush(args) => archive_cmd::push(args),
        Command::ArchiveGet(args) => archive_cmd::get(args),
        Command::ArchiveCheck(args) => archive_cmd::check(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("pgincr: error: {}", error_text(&e));
            std::process::exit(1);
        }
    }
}

/// The error and its causes, `: `-separated, each said once. Many of the library errors
/// already include their source's text in their own message (thiserror's `"...: {source}"`)
/// and also return it as `source()`, so anyhow's `{:#}` printed it twice; a cause whose text
/// the message so far already contains is left out.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if s.is_empty() || text.contains(&s) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&s);
    }
    text
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // The HTTP client logs request lines with the whole URL, and a webhook URL carries its
    // token: it is never logged, whatever RUST_LOG says (pgincr-notify logs redacted URLs).
    let filter = match "ureq=off".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::error_text;

    /// What thiserror generates for `#[error("could not read \"x\": {source}")]`.
    #[derive(Debug)]
    struct Wrapped {
        source: std::io::Error,
    }

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "could not read \"x\": {}", self.source)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn prints_each_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(Wrapped { source: io() });
        assert_eq!(error_text(&e), "could not read \"x\": No such file");
        // A context whose text does not repeat its cause still gets the cause appended.
        let e = anyhow::Error::new(io()).context("opening the manifest");
        assert_eq!(error_text(&e), "opening the manifest: No such file");
    }
}
