//! The backup engine behind `pgincr backup`.
//!
//! This crate owns taking a base backup over the replication protocol: it drives a
//! `pgincr-protocol` connection through `BASE_BACKUP` (full, or incremental after
//! `UPLOAD_MANIFEST`), extracts the archives into a directory (plain) or writes them as tar files
//! compressed on the client with several threads (gzip, lz4, zstd; extraction and compression
//! come from `pgincr-archive`), streams WAL on a second connection (`-X stream`, straight into
//! `pg_wal.tar` for tar format), and makes the result durable: everything is written under a
//! temporary name, fsynced, and renamed into place only when complete.

mod checks;
mod engine;
mod error;
mod options;
mod sink;
mod staging;
mod stream_check;
mod wal;
mod waltar;

pub use checks::preflight_incremental;
pub use engine::{run, BackupSummary, CancelSignal};
pub use error::{BackupError, Failure, Refusal, Result};
pub use options::{BackupOptions, Compression, Format, ProgressFn, WalMethod};
pub use pgincr_protocol::Checkpoint;
pub use stream_check::StreamCheck;

/// The archive extractor and tar header parser (from `pgincr-archive`), for the fuzz targets
/// in `fuzz/`. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use pgincr_archive::header::{file_header, normalise, padding, parse, Header, Kind, BLOCK};
    pub use pgincr_archive::Extractor;
}
