//! The pgincr backup repository and its rotation: everything `pgincr run`, `info` and
//! `check` do, as library code the CLI only drives.
//!
//! The pure core (config, names, catalog, retention and WAL cleanup plans) is unit-tested
//! without a server; [`rotation`] drives the engines (`pgincr-backup`, `pgincr-combine`,
//! `pgincr-verify`) through one step of the rotation, [`info`] reads the repository offline,
//! [`check`] asks the server.
//!
//! Layout, one directory per server below `[repository] path`:
//! `<server>/backups/<name>/` (exactly what `pgincr backup` writes), `<server>/wal/` (the WAL
//! archive), `<server>/catalog.json`, `<server>/lock`. Every access goes through [`Storage`]
//! so object storage can come later without rewriting the rotation. Nothing here reads the
//! clock: every decision takes `now` (Unix seconds), so tests can simulate months of runs.

pub mod catalog;
pub mod check;
pub mod config;
pub mod info;
pub mod lock;
pub mod naming;
pub mod report;
pub mod retention;
pub mod rotation;
pub mod storage;
pub mod wal_cleanup;

pub use catalog::{
    BackupKind, BackupRecord, Catalog, CatalogError, Event, NextBackup, Origin, Verification,
};
pub use config::{Config, ConfigError, DrillMode, Format, RoundStart, ServerConfig, WalKeep};
pub use lock::{LockError, ServerLock};
pub use naming::{BackupName, NameError, NameKind};
pub use retention::{plan_retention, RetentionPlan, RetentionPolicy, RoundRemoval};
pub use wal_cleanup::{plan_wal_cleanup, WalBackup, WalPlan};

pub use check::{check, CheckReport};
pub use info::{info, Info, Window};
pub use report::{RunReport, RunStatus};
pub use rotation::{run, Repository, RunError, RunOptions};
pub use storage::{Entry, LocalDir, Storage, StorageError};
