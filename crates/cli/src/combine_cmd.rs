//! `pgincr combine`: the command line of `pg_combinebackup`, on pgincr's parallel engine.

use anyhow::Context;
use pgincr_combine::{CombineOptions, CopyMode, OutputFormat, Progress, TablespaceMapping};
use pgincr_types::checksum::ChecksumType;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Reconstruct a full backup from a chain of incremental backups (like pg_combinebackup).
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("copy-method").args(["copy", "copy_file_range", "clone", "link"])))]
pub struct Args {
    /// Output directory (must be absent or empty).
    #[arg(short, long, value_name = "DIRECTORY")]
    output: PathBuf,
    /// Output format: plain (a data directory) or tar (base.tar, <oid>.tar, pg_wal.tar).
    #[arg(short = 'F', long, value_name = "p|t", default_value = "plain", value_parser = parse_format)]
    format: OutputFormat,
    /// Relocate the tablespace in OLDDIR to NEWDIR (`\=` for a literal `=`).
    #[arg(short = 'T', long = "tablespace-mapping", value_name = "OLDDIR=NEWDIR", value_parser = TablespaceMapping::parse)]
    tablespace_mapping: Vec<TablespaceMapping>,
    /// Check the chain and plan every file, but write nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Do not wait for changes to be written safely to disk.
    #[arg(short = 'N', long)]
    no_sync: bool,
    /// Checksum algorithm of the output manifest: CRC32C, SHA224, SHA256, SHA384, SHA512, NONE.
    #[arg(long, value_name = "ALGORITHM", default_value = "CRC32C")]
    manifest_checksums: ChecksumType,
    /// Do not write a backup_manifest.
    #[arg(long)]
    no_manifest: bool,
    /// Copy files (default).
    #[arg(long)]
    copy: bool,
    /// Copy with the copy_file_range() system call.
    #[arg(long)]
    copy_file_range: bool,
    /// Clone (reflink) files instead of copying.
    #[arg(long)]
    clone: bool,
    /// Hard-link files taken whole instead of copying (the output then shares storage with the
    /// inputs: modifying it can damage them).
    #[arg(short = 'k', long)]
    link: bool,
    /// Write through the page cache instead of with direct I/O (direct I/O is used by default
    /// where the file system supports it).
    #[arg(long)]
    no_direct_io: bool,
    /// Write visibility maps exactly as pg_combinebackup does, stale bits included (by default
    /// pgincr clears visibility-map bits that a PostgreSQL 17.0-17.10 / 18.0-18.4 chain
    /// carries for heap pages changed after the map page was backed up).
    #[arg(long)]
    no_vm_repair: bool,
    /// Worker threads (default: one per core).
    #[arg(short, long, value_name = "N", default_value_t = 0)]
    jobs: usize,
    /// Show progress on stderr.
    #[arg(short = 'P', long)]
    progress: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// The backups, oldest (full) first.
    #[arg(required = true, value_name = "BACKUP")]
    backups: Vec<PathBuf>,
}

fn parse_format(s: &str) -> Result<OutputFormat, String> {
    match s {
        "p" | "plain" => Ok(OutputFormat::Plain),
        "t" | "tar" => Ok(OutputFormat::Tar),
        _ => Err(format!(
            "invalid output format \"{s}\", must be \"plain\" or \"tar\""
        )),
    }
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let mut opts = CombineOptions::new(args.backups, args.output);
    opts.tablespace_mappings = args.tablespace_mapping;
    opts.dry_run = args.dry_run;
    opts.no_sync = args.no_sync;
    opts.manifest_checksums = args.manifest_checksums;
    opts.no_manifest = args.no_manifest;
    opts.jobs = args.jobs;
    opts.format = args.format;
    opts.direct_io = !args.no_direct_io;
    opts.vm_repair = !args.no_vm_repair;
    cancel_on_signals(&opts.cancel)?;
    opts.copy_mode = if args.copy_file_range {
        CopyMode::CopyFileRange
    } else if args.clone {
        CopyMode::Clone
    } else if args.link {
        CopyMode::Link
    } else {
        CopyMode::Copy
    };
    let last_print = Mutex::new(Instant::now() - Duration::from_secs(1));
    let show = |p: Progress| {
        let mut last = last_print.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= Duration::from_millis(200) || p.files_done == p.files_total {
            *last = Instant::now();
            let pct = (p.bytes_done * 100)
                .checked_div(p.bytes_total)
                .unwrap_or(100);
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r{}/{} files, {}/{} MB ({pct}%)",
                p.files_done,
                p.files_total,
                p.bytes_done >> 20,
                p.bytes_total >> 20
            );
            if p.files_done == p.files_total {
                let _ = writeln!(err);
            }
        }
    };
    let report = if args.progress {
        pgincr_combine::combine_with_progress(&opts, &show)
    } else {
        pgincr_combine::combine(&opts)
    }
    .context("combine failed")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for w in &report.warnings {
            eprintln!("pgincr: warning: {w}");
        }
        let vm = &report.vm_repair;
        if vm.maps_repaired > 0 {
            eprintln!(
                "pgincr: repaired {} visibility map(s): {} page(s), {} all-visible and {} all-frozen bit(s) cleared for heap pages changed after the map was backed up{}",
                vm.maps_repaired,
                vm.pages_repaired,
                vm.all_visible_cleared,
                vm.all_frozen_cleared,
                if vm.maps_truncated > 0 {
                    format!(", {} map(s) cut to their heap's length", vm.maps_truncated)
                } else {
                    String::new()
                }
            );
        }
        if report.dry_run {
            eprintln!(
                "dry run: the chain of {} backups is valid; {} files would be written ({} reconstructed)",
                report.backups, report.files, report.reconstructed
            );
        }
    }
    Ok(0)
}

/// SIGINT and SIGTERM set `cancel`: the combine stops before its next file and removes its
/// staging directories. A second signal ends the process at once; the next run into the same
/// target then removes what is left.
fn cancel_on_signals(cancel: &std::sync::Arc<std::sync::atomic::AtomicBool>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    let cancel = cancel.clone();
    std::thread::Builder::new()
        .name("pgincr-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if cancel.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    eprintln!("pgincr: stopping at once");
                    std::process::exit(128 + sig);
                }
                eprintln!("\npgincr: cancelling the combine");
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}
