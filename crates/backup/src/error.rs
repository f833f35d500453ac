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
    /// A check before the backup failed; `message` explains the fix, `reason` lets a caller
    /// act on it without reading the text.
    #[error("{message}")]
    Refused { reason: Refusal, message: String },
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

/// Why a backup was refused before it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The server's major version cannot do what was asked.
    ServerVersion,
    /// The server runs without a setting incremental backups need (`summarize_wal`,
    /// `wal_level`, a running summarizer).
    ServerConfiguration,
    /// The server's WAL summaries do not reach back to the prior backup (expired by
    /// `wal_summary_keep_time`, or summarization began after it): only a full backup can
    /// follow.
    SummariesMissing,
    /// The prior backup's manifest cannot anchor an incremental (unreadable, damaged, too old).
    PriorManifest,
    /// The prior backup's manifest belongs to another database system.
    OtherCluster,
    /// The server refused the prior manifest at `UPLOAD_MANIFEST`.
    ManifestRejected,
    /// Something this client does not support (floating-point datetimes).
    Unsupported,
}

/// What a caller (the rotation) should make of a failure: retry, fall back to a full backup,
/// alert, or give up. Derived from the error, never from its text alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// An incremental backup is impossible against this prior backup; a full one is not.
    NeedsFullBackup,
    /// The prior backup or the server belongs to another cluster: never mix them.
    OtherCluster,
    /// The server could not be reached, or refused the login.
    Connection,
    /// The connection broke or the server stopped while the backup ran.
    ConnectionLost,
    /// The target's file system is full.
    DiskFull,
    /// The server's configuration must change first.
    ServerConfiguration,
    /// The target cannot be used (not empty, another run writing into it).
    Target,
    Cancelled,
    Other,
}

impl BackupError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> BackupError {
        BackupError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn refused(reason: Refusal, message: impl Into<String>) -> BackupError {
        BackupError::Refused {
            reason,
            message: message.into(),
        }
    }

    /// The class of this failure.
    pub fn failure(&self) -> Failure {
        use pgincr_protocol::Error as P;
        match self {
            BackupError::Refused { reason, .. } => match reason {
                Refusal::SummariesMissing | Refusal::PriorManifest => Failure::NeedsFullBackup,
                Refusal::OtherCluster => Failure::OtherCluster,
                Refusal::ServerConfiguration | Refusal::ServerVersion => {
                    Failure::ServerConfiguration
                }
                Refusal::ManifestRejected | Refusal::Unsupported => Failure::Other,
            },
            BackupError::Protocol(e) => match e {
                P::Connect { .. } | P::Timeout(_) | P::Auth(_) | P::Tls(_) | P::Config(_) => {
                    Failure::Connection
                }
                P::Closed | P::Io(_) => Failure::ConnectionLost,
                P::Db(db) if server_needs_full_backup(&db.message) => Failure::NeedsFullBackup,
                P::Db(db) if db.code == "57P01" || db.code == "57P02" || db.code == "57P03" => {
                    Failure::ConnectionLost
                }
                _ => Failure::Other,
            },
            BackupError::Io { source, .. } if pgincr_io::is_out_of_space(source) => {
                Failure::DiskFull
            }
            BackupError::Staging(e) if staging_disk_full(e) => Failure::DiskFull,
            BackupError::Target(_) | BackupError::Staging(_) => Failure::Target,
            BackupError::Cancelled => Failure::Cancelled,
            _ => Failure::Other,
        }
    }
}

/// The messages with which `BASE_BACKUP (INCREMENTAL)` refuses a prior manifest that only a
/// full backup can replace (src/backend/backup/basebackup_incremental.c).
fn server_needs_full_backup(message: &str) -> bool {
    [
        "WAL summaries are required",
        "manifest requires WAL from",
        "but the summarizer is not running",
        "is from a different timeline",
    ]
    .iter()
    .any(|m| message.contains(m))
}

fn staging_disk_full(e: &pgincr_io::StagingError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return pgincr_io::is_out_of_space(io);
        }
        source = s.source();
    }
    false
}

/// Archive errors as the backup reports them: a failed system call names its path (so a
/// full disk is [`Failure::DiskFull`]), a damaged archive names the archive and the offset.
impl From<pgincr_archive::ArchiveError> for BackupError {
    fn from(e: pgincr_archive::ArchiveError) -> BackupError {
        use pgincr_archive::ArchiveError as A;
        match e {
            A::Io { path, source, .. } => BackupError::Io { path, source },
            A::Read {
                archive, source, ..
            } => BackupError::Io {
                path: archive,
                source,
            },
            A::Malformed {
                archive,
                offset,
                msg,
            } => BackupError::Archive {
                archive,
                offset,
                msg,
            },
            e @ (A::Open(_) | A::Layout(_)) => BackupError::Other(e.to_string()),
        }
    }
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified() {
        let full = BackupError::refused(Refusal::SummariesMissing, "no summaries");
        assert_eq!(full.failure(), Failure::NeedsFullBackup);
        assert_eq!(full.to_string(), "no summaries");
        let other = BackupError::refused(Refusal::OtherCluster, "another system");
        assert_eq!(other.failure(), Failure::OtherCluster);
        let enospc = BackupError::io("/b/x", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(enospc.failure(), Failure::DiskFull);
        let refused = BackupError::Protocol(pgincr_protocol::Error::Connect {
            target: "127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        });
        assert_eq!(refused.failure(), Failure::Connection);
        assert_eq!(
            BackupError::Protocol(pgincr_protocol::Error::Closed).failure(),
            Failure::ConnectionLost
        );
        assert_eq!(BackupError::Cancelled.failure(), Failure::Cancelled);
        assert!(server_needs_full_backup(
            "WAL summaries are required on timeline 1 from 0/2000028 to 0/3000000, but no summaries for that timeline and LSN range exist"
        ));
    }
}
