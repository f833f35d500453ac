//! WAL segments and records of PostgreSQL 17 and 18.
//!
//! This crate owns everything about the write-ahead log as it sits in segment files: segment
//! names and geometry ([`segment_name`]), page headers ([`page`]), record headers and block
//! references ([`record`]), the main data of the records backup and recovery care about
//! ([`decode`]), where segments come from ([`source`]) and the validating reader that walks
//! records from a start LSN to an end LSN or to the end of WAL ([`reader`]). The segment writer
//! and the WAL receiver move in here later.
//! The WAL archive lives here too: pushing a file into an archive directory and getting it out
//! ([`archive`], for `archive_command` / `restore_command`), and timeline history files and
//! which WAL an archive holds without a gap ([`gap`]).
//!
//! The reader checks what PostgreSQL's `xlogreader.c` checks (page magic, info bits, page
//! address, timeline order, the long header of a segment's first page, continuation lengths,
//! record length, resource manager, the `xl_prev` chain, the CRC-32C, and the block headers of
//! `DecodeXLogRecord`), and reports every failure as a typed [`WalError`] naming the segment
//! file, the byte offset in it and the LSN. It never panics on input and never allocates more
//! than the bytes that actually arrived.
//!
//! ```no_run
//! use pgincr_wal::{DirectorySource, ReaderOptions, WalReader};
//! use pgincr_types::{Lsn, TimeLineId};
//!
//! let source = DirectorySource::new("/var/lib/postgresql/pg_wal");
//! let mut opts = ReaderOptions::new(TimeLineId(1), Lsn(0x1000028));
//! opts.end = Some(Lsn(0x3000000));
//! let mut reader = WalReader::new(source, opts)?;
//! while let Some(rec) = reader.next_record()? {
//!     println!("{} {} {}", rec.lsn, rec.rmgr_name(), rec.total_len);
//! }
//! # Ok::<(), pgincr_wal::WalError>(())
//! ```

pub mod archive;
pub mod decode;
pub mod error;
pub mod gap;
pub mod page;
pub mod reader;
pub mod record;
pub mod rmgr;
pub mod segment_name;
pub mod source;

pub use decode::{Checkpoint, DecodeError, RecordBody, XactBody, XactKind};
pub use error::{WalError, WalErrorKind};
pub use page::{PageHeader, WalMagic};
pub use reader::{EndOfWal, ReaderOptions, WalReader};
pub use record::{BlockImage, BlockRef, Record};
pub use source::{DirectorySource, MemorySource, SegmentId, WalSource};

#[cfg(test)]
mod testwal;

/// `XLOG_BLCKSZ`: the WAL page size of every supported build.
pub const XLOG_BLCKSZ: usize = 8192;
/// `BLCKSZ`: the data page size block images are checked against.
pub const BLCKSZ: u16 = 8192;
/// `SizeOfXLogRecord`.
pub const SIZE_OF_XLOG_RECORD: usize = 24;
/// `XLogRecordMaxSize`: the largest record a server writes (1020 MiB).
pub const XLOG_RECORD_MAX_SIZE: u32 = 1020 * 1024 * 1024;

/// `MAXALIGN` (8 bytes on every supported platform).
pub(crate) fn maxalign(v: u64) -> u64 {
    v.saturating_add(7) & !7
}

/// Little-endian field readers over a slice, bounds-checked.
pub(crate) fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(s.try_into().ok()?))
}
pub(crate) fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}
pub(crate) fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}
