//! Why a manifest was refused.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::MAX_TOKEN_LEN;
use crate::bounded::BoundedReadError;

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub struct ManifestError {
    pub path: Option<PathBuf>,
    /// Byte offset the reader had reached.
    pub offset: Option<u64>,
    pub kind: ManifestErrorKind,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let ManifestErrorKind::File(e) = &self.kind {
            // Names the path and what it is already.
            return write!(f, "{e}");
        }
        match &self.path {
            Some(p) => write!(f, "backup manifest \"{}\": {}", p.display(), self.kind)?,
            None => write!(f, "backup manifest: {}", self.kind)?,
        }
        if let (Some(off), false) = (
            self.offset,
            matches!(
                self.kind,
                ManifestErrorKind::Io(_) | ManifestErrorKind::File(_)
            ),
        ) {
            write!(f, " (near byte {off})")?;
        }
        Ok(())
    }
}

/// The kinds of manifest failure; messages follow parse_manifest.c and load_manifest.c.
#[derive(Debug, thiserror::Error)]
pub enum ManifestErrorKind {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The path is not a regular file of plausible size, or cannot be opened.
    #[error("{0}")]
    File(BoundedReadError),
    /// JSON syntax errors and the structural checks of parse_manifest.c.
    #[error("could not parse backup manifest: {0}")]
    Parse(String),
    #[error("unrecognized checksum algorithm: \"{0}\"")]
    UnknownAlgorithm(String),
    #[error("invalid checksum for file \"{path}\": \"{checksum}\"")]
    BadFileChecksum { path: String, checksum: String },
    #[error("manifest has no checksum")]
    NoChecksum,
    #[error("invalid manifest checksum: \"{0}\"")]
    BadChecksumText(String),
    #[error("manifest checksum mismatch: the file is corrupt or was edited")]
    ChecksumMismatch,
    #[error("duplicate path name in backup manifest: \"{0}\"")]
    DuplicatePath(String),
    #[error("a token is longer than {MAX_TOKEN_LEN} bytes")]
    TokenTooLong,
}

pub(super) fn parse_err<T>(msg: impl Into<String>) -> Result<T, ManifestErrorKind> {
    Err(ManifestErrorKind::Parse(msg.into()))
}
