//! `pgincr info`: rounds and backups, repository size, the recoverable window, warnings, and
//! the same figures in the Prometheus text format for node_exporter's textfile collector.
//! Offline: it reads the repository only, never the server.

use std::collections::BTreeMap;

use pgincr_types::{Lsn, TimeLineId};
use serde::Serialize;

use crate::catalog::{BackupKind, BackupRecord, Catalog, CatalogError, Verification};
use crate::config::ServerConfig;
use crate::rotation::Repository;
use pgincr_wal::gap::{DirScan, ReachEnd};

/// What can be restored from the repository: from the end of the oldest kept backup to the
/// end of the archived WAL that follows it without a gap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    /// The oldest kept backup, which the window starts from.
    pub from_backup: String,
    /// The earliest point in time that can be restored (that backup's end), Unix seconds.
    pub earliest: i64,
    pub earliest_text: String,
    pub earliest_lsn: Lsn,
    /// The timeline the WAL ends on, and the end of the last segment reached without a gap
    /// (the start LSN of the segment after it). `None` without any archived WAL past the
    /// backup: then only the backups themselves can be restored.
    pub timeline: TimeLineId,
    pub latest_lsn: Option<Lsn>,
    pub latest_segment: Option<String>,
    /// The first missing segment, when the archive has more WAL after a hole.
    pub gap_at: Option<String>,
}

impl Window {
    pub fn text(&self) -> String {
        let end = match (&self.latest_segment, self.latest_lsn) {
            (Some(s), Some(l)) => format!("WAL up to {l} ({s}, timeline {})", self.timeline),
            _ => "no archived WAL after it (the backups only)".to_string(),
        };
        let gap = match &self.gap_at {
            Some(g) => format!("; GAP: {g} is missing, WAL after it is unusable"),
            None => String::new(),
        };
        format!(
            "from {} (end of {}) to {end}{gap}",
            self.earliest_text, self.from_backup
        )
    }
}

/// The recoverable window of `catalog` with the repository's WAL archive.
pub fn window(repo: &Repository, catalog: &Catalog) -> Result<Window, CatalogError> {
    let oldest = catalog
        .backups
        .iter()
        .min_by_key(|b| (b.restorable_from(), b.name.clone()))
        .ok_or_else(|| CatalogError::Backup {
            name: String::new(),
            message: "no backups".into(),
        })?;
    let seg_size = segment_size(repo, catalog);
    Ok(window_from(oldest, &archive_scan(repo, seg_size)))
}

/// The repository's WAL archive, sorted out, with its history files read.
pub fn archive_scan(repo: &Repository, seg_size: u64) -> DirScan {
    match pgincr_wal::gap::scan_dir(&repo.wal_dir(), Some(seg_size)) {
        Ok(s) => s,
        // A missing archive is an empty one.
        Err(_) => DirScan {
            scan: pgincr_wal::gap::scan_names(std::iter::empty::<&str>(), seg_size),
            ..DirScan::default()
        },
    }
}

/// How many files the scanned archive holds.
fn archive_files(scan: &pgincr_wal::gap::ArchiveScan) -> usize {
    let segments: u64 = scan
        .timelines
        .values()
        .flat_map(|runs| runs.iter().map(|r| r.segments()))
        .sum();
    usize::try_from(segments).unwrap_or(usize::MAX)
        + scan.histories.len()
        + scan.partials.len()
        + scan.backup_files.len()
        + scan.temporary.len()
        + scan.unrecognized.len()
}

/// The WAL segment size of the cluster, from a plain backup's pg_control; 16 MB otherwise.
pub fn segment_size(repo: &Repository, catalog: &Catalog) -> u64 {
    segment_size_of(
        catalog
            .backups
            .iter()
            .rev()
            .map(|b| repo.backup_path(&b.name)),
    )
}

/// The WAL segment size from the first of `dirs` that is a plain backup (its pg_control);
/// 16 MB when none is.
pub fn segment_size_of(dirs: impl IntoIterator<Item = std::path::PathBuf>) -> u64 {
    dirs.into_iter()
        .find_map(|d| {
            let p = d.join("global/pg_control");
            let bytes = pgincr_types::read_bounded(&p, 1 << 20, "pg_control").ok()?;
            pgincr_types::ControlFile::parse(&bytes, &p)
                .ok()
                .map(|c| u64::from(c.xlog_seg_size))
        })
        .unwrap_or(16 << 20)
}

/// Follows the archive from `oldest`'s start the way recovery does (the history files
/// lead to the newest timeline, a parent's segment past a switch point is not on the path)
/// until a segment is missing.
pub fn window_from(oldest: &BackupRecord, archive: &DirScan) -> Window {
    window_towards(oldest, archive, pgincr_wal::gap::TargetTimeline::Latest)
}

/// [`window_from`] heading for `target` (`recovery_target_timeline`).
pub fn window_towards(
    oldest: &BackupRecord,
    archive: &DirScan,
    target: pgincr_wal::gap::TargetTimeline,
) -> Window {
    let reach = pgincr_wal::gap::reachable_end(
        &archive.scan,
        &archive.histories,
        oldest.timeline,
        oldest.start_lsn,
        target,
    );
    let (timeline, latest_lsn, latest_segment, gap_at) = match reach {
        Ok(r) => (
            r.end_tli,
            r.last_segment.is_some().then_some(r.end_lsn),
            r.last_segment,
            (r.kind == ReachEnd::Gap).then_some(r.missing_segment),
        ),
        Err(e) => (oldest.timeline, None, None, Some(e.to_string())),
    };
    Window {
        from_backup: oldest.name.clone(),
        earliest: oldest.restorable_from(),
        earliest_text: pgincr_types::time::format_utc(oldest.restorable_from(), None, "UTC"),
        earliest_lsn: oldest.end_lsn,
        timeline,
        latest_lsn,
        latest_segment,
        gap_at,
    }
}

/// One round in `pgincr info`.
#[derive(Debug, Clone, Serialize)]
pub struct RoundInfo {
    pub round: u32,
    pub backups: Vec<BackupRecord>,
    pub bytes: u64,
    pub complete: bool,
    pub verified: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub server: String,
    pub repository: String,
    pub rounds: Vec<RoundInfo>,
    pub repository_bytes: u64,
    pub archived_wal_files: usize,
    /// Newest archived WAL file and when it arrived (its modification time: only for
    /// monitoring whether archiving runs, never for decisions).
    pub newest_wal: Option<String>,
    pub newest_wal_time: Option<i64>,
    pub window: Option<Window>,
    pub warnings: Vec<String>,
    pub failures: Vec<crate::catalog::Event>,
    /// The newest restore test (`pgincr drill`), if any.
    pub last_drill: Option<crate::catalog::DrillRecord>,
}

/// Gathers `pgincr info` for one server at `now`.
pub fn info(
    repo: &Repository,
    sc: &ServerConfig,
    catalog: &Catalog,
    now: i64,
) -> Result<Info, CatalogError> {
    let mut rounds: BTreeMap<u32, Vec<BackupRecord>> = BTreeMap::new();
    for b in &catalog.backups {
        rounds.entry(b.round).or_default().push(b.clone());
    }
    let rounds: Vec<RoundInfo> = rounds
        .into_iter()
        .map(|(round, backups)| RoundInfo {
            round,
            bytes: backups.iter().map(|b| b.bytes).sum(),
            complete: backups.iter().any(|b| b.index >= sc.max_incrementals),
            verified: backups
                .iter()
                .all(|b| matches!(b.verification, Verification::Passed { .. })),
            backups,
        })
        .collect();
    let seg_size = segment_size(repo, catalog);
    // One listing of the archive serves the counts, the newest segment and the window.
    let scan = archive_scan(repo, seg_size);
    let archived_wal_files = archive_files(&scan.scan);
    // The highest segment number, on its newest timeline: the newest WAL, not the newest name.
    let newest_wal = scan
        .scan
        .timelines
        .iter()
        .filter_map(|(tli, runs)| runs.last().map(|r| (r.last, *tli)))
        .max()
        .map(|(segno, tli)| scan.scan.name(tli, segno));
    let newest_wal_time = newest_wal.as_ref().and_then(|n| {
        ["", ".zst", ".lz4", ".gz"].iter().find_map(|suffix| {
            std::fs::metadata(repo.wal_dir().join(format!("{n}{suffix}")))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_secs()).ok())
        })
    });
    let window = catalog
        .backups
        .iter()
        .min_by_key(|b| (b.restorable_from(), b.name.clone()))
        .map(|oldest| window_from(oldest, &scan));
    let mut warnings = Vec::new();
    if let Some(g) = window.as_ref().and_then(|w| w.gap_at.as_ref()) {
        warnings.push(format!(
            "the WAL archive has a gap: {g} is missing, so point-in-time recovery cannot go past it; check archive_command and the server log"
        ));
    }
    for b in catalog.missing_parents() {
        warnings.push(format!(
            "backup {} has no parent in the repository ({}): it cannot be restored",
            b.name,
            b.parent.as_deref().unwrap_or("none recorded")
        ));
    }
    for b in &catalog.backups {
        if let Verification::Failed { reason, .. } = &b.verification {
            warnings.push(format!("backup {} failed verification: {reason}", b.name));
        }
    }
    match catalog.drills.last() {
        Some(d) if !d.ok => warnings.push(format!(
            "the last restore test ({}) FAILED: {}",
            pgincr_types::time::format_utc(d.time, None, "UTC"),
            d.error
                .clone()
                .unwrap_or_else(|| format!("checks failed: {}", d.failed_checks.join(", ")))
        )),
        None if !catalog.backups.is_empty() => {
            warnings.push("no restore test yet: `pgincr drill` proves the backups restore".into())
        }
        _ => {}
    }
    match (catalog.newest(), sc.warn_backup_age) {
        (None, _) => warnings.push("no backups yet: run `pgincr run`".into()),
        (Some(n), Some(max))
            if now.saturating_sub(n.start_time) > i64::try_from(max).unwrap_or(i64::MAX) =>
        {
            warnings.push(format!(
                "the newest backup {} is older than warn_backup_age ({} s): is the timer running?",
                n.name, max
            ))
        }
        _ => {}
    }
    match (newest_wal_time, sc.warn_wal_age) {
        (None, _) if !catalog.backups.is_empty() => warnings.push(format!(
            "the WAL archive {} is empty: point archive_command at it (`pgincr check` tests it)",
            repo.wal_dir().display()
        )),
        (Some(t), Some(max)) if now.saturating_sub(t) > i64::try_from(max).unwrap_or(i64::MAX) => {
            warnings.push(format!(
                "the newest archived WAL arrived {} s ago, more than warn_wal_age ({max} s): is archiving failing? (see pg_stat_archiver)",
                now.saturating_sub(t)
            ))
        }
        _ => {}
    }
    Ok(Info {
        server: repo.server().to_string(),
        repository: repo.server_dir().display().to_string(),
        repository_bytes: repo.storage().size(repo.server()).unwrap_or(0),
        archived_wal_files,
        newest_wal,
        newest_wal_time,
        rounds,
        window,
        warnings,
        failures: catalog.events.iter().rev().take(5).cloned().collect(),
        last_drill: catalog.drills.last().cloned(),
    })
}

impl Info {
    /// The human listing.
    pub fn text(&self) -> String {
        use crate::report::human_bytes;
        let mut t = format!(
            "server {} ({}): {} round(s), {}, {} archived WAL file(s)\n",
            self.server,
            self.repository,
            self.rounds.len(),
            human_bytes(self.repository_bytes),
            self.archived_wal_files
        );
        for r in &self.rounds {
            t.push_str(&format!(
                "  round {}: {} backup(s), {}, {}, {}\n",
                r.round,
                r.backups.len(),
                human_bytes(r.bytes),
                if r.complete { "complete" } else { "open" },
                if r.verified {
                    "verified"
                } else {
                    "NOT all verified"
                }
            ));
            for b in &r.backups {
                let kind = match (&b.kind, &b.origin) {
                    (BackupKind::Full, crate::catalog::Origin::Synthetic { .. }) => "FULL*",
                    (BackupKind::Full, _) => "FULL",
                    (BackupKind::Incremental, _) => "INCR",
                };
                t.push_str(&format!(
                    "    {:<26} {kind:<5} {:>10}  {} .. {} tli {}  {}{}\n",
                    b.name,
                    human_bytes(b.bytes),
                    b.start_lsn,
                    b.end_lsn,
                    b.timeline,
                    match &b.verification {
                        Verification::Passed { .. } => "verified",
                        Verification::Failed { .. } => "FAILED verification",
                        Verification::NotVerified => "not verified",
                    },
                    b.parent
                        .as_ref()
                        .map(|p| format!("  parent {p}"))
                        .unwrap_or_default()
                ));
            }
        }
        if self.rounds.iter().any(|r| {
            r.backups
                .iter()
                .any(|b| matches!(b.origin, crate::catalog::Origin::Synthetic { .. }))
        }) {
            t.push_str(
                "  (FULL* = synthetic: combined in the repository from the previous round)\n",
            );
        }
        match &self.window {
            Some(w) => t.push_str(&format!("  recoverable: {}\n", w.text())),
            None => t.push_str("  recoverable: nothing (no backups)\n"),
        }
        if let Some(n) = &self.newest_wal {
            t.push_str(&format!("  newest archived WAL: {n}\n"));
        }
        if let Some(d) = &self.last_drill {
            t.push_str(&format!(
                "  last drill: {} of {} at {}: RTO {:.1} s (restore {:.1} s + recovery {:.1} s), RPO {}\n",
                if d.ok { "passed" } else { "FAILED" },
                d.backup,
                pgincr_types::time::format_utc(d.time, None, "UTC"),
                d.rto_secs,
                d.restore_secs,
                d.recovery_secs,
                d.rpo_secs.map_or("-".to_string(), |r| format!("{r:.0} s"))
            ));
        }
        for e in &self.failures {
            t.push_str(&format!(
                "  failed run at {}: {}\n",
                pgincr_types::time::format_utc(e.time, None, "UTC"),
                e.reason
            ));
        }
        for w in &self.warnings {
            t.push_str(&format!("  warning: {w}\n"));
        }
        t
    }

    /// The Prometheus text exposition format (node_exporter's textfile collector).
    pub fn prometheus(&self, now: i64) -> String {
        let s = escape_label(&self.server);
        let mut out = String::new();
        let mut metric = |name: &str, help: &str, samples: Vec<(String, f64)>| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            for (labels, v) in samples {
                out.push_str(&format!("{name}{{server=\"{s}\"{labels}}} {v}\n"));
            }
        };
        let newest = |kind: BackupKind| {
            self.rounds
                .iter()
                .flat_map(|r| r.backups.iter())
                .filter(|b| b.kind == kind)
                .max_by_key(|b| b.name.clone())
        };
        let kinds = [
            (BackupKind::Full, "full"),
            (BackupKind::Incremental, "incremental"),
        ];
        metric(
            "pgincr_backup_newest_age_seconds",
            "Age of the newest backup of each type.",
            kinds
                .iter()
                .filter_map(|(k, l)| {
                    newest(*k).map(|b| {
                        (
                            format!(",type=\"{l}\""),
                            now.saturating_sub(b.restorable_from()) as f64,
                        )
                    })
                })
                .collect(),
        );
        metric(
            "pgincr_backup_newest_size_bytes",
            "Repository bytes of the newest backup of each type.",
            kinds
                .iter()
                .filter_map(|(k, l)| newest(*k).map(|b| (format!(",type=\"{l}\""), b.bytes as f64)))
                .collect(),
        );
        metric(
            "pgincr_backups",
            "Backups in the repository, by type.",
            kinds
                .iter()
                .map(|(k, l)| {
                    (
                        format!(",type=\"{l}\""),
                        self.rounds
                            .iter()
                            .flat_map(|r| r.backups.iter())
                            .filter(|b| b.kind == *k)
                            .count() as f64,
                    )
                })
                .collect(),
        );
        metric(
            "pgincr_repository_size_bytes",
            "Bytes the server's repository holds (backups and WAL).",
            vec![(String::new(), self.repository_bytes as f64)],
        );
        if let Some(w) = &self.window {
            metric(
                "pgincr_recovery_window_start_timestamp_seconds",
                "Earliest restorable point: end of the oldest kept backup.",
                vec![(String::new(), w.earliest as f64)],
            );
            metric(
                "pgincr_recovery_window_end_lsn",
                "End of the archived WAL reachable without a gap, as a byte position.",
                vec![(String::new(), w.latest_lsn.map_or(0.0, |l| l.0 as f64))],
            );
            metric(
                "pgincr_wal_archive_gap",
                "1 when the archived WAL has a gap after the oldest kept backup.",
                vec![(String::new(), if w.gap_at.is_some() { 1.0 } else { 0.0 })],
            );
        }
        if let Some(t) = self.newest_wal_time {
            metric(
                "pgincr_wal_newest_age_seconds",
                "Seconds since the newest archived WAL file arrived.",
                vec![(String::new(), now.saturating_sub(t) as f64)],
            );
        }
        if let Some(d) = &self.last_drill {
            metric(
                "pgincr_drill_success",
                "1 when the newest restore test passed.",
                vec![(String::new(), if d.ok { 1.0 } else { 0.0 })],
            );
            metric(
                "pgincr_drill_age_seconds",
                "Seconds since the newest restore test.",
                vec![(String::new(), now.saturating_sub(d.time) as f64)],
            );
            metric(
                "pgincr_drill_rto_seconds",
                "The newest restore test's time from start to accepting connections.",
                vec![(String::new(), d.rto_secs)],
            );
            if let Some(r) = d.rpo_secs {
                metric(
                    "pgincr_drill_rpo_seconds",
                    "The newest restore test's age of the last replayed transaction at the test's start.",
                    vec![(String::new(), r)],
                );
            }
        }
        metric(
            "pgincr_warnings",
            "Warnings `pgincr info` prints for this server.",
            vec![(String::new(), self.warnings.len() as f64)],
        );
        out
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Origin;

    fn backup(name: &str, start: u64, tli: u32) -> BackupRecord {
        BackupRecord {
            name: name.into(),
            kind: BackupKind::Full,
            origin: Origin::Server,
            parent: None,
            round: 1,
            index: 0,
            start_lsn: Lsn(start),
            end_lsn: Lsn(start + 100),
            timeline: TimeLineId(tli),
            system_identifier: Some(1),
            start_time: 1_000,
            end_time: Some(1_010),
            bytes: 0,
            files: 0,
            duration_secs: None,
            verification: Verification::NotVerified,
        }
    }

    const SEG: u64 = 16 << 20;

    fn seg(tli: u32, n: u64) -> String {
        pgincr_wal::segment_name::segment_file_name(TimeLineId(tli), n, SEG)
    }

    fn scan(names: &[String], histories: &[(u32, &str)]) -> DirScan {
        DirScan {
            scan: pgincr_wal::gap::scan_names(names, SEG),
            histories: histories
                .iter()
                .map(|(t, text)| {
                    (
                        TimeLineId(*t),
                        pgincr_wal::gap::parse_history(TimeLineId(*t), text.as_bytes()).unwrap(),
                    )
                })
                .collect(),
            history_errors: Vec::new(),
        }
    }

    #[test]
    fn window_follows_segments_and_finds_the_gap() {
        let b = backup("2025-01-23-050002_FULL_0", 3 * SEG + 40, 1);
        let names = vec![seg(1, 3), seg(1, 4), seg(1, 5), seg(1, 7)];
        let w = window_from(&b, &scan(&names, &[]));
        assert_eq!(w.latest_segment.as_deref(), Some(seg(1, 5).as_str()));
        assert_eq!(w.latest_lsn, Some(Lsn(6 * SEG)));
        assert_eq!(w.gap_at.as_deref(), Some(seg(1, 6).as_str()));
        assert!(w.text().contains("GAP"));
    }

    #[test]
    fn window_follows_a_timeline_switch() {
        let b = backup("2025-01-23-050002_FULL_0", 3 * SEG, 1);
        // Timeline 2 forks from 1 in segment 4.
        let names = vec![
            seg(1, 3),
            seg(1, 4),
            seg(2, 4),
            seg(2, 5),
            "00000002.history".to_string(),
        ];
        let w = window_from(
            &b,
            &scan(
                &names,
                &[(2, "1\t0/4800000\tno recovery target specified\n")],
            ),
        );
        assert_eq!(w.timeline, TimeLineId(2));
        assert_eq!(w.latest_segment.as_deref(), Some(seg(2, 5).as_str()));
        assert_eq!(w.gap_at, None);
    }

    #[test]
    fn no_wal_after_the_backup() {
        let b = backup("2025-01-23-050002_FULL_0", 9 * SEG, 1);
        let w = window_from(&b, &scan(&[seg(1, 3)], &[]));
        assert_eq!((w.latest_lsn, w.gap_at.clone()), (None, None));
        assert!(w.text().contains("backups only"));
    }
}
