//! WAL summary files (`pg_wal/summaries/*.summary`): block reference tables.
//!
//! This crate owns everything about the summaries PostgreSQL 17/18's WAL summarizer writes:
//! the in-memory table with the server's exact update rules ([`BlockRefTable`]), a streaming
//! reader with bounded allocation ([`SummaryReader`]), a writer that reproduces files byte for
//! byte ([`SummaryFile`], [`SummaryWriter`]), `pg_walsummary`'s text ([`text`]), summaries
//! directories with gap and overlap detection ([`directory`]), unions and LSN-range queries
//! ([`query`]) and the size estimate of an incremental backup ([`estimate`]).
//!
//! Files are little-endian, as every supported server writes them.

mod block_ref_table;
pub mod directory;
mod error;
pub mod estimate;
mod file;
mod query;
mod reader;
pub mod text;
mod writer;

pub use block_ref_table::{BlockRefEntry, BlockRefKey, BlockRefTable, Chunk};
pub use directory::{coverage, list_summaries, select_for_range, SummaryFileInfo};
pub use error::SummaryError;
pub use file::SummaryFile;
pub use query::{merge_files, modified_blocks};
pub use reader::SummaryReader;
pub use writer::{write_summary_file, SummaryWriter};

/// `BLOCKREFTABLE_MAGIC`: the first four bytes of every summary file.
pub const BLOCKREFTABLE_MAGIC: u32 = 0x652B_137B;
