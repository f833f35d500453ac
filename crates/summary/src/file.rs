//! A summary file's structure exactly as stored, for byte-identical round trips.

use std::io::{Read, Write};
use std::path::Path;

use crate::block_ref_table::{BlockRefEntry, BlockRefKey, BlockRefTable};
use crate::error::Result;
use crate::reader::SummaryReader;
use crate::writer::SummaryWriter;

/// The entries of one `.summary` file in file order, each with its chunks exactly as stored
/// (array offsets unsorted, `nchunks` as written). Writing it back reproduces the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SummaryFile {
    pub entries: Vec<(BlockRefKey, BlockRefEntry)>,
}

impl SummaryFile {
    /// Reads a whole summary from `r`; `name` appears in errors.
    pub fn read_from<R: Read>(r: R, name: &str) -> Result<SummaryFile> {
        let mut reader = SummaryReader::new(r, name)?;
        let mut entries = Vec::new();
        while let Some(e) = reader.next_entry()? {
            entries.push(e);
        }
        Ok(SummaryFile { entries })
    }

    /// Parses a summary held in memory.
    pub fn parse(bytes: &[u8], name: &str) -> Result<SummaryFile> {
        Self::read_from(bytes, name)
    }

    /// Reads the summary file at `path`.
    pub fn open(path: &Path) -> Result<SummaryFile> {
        let mut reader = SummaryReader::open(path)?;
        let mut entries = Vec::new();
        while let Some(e) = reader.next_entry()? {
            entries.push(e);
        }
        Ok(SummaryFile { entries })
    }

    /// Writes the file: magic, entries verbatim, sentinel, CRC.
    pub fn write_to<W: Write>(&self, w: W) -> std::io::Result<W> {
        let mut writer = SummaryWriter::new(w)?;
        for (key, entry) in &self.entries {
            writer.write_entry(key, entry)?;
        }
        writer.finish()
    }

    /// The serialized bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Writing to a Vec cannot fail.
        self.write_to(Vec::new()).unwrap_or_default()
    }

    /// The logical table the server builds from this one file (limits, then blocks, in file
    /// order).
    pub fn to_table(&self) -> BlockRefTable {
        let mut t = BlockRefTable::new();
        t.merge_file(self);
        t
    }
}
