//! Why a backup failed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Protocol(#[from] pgincr_protocol::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The target directory cannot be used; the text says why and what to do.
    #[error("{0}")]
    Target(String),
    /// A check before an incremental backup failed; the text explains the fix.
    #[error("{0}")]
    Refused(String),
    /// The server sent an archive this client cannot extract.
    #[error("archive {archive}: {msg} (at byte {offset})")]
    Archive {
        archive: String,
        offset: u64,
        msg: String,
    },
    /// The target or a tablespace directory cannot be staged or put in place.
    #[error(transparent)]
    Staging(#[from] pgincr_io::StagingError),
    #[error("backup cancelled")]
    Cancelled,
    #[error("{0}")]
    Other(String),
}

impl BackupError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> BackupError {
        BackupError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;
