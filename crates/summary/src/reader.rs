//! Streaming reader for `.summary` files over any `Read`.
//!
//! Allocation is bounded by what the file actually contains: `nchunks` is checked against
//! [`MAX_CHUNKS`] and every chunk usage against [`MAX_ENTRIES_PER_CHUNK`] before anything is
//! sized from them. Unlike the server, a file with bytes after its checksum is refused.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::Path;

use pgincr_types::ForkNumber;

use crate::block_ref_table::{
    BlockRefEntry, BlockRefKey, Chunk, MAX_CHUNKS, MAX_ENTRIES_PER_CHUNK,
};
use crate::error::{Result, SummaryError};
use crate::BLOCKREFTABLE_MAGIC;

/// Size of a serialized entry header (`BlockRefTableSerializedEntry`).
pub const ENTRY_HEADER_SIZE: usize = 24;

/// Reads one summary entry at a time, checking the CRC when the sentinel arrives.
pub struct SummaryReader<R> {
    inner: R,
    name: String,
    offset: u64,
    crc: u32,
    done: bool,
}

impl SummaryReader<BufReader<File>> {
    /// Opens the file at `path` (buffered).
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).map_err(|e| SummaryError::io("open file", path, e))?;
        SummaryReader::new(
            BufReader::with_capacity(1 << 16, f),
            &path.display().to_string(),
        )
    }
}

impl<R: Read> SummaryReader<R> {
    /// Starts reading: checks the magic number. `name` is used in errors. `inner` is read in
    /// small pieces, so give it a buffered reader.
    pub fn new(inner: R, name: &str) -> Result<Self> {
        let mut r = SummaryReader {
            inner,
            name: name.to_string(),
            offset: 0,
            crc: 0,
            done: false,
        };
        let mut magic = [0u8; 4];
        r.read_exact(&mut magic, "the magic number")?;
        let found = u32::from_le_bytes(magic);
        if found != BLOCKREFTABLE_MAGIC {
            return Err(SummaryError::BadMagic {
                file: r.name,
                expected: BLOCKREFTABLE_MAGIC,
                found,
                hint: if found == BLOCKREFTABLE_MAGIC.swap_bytes() {
                    " (byte-swapped: written by a big-endian server, which is not supported)"
                } else {
                    " (not a WAL summary file)"
                },
            });
        }
        Ok(r)
    }

    /// The name used in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next relation fork, or `None` after the sentinel and a verified checksum.
    pub fn next_entry(&mut self) -> Result<Option<(BlockRefKey, BlockRefEntry)>> {
        if self.done {
            return Ok(None);
        }
        let header_at = self.offset;
        let mut h = [0u8; ENTRY_HEADER_SIZE];
        self.read_exact(&mut h, "an entry header")?;
        if h == [0u8; ENTRY_HEADER_SIZE] {
            self.finish()?;
            return Ok(None);
        }
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let forknum = word(12) as i32;
        let fork = ForkNumber::from_i32(forknum).ok_or_else(|| SummaryError::BadFork {
            file: self.name.clone(),
            offset: header_at + 12,
            forknum,
        })?;
        let key = BlockRefKey::new(word(0), word(4), word(8), fork);
        let limit_block = word(16);
        let nchunks = word(20);
        if nchunks > MAX_CHUNKS {
            return Err(SummaryError::TooManyChunks {
                file: self.name.clone(),
                offset: header_at + 20,
                nchunks,
                max: MAX_CHUNKS,
            });
        }
        let usage_at = self.offset;
        let mut raw = vec![0u8; nchunks as usize * 2];
        self.read_exact(&mut raw, "a chunk usage array")?;
        let mut usage = Vec::with_capacity(nchunks as usize);
        for (i, pair) in raw.chunks_exact(2).enumerate() {
            let u = u16::from_le_bytes([pair[0], pair[1]]);
            if u > MAX_ENTRIES_PER_CHUNK {
                return Err(SummaryError::BadChunkUsage {
                    file: self.name.clone(),
                    offset: usage_at + 2 * i as u64,
                    usage: u,
                    max: MAX_ENTRIES_PER_CHUNK,
                });
            }
            usage.push(u);
        }
        let mut chunks = Vec::with_capacity(usage.len());
        let mut buf = Vec::new();
        for u in usage {
            buf.resize(usize::from(u) * 2, 0);
            self.read_exact(&mut buf, "chunk data")?;
            let words = buf
                .chunks_exact(2)
                .map(|p| u16::from_le_bytes([p[0], p[1]]));
            chunks.push(if u == MAX_ENTRIES_PER_CHUNK {
                let mut bitmap = Box::new([0u16; MAX_ENTRIES_PER_CHUNK as usize]);
                for (slot, w) in bitmap.iter_mut().zip(words) {
                    *slot = w;
                }
                Chunk::Bitmap(bitmap)
            } else {
                Chunk::Array(words.collect())
            });
        }
        Ok(Some((key, BlockRefEntry::from_raw(limit_block, chunks))))
    }

    /// After the sentinel: compare the checksum and insist on end of file.
    fn finish(&mut self) -> Result<()> {
        let expected = self.crc;
        let crc_at = self.offset;
        let mut c = [0u8; 4];
        self.read_exact(&mut c, "the checksum")?;
        let found = u32::from_le_bytes(c);
        if found != expected {
            return Err(SummaryError::BadChecksum {
                file: self.name.clone(),
                offset: crc_at,
                expected,
                found,
            });
        }
        let mut extra = [0u8; 1];
        loop {
            match self.inner.read(&mut extra) {
                Ok(0) => break,
                Ok(_) => {
                    return Err(SummaryError::TrailingData {
                        file: self.name.clone(),
                        offset: self.offset,
                    })
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(SummaryError::io("read file", &self.name, e)),
            }
        }
        self.done = true;
        Ok(())
    }

    /// Fills `buf`, updating the offset and running CRC; a short read is a truncation error.
    fn read_exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<()> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(SummaryError::Truncated {
                        file: self.name.clone(),
                        offset: self.offset + got as u64,
                        what,
                    })
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(SummaryError::io("read file", &self.name, e)),
            }
        }
        self.crc = crc32c::crc32c_append(self.crc, buf);
        self.offset += buf.len() as u64;
        Ok(())
    }
}
