//! What `pgincr backup` can be asked to do; mirrors `pg_basebackup`'s flags.

use std::path::PathBuf;
use std::sync::Arc;

use pgincr_protocol::{Checkpoint, Config};

/// `-F p|t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Plain,
    Tar,
}

/// `-X stream|fetch|none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalMethod {
    Stream,
    Fetch,
    None,
}

/// `-Z`: how tar output is compressed on the client (see [`Compression::parse`]).
pub use pgincr_archive::Compression;

/// Progress reports: bytes received so far and the server's estimate of the total (with `-P`).
pub type ProgressFn = Arc<dyn Fn(u64, Option<u64>) + Send + Sync>;

/// Everything one backup run needs.
#[derive(Clone)]
pub struct BackupOptions {
    pub conn: Config,
    /// `-D`: must not exist, or be an empty directory.
    pub target: PathBuf,
    pub format: Format,
    /// `-i`: the prior backup's `backup_manifest`.
    pub incremental: Option<PathBuf>,
    pub wal: WalMethod,
    pub checkpoint: Checkpoint,
    pub label: String,
    /// `-P`: ask the server for size estimates and report progress.
    pub progress: Option<ProgressFn>,
    /// `-T OLDDIR=NEWDIR`.
    pub tablespace_mapping: Vec<(PathBuf, PathBuf)>,
    /// `-r` in kB/s (server-side throttling).
    pub max_rate: Option<u32>,
    /// `None` (or `Some(Compression::None)`): uncompressed.
    pub compression: Option<Compression>,
    /// Compression threads (`0`: one per CPU).
    pub threads: usize,
    pub manifest_checksums: Option<String>,
    /// `-S`: stream WAL through this slot.
    pub slot: Option<String>,
    /// `-C`: create the `-S` slot (permanent) first.
    pub create_slot: bool,
    /// `-N`: skip fsync.
    pub no_sync: bool,
    /// Write backup files with direct I/O (bypassing the page cache) where the file system
    /// allows; off, every write goes through the page cache as pg_basebackup's do.
    pub direct_io: bool,
    /// The caller ran [`crate::preflight_incremental`] for this `-i` manifest just before
    /// (the rotation does, to decide): the SQL-session checks are not repeated.
    pub server_checked: bool,
}

impl BackupOptions {
    pub fn new(conn: Config, target: PathBuf) -> BackupOptions {
        BackupOptions {
            conn,
            target,
            format: Format::Plain,
            incremental: None,
            wal: WalMethod::Stream,
            checkpoint: Checkpoint::Spread,
            label: "pgincr base backup".into(),
            progress: None,
            tablespace_mapping: Vec::new(),
            max_rate: None,
            compression: None,
            threads: 0,
            manifest_checksums: None,
            slot: None,
            create_slot: false,
            no_sync: false,
            direct_io: true,
            server_checked: false,
        }
    }
}
