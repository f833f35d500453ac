//! `backup_manifest`: parsed as `src/common/parse_manifest.c` parses it, written byte for byte
//! as the server and `pg_combinebackup` write it.
//!
//! The reader streams: it never holds the manifest text, only the parsed entries, and every
//! token it buffers is capped at `MAX_TOKEN_LEN` (64 KiB). The manifest checksum is verified the
//! way PostgreSQL does it, by position rather than by key: SHA-256 over every byte up to and
//! including the penultimate newline of the file (format reference 9.3). The streaming hash keeps
//! the states at the last two newlines so that no text needs to be kept.

mod error;
mod gmt;
mod input;
mod lexer;
mod semantic;
mod writer;

use std::io::{self, Read, Write};
use std::path::Path;

use indexmap::IndexMap;

use crate::bounded::{open_regular, MANIFEST_LIMIT};
use crate::checksum::{Checksum, ChecksumType};
use crate::lsn::{Lsn, TimeLineId};
use input::Input;
use lexer::Parser;
use semantic::Semantic;

pub use error::{ManifestError, ManifestErrorKind};
pub use writer::ManifestWriter;

/// Longest string or scalar token the reader buffers. Manifest paths are bounded by MAXPGPATH
/// (1024 bytes, 2048 hex-encoded), so this leaves ample room while bounding memory.
pub(crate) const MAX_TOKEN_LEN: usize = 64 * 1024;

/// One `Files` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestFile {
    pub size: u64,
    /// `Last-Modified` as seconds since the Unix epoch. PostgreSQL ignores the field when
    /// reading; it is kept only so a parsed manifest can be written back.
    pub last_modified: Option<i64>,
    pub checksum_type: ChecksumType,
    /// The checksum payload; empty when the entry has none.
    pub checksum: Box<[u8]>,
}

impl ManifestFile {
    /// The checksum, if the entry carries one of type `kind`.
    pub fn checksum_of(&self, kind: ChecksumType) -> Option<Checksum> {
        (kind != ChecksumType::None && self.checksum_type == kind && !self.checksum.is_empty())
            .then(|| Checksum {
                kind,
                bytes: self.checksum.clone(),
            })
    }
}

/// One `WAL-Ranges` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalRange {
    pub tli: TimeLineId,
    pub start: Lsn,
    pub end: Lsn,
}

/// A parsed `backup_manifest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub version: u32,
    /// Present in every version 2 manifest.
    pub system_identifier: Option<u64>,
    /// Files keyed by raw path bytes (`Encoded-Path` is decoded), in manifest order.
    pub files: IndexMap<Box<[u8]>, ManifestFile>,
    pub wal_ranges: Vec<WalRange>,
}

impl Manifest {
    /// Reads and verifies `path`, which must be a regular file of at most
    /// [`MANIFEST_LIMIT`] bytes (a FIFO or device is refused before anything is read).
    pub fn read(path: &Path) -> Result<Manifest, ManifestError> {
        let (file, _) =
            open_regular(path, MANIFEST_LIMIT, "backup manifest").map_err(|e| ManifestError {
                path: Some(path.to_path_buf()),
                offset: None,
                kind: ManifestErrorKind::File(e),
            })?;
        // A file that grows past the limit while being read is cut there, and then fails its
        // checksum.
        let reader = file.take(MANIFEST_LIMIT);
        Self::parse(reader).map_err(|mut e| {
            e.path = Some(path.to_path_buf());
            e
        })
    }

    /// Parses and verifies a manifest from any reader.
    pub fn parse<R: Read>(reader: R) -> Result<Manifest, ManifestError> {
        let mut p = Parser {
            input: Input::new(reader),
            sem: Semantic::default(),
        };
        let result = p.run();
        let offset = p.input.offset();
        result.map_err(|kind| ManifestError {
            path: None,
            offset: Some(offset),
            kind,
        })?;
        Ok(p.sem.manifest)
    }

    /// Looks a file up by its manifest path.
    pub fn file(&self, path: &[u8]) -> Option<&ManifestFile> {
        self.files.get(path)
    }

    /// Writes this manifest in PostgreSQL's layout. Entries without `last_modified` get the
    /// epoch.
    pub fn write_to<W: Write>(&self, out: W) -> io::Result<W> {
        let mut w = ManifestWriter::new(out, self.system_identifier.unwrap_or(0))?;
        for (path, f) in &self.files {
            let sum = (!f.checksum.is_empty()).then(|| Checksum {
                kind: f.checksum_type,
                bytes: f.checksum.clone(),
            });
            w.add_file(path, f.size, f.last_modified.unwrap_or(0), sum.as_ref())?;
        }
        w.finish(&self.wal_ranges)
    }
}

#[cfg(test)]
mod tests;
