//! PostgreSQL vocabulary shared by every pgincr crate.
//!
//! This crate owns the small, stable facts of PostgreSQL's on-disk world that more than one
//! engine needs: log sequence numbers and timelines, relation file names and forks, WAL segment
//! names, `backup_label`, `global/pg_control`, `backup_manifest` and its
//! per-file checksums. It does no I/O beyond reading the one file a
//! caller names, and it never panics on input.

pub mod backup_label;
pub mod bounded;
pub mod checksum;
pub mod control;
pub mod heap_page;
pub mod incremental;
pub mod lsn;
pub mod manifest;
pub mod page;
pub mod relfile;
pub mod tablespace_map;
pub mod time;
pub mod visibility_map;
pub mod walfile;

pub use backup_label::BackupLabel;
pub use bounded::read_bounded;
pub use control::{BlockSize, ControlFile, RelGeometry, RelSegSize, WalBlockSize, WalSegSize};
pub use lsn::{Lsn, TimeLineId};
pub use relfile::{BlockNumber, ForkNumber, Oid, RelFileLocator, RelFileName};

/// Data page size of a default build. Tools should prefer the value recorded in `pg_control`.
pub const BLCKSZ: usize = 8192;
/// Blocks per relation segment file of a default build (1 GiB with 8 KiB pages).
pub const RELSEG_SIZE: u32 = 131_072;
/// `InvalidBlockNumber`: "no block", and in summaries "no limit".
pub const INVALID_BLOCK_NUMBER: u32 = u32::MAX;
/// Tablespace OID of `base/`.
pub const DEFAULTTABLESPACE_OID: Oid = 1663;
/// Tablespace OID of `global/`.
pub const GLOBALTABLESPACE_OID: Oid = 1664;
