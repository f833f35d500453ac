//! Errors of the combine engine. Every message names the backup and the file concerned.
//!
//! A caller that has to act on a failure (a backup rotation deciding whether to take a new
//! full backup, free space, or retry) asks [`CombineError::kind`]: the variants are grouped
//! into the few [`CombineErrorKind`]s that call for different actions. The messages do not
//! depend on the grouping.

use crate::incremental::IncrementalError;
use pgincr_types::bounded::BoundedReadError;
use pgincr_types::manifest::{ManifestError, ManifestErrorKind};
use std::path::PathBuf;

/// Why a combine failed. Nothing that looks like a complete output is left behind.
#[derive(Debug, thiserror::Error)]
pub enum CombineError {
    /// Bad options (mirrors pg_combinebackup's argument checks).
    #[error("{0}")]
    Usage(String),
    /// The backups do not form one complete chain: a backup missing (its directory gone, or
    /// a gap in the start LSNs), wrong order, another cluster, different block sizes, data
    /// checksums switched within the chain, a backup without a usable manifest.
    #[error("{0}")]
    Chain(String),
    /// An input backup is damaged: a metadata file (`PG_VERSION`, `pg_control`,
    /// `backup_label`, `tablespace_map`) that does not parse or is implausibly large, an
    /// archive holding a file twice, a tablespace link that is not absolute.
    #[error("{0}")]
    Damaged(String),
    /// A small metadata file of a backup could not be read as a regular file of plausible
    /// size (see [`BoundedReadError`]): missing, not a regular file, too large, unreadable.
    #[error(transparent)]
    Metadata(BoundedReadError),
    /// A `backup_manifest` that cannot be read, does not parse or fails its checksum.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A damaged `INCREMENTAL.*` file.
    #[error("backup \"{backup}\": file \"{file}\": {source}")]
    Incremental {
        backup: PathBuf,
        file: PathBuf,
        source: IncrementalError,
    },
    /// An input file that reconstruction needs is damaged: absent, too short, of another
    /// size than its manifest says, holding a page that fails its data checksum.
    #[error("backup \"{backup}\": {message}")]
    Input { backup: PathBuf, message: String },
    /// Any other failed system call, named with its path.
    #[error("{context} \"{path}\": {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A write, fsync or file creation failed for lack of space (`ENOSPC`, or `EDQUOT`: a
    /// quota is full). `path` is the file or directory being written (in the output, or in
    /// the spill directory next to it); `message` is the text the failure would have had as
    /// any other error.
    #[error("{message}")]
    DiskFull {
        path: PathBuf,
        message: String,
        source: std::io::Error,
    },
    /// The output location cannot be used (a hard link or clone across file systems, or on
    /// one without reflinks).
    #[error("{0}")]
    Output(String),
    /// An output directory cannot be staged or put in place (not empty, in use by a running
    /// combine, a rename failed).
    #[error(transparent)]
    Staging(#[from] pgincr_io::StagingError),
    /// A failure that points at a bug in pgincr rather than at the inputs or the output.
    #[error("{0}")]
    Internal(String),
    /// [`crate::CombineOptions::cancel`] was set (SIGINT, SIGTERM).
    #[error("combine cancelled")]
    Cancelled,
}

/// What a failure means for the caller; see [`CombineError::kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CombineErrorKind {
    /// Bad options: fix the invocation.
    Usage,
    /// The backups given are not one complete chain (a backup missing, out of order, of
    /// another cluster): nothing is wrong with the files, the list is.
    ChainBroken,
    /// An input backup is damaged or incomplete (bad page checksum, manifest mismatch,
    /// truncated or missing file): the chain cannot be combined as it is.
    InputDamaged,
    /// The output location is unusable: not empty, being written by a running combine, on
    /// a file system that cannot link or clone the inputs, or not writable as a staging area.
    OutputUnusable,
    /// The output's file system (or the spill directory's) is full.
    DiskFull,
    /// The combine was cancelled.
    Cancelled,
    /// Another I/O failure (permissions, a device error).
    Io,
    /// A bug in pgincr.
    Internal,
}

/// Archive errors as combine reports them: a damaged archive is a damaged input backup, a
/// spill file that cannot be written for lack of space is a full disk.
impl From<pgincr_archive::ArchiveError> for CombineError {
    fn from(e: pgincr_archive::ArchiveError) -> CombineError {
        use pgincr_archive::ArchiveError as A;
        match e {
            A::Io {
                context,
                path,
                source,
            } => CombineError::io(context, path)(source),
            // Only the write to the spill file can run out of space.
            A::Read {
                archive,
                spill: Some(path),
                source,
            } if is_out_of_space(&source) => CombineError::DiskFull {
                message: format!(
                    "backup \"{}\": could not read the archive: {source}",
                    archive.display()
                ),
                path,
                source,
            },
            A::Read {
                archive, source, ..
            } => CombineError::Input {
                backup: archive,
                message: format!("could not read the archive: {source}"),
            },
            A::Malformed {
                archive,
                offset,
                msg,
            } => CombineError::Input {
                backup: PathBuf::from(archive),
                message: format!("could not read the archive: {msg} (at byte {offset})"),
            },
            A::Open(e) => CombineError::Metadata(e),
            A::Layout(m) => CombineError::Damaged(m),
        }
    }
}

impl CombineError {
    /// A constructor for [`CombineError::Io`], for `map_err`; a lack of space becomes
    /// [`CombineError::DiskFull`] with the same message.
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> CombineError {
        let path = path.into();
        move |source| {
            if is_out_of_space(&source) {
                CombineError::DiskFull {
                    message: format!("{context} \"{}\": {source}", path.display()),
                    path,
                    source,
                }
            } else {
                CombineError::Io {
                    context,
                    path,
                    source,
                }
            }
        }
    }

    /// Which kind of failure this is.
    pub fn kind(&self) -> CombineErrorKind {
        use pgincr_io::StagingError;
        match self {
            CombineError::Usage(_) => CombineErrorKind::Usage,
            CombineError::Chain(_) => CombineErrorKind::ChainBroken,
            CombineError::Damaged(_)
            | CombineError::Incremental { .. }
            | CombineError::Input { .. } => CombineErrorKind::InputDamaged,
            CombineError::Metadata(e) => metadata_kind(e),
            CombineError::Manifest(e) => match &e.kind {
                ManifestErrorKind::Io(_) => CombineErrorKind::Io,
                ManifestErrorKind::File(f) => metadata_kind(f),
                _ => CombineErrorKind::InputDamaged,
            },
            CombineError::Io { .. } => CombineErrorKind::Io,
            CombineError::DiskFull { .. } => CombineErrorKind::DiskFull,
            CombineError::Output(_) => CombineErrorKind::OutputUnusable,
            CombineError::Staging(StagingError::Io { source, .. }) if is_out_of_space(source) => {
                CombineErrorKind::DiskFull
            }
            CombineError::Staging(_) => CombineErrorKind::OutputUnusable,
            CombineError::Internal(_) => CombineErrorKind::Internal,
            CombineError::Cancelled => CombineErrorKind::Cancelled,
        }
    }

    /// Whether the chain itself is broken or incomplete ([`CombineErrorKind::ChainBroken`]).
    pub fn is_chain_broken(&self) -> bool {
        self.kind() == CombineErrorKind::ChainBroken
    }

    /// Whether an input backup is damaged ([`CombineErrorKind::InputDamaged`]).
    pub fn is_input_damaged(&self) -> bool {
        self.kind() == CombineErrorKind::InputDamaged
    }

    /// Whether the output location is unusable ([`CombineErrorKind::OutputUnusable`]).
    pub fn is_output_unusable(&self) -> bool {
        self.kind() == CombineErrorKind::OutputUnusable
    }

    /// Whether a write or fsync failed for lack of space ([`CombineErrorKind::DiskFull`]).
    pub fn is_disk_full(&self) -> bool {
        self.kind() == CombineErrorKind::DiskFull
    }

    /// Whether the combine was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, CombineError::Cancelled)
    }
}

/// A metadata file that is missing, not a regular file or too large belongs to a damaged
/// backup; one that cannot be opened or read for another reason is an I/O failure.
fn metadata_kind(e: &BoundedReadError) -> CombineErrorKind {
    match e {
        BoundedReadError::NotRegular { .. } | BoundedReadError::TooLarge { .. } => {
            CombineErrorKind::InputDamaged
        }
        BoundedReadError::Open { error, .. } if error.kind() == std::io::ErrorKind::NotFound => {
            CombineErrorKind::InputDamaged
        }
        BoundedReadError::Open { .. } | BoundedReadError::Read { .. } => CombineErrorKind::Io,
    }
}

pub(crate) use pgincr_io::is_out_of_space;

pub type Result<T, E = CombineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn out_of_space_becomes_disk_full_with_the_io_message() {
        let full = CombineError::io("could not write file", "/o/base/5/1")(os(libc::ENOSPC));
        assert!(matches!(full, CombineError::DiskFull { .. }));
        assert!(full.is_disk_full());
        let io_text = CombineError::Io {
            context: "could not write file",
            path: "/o/base/5/1".into(),
            source: os(libc::ENOSPC),
        }
        .to_string();
        assert_eq!(full.to_string(), io_text);
        assert!(CombineError::io("could not fsync file", "/o/x")(os(libc::EDQUOT)).is_disk_full());
        // Wrapped, as tar passes write errors on.
        let wrapped = io::Error::other(os(libc::ENOSPC));
        assert!(CombineError::io("could not archive file", "/o/x")(wrapped).is_disk_full());
        let other = CombineError::io("could not write file", "/o/x")(os(libc::EIO));
        assert!(matches!(other, CombineError::Io { .. }));
        assert_eq!(other.kind(), CombineErrorKind::Io);
        assert!(!other.is_disk_full());
    }

    #[test]
    fn variants_map_to_kinds() {
        use pgincr_io::StagingError;
        let cases: Vec<(CombineError, CombineErrorKind)> = vec![
            (CombineError::Usage("u".into()), CombineErrorKind::Usage),
            (
                CombineError::Chain("c".into()),
                CombineErrorKind::ChainBroken,
            ),
            (
                CombineError::Damaged("d".into()),
                CombineErrorKind::InputDamaged,
            ),
            (
                CombineError::Input {
                    backup: "/b".into(),
                    message: "m".into(),
                },
                CombineErrorKind::InputDamaged,
            ),
            (
                CombineError::Incremental {
                    backup: "/b".into(),
                    file: "f".into(),
                    source: IncrementalError::TooShort { len: 3 },
                },
                CombineErrorKind::InputDamaged,
            ),
            (
                CombineError::Output("o".into()),
                CombineErrorKind::OutputUnusable,
            ),
            (
                CombineError::Staging(StagingError::NotEmpty("/o".into())),
                CombineErrorKind::OutputUnusable,
            ),
            (
                CombineError::Staging(StagingError::InUse {
                    dir: "/.o.pgincr-partial-1".into(),
                    pid: 1,
                }),
                CombineErrorKind::OutputUnusable,
            ),
            (
                CombineError::Staging(StagingError::Io {
                    context: "could not create directory",
                    path: "/o".into(),
                    source: os(libc::ENOSPC),
                }),
                CombineErrorKind::DiskFull,
            ),
            (
                CombineError::Internal("i".into()),
                CombineErrorKind::Internal,
            ),
            (CombineError::Cancelled, CombineErrorKind::Cancelled),
        ];
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e}");
        }
        assert!(CombineError::Cancelled.is_cancelled());
        assert!(CombineError::Chain("c".into()).is_chain_broken());
        assert!(CombineError::Damaged("d".into()).is_input_damaged());
        assert!(CombineError::Output("o".into()).is_output_unusable());
    }

    #[test]
    fn metadata_and_manifest_errors_by_cause() {
        let missing = BoundedReadError::Open {
            what: "backup_label",
            path: "/b/backup_label".into(),
            error: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(
            CombineError::Metadata(missing).kind(),
            CombineErrorKind::InputDamaged
        );
        let denied = BoundedReadError::Open {
            what: "backup_label",
            path: "/b/backup_label".into(),
            error: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(CombineError::Metadata(denied).kind(), CombineErrorKind::Io);
        let big = BoundedReadError::TooLarge {
            what: "control file",
            path: "/b/global/pg_control".into(),
            len: 1 << 20,
            limit: 8192,
        };
        let text = big.to_string();
        let e = CombineError::Metadata(big);
        assert_eq!(e.to_string(), text);
        assert!(e.is_input_damaged());
        let mismatch = ManifestError {
            path: Some("/b/backup_manifest".into()),
            offset: None,
            kind: ManifestErrorKind::ChecksumMismatch,
        };
        assert!(CombineError::Manifest(mismatch).is_input_damaged());
        let unreadable = ManifestError {
            path: Some("/b/backup_manifest".into()),
            offset: None,
            kind: ManifestErrorKind::Io(os(libc::EIO)),
        };
        assert_eq!(
            CombineError::Manifest(unreadable).kind(),
            CombineErrorKind::Io
        );
    }
}
