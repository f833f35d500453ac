//! `pgincr restore` and `pgincr drill`: from the repository back to a running PostgreSQL.
//!
//! This crate owns the way back. [`plan`] picks the chain for a recovery target from the
//! catalog (a restore point or an XID is located in the archived WAL with the WAL reader) and
//! checks, before anything is written, that the archive holds the WAL from that backup to the
//! target without a gap. [`restore`] combines the chain into the target directory (built under
//! a hidden name and renamed into place only with its recovery settings written, so a failed
//! restore never leaves something that looks restorable), empties `pg_wal`, and writes
//! `recovery.signal` and the `restore_command` / `recovery_target_*` settings; with `start` it
//! starts the matching PostgreSQL and waits for the target. [`drill`] does all of that in a
//! throwaway place, checks the recovered cluster (page checksums, amcheck, the visibility map,
//! the catalog's databases) and records the time to restore (RTO) and the data lost (RPO).

pub mod drill;
pub mod plan;
pub mod target;

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use drill::{drill, DrillOptions, DrillReport};
pub use plan::{plan, plan_dirs, Plan};
pub use target::{parse_time, Action, Target, TargetOptions};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The target or the repository cannot give what was asked; nothing was written.
    #[error("{0}")]
    Plan(String),
    #[error("the target directory {0} exists and is not empty: choose another, or give --force to replace its contents")]
    NotEmpty(PathBuf),
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("combining the chain: {0}")]
    Combine(#[from] pgincr_combine::CombineError),
    #[error(transparent)]
    Staging(#[from] pgincr_io::StagingError),
    #[error(transparent)]
    Storage(#[from] pgincr_repository::StorageError),
    #[error(transparent)]
    Catalog(#[from] pgincr_repository::CatalogError),
    #[error("PostgreSQL: {0}")]
    Server(#[from] pgincr_server::Error),
}

fn io<'a>(
    context: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> RestoreError + 'a {
    move |source| RestoreError::Io {
        context,
        path: path.to_path_buf(),
        source,
    }
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The data directory to create.
    pub to: PathBuf,
    /// Replace the contents of a non-empty `to`.
    pub force: bool,
    /// `-T OLDDIR=NEWDIR` for tablespaces.
    pub tablespace_mappings: Vec<pgincr_combine::TablespaceMapping>,
    pub copy_mode: pgincr_combine::CopyMode,
    /// The `restore_command` written into `postgresql.auto.conf`; `%f`/`%p` as PostgreSQL's.
    pub restore_command: String,
    /// Extra lines for `postgresql.auto.conf` (a drill turns archiving off).
    pub extra_settings: Vec<(String, String)>,
    /// Check every backup of the chain against its manifest first.
    pub verify: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub directory: PathBuf,
    pub chain: Vec<String>,
    pub target: TargetOptions,
    pub target_lsn: Option<pgincr_types::Lsn>,
    /// What PostgreSQL will do at the target, in words.
    pub outcome: String,
    pub restore_secs: f64,
    pub files: u64,
    pub bytes: u64,
    /// Set when the server was started (`--start`).
    pub reached: Option<Reached>,
    pub warnings: Vec<String>,
}

/// Where a started server's recovery got to.
#[derive(Debug, Clone, Serialize)]
pub struct Reached {
    /// production, paused or shut down.
    pub state: String,
    /// The replay position (`pg_last_wal_replay_lsn()`, or the insert position once promoted).
    pub lsn: Option<String>,
    /// The commit time of the last transaction replayed (`pg_last_xact_replay_timestamp()`).
    pub last_transaction: Option<String>,
    pub recovery_secs: f64,
    pub port: u16,
    pub socket_dir: PathBuf,
}

/// The `restore_command` calling this pgincr binary for `archive`.
pub fn archive_get_command(archive: &Path) -> String {
    let exe = std::env::current_exe()
        .ok()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "pgincr".into());
    format!(
        "{} archive-get %f %p --archive {}",
        shell_quote(&exe),
        shell_quote(&archive.display().to_string())
    )
}

/// Quotes for `sh -c` (which runs restore_command) when needed.
fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,@".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Restores `plan` into `opts.to`: combined (or copied) under a hidden name next to it, WAL
/// and recovery settings written, fsynced, renamed into place.
pub fn restore(plan: &Plan, opts: &RestoreOptions) -> Result<RestoreReport, RestoreError> {
    let started = Instant::now();
    let to = &opts.to;
    let mut warnings = Vec::new();
    prepare_target(to, opts.force)?;
    if opts.verify {
        for d in &plan.chain_dirs {
            match pgincr_verify::verify_backup(d, &pgincr_verify::VerifyOptions::default()) {
                Ok(r) if r.is_ok() => {}
                Ok(r) => {
                    return Err(RestoreError::Plan(format!(
                        "backup {} does not match its manifest: {}",
                        d.display(),
                        r.problems
                            .iter()
                            .take(3)
                            .map(|p| p.message.clone())
                            .collect::<Vec<_>>()
                            .join("; ")
                    )))
                }
                Err(e) => return Err(RestoreError::Plan(e.to_string())),
            }
        }
    }
    let (work, removed) = pgincr_io::staging::scratch_dir(to, "restore")?;
    warnings.extend(removed.iter().map(ToString::to_string));
    let mut c = pgincr_combine::CombineOptions::new(plan.chain_dirs.clone(), work.clone());
    c.tablespace_mappings = opts.tablespace_mappings.clone();
    c.copy_mode = opts.copy_mode;
    let result = pgincr_combine::combine(&c)
        .map_err(RestoreError::from)
        .and_then(|report| {
            warnings.extend(report.warnings.iter().cloned());
            finish(&work, plan, opts)?;
            Ok(report)
        });
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e);
        }
    };
    // rename(2) replaces the empty directory `prepare_target` left, if any.
    std::fs::rename(&work, to).map_err(io("could not rename into place", to))?;
    if let Some(parent) = to.parent() {
        pgincr_io::fsync_dir(parent).map_err(io("could not fsync", parent))?;
    }
    Ok(RestoreReport {
        directory: to.clone(),
        chain: plan.chain.clone(),
        target: plan.target.clone(),
        target_lsn: plan.target_lsn,
        outcome: plan.target.outcome(),
        restore_secs: started.elapsed().as_secs_f64(),
        files: report.files,
        bytes: report.bytes,
        reached: None,
        warnings,
    })
}

/// `to` must not exist or be empty; with `force` its contents go (never through a symlink).
fn prepare_target(to: &Path, force: bool) -> Result<(), RestoreError> {
    let meta = match std::fs::symlink_metadata(to) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("could not stat", to)(e)),
    };
    if !meta.is_dir() {
        return Err(RestoreError::NotEmpty(to.to_path_buf()));
    }
    let mut entries = std::fs::read_dir(to).map_err(io("could not read", to))?;
    if entries.next().is_none() {
        return Ok(());
    }
    if !force {
        return Err(RestoreError::NotEmpty(to.to_path_buf()));
    }
    if to.join("postmaster.pid").exists() {
        return Err(RestoreError::Plan(format!(
            "{} holds postmaster.pid: a server may be running on it; stop it first",
            to.display()
        )));
    }
    for e in std::fs::read_dir(to).map_err(io("could not read", to))? {
        let e = e.map_err(io("could not read", to))?;
        let p = e.path();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            std::fs::remove_dir_all(&p).map_err(io("could not remove", &p))?;
        } else {
            std::fs::remove_file(&p).map_err(io("could not remove", &p))?;
        }
    }
    Ok(())
}

/// Inside the hidden directory: empty pg_wal, recovery settings, recovery.signal, modes.
fn finish(work: &Path, plan: &Plan, opts: &RestoreOptions) -> Result<(), RestoreError> {
    let wal = work.join("pg_wal");
    if wal.is_dir() {
        for e in std::fs::read_dir(&wal).map_err(io("could not read", &wal))? {
            let e = e.map_err(io("could not read", &wal))?;
            if e.file_type().is_ok_and(|t| t.is_file()) {
                std::fs::remove_file(e.path()).map_err(io("could not remove", &e.path()))?;
            }
        }
    } else {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&wal)
            .map_err(io("could not create", &wal))?;
    }
    let auto = work.join("postgresql.auto.conf");
    let mut text = format!(
        "\n# Added by pgincr restore of {}: recover from the repository's WAL archive.\n",
        plan.chain.last().map(String::as_str).unwrap_or("")
    );
    let mut settings = vec![(
        "restore_command".to_string(),
        format!("'{}'", opts.restore_command.replace('\'', "''")),
    )];
    settings.extend(plan.target.settings());
    settings.extend(opts.extra_settings.iter().cloned());
    for (k, v) in settings {
        text.push_str(&format!("{k} = {v}\n"));
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&auto)
        .map_err(io("could not open", &auto))?;
    f.write_all(text.as_bytes())
        .map_err(io("could not write", &auto))?;
    f.sync_all().map_err(io("could not fsync", &auto))?;
    let signal = work.join("recovery.signal");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&signal)
        .and_then(|f| f.sync_all())
        .map_err(io("could not write", &signal))?;
    pgincr_io::fsync_dir(work).map_err(io("could not fsync", work))?;
    Ok(())
}

/// The PostgreSQL major version of a data directory (`PG_VERSION`).
pub fn major_of(dir: &Path) -> Result<pgincr_server::Major, RestoreError> {
    let p = dir.join("PG_VERSION");
    let bytes = pgincr_types::read_bounded(&p, 64, "PG_VERSION")
        .map_err(|e| RestoreError::Plan(e.to_string()))?;
    let text = String::from_utf8_lossy(&bytes);
    match text.trim() {
        "17" => Ok(pgincr_server::Major::V17),
        "18" => Ok(pgincr_server::Major::V18),
        other => Err(RestoreError::Plan(format!(
            "{} says PostgreSQL {other}; pgincr restores 17 and 18",
            p.display()
        ))),
    }
}

/// How to start the server.
#[derive(Debug, Clone)]
pub struct StartSpec {
    pub pg_bin: Option<PathBuf>,
    /// The account the server runs as when pgincr runs as root.
    pub run_as: String,
    pub port: Option<u16>,
    pub socket_dir: PathBuf,
    pub log_file: PathBuf,
    pub settings: Vec<(String, String)>,
    pub timeout: Duration,
}

/// Starts the restored cluster and waits until recovery reaches its target (or the end of
/// the WAL): promoted, paused or shut down, as the target's action says.
pub fn start(
    dir: &Path,
    spec: &StartSpec,
) -> Result<(pgincr_server::Server, Reached), RestoreError> {
    let major = major_of(dir)?;
    let pg = pgincr_server::Installation::locate(major, spec.pg_bin.as_deref())?;
    let run_as = pgincr_server::RunAs::unless_root(&spec.run_as);
    run_as.give(dir)?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(io("could not chmod", dir))?;
    let mut o = pgincr_server::StartOptions::new(&spec.socket_dir, &spec.log_file);
    o.port = spec.port;
    o.settings = spec.settings.clone();
    o.wait = false;
    o.timeout = spec.timeout;
    let started = Instant::now();
    let mut server = pg.start(dir, &o, &run_as)?;
    let end = server.wait_recovery_end(spec.timeout)?;
    let recovery_secs = started.elapsed().as_secs_f64();
    let (state, lsn, last) = match end {
        pgincr_server::RecoveryEnd::ShutDown => ("shut down".to_string(), None, None),
        e => {
            let q = server.psql(
                "postgres",
                "SELECT coalesce(pg_last_wal_replay_lsn()::text, '') || '|' || coalesce(pg_last_xact_replay_timestamp()::text, '')",
            )?;
            let (l, t) = q.split_once('|').unwrap_or((q.as_str(), ""));
            let l = (!l.is_empty()).then(|| l.to_string());
            let t = (!t.is_empty()).then(|| t.to_string());
            let state = match e {
                pgincr_server::RecoveryEnd::Paused => "paused",
                _ => "production",
            };
            (state.to_string(), l, t)
        }
    };
    let reached = Reached {
        state,
        lsn,
        last_transaction: last,
        recovery_secs,
        port: server.port(),
        socket_dir: spec.socket_dir.clone(),
    };
    Ok((server, reached))
}
