//! The pgincr backup repository: the pure, unit-tested core `pgincr run` stands on.
//!
//! Layout, one directory per server below `[repository] path`:
//! `<server>/backups/<name>/` (exactly what `pgincr backup` writes), `<server>/wal/` (the WAL
//! archive), `<server>/catalog.json`, `<server>/lock`. Every access goes through [`Storage`]
//! so object storage can come later without rewriting the rotation. Nothing here reads the
//! clock: every decision takes `now` (Unix seconds), so tests can simulate months of runs.

pub mod catalog;
pub mod config;
pub mod lock;
pub mod naming;
pub mod retention;
pub mod storage;
pub mod wal_cleanup;

pub use catalog::{
    BackupKind, BackupRecord, Catalog, CatalogError, Event, NextBackup, Origin, Verification,
};
pub use config::{Config, ConfigError, Format, RoundStart, ServerConfig, WalKeep};
pub use lock::{LockError, ServerLock};
pub use naming::{BackupName, NameError, NameKind};
pub use retention::{plan_retention, RetentionPlan, RetentionPolicy, RoundRemoval};
pub use wal_cleanup::{plan_wal_cleanup, WalBackup, WalPlan};

pub use storage::{Entry, LocalDir, Storage, StorageError};
