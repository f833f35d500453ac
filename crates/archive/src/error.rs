//! Why reading or writing an archive failed.

use std::path::PathBuf;

use pgincr_types::bounded::BoundedReadError;

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A system call on `path` failed (creating a file or directory, writing it).
    #[error("{context} \"{path}\": {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes of `archive` are not a tar archive as the server writes them: a damaged
    /// header, an unsafe member name or link, a truncated member.
    #[error("archive {archive}: {msg} (at byte {offset})")]
    Malformed {
        archive: String,
        offset: u64,
        msg: String,
    },
    /// Reading the archive file `archive` (decompressing it, or copying a member out of it
    /// into `spill`) failed.
    #[error("\"{}\": could not read the archive: {source}", archive.display())]
    Read {
        archive: PathBuf,
        /// The spill file being written when the failure happened, if any: only a write to
        /// it can run out of space.
        spill: Option<PathBuf>,
        #[source]
        source: std::io::Error,
    },
    /// An archive file could not be opened as a regular file.
    #[error(transparent)]
    Open(BoundedReadError),
    /// The archives of a backup do not fit together: two hold the same part, or a file twice.
    #[error("{0}")]
    Layout(String),
}

impl ArchiveError {
    /// A constructor for [`ArchiveError::Io`], for `map_err`.
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ArchiveError {
        let path = path.into();
        move |source| ArchiveError::Io {
            context,
            path,
            source,
        }
    }

    /// The I/O error underneath, if any (to recognise a full disk).
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            ArchiveError::Io { source, .. } | ArchiveError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}
