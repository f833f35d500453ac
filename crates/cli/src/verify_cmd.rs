//! `pgincr verify`: offline checks of a backup or data directory. By default what
//! `pg_verifybackup` checks of a plain backup against its manifest, with its flags;
//! `--check-vm` checks the visibility map against the heap instead.

use anyhow::Context;
use pgincr_verify::{VerifyOptions, VerifyReport, VmCheckReport};
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    /// Read the WAL from this directory instead of DIRECTORY/pg_wal.
    #[arg(short = 'w', long, value_name = "PATH")]
    wal_directory: Option<PathBuf>,
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
    let opts = VerifyOptions {
        manifest_path: args.manifest_path.clone(),
        ignore: args.ignore.clone(),
        skip_checksums: args.skip_checksums,
        exit_on_error: args.exit_on_error,
        jobs: args.jobs,
        no_parse_wal: args.no_parse_wal,
        wal_directory: args.wal_directory.clone(),
    };
    let report = pgincr_verify::verify_backup(&args.dir, &opts)
        .with_context(|| format!("could not verify \"{}\"", args.dir.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_verify(&report, &args);
    }
    Ok(if report.is_ok() { 0 } else { 1 })
}

fn print_verify(report: &VerifyReport, args: &Args) {
    for p in &report.problems {
        eprintln!("pgincr: error: {}", p.message);
    }
    if report.is_ok() && !args.quiet {
        println!("backup successfully verified");
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
