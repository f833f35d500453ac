//! File output shared by the backup and combine engines.
//!
//! This crate owns how pgincr puts large files on disk: [`AlignedBuf`], a heap buffer aligned
//! for direct I/O; [`SeqWriter`], a sequential file writer that bypasses the page cache
//! (`O_DIRECT`) where the file system allows it and falls back to ordinary writes where it
//! does not; [`ReadFile`], positional reads that skip the page cache for data not already in
//! it; the small durability helpers ([`fsync_dir`], [`start_writeback`]); and [`Staging`], the one
//! way output directories come into being (hidden name, fsync, rename, leftovers of killed
//! runs recognised and removed).
//!
//! Why direct I/O: a backup or a combined chain is written once and not read again by this
//! process. Through the page cache every byte is copied into freshly allocated cache pages,
//! accounted dirty, and written back later; on the virtual machines our users (and our CI)
//! run on, that copy dominated the whole job (4.5 GB written with `dd` took 11 s of system
//! time buffered and 0.3 s direct). Durability is unchanged: files are still fsynced.

mod aligned;
mod durable;
mod read_file;
mod seq_writer;
pub mod staging;

pub use aligned::{AlignedBuf, ALIGN};
pub use durable::{
    fsync_all, fsync_dir, fsync_tree, is_out_of_space, start_writeback, FSYNC_THREADS,
};
pub use read_file::ReadFile;
pub use seq_writer::{SeqWriter, DIRECT_MIN};
pub use staging::{crash_point, sweep_leftovers, Leftover, Staging, StagingError};
