//! One step of the rotation, `pgincr run`: lock, decide FULL or INCR (and say why), take the
//! backup (from the server, or a synthetic full combined from the previous round), check it
//! against its manifest, record it, apply retention, clean up WAL, report.
//!
//! The order is what makes it safe to kill at any moment: a backup is only recorded after it
//! is complete and verified; retention and WAL cleanup only run after the new backup is
//! recorded; a backup is removed by first renaming it to a hidden name (so a half-removed
//! backup never looks like one), then removing it, then updating the catalog. The next run
//! repairs what a killed one left: hidden leftovers whose process is gone are removed, catalog
//! records whose directory is gone are dropped, and a backup directory the catalog never
//! recorded (its run died before verifying it) is removed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use pgincr_backup::{BackupOptions, CancelSignal, Checkpoint, Compression, Failure, WalMethod};
use pgincr_protocol::Config as ConnConfig;
use pgincr_types::{Lsn, TimeLineId};

use crate::catalog::{backups_dir, BackupKind, BackupRecord, Catalog, Event, Origin, Verification};
use crate::config::{Config, Format, RoundStart, ServerConfig};
use crate::lock::{LockError, ServerLock};
use crate::naming::{BackupName, NameKind};
use crate::report::{Cleanup, Decision, RoundState, RunReport, RunStatus, Totals};
use crate::retention::{plan_retention, RetentionPolicy};
use crate::storage::{LocalDir, Storage};
use crate::wal_cleanup::plan_wal_cleanup;

/// At most this many failure events are kept in the catalog (the newest).
const MAX_EVENTS: usize = 200;

/// What `pgincr run` was asked to do.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// `--full`: start a new round with a full backup from the server.
    pub force_full: bool,
    /// `--dry-run`: decide and plan, change nothing.
    pub dry_run: bool,
    /// The time of the run (Unix seconds): backup names, retention and the report use it, so
    /// tests can run months of rotation without waiting.
    pub now: i64,
    /// Transfer progress of the backup, if wanted.
    pub progress: Option<pgincr_backup::ProgressFn>,
}

/// Why `pgincr run` could not even start: these have no report (exit 2 and 3).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Usage or configuration (exit status 2).
    #[error("{0}")]
    Config(String),
    /// Another run holds the server's lock (exit status 3).
    #[error(transparent)]
    Locked(LockError),
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Config(_) => 2,
            RunError::Locked(_) => 3,
        }
    }
}

/// A failed step: the message the report carries.
#[derive(Debug)]
pub(crate) struct StepError(pub String);

impl<E: std::fmt::Display> From<E> for StepError {
    fn from(e: E) -> Self {
        StepError(e.to_string())
    }
}

/// One server's part of the repository: `<path>/<server>/`.
#[derive(Debug, Clone)]
pub struct Repository {
    storage: LocalDir,
    server: String,
}

impl Repository {
    pub fn new(root: &Path, server: &str) -> Repository {
        Repository {
            storage: LocalDir::new(root),
            server: server.to_string(),
        }
    }

    pub fn storage(&self) -> &dyn Storage {
        &self.storage
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// `<path>/<server>`.
    pub fn server_dir(&self) -> PathBuf {
        self.storage.root().join(&self.server)
    }

    /// `<path>/<server>/backups/<name>`.
    pub fn backup_path(&self, name: &str) -> PathBuf {
        self.server_dir().join("backups").join(name)
    }

    /// `<path>/<server>/wal`: where `archive_command` writes.
    pub fn wal_dir(&self) -> PathBuf {
        self.server_dir().join("wal")
    }

    fn backup_rel(&self, name: &str) -> String {
        format!("{}/{name}", backups_dir(&self.server))
    }

    fn wal_rel(&self) -> String {
        format!("{}/wal", self.server)
    }

    /// Creates `backups/` and `wal/` (mode 0700).
    pub fn create_dirs(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        for d in [self.server_dir().join("backups"), self.wal_dir()] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)?;
        }
        Ok(())
    }

    /// Names of the entries of the WAL archive (files only).
    pub fn wal_names(&self) -> Result<Vec<String>, crate::storage::StorageError> {
        match self.storage.list(&self.wal_rel()) {
            Ok(v) => Ok(v
                .into_iter()
                .filter(|e| !e.is_dir)
                .map(|e| e.name)
                .collect()),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Removes a backup: renamed to a hidden leftover name first, so a removal cut short never
    /// leaves something that looks like a backup (the next run's sweep finishes it).
    fn remove_backup(&self, name: &str) -> Result<(), crate::storage::StorageError> {
        let hidden = format!(
            "{}/.{name}.pgincr-deleting-{}",
            backups_dir(&self.server),
            std::process::id()
        );
        self.storage.rename(&self.backup_rel(name), &hidden)?;
        self.storage.remove_tree(&hidden)
    }
}

/// The connection settings of a server: its conninfo, and the password from `password_file`
/// when one is configured (never from the config file itself).
pub fn connection(server: &ServerConfig) -> Result<ConnConfig, RunError> {
    let mut c = ConnConfig::parse(&server.conninfo)
        .map_err(|e| RunError::Config(format!("conninfo: {e}")))?;
    if let Some(p) = &server.password_file {
        c.password = Some(pgincr_protocol::Secret::new(read_password_file(p)?));
    }
    Ok(c)
}

fn read_password_file(p: &Path) -> Result<String, RunError> {
    use std::os::unix::fs::MetadataExt;
    let bad = |m: String| RunError::Config(format!("password_file {}: {m}", p.display()));
    let meta = std::fs::metadata(p).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.mode() & 0o077 != 0 {
        // libpq ignores a .pgpass readable by others for the same reason.
        return Err(bad(format!(
            "mode {:o} lets other users read it: chmod 600 it",
            meta.mode() & 0o777
        )));
    }
    let bytes =
        pgincr_types::read_bounded(p, 4096, "password file").map_err(|e| bad(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
    let pw = text.lines().next().unwrap_or("").to_string();
    if pw.is_empty() {
        return Err(bad("empty".into()));
    }
    Ok(pw)
}

/// One step of the rotation for `server`. Returns the report (whose status says whether the
/// backup worked); `Err` only when the run could not start at all.
pub async fn run(
    config: &Config,
    server: &str,
    opts: &RunOptions,
    cancel: CancelSignal,
) -> Result<RunReport, RunError> {
    let sc = config.server.get(server).ok_or_else(|| {
        RunError::Config(format!(
            "no [server.{server}] in the configuration (configured: {})",
            config.server.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    if let Some(c) = &sc.compress {
        Compression::parse(c)
            .map_err(|e| RunError::Config(format!("[server.{server}] compress: {e}")))?;
    }
    let conn = connection(sc)?;
    let repo = Repository::new(&config.repository.path, server);
    let started = Instant::now();
    let mut report = RunReport::new(server, opts.now, opts.dry_run);
    let exists = repo.server_dir().is_dir();
    if !opts.dry_run {
        repo.create_dirs().map_err(|e| {
            RunError::Config(format!(
                "cannot create the repository directories under {}: {e}",
                repo.server_dir().display()
            ))
        })?;
    }
    // A dry run of a server without a repository yet has nothing to lock.
    let _lock = if opts.dry_run && !exists {
        None
    } else {
        Some(
            ServerLock::acquire(&repo.server_dir(), opts.now).map_err(|e| match e {
                LockError::Held { .. } => RunError::Locked(e),
                other => RunError::Config(other.to_string()),
            })?,
        )
    };
    let mut step = Step {
        repo: &repo,
        sc,
        conn: &conn,
        opts,
        report: &mut report,
        catalog: Catalog::default(),
    };
    let result = step.run(cancel).await;
    let mut catalog = std::mem::take(&mut step.catalog);
    if let Err(StepError(message)) = result {
        report.status = RunStatus::Failure;
        report.error = Some(message.clone());
        if !opts.dry_run {
            // Best effort: the failure is in the report either way.
            if let Ok(Some(mut c)) = Catalog::load(repo.storage(), server) {
                c.events.push(Event {
                    time: opts.now,
                    reason: message,
                });
                let excess = c.events.len().saturating_sub(MAX_EVENTS);
                c.events.drain(..excess);
                if c.save(repo.storage(), server).is_ok() {
                    catalog = c;
                }
            }
        }
    }
    fill_state(&repo, sc, &catalog, &mut report);
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

struct Step<'a> {
    repo: &'a Repository,
    sc: &'a ServerConfig,
    conn: &'a ConnConfig,
    opts: &'a RunOptions,
    report: &'a mut RunReport,
    catalog: Catalog,
}

/// What the server said about itself.
struct ServerFacts {
    system_identifier: u64,
    timeline: TimeLineId,
    xlogpos: Lsn,
    wal_segment_size: u64,
}

impl Step<'_> {
    async fn run(&mut self, cancel: CancelSignal) -> Result<(), StepError> {
        let dry = self.opts.dry_run;
        let mut clock = Instant::now();
        if !dry {
            self.sweep()?;
        }
        let missing = self.load_catalog()?;
        let server = self.server_facts().await?;
        self.check_cluster(&server)?;
        let decision = self.decide(&server, missing.as_deref()).await?;
        self.report.decision = Some(decision.clone());
        self.phase("prepare", &mut clock);
        if dry {
            self.plan_only(&decision, &server)?;
            self.report.status = RunStatus::DryRun;
            return Ok(());
        }
        let record = self.take(decision, &server, cancel).await?;
        self.phase("backup_and_verify", &mut clock);
        self.report.backup = Some(record.clone());
        self.catalog.add(record);
        self.catalog.save(self.repo.storage(), self.repo.server())?;
        self.report.status = RunStatus::Success;
        self.phase("record", &mut clock);
        // Only now that the new backup is recorded may anything old go.
        self.retention();
        self.phase("retention", &mut clock);
        self.wal_cleanup(server.wal_segment_size);
        self.phase("wal_cleanup", &mut clock);
        Ok(())
    }

    /// Records how long a phase took (the report's `phase_secs`), and restarts the clock.
    fn phase(&mut self, name: &'static str, clock: &mut Instant) {
        self.report
            .phase_secs
            .insert(name, clock.elapsed().as_secs_f64());
        *clock = Instant::now();
    }

    /// Removes hidden leftovers of killed runs: staging directories of backups, half-removed
    /// backups, temporary catalog files.
    fn sweep(&mut self) -> Result<(), StepError> {
        for dir in [
            self.repo.server_dir().join("backups"),
            self.repo.server_dir(),
        ] {
            for l in pgincr_io::sweep_leftovers(&dir)? {
                self.report.warnings.push(l.to_string());
            }
        }
        Ok(())
    }

    /// Loads the catalog (rebuilding it from the backups when it is missing) and reconciles
    /// it with what is on disk. Returns the name of a recorded backup that has disappeared.
    fn load_catalog(&mut self) -> Result<Option<String>, StepError> {
        let storage = self.repo.storage();
        let server = self.repo.server();
        let on_disk = backup_dirs(storage, server)?;
        let mut changed = false;
        let mut missing = None;
        let mut catalog = match Catalog::load(storage, server)? {
            Some(c) => c,
            None => {
                let c = Catalog::rebuild(storage, server, None)?;
                if !c.backups.is_empty() {
                    self.report.warnings.push(format!(
                        "catalog.json was missing: rebuilt it from the {} backups on disk",
                        c.backups.len()
                    ));
                }
                changed = true;
                c
            }
        };
        let before = catalog.backups.len();
        catalog.backups.retain(|b| {
            let present = on_disk.contains(&b.name);
            if !present {
                missing = Some(b.name.clone());
            }
            present
        });
        if catalog.backups.len() != before {
            self.report.warnings.push(format!(
                "{} backup(s) recorded in the catalog are gone from {} (last: {}); dropped them from the catalog",
                before - catalog.backups.len(),
                self.repo.server_dir().join("backups").display(),
                missing.as_deref().unwrap_or("")
            ));
            changed = true;
        }
        let recorded: BTreeSet<String> = catalog.backups.iter().map(|b| b.name.clone()).collect();
        for name in on_disk.difference(&recorded) {
            // Its run ended before verifying and recording it (killed, or it failed after the
            // rename): it was never reported good, so it is not kept.
            if self.opts.dry_run {
                self.report.warnings.push(format!(
                    "backup {name} is not in the catalog (its run did not finish); the next run removes it"
                ));
            } else {
                self.repo.remove_backup(name)?;
                self.report.warnings.push(format!(
                    "removed backup {name}: the catalog does not list it (its run did not finish verifying it, or a retention was cut short)"
                ));
            }
        }
        if changed && !self.opts.dry_run {
            catalog.save(storage, server)?;
        }
        self.catalog = catalog;
        Ok(missing)
    }

    async fn server_facts(&self) -> Result<ServerFacts, StepError> {
        let repl = pgincr_protocol::replication_config(self.conn, "pgincr");
        let mut c = pgincr_protocol::connect(&repl)
            .await
            .map_err(|e| StepError(format!("cannot connect to the server: {e}")))?;
        let info = c.identify_system().await?;
        let seg = c.show("wal_segment_size").await?;
        let wal_segment_size = pgincr_protocol::parse_wal_segment_size(&seg)?;
        let _ = c.close().await;
        Ok(ServerFacts {
            system_identifier: info.system_identifier,
            timeline: info.timeline,
            xlogpos: info.xlogpos,
            wal_segment_size,
        })
    }

    /// A server of another cluster than the repository's backups is refused, never mixed in.
    fn check_cluster(&mut self, s: &ServerFacts) -> Result<(), StepError> {
        self.report.system_identifier = Some(s.system_identifier.to_string());
        if let Some(b) = self.catalog.backups.iter().find(|b| {
            b.system_identifier
                .is_some_and(|id| id != s.system_identifier)
        }) {
            return Err(StepError(format!(
                "the server's system identifier is {}, but backup {} in {} is of system {}: this repository belongs to another cluster. Configure another server name (or repository path) for this server",
                s.system_identifier,
                b.name,
                self.repo.server_dir().display(),
                b.system_identifier.unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// FULL or INCR, and why.
    async fn decide(
        &mut self,
        server: &ServerFacts,
        missing: Option<&str>,
    ) -> Result<Decision, StepError> {
        let max = self.sc.max_incrementals;
        let now = self.opts.now;
        let newest = self.catalog.newest().cloned();
        let mut force_full = self.opts.force_full;
        let mut reasons = Vec::new();
        if force_full {
            reasons.push("--full was given".to_string());
        }
        if let (false, Some(m)) = (force_full, missing) {
            force_full = true;
            reasons.push(format!(
                "backup {m} recorded in the catalog is missing on disk"
            ));
        }
        if let (false, Some(n)) = (force_full, &newest) {
            if let Verification::Failed { reason, .. } = &n.verification {
                force_full = true;
                reasons.push(format!(
                    "the newest backup {} failed verification: {reason}",
                    n.name
                ));
            } else if n.timeline != server.timeline {
                // pg_combinebackup handles a chain across a timeline switch, but before
                // 17.11/18.6 the summarizer can stop at one (upstream-incremental-bugs.md).
                force_full = true;
                reasons.push(format!(
                    "the server is on timeline {} and the newest backup {} on timeline {}",
                    server.timeline, n.name, n.timeline
                ));
            }
        }
        let mut next = self
            .catalog
            .next_backup(max, force_full, now)
            .map_err(|e| StepError(format!("cannot name the backup: {e}")))?;
        if next.name.kind == NameKind::Incr {
            if let Some(parent) = &next.parent {
                let manifest = self.repo.backup_path(parent).join("backup_manifest");
                match pgincr_backup::preflight_incremental(self.conn, &manifest).await {
                    Ok(()) => reasons.push(format!(
                        "round {} has {} of {max} incrementals; the server's WAL summaries reach back to {parent}",
                        next.round,
                        next.name.index - 1
                    )),
                    Err(e) if full_would_work(e.failure()) => {
                        reasons.push(format!("an incremental is not possible: {e}"));
                        self.report.warnings.push(format!("taking a full backup instead of an incremental: {e}"));
                        next = self
                            .catalog
                            .next_backup(max, true, now)
                            .map_err(|e| StepError(format!("cannot name the backup: {e}")))?;
                    }
                    Err(e) => return Err(StepError(e.to_string())),
                }
            }
        } else if reasons.is_empty() {
            match &newest {
                None => reasons.push("the repository has no backup of this server yet".into()),
                Some(n) => reasons.push(format!(
                    "round {} is complete ({} has index {} of max_incrementals = {max})",
                    n.round, n.name, n.index
                )),
            }
        }
        // A synthetic start needs a complete, verified previous round and no reason that
        // calls for a fresh read of the server (forced, damaged, timeline change, fallback).
        let synthetic_from = match (&newest, next.name.kind) {
            (Some(n), NameKind::Full)
                if self.sc.round_start == RoundStart::Synthetic
                    && !force_full
                    && n.index >= max
                    && reasons.len() == 1 =>
            {
                self.chain_of(&n.name)
            }
            _ => None,
        };
        let origin = if synthetic_from.is_some() {
            reasons.push(
                "round_start = \"synthetic\": the new full is combined from the previous round in the repository".into(),
            );
            "synthetic"
        } else {
            "server"
        };
        Ok(Decision {
            kind: if next.name.kind == NameKind::Full {
                BackupKind::Full
            } else {
                BackupKind::Incremental
            },
            origin,
            name: next.name.to_string(),
            round: next.round,
            index: next.name.index,
            max_incrementals: max,
            parent: next.parent,
            reasons,
            synthetic_from: synthetic_from.unwrap_or_default(),
        })
    }

    /// `name`'s chain back to its full, oldest first, if every link is recorded and none
    /// failed verification.
    fn chain_of(&self, name: &str) -> Option<Vec<String>> {
        let chain = self.catalog.chain(name)?;
        if chain
            .iter()
            .any(|b| matches!(b.verification, Verification::Failed { .. }))
        {
            return None;
        }
        Some(chain.iter().map(|b| b.name.clone()).collect())
    }

    /// Takes the decided backup; an incremental the server refuses after all falls back to a
    /// full one in the same run.
    async fn take(
        &mut self,
        decision: Decision,
        server: &ServerFacts,
        cancel: CancelSignal,
    ) -> Result<BackupRecord, StepError> {
        if !decision.synthetic_from.is_empty() {
            return self.synthesize(&decision, server).await;
        }
        match self.server_backup(&decision, cancel.clone()).await {
            Err(Taken::Backup(e))
                if decision.kind == BackupKind::Incremental && full_would_work(e.failure()) =>
            {
                let next = self
                    .catalog
                    .next_backup(self.sc.max_incrementals, true, self.opts.now)
                    .map_err(|e| StepError(format!("cannot name the backup: {e}")))?;
                let why = format!(
                    "the server refused the incremental backup, so this run took a full one: {e}"
                );
                self.report.warnings.push(why.clone());
                let full = Decision {
                    kind: BackupKind::Full,
                    origin: "server",
                    name: next.name.to_string(),
                    round: next.round,
                    index: 0,
                    parent: None,
                    reasons: vec![why],
                    synthetic_from: Vec::new(),
                    ..decision
                };
                self.report.decision = Some(full.clone());
                self.server_backup(&full, cancel)
                    .await
                    .map_err(StepError::from)
            }
            r => r.map_err(StepError::from),
        }
    }

    async fn server_backup(
        &mut self,
        d: &Decision,
        cancel: CancelSignal,
    ) -> Result<BackupRecord, Taken> {
        let target = self.repo.backup_path(&d.name);
        let mut o = BackupOptions::new(self.conn.clone(), target.clone());
        o.format = match self.sc.format {
            Format::Plain => pgincr_backup::Format::Plain,
            Format::Tar => pgincr_backup::Format::Tar,
        };
        o.compression = match &self.sc.compress {
            Some(c) => Compression::parse(c).map_err(Taken::Other)?,
            None => None,
        };
        o.incremental = d
            .parent
            .as_ref()
            .map(|p| self.repo.backup_path(p).join("backup_manifest"));
        o.wal = WalMethod::Stream;
        o.checkpoint = if self.sc.checkpoint == crate::config::CheckpointMode::Fast {
            Checkpoint::Fast
        } else {
            Checkpoint::Spread
        };
        o.label = format!("pgincr {}", d.name);
        // `decide` ran the same checks a moment ago for an incremental.
        o.server_checked = d.kind == BackupKind::Incremental;
        o.progress = self.opts.progress.clone();
        let summary = pgincr_backup::run(o, cancel).await.map_err(Taken::Backup)?;
        self.report
            .phase_secs
            .insert("backup", summary.duration_seconds);
        self.report
            .warnings
            .extend(summary.warnings.iter().cloned());
        // Checked as it was written (sizes and checksums while extracting): what is left
        // to check on disk is cheap (presence and sizes, pg_control, the WAL).
        let verification = match &summary.stream_check {
            Some(c) if !c.is_ok() => Verification::Failed {
                at: self.opts.now,
                reason: c
                    .problems
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; "),
            },
            Some(_) => self.verify(&target, true).await,
            None => self.verify(&target, false).await,
        };
        let rec = BackupRecord {
            name: d.name.clone(),
            kind: d.kind,
            origin: Origin::Server,
            parent: d.parent.clone(),
            round: d.round,
            index: d.index,
            start_lsn: summary.start_lsn,
            end_lsn: summary.end_lsn,
            timeline: summary.timeline,
            system_identifier: summary.system_identifier.parse().ok(),
            start_time: self.opts.now,
            end_time: Some(
                self.opts
                    .now
                    .saturating_add(summary.duration_seconds.round() as i64),
            ),
            bytes: self.disk_size(&d.name),
            files: summary.files,
            duration_secs: Some(summary.duration_seconds),
            verification,
        };
        self.accept(rec).map_err(|StepError(m)| Taken::Other(m))
    }

    /// A new full backup combined from the previous round inside the repository.
    async fn synthesize(
        &mut self,
        d: &Decision,
        server: &ServerFacts,
    ) -> Result<BackupRecord, StepError> {
        let target = self.repo.backup_path(&d.name);
        let chain: Vec<PathBuf> = d
            .synthetic_from
            .iter()
            .map(|n| self.repo.backup_path(n))
            .collect();
        let mut o = pgincr_combine::CombineOptions::new(chain, target.clone());
        o.format = match self.sc.format {
            Format::Plain => pgincr_combine::OutputFormat::Plain,
            Format::Tar => pgincr_combine::OutputFormat::Tar,
        };
        let started = Instant::now();
        let report = tokio::task::spawn_blocking(move || pgincr_combine::combine(&o))
            .await
            .map_err(|e| StepError(format!("combine task failed: {e}")))?
            .map_err(|e| StepError(format!("combining the previous round failed: {e}")))?;
        self.report.warnings.extend(report.warnings.iter().cloned());
        let duration = started.elapsed().as_secs_f64();
        let facts = crate::catalog::read_backup_facts(
            self.repo.storage(),
            &self.repo.backup_rel(&d.name),
            &d.name,
        )?;
        let verification = self.verify(&target, false).await;
        let rec = BackupRecord {
            name: d.name.clone(),
            kind: BackupKind::Full,
            origin: Origin::Synthetic {
                from: d.synthetic_from.clone(),
            },
            parent: None,
            round: d.round,
            index: 0,
            start_lsn: facts.start_lsn,
            end_lsn: facts.end_lsn,
            timeline: facts.start_tli,
            system_identifier: Some(server.system_identifier),
            start_time: self.opts.now,
            end_time: self
                .catalog
                .get(d.synthetic_from.last().map(String::as_str).unwrap_or(""))
                .map(|b| b.restorable_from()),
            bytes: self.disk_size(&d.name),
            files: report.files,
            duration_secs: Some(duration),
            verification,
        };
        self.accept(rec)
    }

    /// A backup that failed its check is removed, never recorded.
    fn accept(&mut self, rec: BackupRecord) -> Result<BackupRecord, StepError> {
        if let Verification::Failed { reason, .. } = &rec.verification {
            let removed = self.repo.remove_backup(&rec.name);
            return Err(StepError(format!(
                "backup {} does not match its manifest: {reason}; it was {}",
                rec.name,
                if removed.is_ok() {
                    "removed"
                } else {
                    "left in place, not recorded"
                }
            )));
        }
        Ok(rec)
    }

    /// Every file's size and checksum against the manifest, and the WAL it needs.
    /// With `checked_in_stream`, the checksums were compared while the backup was written:
    /// only presence, sizes, pg_control and the WAL are checked on disk.
    async fn verify(&mut self, dir: &Path, checked_in_stream: bool) -> Verification {
        let started = Instant::now();
        let v = self.verify_in(dir, checked_in_stream).await;
        self.report
            .phase_secs
            .insert("verify", started.elapsed().as_secs_f64());
        v
    }

    async fn verify_in(&self, dir: &Path, checked_in_stream: bool) -> Verification {
        let dir = dir.to_path_buf();
        let now = self.opts.now;
        let mut o = pgincr_verify::VerifyOptions::default();
        if checked_in_stream {
            o.skip_checksums = true;
            // The server checks page checksums while it sends them (BASE_BACKUP's
            // verify_checksums) and fails the backup on a bad one.
            o.page_checks = pgincr_verify::PageChecks::Off;
        }
        let r = tokio::task::spawn_blocking(move || pgincr_verify::verify_backup(&dir, &o)).await;
        match r {
            Ok(Ok(rep)) if rep.is_ok() => Verification::Passed { at: now },
            Ok(Ok(rep)) => Verification::Failed {
                at: now,
                reason: rep
                    .problems
                    .iter()
                    .take(3)
                    .map(|p| p.message.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            },
            Ok(Err(e)) => Verification::Failed {
                at: now,
                reason: e.to_string(),
            },
            Err(e) => Verification::Failed {
                at: now,
                reason: format!("verify task failed: {e}"),
            },
        }
    }

    fn disk_size(&self, name: &str) -> u64 {
        self.repo
            .storage()
            .size(&self.repo.backup_rel(name))
            .unwrap_or(0)
    }

    /// Whole rounds, oldest first. The catalog forgets them first, then their directories go
    /// (within a round the newest first): killed in between, the catalog never lists a
    /// backup that is not complete, and the next run removes the directories it no longer
    /// lists.
    fn retention(&mut self) {
        let policy = RetentionPolicy {
            keep_rounds: self.sc.keep_rounds,
            keep_for: self.sc.keep_for,
        };
        let plan = plan_retention(&self.catalog, policy, self.opts.now);
        let mut c = Cleanup {
            total: self.catalog.backups.len(),
            reason: plan.reason.clone(),
            ..Cleanup::default()
        };
        let doomed: BTreeSet<String> = plan.removed_names().map(str::to_string).collect();
        if doomed.is_empty() {
            self.report.backup_cleanup = c;
            return;
        }
        let mut kept = self.catalog.clone();
        kept.backups.retain(|b| !doomed.contains(&b.name));
        if let Err(e) = kept.save(self.repo.storage(), self.repo.server()) {
            c.errors += 1;
            self.report.warnings.push(format!(
                "retention: could not save the catalog, nothing removed: {e}"
            ));
            self.report.backup_cleanup = c;
            return;
        }
        self.catalog = kept;
        for round in &plan.remove {
            for name in round.backups.iter().rev() {
                match self.repo.remove_backup(name) {
                    Ok(()) => {
                        c.removed += 1;
                        c.names.push(name.clone());
                    }
                    Err(e) => {
                        c.errors += 1;
                        self.report.warnings.push(format!(
                            "retention: could not remove backup {name} (the next run retries): {e}"
                        ));
                    }
                }
            }
        }
        c.names.sort();
        self.report.backup_cleanup = c;
    }

    /// Archived WAL that no kept backup needs, decided from names and LSNs only.
    fn wal_cleanup(&mut self, seg_size: u64) {
        let mut c = Cleanup::default();
        let names = match self.repo.wal_names() {
            Ok(n) => n,
            Err(e) => {
                c.errors += 1;
                self.report
                    .warnings
                    .push(format!("WAL cleanup: cannot list the archive: {e}"));
                self.report.wal_cleanup = c;
                return;
            }
        };
        c.total = names.len();
        let plan = plan_wal_cleanup(
            &names,
            &self.catalog.wal_backups(),
            seg_size,
            self.sc.wal_keep,
        );
        let wal = self.repo.wal_rel();
        for n in &plan.delete {
            match self.repo.storage().remove_file(&format!("{wal}/{n}")) {
                Ok(()) => c.removed += 1,
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    c.errors += 1;
                    if c.errors <= 3 {
                        self.report
                            .warnings
                            .push(format!("WAL cleanup: could not remove {n}: {e}"));
                    }
                }
            }
        }
        if !plan.unrecognized.is_empty() {
            self.report.warnings.push(format!(
                "WAL cleanup: kept {} file(s) in the archive whose names are not WAL names (e.g. {})",
                plan.unrecognized.len(),
                plan.unrecognized.first().map(String::as_str).unwrap_or("")
            ));
        }
        c.reason = format!("{:?}", self.sc.wal_keep).to_lowercase();
        c.names = summarize_names(&plan.delete);
        self.report.wal_cleanup = c;
    }

    /// `--dry-run`: the retention and WAL plans as they would be after the planned backup.
    fn plan_only(&mut self, d: &Decision, server: &ServerFacts) -> Result<(), StepError> {
        let mut cat = self.catalog.clone();
        let start_lsn = d
            .synthetic_from
            .last()
            .and_then(|n| cat.get(n))
            .map_or(server.xlogpos, |b| b.start_lsn);
        cat.add(BackupRecord {
            name: d.name.clone(),
            kind: d.kind,
            origin: Origin::Server,
            parent: d.parent.clone(),
            round: d.round,
            index: d.index,
            start_lsn,
            end_lsn: server.xlogpos,
            timeline: server.timeline,
            system_identifier: Some(server.system_identifier),
            start_time: self.opts.now,
            end_time: Some(self.opts.now),
            bytes: 0,
            files: 0,
            duration_secs: None,
            verification: Verification::NotVerified,
        });
        let plan = plan_retention(
            &cat,
            RetentionPolicy {
                keep_rounds: self.sc.keep_rounds,
                keep_for: self.sc.keep_for,
            },
            self.opts.now,
        );
        let removed: BTreeSet<String> = plan.removed_names().map(str::to_string).collect();
        self.report.backup_cleanup = Cleanup {
            removed: removed.len(),
            total: self.catalog.backups.len(),
            errors: 0,
            names: removed.iter().cloned().collect(),
            reason: plan.reason.clone(),
        };
        cat.backups.retain(|b| !removed.contains(&b.name));
        let names = self.repo.wal_names()?;
        let wal = plan_wal_cleanup(
            &names,
            &cat.wal_backups(),
            server.wal_segment_size,
            self.sc.wal_keep,
        );
        self.report.wal_cleanup = Cleanup {
            removed: wal.delete.len(),
            total: names.len(),
            errors: 0,
            names: summarize_names(&wal.delete),
            reason: format!("{:?}", self.sc.wal_keep).to_lowercase(),
        };
        Ok(())
    }
}

/// What went wrong taking a backup from the server.
enum Taken {
    Backup(pgincr_backup::BackupError),
    Other(String),
}

impl std::fmt::Display for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Taken::Backup(e) => write!(f, "{e}"),
            Taken::Other(m) => f.write_str(m),
        }
    }
}

/// Refusals of an incremental backup that a full backup does not have.
fn full_would_work(f: Failure) -> bool {
    matches!(f, Failure::NeedsFullBackup | Failure::ServerConfiguration)
}

/// The first and last of a long list, for reports.
fn summarize_names(names: &[String]) -> Vec<String> {
    if names.len() <= 4 {
        return names.to_vec();
    }
    let mut v: Vec<String> = names.iter().take(2).cloned().collect();
    v.push(format!("... {} more ...", names.len() - 3));
    v.extend(names.last().cloned());
    v
}

/// The backup directories (valid backup names) under `<server>/backups`.
fn backup_dirs(storage: &dyn Storage, server: &str) -> Result<BTreeSet<String>, StepError> {
    let entries = match storage.list(&backups_dir(server)) {
        Ok(e) => e,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(entries
        .into_iter()
        .filter(|e| e.is_dir && BackupName::parse(&e.name).is_ok())
        .map(|e| e.name)
        .collect())
}

/// The state figures of the report: round, totals, recoverable window.
fn fill_state(repo: &Repository, sc: &ServerConfig, catalog: &Catalog, report: &mut RunReport) {
    if let Some(n) = catalog.newest() {
        let in_round: Vec<&BackupRecord> = catalog
            .backups
            .iter()
            .filter(|b| b.round == n.round)
            .collect();
        report.round = Some(RoundState {
            round: n.round,
            index: n.index,
            max_incrementals: sc.max_incrementals,
            complete: n.index >= sc.max_incrementals,
            verified: in_round
                .iter()
                .all(|b| matches!(b.verification, Verification::Passed { .. })),
        });
    }
    report.totals = Totals {
        full: catalog
            .backups
            .iter()
            .filter(|b| b.kind == BackupKind::Full)
            .count(),
        incremental: catalog
            .backups
            .iter()
            .filter(|b| b.kind == BackupKind::Incremental)
            .count(),
        repository_bytes: repo.storage().size(repo.server()).unwrap_or(0),
    };
    report.window = crate::info::window(repo, catalog).ok();
}
