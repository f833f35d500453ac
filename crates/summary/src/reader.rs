//! Streaming reader for `.summary` files over any `Read`.
//!
//! Allocation is bounded by what the file actually contains: `nchunks` is checked against
//! [`MAX_CHUNKS`] and every chunk usage against [`MAX_ENTRIES_PER_CHUNK`] before anything is
//! sized from them. Unlike the server, a file with bytes after its checksum is refused.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::Path;

use pgincr_types::bounded::open_regular;
use pgincr_types::walfile::parse_summary_file_name;
use pgincr_types::{ForkNumber, Lsn};

use crate::block_ref_table::{
    BlockRefEntry, BlockRefKey, Chunk, MAX_CHUNKS, MAX_ENTRIES_PER_CHUNK,
};
use crate::error::{Result, SummaryError};
use crate::BLOCKREFTABLE_MAGIC;

/// Size of a serialized entry header (`BlockRefTableSerializedEntry`).
const ENTRY_HEADER_SIZE: usize = 24;

/// Reads one summary entry at a time, checking the CRC when the sentinel arrives.
pub struct SummaryReader<R> {
    inner: R,
    name: String,
    offset: u64,
    crc: u32,
    done: bool,
}

/// The largest summary of WAL range `[start, end)`: every entry the summarizer writes comes
/// from WAL in that range, and the densest source there is (a commit record dropping
/// relations: 12 bytes of WAL per relation, three limit-only entries of 24 bytes each) makes
/// the summary about six times the WAL it summarizes. Sixteen times, plus a megabyte for the
/// header, sentinel and rounding, never refuses a real summary but does refuse, say, a
/// multi-gigabyte file named as a summary of a few kilobytes of WAL.
fn max_summary_len(start: Lsn, end: Lsn) -> u64 {
    end.0
        .saturating_sub(start.0)
        .saturating_mul(16)
        .saturating_add(1 << 20)
}

impl SummaryReader<BufReader<std::io::Take<File>>> {
    /// Opens the file at `path` (buffered). It must be a regular file (a FIFO or device is
    /// refused before anything is read); when its name is a summary name, its size must fit
    /// the WAL range the name gives ([`max_summary_len`]).
    pub fn open(path: &Path) -> Result<Self> {
        let range = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_summary_file_name);
        let (f, len) = open_regular(path, u64::MAX, "WAL summary file")?;
        let limit = match range {
            Some((_, start, end)) => {
                let limit = max_summary_len(start, end);
                if len > limit {
                    return Err(SummaryError::TooLarge {
                        path: path.to_path_buf(),
                        len,
                        limit,
                        start,
                        end,
                    });
                }
                limit
            }
            None => u64::MAX,
        };
        // A file that grows while being read ends at the limit, and then fails its checksum.
        SummaryReader::new(
            BufReader::with_capacity(1 << 16, f.take(limit)),
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
        let [spc_oid, db_oid, rel_number, raw_fork, limit_block, nchunks] = le_words(&h);
        let forknum = raw_fork as i32;
        let fork = ForkNumber::from_i32(forknum).ok_or_else(|| SummaryError::BadFork {
            file: self.name.clone(),
            offset: header_at + 12,
            forknum,
        })?;
        let key = BlockRefKey::new(spc_oid, db_oid, rel_number, fork);
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
        for (i, pair) in raw.as_chunks::<2>().0.iter().enumerate() {
            let u = u16::from_le_bytes(*pair);
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
                .as_chunks::<2>()
                .0
                .iter()
                .map(|p| u16::from_le_bytes(*p));
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
        while let Some(rest) = buf.get_mut(got..).filter(|r| !r.is_empty()) {
            match self.inner.read(rest) {
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

/// The little-endian words at the start of `bytes` (as many as fit, the rest zero).
fn le_words<const N: usize>(bytes: &[u8]) -> [u32; N] {
    let mut out = [0u32; N];
    for (o, w) in out.iter_mut().zip(bytes.as_chunks::<4>().0) {
        *o = u32::from_le_bytes(*w);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_refuses_fifos_and_oversized_files() {
        let d = tempfile::tempdir().unwrap();
        // A FIFO given as a summary used to block in open(2) forever.
        let fifo = d.path().join("x.summary");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let err = SummaryReader::open(&fifo).err().unwrap();
        assert!(err.to_string().contains("FIFO"), "{err}");
        let err = SummaryReader::open(Path::new("/dev/zero")).err().unwrap();
        assert!(err.to_string().contains("character device"), "{err}");
        // A name claiming 16 bytes of WAL cannot hold 2 MiB of summary.
        let name =
            pgincr_types::walfile::summary_file_name(pgincr_types::TimeLineId(1), Lsn(16), Lsn(32));
        let big = d.path().join(&name);
        std::fs::write(&big, vec![0u8; 2 << 20]).unwrap();
        let err = SummaryReader::open(&big).err().unwrap();
        assert!(
            matches!(err, SummaryError::TooLarge { .. }) && err.to_string().contains(&name),
            "{err}"
        );
        assert_eq!(max_summary_len(Lsn(32), Lsn(16)), 1 << 20);
    }
}
