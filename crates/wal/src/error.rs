//! Reader errors: what is wrong, in which segment file, at which byte offset and LSN.

use pgincr_types::Lsn;

/// A failure while reading WAL, located in a segment file.
#[derive(Debug, thiserror::Error)]
#[error("WAL segment {segment}, offset {offset} (LSN {lsn}): {kind}")]
pub struct WalError {
    /// The segment file name (`TTTTTTTTXXXXXXXXYYYYYYYY`), or the source's description.
    pub segment: String,
    /// Byte offset inside that segment file.
    pub offset: u64,
    /// The LSN of the byte (or of the record) the failure concerns.
    pub lsn: Lsn,
    pub kind: WalErrorKind,
}

impl WalError {
    /// True when the failure looks like never-written WAL (zeroed space, a missing or recycled
    /// segment) rather than damage: where recovery would end WAL quietly.
    pub fn is_clean_end(&self) -> bool {
        matches!(
            self.kind,
            WalErrorKind::ZeroedRecord
                | WalErrorKind::ZeroedPage
                | WalErrorKind::SegmentMissing
                | WalErrorKind::UnexpectedPageAddr { .. }
        )
    }
}

/// What is wrong. Messages follow `xlogreader.c`'s where it has one.
#[derive(Debug, thiserror::Error)]
pub enum WalErrorKind {
    #[error("could not read: {0}")]
    Io(#[source] std::io::Error),
    #[error("segment file not found")]
    SegmentMissing,
    #[error("segment file is truncated: {got} bytes of the {want}-byte page are present")]
    Truncated { got: usize, want: usize },
    #[error("page is all zeroes (no WAL was written here)")]
    ZeroedPage,
    #[error("invalid magic number {found:04X} (expected {expected})")]
    BadMagic { found: u16, expected: String },
    #[error("invalid info bits {0:04X}")]
    BadInfoBits(u16),
    #[error("first page of the segment has no long header (info bits {0:04X})")]
    NoLongHeader(u16),
    #[error("WAL file is from different database system: WAL file database system identifier is {found}, expected {expected}")]
    SystemIdMismatch { found: u64, expected: u64 },
    #[error("WAL file is from different database system: incorrect segment size in page header ({found}, expected {expected})")]
    SegmentSizeMismatch { found: u32, expected: u64 },
    #[error(
        "invalid WAL segment size {0} in the long page header (a power of two from 1 MiB to 1 GiB)"
    )]
    BadSegmentSize(u32),
    #[error(
        "WAL file is from different database system: incorrect XLOG_BLCKSZ in page header ({0})"
    )]
    BadBlockSize(u32),
    #[error("unexpected pageaddr {found} (expected {expected})")]
    UnexpectedPageAddr { found: Lsn, expected: Lsn },
    #[error("out-of-sequence timeline ID {found} (after {after})")]
    TimelineOutOfSequence { found: u32, after: u32 },
    #[error("page timeline ID {found} is newer than the timeline {reading} being read")]
    TimelineTooNew { found: u32, reading: u32 },
    #[error("invalid record offset: expected at least {expected}, got {got}")]
    BadRecordOffset { expected: u32, got: u32 },
    #[error("contrecord is requested by {0}")]
    ContrecordRequested(Lsn),
    #[error("invalid record length: expected at least 24, got 0 (zeroed space: end of WAL)")]
    ZeroedRecord,
    #[error("invalid record length: expected at least 24, got {0}")]
    RecordTooShort(u32),
    #[error("record length {0} exceeds the maximum PostgreSQL writes (XLogRecordMaxSize, {max})", max = crate::XLOG_RECORD_MAX_SIZE)]
    RecordTooLong(u32),
    #[error("invalid resource manager ID {0}")]
    BadRmgr(u8),
    #[error("record with incorrect prev-link {found} (expected {expected})")]
    BadPrevLink { found: Lsn, expected: String },
    #[error("there is no contrecord flag on the page continuing the record at {0}")]
    NoContrecordFlag(Lsn),
    #[error("invalid contrecord length {found} (expected {expected}) for the record at {record}")]
    BadContrecordLength {
        found: u32,
        expected: i64,
        record: Lsn,
    },
    #[error("record at {record} is cut off by an overwrite-contrecord page (XLP_FIRST_IS_OVERWRITE_CONTRECORD)")]
    Overwritten { record: Lsn },
    #[error("incorrect resource manager data checksum in record at {record} (stored {stored:08X}, computed {computed:08X})")]
    BadCrc {
        record: Lsn,
        stored: u32,
        computed: u32,
    },
    #[error("record at {record}: {what}")]
    BadBody { record: Lsn, what: String },
    #[error("end LSN {end} was requested but WAL ends at {at}: {why}")]
    EndNotReached { end: Lsn, at: Lsn, why: String },
    #[error("invalid reader options: {0}")]
    Options(String),
}
