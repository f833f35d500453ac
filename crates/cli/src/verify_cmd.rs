//! `pgincr verify`: offline checks of a data directory or a plain backup. Today the
//! visibility-map check (`--check-vm`); the checks of `pg_verifybackup` come next.

use anyhow::Context;
use pgincr_verify::VmCheckReport;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Check a data directory or a plain backup, offline.
#[derive(clap::Args)]
pub struct Args {
    /// Check every visibility-map bit against its heap page: an all-visible bit on a page
    /// without PD_ALL_VISIBLE, or an all-frozen bit on a page with unfrozen tuples, is stale
    /// (what combined PostgreSQL 17.0-17.10 / 18.0-18.4 chains carry).
    #[arg(long, required = true)]
    check_vm: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Stale bits listed per relation (the rest are counted); 0 lists all.
    #[arg(long, value_name = "N", default_value_t = 20)]
    max_per_relation: usize,
    /// The data directory or plain backup to check (stopped server, or a backup).
    #[arg(value_name = "DIRECTORY")]
    dir: PathBuf,
}

/// Exit status: 0 nothing stale, 1 stale bits found (or the check failed), 2 usage.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let report = pgincr_verify::check_vm(&args.dir)
        .with_context(|| format!("could not check \"{}\"", args.dir.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report, args.max_per_relation);
    }
    Ok(if report.is_clean() { 0 } else { 1 })
}

fn print_text(report: &VmCheckReport, max_per_relation: usize) {
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
