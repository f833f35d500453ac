//! Checks before an incremental backup, each refusal saying how to fix it.

use std::path::Path;

use pgincr_protocol::{Config, Connection};
use pgincr_types::manifest::{Manifest, WalRange};
use pgincr_types::Lsn;

use crate::error::{BackupError, Refusal, Result};

/// Reads and verifies the prior backup's manifest. Returns its bytes (sent verbatim) and the
/// parsed form.
pub(crate) fn read_old_manifest(path: &Path) -> Result<(Vec<u8>, Manifest)> {
    // Bounded and type-checked: a FIFO or device given as -i is refused at once instead of
    // blocking or being read until memory runs out.
    let bytes = pgincr_types::read_bounded(
        path,
        pgincr_types::bounded::MANIFEST_LIMIT,
        "prior backup manifest",
    )
    .map_err(|e| {
        BackupError::refused(
            Refusal::PriorManifest,
            format!("{e}; -i takes the backup_manifest file of the previous backup"),
        )
    })?;
    let m = Manifest::parse(&bytes[..]).map_err(|e| {
        BackupError::refused(
            Refusal::PriorManifest,
            format!(
                "the prior backup's manifest \"{}\" is not a valid backup_manifest: {e}",
                path.display()
            ),
        )
    })?;
    if m.version < 2 || m.system_identifier.is_none() {
        return Err(BackupError::refused(Refusal::PriorManifest, format!(
            "manifest \"{}\" is version {}, which cannot be used for incremental backups: take a new full backup with PostgreSQL 17 or later",
            path.display(),
            m.version
        )));
    }
    if m.wal_ranges.is_empty() {
        return Err(BackupError::refused(
            Refusal::PriorManifest,
            format!(
                "manifest \"{}\" lists no WAL ranges, so it cannot anchor an incremental backup",
                path.display()
            ),
        ));
    }
    Ok((bytes, m))
}

/// The range the server will take as `INCREMENTAL FROM`: the oldest one.
fn earliest(ranges: &[WalRange]) -> Option<WalRange> {
    ranges.iter().copied().min_by_key(|r| (r.tli, r.start))
}

/// Server-side checks on an ordinary SQL session: version, `summarize_wal`, the summarizer's
/// state and whether summaries still reach back to the prior backup.
pub(crate) async fn check_server(base: &Config, manifest_path: &Path, m: &Manifest) -> Result<()> {
    let mut cfg = base.clone();
    cfg.replication = None;
    if cfg.dbname.is_none() {
        cfg.dbname = Some("postgres".into());
    }
    let mut c = Connection::connect(&cfg.resolve()?).await?;
    let major = c.server_major().unwrap_or(0);
    if major < 17 {
        return Err(BackupError::refused(Refusal::ServerVersion, format!(
            "the server runs PostgreSQL {major}; incremental backups need PostgreSQL 17 or later: take a full backup instead (omit -i)"
        )));
    }
    if c.show("summarize_wal").await? != "on" {
        return Err(BackupError::refused(Refusal::ServerConfiguration,
            "summarize_wal is off on the server, so it cannot take incremental backups: run ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf(); then take a new full backup, and incrementals on top of it",
        ));
    }
    let wal_level = c.show("wal_level").await?;
    if wal_level == "minimal" {
        return Err(BackupError::refused(Refusal::ServerConfiguration,
            "wal_level is minimal: set wal_level = replica (restart needed), then take a full backup",
        ));
    }
    let Some(old) = earliest(&m.wal_ranges) else {
        return Err(BackupError::refused(
            Refusal::PriorManifest,
            format!(
                "manifest \"{}\" lists no WAL ranges, so it cannot anchor an incremental backup",
                manifest_path.display()
            ),
        ));
    };
    match c
        .simple_query("SELECT summarized_lsn, summarizer_pid FROM pg_get_wal_summarizer_state()")
        .await
    {
        Ok(sets) => {
            let set = sets.first();
            if set.and_then(|s| s.text(0, 1)).is_none() {
                return Err(BackupError::refused(Refusal::ServerConfiguration,
                    "the WAL summarizer process is not running although summarize_wal is on; check the server log, then retry",
                ));
            }
            let summarized: Lsn = set
                .and_then(|s| s.text(0, 0))
                .and_then(|t| t.parse().ok())
                .unwrap_or_default();
            let first = c
                .simple_query(&format!(
                    "SELECT min(start_lsn) FROM pg_available_wal_summaries() WHERE tli = {}",
                    old.tli.0
                ))
                .await?;
            let first: Option<Lsn> = first
                .first()
                .and_then(|s| s.text(0, 0))
                .and_then(|t| t.parse().ok());
            match first {
                Some(f) if f <= old.start => {}
                _ => {
                    return Err(BackupError::refused(Refusal::SummariesMissing, format!(
                        "the server has no WAL summaries reaching back to the prior backup's start ({} on timeline {}; earliest summary: {}): summarize_wal was probably enabled after that backup, or wal_summary_keep_time removed them. Take a new full backup instead of -i {}",
                        old.start,
                        old.tli,
                        first.map_or("none".to_string(), |l| l.to_string()),
                        manifest_path.display()
                    )))
                }
            }
            let behind = m.wal_ranges.iter().map(|r| r.end).max().unwrap_or_default();
            if summarized < behind {
                tracing::info!(
                    "WAL summarizer is at {summarized}, behind the prior backup's end {behind}; the server will wait for it"
                );
            }
        }
        // The summary functions are restricted to superusers and pg_monitor-like grants by
        // default; without them the server's own checks at BASE_BACKUP time still apply.
        Err(e) if e.code() == Some("42501") => {
            tracing::warn!(
                "cannot inspect the WAL summarizer ({e}); relying on the server's checks"
            )
        }
        Err(e) => return Err(e.into()),
    }
    let _ = c.close().await;
    Ok(())
}

/// The checks an incremental backup on top of `prior_manifest` makes before `BASE_BACKUP`,
/// for a caller that wants to decide between full and incremental first (the rotation): the
/// prior manifest is read and verified, and the server is asked whether its WAL summaries
/// still reach back to that backup. An error whose [`BackupError::failure`] is
/// [`crate::Failure::NeedsFullBackup`] means a full backup would work where this cannot.
pub async fn preflight_incremental(conn: &Config, prior_manifest: &Path) -> Result<()> {
    let (_, m) = read_old_manifest(prior_manifest)?;
    let mut base = conn.clone();
    base.apply_process_env();
    check_server(&base, prior_manifest, &m).await
}
