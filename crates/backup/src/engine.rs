//! One backup run: connections, BASE_BACKUP events, the writer thread, the WAL streamer, and
//! the final rename.

use std::path::{Path, PathBuf};
use std::time::Instant;

use pgincr_protocol::{replication_config, BackupEvent, BaseBackupOptions, Connection};
use pgincr_types::{Lsn, TimeLineId};
use serde::Serialize;
use tokio::sync::watch;

use crate::checks;
use crate::error::{BackupError, Refusal, Result};
use crate::options::{BackupOptions, Format, WalMethod};
use crate::sink::{Sink, SinkSetup};
use crate::staging::Staging;
use crate::wal::{self, WalSetup, WalStats, WalTarget};

/// What a finished backup reports (`--json`).
#[derive(Clone, Debug, Serialize)]
pub struct BackupSummary {
    pub directory: PathBuf,
    pub format: &'static str,
    pub incremental: bool,
    pub system_identifier: String,
    pub start_lsn: Lsn,
    pub end_lsn: Lsn,
    pub timeline: TimeLineId,
    /// Archive bytes received from the server (uncompressed tar).
    pub bytes: u64,
    /// Files extracted (plain) or archives written (tar).
    pub files: u64,
    pub wal_bytes_streamed: u64,
    pub duration_seconds: f64,
    /// What the run wants a person to know, such as leftovers of killed runs it removed.
    pub warnings: Vec<String>,
    /// Plain format: the files as received, checked against the manifest (sizes and
    /// checksums computed while they were written).
    pub stream_check: Option<crate::stream_check::StreamCheck>,
}

/// A cancellation signal: the backup stops when the value becomes `true`.
pub type CancelSignal = watch::Receiver<bool>;

async fn cancelled(rx: &mut CancelSignal) {
    loop {
        if *rx.borrow() {
            return;
        }
        if rx.changed().await.is_err() {
            // Nobody can cancel any more.
            std::future::pending::<()>().await;
        }
    }
}

fn validate(o: &BackupOptions) -> Result<()> {
    let bad = |m: &str| Err(BackupError::Target(m.to_string()));
    if o.compression.is_some() && o.format == Format::Plain {
        return bad("compression (-Z) is only available with tar format (-F t)");
    }
    if !o.tablespace_mapping.is_empty() && o.format == Format::Tar {
        return bad("tablespace mapping (-T) is only available with plain format (-F p)");
    }
    if o.create_slot && o.slot.is_none() {
        return bad("--create-slot (-C) needs a slot name (-S)");
    }
    if o.slot.is_some() && o.wal != WalMethod::Stream {
        return bad("replication slots (-S) are only used with WAL streaming (-X stream)");
    }
    for (old, new) in &o.tablespace_mapping {
        if !old.is_absolute() || !new.is_absolute() {
            return bad("tablespace mappings (-T OLDDIR=NEWDIR) need absolute directories");
        }
    }
    Ok(())
}

/// Takes a backup as `opts` says. On failure nothing is left at the target, the temporary
/// directory and any tablespace directories it created are removed, and the server's
/// backup ends with the connection.
pub async fn run(opts: BackupOptions, cancel: CancelSignal) -> Result<BackupSummary> {
    validate(&opts)?;
    let started = Instant::now();
    let mut staging = Staging::create(&opts.target)?;
    let mut tasks = Tasks::default();
    let result = run_in(&opts, cancel, &mut staging, &mut tasks, started).await;
    // On failure, stop the streamer before its files are removed.
    if let Some(h) = tasks.streamer.take() {
        h.abort();
        let _ = h.await;
    }
    let summary = result?;
    let no_sync = opts.no_sync;
    let warnings = staging.warnings();
    tokio::task::spawn_blocking(move || staging.commit(no_sync))
        .await
        .map_err(|e| BackupError::Other(format!("sync task failed: {e}")))??;
    Ok(BackupSummary {
        directory: opts.target.clone(),
        duration_seconds: started.elapsed().as_secs_f64(),
        warnings,
        ..summary
    })
}

/// Background work of a run, joined by [`run`] whatever happens.
#[derive(Default)]
struct Tasks {
    streamer: Option<tokio::task::JoinHandle<Result<WalStats>>>,
}

/// One backup, in the order the protocol dictates: connect and check (before this point
/// nothing on the server needs cancelling), stream `BASE_BACKUP` into the sink, wait for the
/// WAL the backup needs (streamed into `pg_wal` or `pg_wal.tar`), and report.
async fn run_in(
    opts: &BackupOptions,
    mut cancel: CancelSignal,
    staging: &mut Staging,
    tasks: &mut Tasks,
    started: Instant,
) -> Result<BackupSummary> {
    // Until BASE_BACKUP runs there is nothing on the server to cancel: Ctrl-C just drops the
    // connections.
    let session = or_cancelled(&mut cancel, open_session(opts)).await?;
    let threads = match opts.threads {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    // Plain: segment files in pg_wal. Tar: pg_wal.tar, written as the WAL arrives.
    let wal_target = match opts.format {
        Format::Plain => WalTarget::Dir(staging.dir().join("pg_wal")),
        Format::Tar => WalTarget::Tar {
            dir: staging.dir().to_path_buf(),
            compression: opts.compression.unwrap_or_default(),
            threads,
        },
    };
    let mut conn = session.conn;
    let cancel_token = conn.cancel_token();
    let bb = base_backup_options(opts, session.old.is_some());
    let mut stream = conn.base_backup(&bb).await?;
    let (end_tx, end_rx) = watch::channel(None);
    let mut rx = Receive {
        opts,
        sink: new_sink(opts, staging, threads),
        wal: WalPlan {
            repl: &session.repl,
            system_identifier: session.sys.system_identifier,
            seg_size: session.seg_size,
            target: &wal_target,
            end: end_rx,
        },
        end_tx,
        start: None,
        end: None,
        ts_roots: Vec::new(),
        total: None,
        received: 0,
    };
    loop {
        let ev = tokio::select! {
            ev = stream.next() => ev,
            _ = cancelled(&mut cancel) => {
                if let Some(t) = &cancel_token {
                    let _ = t.cancel().await;
                }
                return Err(BackupError::Cancelled);
            }
        };
        let Some(ev) = ev? else { break };
        rx.event(ev, staging, tasks)?;
    }
    drop(stream);
    let stats = rx.sink.finish()?;
    let stream_check = (opts.format == Format::Plain).then(|| {
        crate::stream_check::check(&staging.dir().join("backup_manifest.tmp"), &stats.sums)
    });
    // A backup that differs from the manifest the server sent for it is never put in place.
    if let Some(c) = stream_check.as_ref().filter(|c| !c.is_ok()) {
        return Err(BackupError::Other(format!(
            "the files written do not match the server's manifest ({} problem(s)): {}",
            c.problems.len(),
            c.problems
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    let (Some((start_lsn, start_tli)), Some((end_lsn, _end_tli))) = (rx.start, rx.end) else {
        return Err(BackupError::Other(
            "the server did not report the backup's start and end".into(),
        ));
    };
    let wal_bytes = wait_for_wal(tasks, &mut cancel).await?;
    let _ = conn.close().await;
    Ok(BackupSummary {
        directory: opts.target.clone(),
        format: match opts.format {
            Format::Plain => "plain",
            Format::Tar => "tar",
        },
        incremental: session.old.is_some(),
        system_identifier: session.sys.system_identifier.to_string(),
        start_lsn,
        end_lsn,
        timeline: start_tli,
        bytes: rx.received,
        files: stats.files,
        wal_bytes_streamed: wal_bytes,
        duration_seconds: started.elapsed().as_secs_f64(),
        warnings: Vec::new(),
        stream_check,
    })
}

/// The `BASE_BACKUP` options for these backup options.
fn base_backup_options(opts: &BackupOptions, incremental: bool) -> BaseBackupOptions {
    BaseBackupOptions {
        incremental,
        label: Some(opts.label.clone()),
        progress: opts.progress.is_some(),
        checkpoint: Some(opts.checkpoint),
        wal: opts.wal == WalMethod::Fetch,
        wait: (opts.wal != WalMethod::None).then_some(false),
        manifest: true,
        manifest_checksums: opts.manifest_checksums.clone(),
        tablespace_map: opts.format == Format::Tar,
        max_rate: opts.max_rate,
        verify_checksums: None,
    }
}

/// Where the archives go: extracted into the staging directory (plain) or written as
/// (compressed) archives there (tar).
fn new_sink(opts: &BackupOptions, staging: &Staging, threads: usize) -> Sink {
    let link_map = opts
        .tablespace_mapping
        .iter()
        .map(|(o, n)| (o.display().to_string(), n.display().to_string()))
        .collect();
    Sink::new(SinkSetup {
        format: opts.format,
        dir: staging.dir().to_path_buf(),
        link_map,
        compression: opts.compression,
        threads,
        direct: opts.direct_io,
        checksums: match opts.manifest_checksums.as_deref() {
            None => Some(pgincr_types::checksum::ChecksumType::Crc32c),
            Some(name) => pgincr_types::checksum::ChecksumType::parse(name),
        },
    })
}

/// What the WAL streamer needs once the backup's start is known.
struct WalPlan<'a> {
    repl: &'a pgincr_protocol::Config,
    system_identifier: u64,
    seg_size: u64,
    target: &'a WalTarget,
    /// The backup's end LSN, once the server reports it: where streaming may stop.
    end: watch::Receiver<Option<Lsn>>,
}

/// The state of receiving one `BASE_BACKUP` stream.
struct Receive<'a> {
    opts: &'a BackupOptions,
    sink: Sink,
    wal: WalPlan<'a>,
    end_tx: watch::Sender<Option<Lsn>>,
    start: Option<(Lsn, TimeLineId)>,
    end: Option<(Lsn, TimeLineId)>,
    /// Where each absolutely located tablespace is written until commit.
    ts_roots: Vec<(String, PathBuf)>,
    /// Bytes the server announced, for progress.
    total: Option<u64>,
    received: u64,
}

impl Receive<'_> {
    fn event(&mut self, ev: BackupEvent, staging: &mut Staging, tasks: &mut Tasks) -> Result<()> {
        let opts = self.opts;
        match ev {
            BackupEvent::Start { lsn, tli } => {
                self.start = Some((lsn, tli));
                tracing::info!("backup started at {lsn} on timeline {tli}");
                if opts.wal == WalMethod::Stream {
                    let setup = WalSetup {
                        conn: self.wal.repl.clone(),
                        system_identifier: self.wal.system_identifier,
                        start: lsn,
                        tli,
                        seg_size: self.wal.seg_size,
                        target: self.wal.target.clone(),
                        slot: opts.slot.clone(),
                        create_slot: opts.create_slot,
                        no_sync: opts.no_sync,
                    };
                    let end = self.wal.end.clone();
                    tasks.streamer = Some(tokio::spawn(wal::stream(setup, end)));
                }
            }
            BackupEvent::Tablespaces(list) => {
                self.total = opts
                    .progress
                    .as_ref()
                    .map(|_| list.iter().filter_map(|t| t.size_kb).sum::<u64>() * 1024);
                if opts.format == Format::Plain {
                    for t in &list {
                        if let (Some(_), Some(loc)) = (t.oid, &t.location) {
                            if let Some(root) = prepare_tablespace(opts, staging, loc)? {
                                self.ts_roots.push((loc.clone(), root));
                            }
                        }
                    }
                }
            }
            BackupEvent::ArchiveStart { name, location } => {
                let root = match (&location, opts.format) {
                    (Some(loc), Format::Plain) => {
                        Some(tablespace_root(&self.ts_roots, staging.dir(), loc))
                    }
                    _ => None,
                };
                self.sink.archive(name, root)?;
            }
            BackupEvent::ArchiveData(b) => {
                self.received += b.len() as u64;
                if let Some(p) = &opts.progress {
                    p(self.received, self.total);
                }
                self.sink.data(&b)?;
            }
            BackupEvent::Progress(_) | BackupEvent::ManifestStart => {}
            BackupEvent::ManifestData(b) => self.sink.manifest(&b)?,
            BackupEvent::End { lsn, tli } => {
                self.end = Some((lsn, tli));
                let _ = self.end_tx.send(Some(lsn));
            }
        }
        Ok(())
    }
}

/// Waits for the WAL streamer to receive everything up to the backup's end. The server's
/// backup is over, but this can still be interrupted (the unfinished task stays in `tasks`,
/// so that `run` stops it). Returns the bytes streamed.
async fn wait_for_wal(tasks: &mut Tasks, cancel: &mut CancelSignal) -> Result<u64> {
    let Some(h) = tasks.streamer.as_mut() else {
        return Ok(0);
    };
    let joined = tokio::select! {
        j = h => j,
        _ = cancelled(cancel) => return Err(BackupError::Cancelled),
    };
    tasks.streamer = None;
    Ok(joined
        .map_err(|e| BackupError::Other(format!("WAL streamer: {e}")))??
        .bytes)
}

/// What the backup needs before `BASE_BACKUP`: the replication connection (with the prior
/// manifest uploaded for an incremental), its configuration, and the server's facts.
struct Session {
    conn: Connection,
    repl: pgincr_protocol::Config,
    old: Option<(PathBuf, Vec<u8>, pgincr_types::manifest::Manifest)>,
    seg_size: u64,
    sys: pgincr_protocol::SystemInfo,
}

/// Checks the server (and the prior manifest for an incremental), connects for replication
/// and uploads the manifest.
async fn open_session(opts: &BackupOptions) -> Result<Session> {
    let mut base = opts.conn.clone();
    base.apply_process_env();
    let old = match &opts.incremental {
        Some(p) => {
            let (bytes, m) = checks::read_old_manifest(p)?;
            Some((p.clone(), bytes, m))
        }
        None => None,
    };
    let repl = replication_config(&base, "pgincr");
    let mut conn = Connection::connect(&repl.resolve()?).await?;
    let major = conn.server_major().unwrap_or(0);
    if major < 15 {
        return Err(BackupError::refused(Refusal::ServerVersion, format!(
                "the server runs PostgreSQL {major}; pgincr backup needs PostgreSQL 15 or later (17 or later for -i)"
            )));
    }
    if conn.parameter("integer_datetimes") == Some("off") {
        return Err(BackupError::refused(
            Refusal::Unsupported,
            "the server uses floating-point datetimes, which pgincr does not support",
        ));
    }
    let seg_size = pgincr_protocol::parse_wal_segment_size(&conn.show("wal_segment_size").await?)?;
    let sys = conn.identify_system().await?;
    if let Some((path, bytes, m)) = &old {
        if m.system_identifier != Some(sys.system_identifier) {
            return Err(BackupError::refused(Refusal::OtherCluster, format!(
                    "the prior backup's manifest \"{}\" is from database system {}, but the server is system {}: use the manifest of a backup of this server",
                    path.display(),
                    m.system_identifier.unwrap_or(0),
                    sys.system_identifier
                )));
        }
        // Only now the server-side checks: a manifest of another cluster must be refused as
        // such, not as summaries that do not reach back to it.
        if !opts.server_checked {
            checks::check_server(&base, path, m).await?;
        }
        conn.upload_manifest(bytes)
            .await
            .map_err(|e| match e.db() {
                Some(db) => BackupError::refused(
                    Refusal::ManifestRejected,
                    format!(
                        "the server refused the prior backup's manifest \"{}\": {db}",
                        path.display()
                    ),
                ),
                None => e.into(),
            })?;
    }
    Ok(Session {
        conn,
        repl,
        old,
        seg_size,
        sys,
    })
}

/// Runs `fut` unless the user cancels first; dropping `fut` closes its connections.
async fn or_cancelled<T>(
    cancel: &mut CancelSignal,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        r = fut => r,
        _ = cancelled(cancel) => Err(BackupError::Cancelled),
    }
}

fn map_location(opts: &BackupOptions, loc: &str) -> PathBuf {
    for (old, new) in &opts.tablespace_mapping {
        if Path::new(loc) == old {
            return new.clone();
        }
    }
    PathBuf::from(loc)
}

/// Where a plain-format tablespace archive goes until commit: the staged mapped location, or
/// inside the backup for an in-place (relative) tablespace.
fn tablespace_root(ts_roots: &[(String, PathBuf)], staging: &Path, loc: &str) -> PathBuf {
    match ts_roots.iter().find(|(l, _)| l == loc) {
        Some((_, root)) => root.clone(),
        None => staging.join(loc),
    }
}

/// Stages the directory an absolutely located tablespace goes to (absent or empty), for
/// removal on failure; returns where its files go until commit.
fn prepare_tablespace(
    opts: &BackupOptions,
    staging: &mut Staging,
    loc: &str,
) -> Result<Option<PathBuf>> {
    if !Path::new(loc).is_absolute() {
        return Ok(None);
    }
    let dir = map_location(opts, loc);
    staging.add_tablespace(&dir).map(Some).map_err(|e| match e {
        BackupError::Staging(e @ pgincr_io::StagingError::NotEmpty(_)) => BackupError::Target(format!(
            "tablespace {e}; when backing up on the same machine as the server, map it elsewhere with -T {loc}=NEWDIR"
        )),
        e => e,
    })
}
