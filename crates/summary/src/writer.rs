//! Streaming writer for `.summary` files, and durable writing to a path.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::block_ref_table::{BlockRefEntry, BlockRefKey, Chunk};
use crate::error::{Result, SummaryError};
use crate::file::SummaryFile;
use crate::BLOCKREFTABLE_MAGIC;

/// Writes magic, entries and the terminating sentinel + CRC (`BlockRefTableWriter`). Entries
/// are written as given: callers supply them in key order, as the server's writer expects.
pub struct SummaryWriter<W: Write> {
    inner: W,
    crc: u32,
}

impl<W: Write> SummaryWriter<W> {
    /// Starts a file: writes the magic number.
    pub fn new(inner: W) -> std::io::Result<Self> {
        let mut w = SummaryWriter { inner, crc: 0 };
        w.put(&BLOCKREFTABLE_MAGIC.to_le_bytes())?;
        Ok(w)
    }

    /// Writes one entry with all its chunks (`nchunks = entry.chunks().len()`).
    pub fn write_entry(&mut self, key: &BlockRefKey, entry: &BlockRefEntry) -> std::io::Result<()> {
        self.write_entry_chunks(key, entry, entry.chunks())
    }

    /// Writes one entry as the server does: trailing unused chunks trimmed.
    pub fn write_entry_trimmed(
        &mut self,
        key: &BlockRefKey,
        entry: &BlockRefEntry,
    ) -> std::io::Result<()> {
        let all = entry.chunks();
        // trimmed_nchunks() is at most the number of chunks.
        let trimmed = all.get(..entry.trimmed_nchunks()).unwrap_or(all);
        self.write_entry_chunks(key, entry, trimmed)
    }

    /// Writes the entry's header and `chunks`, the first of `entry`'s chunks.
    fn write_entry_chunks(
        &mut self,
        key: &BlockRefKey,
        entry: &BlockRefEntry,
        chunks: &[Chunk],
    ) -> std::io::Result<()> {
        let nchunks = chunks.len();
        let mut h = [0u8; 24];
        let r = &key.rlocator;
        for (slot, v) in h.as_chunks_mut::<4>().0.iter_mut().zip([
            r.spc_oid,
            r.db_oid,
            r.rel_number,
            key.fork as u32,
            entry.limit_block(),
            nchunks as u32,
        ]) {
            *slot = v.to_le_bytes();
        }
        self.put(&h)?;
        let mut buf = Vec::with_capacity(nchunks * 2);
        for c in chunks {
            buf.extend_from_slice(&c.usage().to_le_bytes());
        }
        self.put(&buf)?;
        for c in chunks {
            buf.clear();
            match c {
                Chunk::Array(v) => v
                    .iter()
                    .for_each(|o| buf.extend_from_slice(&o.to_le_bytes())),
                Chunk::Bitmap(w) => w
                    .iter()
                    .for_each(|o| buf.extend_from_slice(&o.to_le_bytes())),
            }
            self.put(&buf)?;
        }
        Ok(())
    }

    /// Writes the sentinel and the CRC; returns the inner writer (flushed).
    pub fn finish(mut self) -> std::io::Result<W> {
        self.put(&[0u8; 24])?;
        let crc = self.crc;
        self.inner.write_all(&crc.to_le_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.inner.write_all(data)
    }
}

/// Writes `file` to `path` durably: a temporary name in the same directory, fsync, rename,
/// fsync of the directory. Mode 0600. A crash leaves no file under the final name.
pub fn write_summary_file(path: &Path, file: &SummaryFile) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| SummaryError::io("create file", &tmp, e))?;
        let f = file
            .write_to(BufWriter::new(f))
            .map_err(|e| SummaryError::io("write file", &tmp, e))?;
        let f = f
            .into_inner()
            .map_err(|e| SummaryError::io("write file", &tmp, e.into_error()))?;
        f.sync_all()
            .map_err(|e| SummaryError::io("fsync file", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| SummaryError::io("rename file", &tmp, e))?;
        pgincr_io::fsync_dir(dir).map_err(|e| SummaryError::io("fsync directory", dir, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
