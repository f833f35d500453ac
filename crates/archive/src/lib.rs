//! Tar archives as `pg_basebackup -Ft` lays them out, and their compression.
//!
//! This crate owns the tar side of a backup for every command: `base.tar`, one `<oid>.tar`
//! per tablespace and `pg_wal.tar`, each uncompressed or compressed with gzip, lz4 or zstd
//! (`.gz`, `.lz4`, `.zst`).
//!
//! - [`Compression`]: the one compression enum with levels, its `-Z` spec parsing and file
//!   name suffixes.
//! - [`header`]: the ustar header parser (bounds-checked, as the server writes headers) and
//!   builder (as the server's `tarCreateHeader` writes them).
//! - Writing: [`compress::open`] gives the output of one archive, plain or compressed on the
//!   client with several threads; [`TarBuilder`] appends members to it.
//! - Reading: [`Extractor`] unpacks tar bytes fed in arbitrary chunks (the `BASE_BACKUP`
//!   stream) into a directory, refusing members that would land outside it; [`TarReader`]
//!   streams the members of a (decompressed) archive; [`TarIndex`] indexes the archives of a
//!   tar-format backup, uncompressed ones in place (each member a byte range of its archive)
//!   and compressed ones streamed once, keeping the members asked for in a spill directory.
//! - [`find_archives`] lists the archives of a tar-format backup directory; [`unpack`]
//!   extracts one archive file (any compression) into a directory.

pub mod compress;
mod compression;
mod error;
mod extract;
pub mod header;
mod index;
mod layout;
mod reader;
mod writer;

pub use compression::Compression;
pub use error::{ArchiveError, Result};
pub use extract::{unpack, Extractor, FileSum};
pub use index::{Location, Member, TarIndex};
pub use layout::{find_archives, ArchiveFile, Part};
pub use reader::{decoder, TarReader};
pub use writer::TarBuilder;
