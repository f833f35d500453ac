//! Which backups a restore combines, and whether the archived WAL gets it to the target:
//! decided before a byte is written, each refusal with the restorable window.

use std::path::PathBuf;

use pgincr_repository::catalog::{BackupRecord, Catalog};
use pgincr_repository::info::{window_from, Window};
use pgincr_repository::Repository;
use pgincr_types::{Lsn, TimeLineId};
use pgincr_wal::{DirectorySource, ReaderOptions, RecordBody, WalReader, XactKind};
use serde::Serialize;

use crate::target::{Target, TargetOptions};
use crate::RestoreError;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800 * 1_000_000;

/// The decision.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Full first.
    pub chain: Vec<String>,
    pub chain_dirs: Vec<PathBuf>,
    pub target: TargetOptions,
    /// Where the target is in the WAL, when pgincr located it (`--lsn`, `--name`, `--xid`).
    pub target_lsn: Option<Lsn>,
    /// The window the repository can restore to.
    pub window: Window,
    /// The archive directory recovery reads.
    pub archive: PathBuf,
    pub timeline: TimeLineId,
}

/// Picks the chain for `opts` from the repository's catalog; `backup` overrides the choice.
pub fn plan(
    repo: &Repository,
    catalog: &Catalog,
    opts: &TargetOptions,
    backup: Option<&str>,
) -> Result<Plan, RestoreError> {
    if catalog.backups.is_empty() {
        return Err(RestoreError::Plan(format!(
            "the repository {} holds no backups",
            repo.server_dir().display()
        )));
    }
    let seg_size = pgincr_repository::info::segment_size(repo, catalog);
    let scan = pgincr_repository::info::archive_scan(repo, seg_size);
    plan_in(
        catalog,
        &|n: &str| repo.backup_path(n),
        &repo.wal_dir(),
        &scan,
        seg_size,
        opts,
        backup,
    )
}

/// Plans a restore of explicit backup directories (full first, each the parent of the
/// next) with WAL from `archive`: the chain is the one given, the target is checked
/// against it and the archive.
pub fn plan_dirs(
    dirs: &[PathBuf],
    archive: &std::path::Path,
    opts: &TargetOptions,
) -> Result<Plan, RestoreError> {
    let mut catalog = Catalog::default();
    let mut parent: Option<String> = None;
    for (i, d) in dirs.iter().enumerate() {
        let mut rec = pgincr_repository::catalog::record_from_dir(d)?;
        // The names must be unique for the chain: the position keeps them apart.
        rec.name = format!("{i:03}-{}", rec.name);
        rec.parent = parent.clone();
        rec.round = 1;
        parent = Some(rec.name.clone());
        catalog.backups.push(rec);
    }
    let last = catalog
        .backups
        .last()
        .map(|b| b.name.clone())
        .ok_or_else(|| RestoreError::Plan("no backup directories given".into()))?;
    let seg_size = pgincr_repository::info::segment_size_of(dirs.iter().cloned());
    let scan = pgincr_wal::gap::scan_dir(archive, Some(seg_size)).map_err(|e| {
        RestoreError::Plan(format!(
            "reading the WAL archive {}: {e}",
            archive.display()
        ))
    })?;
    let by_name: Vec<(String, PathBuf)> = catalog
        .backups
        .iter()
        .map(|b| b.name.clone())
        .zip(dirs.iter().cloned())
        .collect();
    let dir_of = |n: &str| {
        by_name
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, d)| d.clone())
            .unwrap_or_default()
    };
    let mut p = plan_in(
        &catalog,
        &dir_of,
        archive,
        &scan,
        seg_size,
        opts,
        Some(&last),
    )?;
    p.chain = dirs.iter().map(|d| d.display().to_string()).collect();
    Ok(p)
}

#[allow(clippy::too_many_arguments)]
fn plan_in(
    catalog: &Catalog,
    dir_of: &dyn Fn(&str) -> PathBuf,
    archive: &std::path::Path,
    scan: &pgincr_wal::gap::DirScan,
    seg_size: u64,
    opts: &TargetOptions,
    backup: Option<&str>,
) -> Result<Plan, RestoreError> {
    let oldest = catalog
        .backups
        .iter()
        .min_by_key(|b| (b.end_lsn, b.name.clone()))
        .ok_or_else(|| RestoreError::Plan("no backups".into()))?;
    let window = window_from(oldest, scan);
    let archive = archive.to_path_buf();
    let refuse = |why: String| {
        RestoreError::Plan(format!(
            "{why}; the repository can restore {}",
            window.text()
        ))
    };
    let mut target_lsn = None;
    let chosen: &BackupRecord = if let Some(name) = backup {
        catalog
            .get(name)
            .ok_or_else(|| RestoreError::Plan(format!("no backup {name} in the catalog")))?
    } else {
        match &opts.target {
            Target::End | Target::Immediate => {
                newest(catalog, |_| true).ok_or_else(|| refuse("no backup".into()))?
            }
            Target::Lsn(l) => {
                target_lsn = Some(*l);
                newest(catalog, |b| b.end_lsn <= *l).ok_or_else(|| {
                    refuse(format!(
                        "LSN {l} is before the end of the oldest kept backup ({})",
                        oldest.end_lsn
                    ))
                })?
            }
            Target::Time { text, unix_micros } => newest(catalog, |b| {
                b.restorable_from().saturating_mul(1_000_000) <= *unix_micros
            })
            .ok_or_else(|| {
                refuse(format!(
                    "{text} is before the end of the oldest kept backup"
                ))
            })?,
            Target::Name(n) => {
                let lsn = locate(&archive, oldest, seg_size, |r, body| match body {
                    RecordBody::RestorePoint { name, .. } if name == n => Some(r.lsn),
                    _ => None,
                })?
                .ok_or_else(|| refuse(format!("no restore point named \"{n}\" in the archived WAL after the oldest kept backup")))?;
                target_lsn = Some(lsn);
                newest(catalog, |b| b.end_lsn <= lsn).ok_or_else(|| {
                    refuse(format!(
                        "restore point \"{n}\" at {lsn} is before the end of every kept backup"
                    ))
                })?
            }
            Target::Xid(x) => {
                let lsn = locate(&archive, oldest, seg_size, |r, body| match body {
                    RecordBody::Xact(xb)
                        if matches!(xb.kind, XactKind::Commit | XactKind::Abort | XactKind::CommitPrepared | XactKind::AbortPrepared)
                            && u64::from(xb.target_xid(r.xid)) == *x =>
                    {
                        Some(r.lsn)
                    }
                    _ => None,
                })?
                .ok_or_else(|| refuse(format!("transaction {x} does not commit or abort in the archived WAL after the oldest kept backup")))?;
                target_lsn = Some(lsn);
                newest(catalog, |b| b.end_lsn <= lsn).ok_or_else(|| {
                    refuse(format!(
                        "transaction {x} ends at {lsn}, before the end of every kept backup"
                    ))
                })?
            }
        }
    };
    let chain = catalog.chain(&chosen.name).ok_or_else(|| {
        RestoreError::Plan(format!(
            "backup {} cannot be restored: a backup it depends on is missing from the repository",
            chosen.name
        ))
    })?;
    // The WAL from the chosen backup's start must be there without a gap to the target.
    let towards = match opts.timeline.as_deref() {
        None | Some("latest") => pgincr_wal::gap::TargetTimeline::Latest,
        Some("current") => pgincr_wal::gap::TargetTimeline::Current,
        Some(n) => match n.parse::<u32>() {
            Ok(t) => pgincr_wal::gap::TargetTimeline::Timeline(TimeLineId(t)),
            Err(_) => {
                return Err(RestoreError::Plan(format!(
                    "invalid --timeline \"{n}\": current, latest or a timeline number"
                )))
            }
        },
    };
    let reach = pgincr_repository::info::window_towards(chosen, scan, towards);
    let needed = match (&opts.target, target_lsn) {
        (Target::Immediate, _) => Some(chosen.end_lsn),
        (_, Some(l)) => Some(l),
        // End and time: every archived segment up to the first gap; at least the backup's end.
        _ => Some(chosen.end_lsn),
    };
    if let Some(n) = needed {
        // The restore starts with an empty pg_wal: every segment comes from the archive.
        if reach.latest_lsn.is_none_or(|l| l <= n) {
            return Err(match &reach.gap_at {
                Some(g) => refuse(format!("WAL segment {g} is missing from the archive {}, and backup {} needs WAL up to {n}", archive.display(), chosen.name)),
                None => refuse(format!("the archive {} does not hold the WAL from backup {}'s start ({}) to {n}", archive.display(), chosen.name, chosen.start_lsn)),
            });
        }
    }
    if let Target::Time { text, unix_micros } = &opts.target {
        // The archived WAL must reach past the target time, or PostgreSQL ends recovery with
        // "recovery ended before configured recovery target was reached".
        let last = last_commit_time(&archive, chosen, seg_size)?;
        if last.is_none_or(|t| t < *unix_micros) {
            return Err(refuse(format!(
                "{text} is after the last transaction in the archived WAL ({})",
                last.map_or("none after the backup".to_string(), |t| {
                    pgincr_types::time::format_utc(t / 1_000_000, Some(t % 1_000_000), "UTC")
                })
            )));
        }
    }
    let chain_names: Vec<String> = chain.iter().map(|b| b.name.clone()).collect();
    Ok(Plan {
        chain_dirs: chain.iter().map(|b| dir_of(&b.name)).collect(),
        chain: chain_names,
        target: opts.clone(),
        target_lsn,
        window,
        archive,
        timeline: chosen.timeline,
    })
}

fn newest(catalog: &Catalog, keep: impl Fn(&BackupRecord) -> bool) -> Option<&BackupRecord> {
    catalog
        .backups
        .iter()
        .filter(|b| keep(b))
        .max_by_key(|b| (b.end_lsn, b.name.clone()))
}

/// Reads the archived WAL from `from`'s start to its end and returns the first `pick` hit.
fn locate(
    archive: &std::path::Path,
    from: &BackupRecord,
    seg_size: u64,
    mut pick: impl FnMut(&pgincr_wal::Record, &RecordBody) -> Option<Lsn>,
) -> Result<Option<Lsn>, RestoreError> {
    let mut found = None;
    scan(archive, from, seg_size, |r, body| {
        if found.is_none() {
            found = pick(r, body);
        }
        found.is_none()
    })?;
    Ok(found)
}

/// The time of the last commit or abort in the archived WAL after `from`'s start, in Unix
/// microseconds.
fn last_commit_time(
    archive: &std::path::Path,
    from: &BackupRecord,
    seg_size: u64,
) -> Result<Option<i64>, RestoreError> {
    let mut last = None;
    scan(archive, from, seg_size, |_, body| {
        if let RecordBody::Xact(x) = body {
            last = Some(x.time.saturating_add(PG_EPOCH_MICROS));
        }
        true
    })?;
    Ok(last)
}

/// Walks the archived WAL on `from`'s timeline from its start to the end of the archive,
/// while `f` returns true.
fn scan(
    archive: &std::path::Path,
    from: &BackupRecord,
    seg_size: u64,
    mut f: impl FnMut(&pgincr_wal::Record, &RecordBody) -> bool,
) -> Result<(), RestoreError> {
    let mut o = ReaderOptions::new(from.timeline, from.start_lsn);
    o.segment_size = Some(seg_size);
    o.strict = false;
    let mut r = WalReader::new(DirectorySource::new(archive), o).map_err(|e| {
        RestoreError::Plan(format!(
            "reading the archived WAL in {}: {e}",
            archive.display()
        ))
    })?;
    while let Some(rec) = r.next_record().map_err(|e| {
        RestoreError::Plan(format!(
            "reading the archived WAL in {}: {e}",
            archive.display()
        ))
    })? {
        if let Ok(body) = rec.decode() {
            if !f(&rec, &body) {
                break;
            }
        }
    }
    Ok(())
}
