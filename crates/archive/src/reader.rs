//! Streamed reading: decompression by the archive's compression, and the members of a tar
//! stream one after another.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::compression::Compression;
use crate::error::{ArchiveError, Result};
use crate::header::{self, Header, BLOCK};

/// The decompressed bytes of an archive file compressed with `compression`. gzip and lz4
/// read concatenated members (frames) as one stream, as their command-line tools do.
pub fn decoder(file: File, compression: Compression) -> io::Result<Box<dyn Read + Send>> {
    Ok(match compression {
        Compression::None => Box::new(file),
        Compression::Gzip(_) => Box::new(flate2::read::MultiGzDecoder::new(
            BufReader::with_capacity(256 * 1024, file),
        )),
        // (A 4 MiB buffer around the decoder, so that liblz4 decodes into large buffers,
        // measured slower: the extra copy costs more than it saves.)
        Compression::Lz4(_) => {
            Box::new(Lz4Frames::new(BufReader::with_capacity(256 * 1024, file))?)
        }
        Compression::Zstd(_) => Box::new(zstd::stream::read::Decoder::new(file)?),
    })
}

/// liblz4 frames one after another (`lz4::Decoder` stops at the end of the first).
struct Lz4Frames<R: BufRead> {
    cur: Option<lz4::Decoder<R>>,
}

impl<R: BufRead> Lz4Frames<R> {
    fn new(r: R) -> io::Result<Self> {
        Ok(Lz4Frames {
            cur: Some(lz4::Decoder::new(r)?),
        })
    }
}

impl<R: BufRead> Read for Lz4Frames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(d) = self.cur.as_mut() else {
                return Ok(0);
            };
            let n = d.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // The frame ended: liblz4 asked for exactly its bytes, so another frame, if any,
            // starts at the reader's position.
            let Some(d) = self.cur.take() else {
                return Ok(0);
            };
            let (mut r, res) = d.finish();
            res?;
            if r.fill_buf()?.is_empty() {
                return Ok(0);
            }
            self.cur = Some(lz4::Decoder::new(r)?);
        }
    }
}

/// The members of a tar stream, in order. [`TarReader::next_member`] gives each header;
/// reading the `TarReader` itself gives that member's data (what is not read is skipped).
pub struct TarReader<R> {
    inner: R,
    archive: PathBuf,
    /// Bytes of the stream consumed so far.
    offset: u64,
    /// Data of the current member not yet read.
    body: u64,
    /// Padding after it.
    pad: u64,
    done: bool,
}

impl<R: Read> TarReader<R> {
    /// `archive` names the stream in errors.
    pub fn new(inner: R, archive: &Path) -> TarReader<R> {
        TarReader {
            inner,
            archive: archive.to_path_buf(),
            offset: 0,
            body: 0,
            pad: 0,
            done: false,
        }
    }

    fn malformed(&self, msg: impl Into<String>) -> ArchiveError {
        ArchiveError::Malformed {
            archive: self.archive.display().to_string(),
            offset: self.offset,
            msg: msg.into(),
        }
    }

    fn read_err(&self, source: io::Error) -> ArchiveError {
        ArchiveError::Read {
            archive: self.archive.clone(),
            spill: None,
            source,
        }
    }

    /// The next member's header, after skipping what is left of the current one; `None` at
    /// the end-of-archive blocks (or at the end of the stream on a member boundary).
    /// Names are normalised and checked ([`header::parse_raw`]).
    pub fn next_member(&mut self) -> Result<Option<Header<Vec<u8>>>> {
        if self.done {
            return Ok(None);
        }
        let skip = self.body + self.pad;
        if skip > 0 {
            let n = io::copy(&mut (&mut self.inner).take(skip), &mut io::sink())
                .map_err(|e| self.read_err(e))?;
            self.offset += n;
            if n < skip {
                return Err(self.malformed("archive is truncated"));
            }
            self.body = 0;
            self.pad = 0;
        }
        let mut block = [0u8; BLOCK];
        let mut got = 0;
        while got < BLOCK {
            match self.inner.read(block.get_mut(got..).unwrap_or_default()) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_err(e)),
            }
        }
        if got == 0 {
            tracing::warn!(
                "{}: archive ended without end-of-archive blocks",
                self.archive.display()
            );
            self.done = true;
            return Ok(None);
        }
        if got < BLOCK {
            self.offset += got as u64;
            return Err(self.malformed("archive is truncated"));
        }
        let parsed = header::parse_raw(&block).map_err(|m| self.malformed(m))?;
        self.offset += BLOCK as u64;
        match parsed {
            None => {
                self.done = true;
                Ok(None)
            }
            Some(h) => {
                self.body = h.size;
                self.pad = header::padding(h.size);
                Ok(Some(h))
            }
        }
    }

    /// Bytes of the stream consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// The current member's data.
impl<R: Read> Read for TarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.body == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.body.min(usize::MAX as u64) as usize);
        let n = self.inner.read(buf.get_mut(..want).unwrap_or_default())?;
        if n == 0 && want > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside a member",
            ));
        }
        self.body -= n as u64;
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{file_header, header, Kind};

    fn archive() -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&header(b"./pg_wal/", Kind::Dir, 0, 0o700, 0).unwrap());
        t.extend_from_slice(&file_header("a", 700, 0).unwrap());
        t.extend_from_slice(&[7u8; 700]);
        t.resize(t.len() + header::padding(700) as usize, 0);
        t.extend_from_slice(&file_header("b", 3, 0).unwrap());
        t.extend_from_slice(b"xyz");
        t.resize(t.len() + header::padding(3) as usize, 0);
        t.extend_from_slice(&[0u8; 2 * BLOCK]);
        t
    }

    #[test]
    fn streams_members_and_skips_unread_data() {
        let t = archive();
        let mut r = TarReader::new(&t[..], Path::new("t.tar"));
        let d = r.next_member().unwrap().unwrap();
        assert_eq!((d.name.as_slice(), d.kind), (&b"pg_wal"[..], Kind::Dir));
        let a = r.next_member().unwrap().unwrap();
        assert_eq!(a.size, 700);
        let mut first = [0u8; 10];
        r.read_exact(&mut first).unwrap();
        assert_eq!(first, [7u8; 10]);
        let b = r.next_member().unwrap().unwrap();
        assert_eq!(b.name, b"b");
        let mut body = Vec::new();
        r.read_to_end(&mut body).unwrap();
        assert_eq!(body, b"xyz");
        assert!(r.next_member().unwrap().is_none());
        assert!(r.next_member().unwrap().is_none());

        // Truncated inside a member's data, and inside a header.
        let mut r = TarReader::new(&t[..BLOCK + 600], Path::new("t.tar"));
        r.next_member().unwrap();
        r.next_member().unwrap();
        assert!(r
            .next_member()
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        let mut r = TarReader::new(&t[..100], Path::new("t.tar"));
        assert!(r.next_member().is_err());
        // Ending on a member boundary without end blocks is accepted.
        let mut r = TarReader::new(&t[..BLOCK], Path::new("t.tar"));
        assert!(r.next_member().unwrap().is_some());
        assert!(r.next_member().unwrap().is_none());
    }

    #[test]
    fn decoders_read_concatenated_streams() {
        let d = tempfile::tempdir().unwrap();
        let data = archive();
        let mut lz = Vec::new();
        for _ in 0..2 {
            let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
            io::Write::write_all(&mut e, &data).unwrap();
            let (v, r) = e.finish();
            r.unwrap();
            lz.extend(v);
        }
        let mut gz = Vec::new();
        for _ in 0..2 {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            io::Write::write_all(&mut e, &data).unwrap();
            gz.extend(e.finish().unwrap());
        }
        let zs = zstd::stream::encode_all(&[data.clone(), data.clone()].concat()[..], 3).unwrap();
        for (c, bytes) in [
            (Compression::Lz4(None), lz),
            (Compression::Gzip(None), gz),
            (Compression::Zstd(None), zs),
        ] {
            let p = d.path().join("x");
            std::fs::write(&p, bytes).unwrap();
            let mut back = Vec::new();
            decoder(File::open(&p).unwrap(), c)
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, [data.clone(), data.clone()].concat(), "{c:?}");
        }
    }
}
