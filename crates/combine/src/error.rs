//! Errors of the combine engine. Every message names the backup and the file concerned.

use crate::incremental::IncrementalError;
use pgincr_types::manifest::ManifestError;
use std::path::PathBuf;

/// Why a combine failed. Nothing that looks like a complete output is left behind.
#[derive(Debug, thiserror::Error)]
pub enum CombineError {
    /// Bad options (mirrors pg_combinebackup's argument checks).
    #[error("{0}")]
    Usage(String),
    /// An input backup does not fit the chain: wrong order, another cluster, a missing file.
    #[error("{0}")]
    Chain(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("backup \"{backup}\": file \"{file}\": {source}")]
    Incremental {
        backup: PathBuf,
        file: PathBuf,
        source: IncrementalError,
    },
    /// An input file that reconstruction needs is absent or too short.
    #[error("backup \"{backup}\": {message}")]
    Input { backup: PathBuf, message: String },
    #[error("{context} \"{path}\": {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The output location cannot be used.
    #[error("{0}")]
    Output(String),
    /// An output directory cannot be staged or put in place (not empty, in use by a running
    /// combine, a rename failed).
    #[error(transparent)]
    Staging(#[from] pgincr_io::StagingError),
    /// [`crate::CombineOptions::cancel`] was set (SIGINT, SIGTERM).
    #[error("combine cancelled")]
    Cancelled,
}

impl CombineError {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> CombineError {
        let path = path.into();
        move |source| CombineError::Io {
            context,
            path,
            source,
        }
    }
}

pub type Result<T, E = CombineError> = std::result::Result<T, E>;
