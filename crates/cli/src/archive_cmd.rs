//! `pgincr archive-push`, `archive-get` and `archive-check`: the WAL archive from
//! `archive_command` and `restore_command`, and what it holds.
//!
//! Exit status: 0 success; 1 failure (the message on stderr), and for `archive-get` also a
//! file that is not in the archive (quietly: PostgreSQL asks for files that need not exist);
//! 2 usage. Nothing is printed on success: PostgreSQL logs what archive and restore commands
//! print.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use pgincr_types::{Lsn, TimeLineId};
use pgincr_wal::archive::{self, Compression, GetOptions, PushOptions};
use pgincr_wal::gap::{self, ReachEnd, TargetTimeline};

/// The default configuration file.
const DEFAULT_CONFIG: &str = "/etc/pgincr/pgincr.toml";

/// Where the archive is: `--archive DIR`, or `--server NAME` (with `--config FILE`).
#[derive(clap::Args, Clone, Debug)]
pub struct Location {
    /// The WAL archive directory (created 0700 if missing).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "server"])]
    archive: Option<PathBuf>,
    /// pgincr.toml; the archive is <repository.path>/<server>/wal [default: /etc/pgincr/pgincr.toml]
    #[arg(long, value_name = "FILE", requires = "server")]
    config: Option<PathBuf>,
    /// The [server.NAME] of the configuration whose archive to use.
    #[arg(long, value_name = "NAME")]
    server: Option<String>,
}

impl Location {
    /// The archive directory, or `Err(None)` for a usage error already printed.
    fn resolve(&self) -> Result<PathBuf, Option<anyhow::Error>> {
        if let Some(a) = &self.archive {
            return Ok(a.clone());
        }
        let Some(server) = &self.server else {
            eprintln!("pgincr: error: say where the archive is: --archive DIR, or --server NAME (with --config FILE)");
            return Err(None);
        };
        let path = self
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        let cfg = load_config(&path).map_err(Some)?;
        if !cfg.server.contains_key(server) {
            return Err(Some(anyhow::anyhow!(
                "config {}: there is no [server.{server}]",
                path.display()
            )));
        }
        Ok(cfg.repository.path.join(server).join("wal"))
    }
}

fn load_config(path: &Path) -> anyhow::Result<pgincr_repository::Config> {
    Ok(pgincr_repository::Config::load(path)?)
}

fn location_or_exit(loc: &Location) -> anyhow::Result<Result<PathBuf, i32>> {
    match loc.resolve() {
        Ok(p) => Ok(Ok(p)),
        Err(None) => Ok(Err(2)),
        Err(Some(e)) => Err(e),
    }
}

/// Archive one WAL file (for archive_command = 'pgincr archive-push %p ...').
#[derive(clap::Args)]
pub struct PushArgs {
    /// The file to archive (%p): a segment, or a .history, .backup or .partial file.
    #[arg(value_name = "PATH")]
    path: PathBuf,
    #[command(flatten)]
    location: Location,
    /// Compress segments and .partial files: gzip, lz4 or zstd, with an optional :LEVEL
    /// (e.g. zstd:3). History and backup files are stored as they are.
    #[arg(long, value_name = "METHOD[:LEVEL]", value_parser = parse_compress)]
    compress: Option<Compression>,
    /// Refuse segments whose long page header carries another system identifier.
    #[arg(long, value_name = "ID")]
    system_identifier: Option<u64>,
    /// Do not record the first segment's system identifier in the archive
    /// (.pgincr-system-identifier) and hold later segments to it.
    #[arg(long)]
    no_pin_system_identifier: bool,
    /// Also push the next N segments that are ready (pg_wal/archive_status/*.ready) in
    /// parallel, so that PostgreSQL's later calls for them find them archived and return at
    /// once. Nothing is acknowledged to PostgreSQL but PATH; failures of the others are left
    /// for PostgreSQL's own calls to report.
    #[arg(long, value_name = "N", default_value_t = 0)]
    ahead: usize,
}

fn parse_compress(s: &str) -> Result<Compression, String> {
    match archive::parse_compression(s) {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err("none: leave --compress out".into()),
        Err(e) => Err(e.to_string()),
    }
}

pub fn push(args: PushArgs) -> anyhow::Result<i32> {
    let dir = match location_or_exit(&args.location)? {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let opts = PushOptions {
        compression: args.compress,
        expected_system_identifier: args.system_identifier,
        pin_system_identifier: !args.no_pin_system_identifier,
        no_sync: false,
    };
    let ahead = archive::ready_after_unarchived(&args.path, &dir, args.ahead);
    let out = std::thread::scope(|sc| {
        for p in &ahead {
            let (dir, opts) = (&dir, &opts);
            sc.spawn(move || {
                let r = archive::push_ahead(p, dir, opts);
                tracing::debug!("ahead {}: {r:?}", p.display());
            });
        }
        archive::push(&args.path, &dir, &opts)
    })?;
    tracing::debug!("{}: {out:?} in {}", args.path.display(), dir.display());
    Ok(0)
}

/// Restore one WAL file (for restore_command = 'pgincr archive-get %f %p ...').
#[derive(clap::Args)]
pub struct GetArgs {
    /// The file wanted (%f).
    #[arg(value_name = "WALFILE")]
    name: String,
    /// Where to write it (%p), atomically.
    #[arg(value_name = "DEST")]
    dest: PathBuf,
    #[command(flatten)]
    location: Location,
    /// With a segment that is not spooled, also fetch the next N segments of its timeline in
    /// parallel into the spool, so that PostgreSQL's next calls only rename a file.
    #[arg(long, value_name = "N", default_value_t = 0)]
    prefetch: usize,
    /// The spool for --prefetch [default: pgincr-spool next to DEST, i.e. pg_wal/pgincr-spool]
    #[arg(long, value_name = "DIR", requires = "prefetch")]
    spool: Option<PathBuf>,
}

pub fn get(args: GetArgs) -> anyhow::Result<i32> {
    let dir = match location_or_exit(&args.location)? {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let spool = args.spool.clone().unwrap_or_else(|| {
        args.dest
            .parent()
            .unwrap_or(Path::new(""))
            .join("pgincr-spool")
    });
    let pf = archive::Prefetch {
        spool,
        count: args.prefetch,
    };
    match archive::get_prefetch(&args.name, &dir, &args.dest, &GetOptions::default(), &pf) {
        Ok(out) => {
            tracing::debug!(
                "{}: {} bytes from {}",
                args.name,
                out.bytes,
                out.stored.display()
            );
            Ok(0)
        }
        // Normal during recovery (the next timeline's history, the segment after the last):
        // exit 1 without a message, so the server log stays readable. -v says it.
        Err(e) if e.is_not_found() => {
            tracing::debug!("{e}");
            Ok(1)
        }
        Err(e) => Err(e.into()),
    }
}

/// Show what the WAL archive holds: per timeline the segments present and any gaps.
#[derive(clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    location: Location,
    /// WAL segment size in MB [default: from the first segment's header, else 16].
    #[arg(long, value_name = "MB")]
    wal_segsize: Option<u64>,
    /// Also follow the WAL from this start (a backup's START WAL LOCATION) and print how far
    /// recovery can get without a gap.
    #[arg(long, value_name = "LSN", requires = "start_tli")]
    start_lsn: Option<Lsn>,
    /// The timeline of --start-lsn.
    #[arg(long, value_name = "TLI", requires = "start_lsn")]
    start_tli: Option<u32>,
    /// The recovery target timeline to follow from --start-lsn: latest, current or a number.
    #[arg(long, value_name = "TLI", default_value = "latest", value_parser = parse_target)]
    target_timeline: TargetTimeline,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn parse_target(s: &str) -> Result<TargetTimeline, String> {
    match s {
        "latest" => Ok(TargetTimeline::Latest),
        "current" => Ok(TargetTimeline::Current),
        n => n
            .parse::<u32>()
            .ok()
            .filter(|&v| v > 0)
            .map(|v| TargetTimeline::Timeline(TimeLineId(v)))
            .ok_or_else(|| format!("\"{n}\": expected latest, current or a timeline number")),
    }
}

/// Exit status 0 when the archive has no gap (nor unreadable history file, nor a gap on the
/// path from --start-lsn), 1 otherwise.
pub fn check(args: CheckArgs) -> anyhow::Result<i32> {
    let dir = match location_or_exit(&args.location)? {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let seg = match args.wal_segsize {
        Some(mb) => {
            let bytes = mb.saturating_mul(1 << 20);
            if !pgincr_wal::segment_name::is_valid_segment_size(bytes) {
                eprintln!("pgincr: error: --wal-segsize {mb}: a power of two from 1 to 1024");
                return Ok(2);
            }
            Some(bytes)
        }
        None => None,
    };
    let ds = gap::scan_dir(&dir, seg)
        .with_context(|| format!("could not scan the archive {}", dir.display()))?;
    let reach = match (args.start_tli, args.start_lsn) {
        (Some(tli), Some(lsn)) => Some(gap::reachable_end(
            &ds.scan,
            &ds.histories,
            TimeLineId(tli),
            lsn,
            args.target_timeline,
        )),
        _ => None,
    };
    let gaps = ds.scan.gaps();
    let bad = !gaps.is_empty()
        || !ds.history_errors.is_empty()
        || matches!(&reach, Some(Ok(r)) if r.kind == ReachEnd::Gap)
        || matches!(&reach, Some(Err(_)));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&dir, &ds, &reach))?
        );
    } else {
        print_text(&dir, &ds, &reach);
    }
    Ok(if bad { 1 } else { 0 })
}

fn seg_json(scan: &gap::ArchiveScan, tli: TimeLineId, first: u64, last: u64) -> serde_json::Value {
    serde_json::json!({
        "first": scan.name(tli, first),
        "last": scan.name(tli, last),
        "segments": last - first + 1,
        "start_lsn": scan.start_lsn(first).to_string(),
        "end_lsn": scan.start_lsn(last.saturating_add(1)).to_string(),
    })
}

fn to_json(
    dir: &Path,
    ds: &gap::DirScan,
    reach: &Option<Result<gap::Reach, gap::ReachError>>,
) -> serde_json::Value {
    let scan = &ds.scan;
    let gaps = scan.gaps();
    let timelines: Vec<serde_json::Value> = scan
        .timelines
        .iter()
        .map(|(&tli, runs)| {
            serde_json::json!({
                "timeline": tli.0,
                "runs": runs.iter().map(|r| seg_json(scan, tli, r.first, r.last)).collect::<Vec<_>>(),
                "gaps": gaps.iter().filter(|g| g.tli == tli)
                    .map(|g| seg_json(scan, tli, g.first, g.last)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let histories: BTreeMap<String, serde_json::Value> = ds
        .histories
        .iter()
        .map(|(tli, h)| {
            (
                tli.0.to_string(),
                h.entries
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "parent": e.parent.0,
                            "switch_lsn": e.switch_lsn.to_string(),
                            "reason": e.reason,
                        })
                    })
                    .collect(),
            )
        })
        .collect();
    let reach = reach.as_ref().map(|r| match r {
        Ok(r) => serde_json::json!({
            "target_timeline": r.target.0,
            "end_lsn": r.end_lsn.to_string(),
            "end_timeline": r.end_tli.0,
            "last_segment": r.last_segment,
            "missing_segment": r.missing_segment,
            "end": match r.kind { ReachEnd::Gap => "gap", ReachEnd::EndOfArchive => "end-of-archive" },
        }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    });
    serde_json::json!({
        "archive": dir.display().to_string(),
        "segment_size": scan.segment_size,
        "timelines": timelines,
        "history_files": scan.histories.iter().map(|t| t.0).collect::<Vec<_>>(),
        "histories": histories,
        "history_errors": ds.history_errors,
        "partial_files": scan.partials,
        "backup_files": scan.backup_files,
        "temporary_files": scan.temporary,
        "unrecognized": scan.unrecognized,
        "reachable": reach,
    })
}

fn print_text(dir: &Path, ds: &gap::DirScan, reach: &Option<Result<gap::Reach, gap::ReachError>>) {
    let scan = &ds.scan;
    let gaps = scan.gaps();
    println!(
        "archive {}: {} MiB segments",
        dir.display(),
        scan.segment_size >> 20
    );
    if scan.timelines.is_empty() {
        println!("no WAL segments");
    }
    for (&tli, runs) in &scan.timelines {
        let n: u64 = runs.iter().map(|r| r.segments()).sum();
        let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
            continue;
        };
        println!(
            "timeline {tli}: {} .. {} ({n} segments, {}..{}){}",
            scan.name(tli, first.first),
            scan.name(tli, last.last),
            scan.start_lsn(first.first),
            scan.start_lsn(last.last.saturating_add(1)),
            if runs.len() > 1 { "" } else { ", no gap" }
        );
        for g in gaps.iter().filter(|g| g.tli == tli) {
            let n = g.last - g.first + 1;
            println!(
                "  gap: {} .. {} missing ({n} segment{}, {}..{})",
                scan.name(tli, g.first),
                scan.name(tli, g.last),
                if n == 1 { "" } else { "s" },
                scan.start_lsn(g.first),
                scan.start_lsn(g.last.saturating_add(1))
            );
        }
    }
    for (tli, h) in &ds.histories {
        let path: Vec<String> = h
            .entries
            .iter()
            .map(|e| format!("{} until {}", e.parent, e.switch_lsn))
            .collect();
        println!("history of timeline {tli}: {}", path.join(", "));
    }
    for e in &ds.history_errors {
        println!("history file error: {e}");
    }
    let list = |what: &str, v: &[String]| {
        if !v.is_empty() {
            println!("{what} ({}): {}", v.len(), v.join(" "));
        }
    };
    list("partial files", &scan.partials);
    list("backup history files", &scan.backup_files);
    list("temporary files (from interrupted pushes)", &scan.temporary);
    list("unrecognized", &scan.unrecognized);
    match reach {
        None => {}
        Some(Ok(r)) => println!(
            "from the start: WAL reachable up to {} on timeline {} (target timeline {}); next needed {} is {}",
            r.end_lsn,
            r.end_tli,
            r.target,
            r.missing_segment,
            match r.kind {
                ReachEnd::Gap => "missing, and later WAL exists: a gap",
                ReachEnd::EndOfArchive => "not archived yet (end of the archive)",
            }
        ),
        Some(Err(e)) => println!("from the start: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_archive_location_from_the_config() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pgincr.toml");
        std::fs::write(
            &p,
            "[repository]\npath = '/r'\n[server.main]\nconninfo = 'host=x'\nmax_incrementals = 3\n[notify]\nx = 1\n",
        )
        .unwrap();
        let loc = Location {
            archive: None,
            config: Some(p.clone()),
            server: Some("main".into()),
        };
        assert_eq!(loc.resolve().unwrap(), PathBuf::from("/r/main/wal"));
        let other = Location {
            server: Some("other".into()),
            ..loc.clone()
        };
        let e = other.resolve().unwrap_err().unwrap().to_string();
        assert!(e.contains("[server.other]"), "{e}");
        std::fs::write(
            &p,
            "[repository]\npath = '/r'\n[server.\"../x\"]\nconninfo = 'h'\n",
        )
        .unwrap();
        let e = loc.resolve().unwrap_err().unwrap().to_string();
        assert!(e.contains("server names"), "{e}");
        std::fs::write(&p, "[server.main]\nconninfo = 'h'\n").unwrap();
        let e = loc.resolve().unwrap_err().unwrap().to_string();
        assert!(e.contains("repository"), "{e}");
    }
}
