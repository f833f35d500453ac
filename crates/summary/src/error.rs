//! Errors of this crate. Every format error names the file and the byte offset of the bad field.

use std::path::PathBuf;

use pgincr_types::{Lsn, TimeLineId};

/// What went wrong while reading, writing or querying WAL summaries.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("could not {action} \"{path}\": {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("file \"{file}\" ends unexpectedly at byte {offset} while reading {what}: the summary is truncated; take it again from the server's pg_wal/summaries")]
    Truncated {
        file: String,
        offset: u64,
        what: &'static str,
    },

    #[error("file \"{file}\" has wrong magic number at byte 0: expected {expected}, found {found}{hint}")]
    BadMagic {
        file: String,
        expected: u32,
        found: u32,
        hint: &'static str,
    },

    #[error("file \"{file}\" has wrong checksum at byte {offset}: expected {expected:08X}, found {found:08X}; the file is corrupt")]
    BadChecksum {
        file: String,
        offset: u64,
        expected: u32,
        found: u32,
    },

    #[error("file \"{file}\" has invalid fork number {forknum} at byte {offset}: expected 0..3; the file is corrupt")]
    BadFork {
        file: String,
        offset: u64,
        forknum: i32,
    },

    #[error("file \"{file}\" has {nchunks} chunks for one relation fork at byte {offset}: at most {max} are possible with 32-bit block numbers; the file is corrupt")]
    TooManyChunks {
        file: String,
        offset: u64,
        nchunks: u32,
        max: u32,
    },

    #[error("file \"{file}\" has chunk usage {usage} at byte {offset}: at most {max} is valid; the file is corrupt")]
    BadChunkUsage {
        file: String,
        offset: u64,
        usage: u16,
        max: u16,
    },

    #[error("file \"{file}\" has unexpected data after its checksum at byte {offset}; the file is corrupt")]
    TrailingData { file: String, offset: u64 },

    #[error("no WAL summaries exist on timeline {tli} for {start}..{end} in \"{dir}\"")]
    NoSummaries {
        dir: PathBuf,
        tli: TimeLineId,
        start: Lsn,
        end: Lsn,
    },

    #[error("WAL summaries on timeline {tli} for {start}..{end} in \"{dir}\" are incomplete: nothing covers {missing_from}..{missing_to}")]
    Incomplete {
        dir: PathBuf,
        tli: TimeLineId,
        start: Lsn,
        end: Lsn,
        missing_from: Lsn,
        missing_to: Lsn,
    },

    #[error("invalid LSN range {start}..{end}: the start must not be after the end")]
    BadRange { start: Lsn, end: Lsn },

    #[error("\"{path}\": {message}")]
    DataDir { path: PathBuf, message: String },

    #[error("summary file \"{path}\" has a name whose LSN range runs backwards ({start} > {end}): the server never writes one; remove or rename it")]
    BackwardsRange { path: PathBuf, start: Lsn, end: Lsn },

    #[error("\"{path}\" has a WAL summary file's name but is {kind}: remove it or move it out of the summaries directory")]
    NotRegular {
        path: PathBuf,
        kind: pgincr_types::bounded::FileKind,
    },

    /// The prior backup's manifest could not be used (it names its path).
    #[error(transparent)]
    Manifest(Box<pgincr_types::manifest::ManifestError>),

    /// A file that is not a regular file of plausible size (it names its path).
    #[error(transparent)]
    File(#[from] pgincr_types::bounded::BoundedReadError),

    #[error("summary file \"{path}\" is {len} bytes, more than the {limit} bytes a summary of WAL range {start}..{end} can be: it is not a WAL summary, or it is damaged")]
    TooLarge {
        path: PathBuf,
        len: u64,
        limit: u64,
        start: Lsn,
        end: Lsn,
    },
}

impl SummaryError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        SummaryError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = SummaryError> = std::result::Result<T, E>;
