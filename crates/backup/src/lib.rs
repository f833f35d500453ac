//! The backup engine behind `pgincr backup`.
//!
//! This crate owns taking a base backup over the replication protocol: it drives a
//! `pgincr-protocol` connection through `BASE_BACKUP` (full, or incremental after
//! `UPLOAD_MANIFEST`), extracts the archives into a directory (plain) or writes them as tar files
//! compressed on the client with several threads (gzip, lz4, zstd), streams WAL on a second
//! connection (`-X stream`), and makes the result durable: everything is written under a
//! temporary name, fsynced, and renamed into place only when complete.

mod checks;
mod compress;
mod engine;
mod error;
mod extract;
mod options;
mod sink;
mod staging;
mod tar;
mod wal;
mod waltar;

pub use engine::{run, BackupSummary, CancelSignal};
pub use error::{BackupError, Failure, Refusal, Result};
pub use options::{Algorithm, BackupOptions, Compression, Format, ProgressFn, WalMethod};
pub use pgincr_protocol::Checkpoint;

/// The archive extractor and tar header parser, for the fuzz targets in `fuzz/`. Not a
/// stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::extract::Extractor;
    pub use crate::tar::{file_header, normalise, padding, parse, Header, Kind, BLOCK};
}
