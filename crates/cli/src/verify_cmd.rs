//! `pgincr verify`: offline checks of a backup or data directory. By default what
//! `pg_verifybackup` checks of a plain or tar backup against its manifest, with its flags,
//! plus the WAL inside `pg_wal.tar` and, with data checksums on, every data page;
//! `--check-vm` checks the visibility map against the heap instead.
//!
//! Exit status as `pg_verifybackup`: 0 nothing wrong, 1 a problem found or the check could
//! not run; 2 for a usage error (upstream uses 1 there too).

use anyhow::Context;
use pgincr_verify::{
    BackupFormat, PageChecks, Progress, VerifyOptions, VerifyReport, VmCheckReport,
};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Verify a backup against its manifest (like pg_verifybackup), or check visibility maps.
#[derive(clap::Args)]
pub struct Args {
    /// Check every visibility-map bit against its heap page instead: an all-visible bit on a
    /// page without PD_ALL_VISIBLE, or an all-frozen bit on a page with unfrozen tuples, is
    /// stale (what combined PostgreSQL 17.0-17.10 / 18.0-18.4 chains carry). Works on data
    /// directories too.
    #[arg(long)]
    check_vm: bool,
    /// Stop at the first problem.
    #[arg(short = 'e', long)]
    exit_on_error: bool,
    /// Ignore this relative path (file or directory); may be repeated.
    #[arg(short = 'i', long, value_name = "RELATIVE_PATH")]
    ignore: Vec<PathBuf>,
    /// Use this manifest instead of DIRECTORY/backup_manifest.
    #[arg(short = 'm', long, value_name = "PATH")]
    manifest_path: Option<PathBuf>,
    /// Do not parse the WAL the backup needs.
    #[arg(short = 'n', long)]
    no_parse_wal: bool,
    /// Read the WAL from this directory instead of DIRECTORY/pg_wal (in a tar backup:
    /// pg_wal.tar, or pg_wal/ inside base.tar).
    #[arg(short = 'w', long, visible_alias = "wal-path", value_name = "PATH")]
    wal_directory: Option<PathBuf>,
    /// Backup format, plain or tar (default: tar when DIRECTORY has no PG_VERSION and holds
    /// base.tar or another archive).
    #[arg(short = 'F', long, value_name = "p|t", value_parser = parse_format)]
    format: Option<BackupFormat>,
    /// Check the checksum and header of every page of every relation file, and fail when the
    /// cluster has no data checksums (default: check when pg_control says they are on and -s
    /// is not given).
    #[arg(long, conflicts_with = "no_page_checksums")]
    page_checksums: bool,
    /// Do not check data pages.
    #[arg(long)]
    no_page_checksums: bool,
    /// Show progress (kB verified of the total) on stderr.
    #[arg(short = 'P', long, conflicts_with = "quiet")]
    progress: bool,
    /// Check file presence and sizes only, not checksums.
    #[arg(short = 's', long)]
    skip_checksums: bool,
    /// Print nothing when the backup is fine.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Worker threads for checksums (default: one per core).
    #[arg(short, long, value_name = "N", default_value_t = 0)]
    jobs: usize,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// With --check-vm: stale bits listed per relation (the rest are counted); 0 lists all.
    #[arg(long, value_name = "N", default_value_t = 20)]
    max_per_relation: usize,
    /// The backup (or, with --check-vm, the stopped data directory) to check.
    #[arg(value_name = "DIRECTORY")]
    dir: PathBuf,
}

/// Exit status: 0 nothing wrong, 1 a problem found (or the check failed), 2 usage.
pub fn run(args: Args) -> anyhow::Result<i32> {
    if args.check_vm {
        return check_vm(&args);
    }
    let progress = args.progress.then(|| Arc::new(Progress::default()));
    let opts = VerifyOptions {
        manifest_path: args.manifest_path.clone(),
        ignore: args.ignore.clone(),
        skip_checksums: args.skip_checksums,
        exit_on_error: args.exit_on_error,
        jobs: args.jobs,
        no_parse_wal: args.no_parse_wal,
        wal_directory: args.wal_directory.clone(),
        format: args.format,
        page_checks: if args.page_checksums {
            PageChecks::On
        } else if args.no_page_checksums {
            PageChecks::Off
        } else {
            PageChecks::Auto
        },
        progress: progress.clone(),
    };
    let reporter = progress.map(ProgressReporter::start);
    let result = pgincr_verify::verify_backup(&args.dir, &opts);
    if let Some(r) = reporter {
        r.finish();
    }
    let report = result.with_context(|| format!("could not verify \"{}\"", args.dir.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_verify(&report, &args);
    }
    Ok(if report.is_ok() { 0 } else { 1 })
}

fn parse_format(s: &str) -> Result<BackupFormat, String> {
    match s {
        "p" | "plain" => Ok(BackupFormat::Plain),
        "t" | "tar" => Ok(BackupFormat::Tar),
        _ => Err(format!("unrecognized backup format \"{s}\"; use p or t")),
    }
}

/// `progress_report`: "done/total kB (n%) verified" on stderr, once a second, on one line
/// when stderr is a terminal, and a last line when done.
struct ProgressReporter {
    progress: Arc<Progress>,
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ProgressReporter {
    fn start(progress: Arc<Progress>) -> ProgressReporter {
        let (stop, rx) = std::sync::mpsc::channel::<()>();
        let p = progress.clone();
        let thread = std::thread::spawn(move || loop {
            print_progress(&p, false);
            match rx.recv_timeout(std::time::Duration::from_secs(1)) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        });
        ProgressReporter {
            progress,
            stop,
            thread,
        }
    }

    fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
        print_progress(&self.progress, true);
    }
}

fn print_progress(p: &Progress, finished: bool) {
    let total = p.total.load(Ordering::Relaxed);
    if total == 0 && !finished {
        // Not started: the total is known once the files or archives are listed.
        return;
    }
    let done = p.done.load(Ordering::Relaxed).min(total);
    let percent = (done * 100).checked_div(total).unwrap_or(0);
    let total_kb = (total / 1024).to_string();
    let end = if !finished && std::io::stderr().is_terminal() {
        '\r'
    } else {
        '\n'
    };
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "{:>width$}/{total_kb} kB ({percent}%) verified{end}",
        done / 1024,
        width = total_kb.len()
    );
    let _ = err.flush();
}

fn print_verify(report: &VerifyReport, args: &Args) {
    for p in &report.problems {
        eprintln!("pgincr: error: {}", p.message);
    }
    if report.is_ok() && !args.quiet {
        println!("backup successfully verified");
    } else if !report.is_ok() {
        eprintln!(
            "pgincr: {} problem(s) found in \"{}\"",
            report.problems.len(),
            report.directory.display()
        );
    }
}

fn check_vm(args: &Args) -> anyhow::Result<i32> {
    let report = pgincr_verify::check_vm(&args.dir)
        .with_context(|| format!("could not check \"{}\"", args.dir.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_vm(&report, args.max_per_relation);
    }
    Ok(if report.is_clean() { 0 } else { 1 })
}

fn print_vm(report: &VmCheckReport, max_per_relation: usize) {
    let mut per_relation: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &report.stale {
        let n = per_relation.entry(&s.relation).or_default();
        *n += 1;
        if max_per_relation == 0 || *n <= max_per_relation {
            println!(
                "{}: heap block {}, visibility map block {}: {}",
                s.relation,
                s.heap_block,
                s.vm_block,
                s.kind.describe()
            );
        }
    }
    for (rel, n) in &per_relation {
        if max_per_relation > 0 && *n > max_per_relation {
            println!(
                "{rel}: {} more stale bit(s) not listed",
                n - max_per_relation
            );
        }
    }
    let in_flux = if report.in_flux > 0 {
        format!(
            ", {} on pages changed during the backup (WAL replay settles them)",
            report.in_flux
        )
    } else {
        String::new()
    };
    println!(
        "{}: {} relation(s), {} map page(s), {} all-visible and {} all-frozen bit(s) checked: {} stale in {} relation(s){in_flux}",
        report.directory.display(),
        report.relations,
        report.vm_pages,
        report.all_visible_bits,
        report.all_frozen_bits,
        report.stale.len(),
        per_relation.len()
    );
}
