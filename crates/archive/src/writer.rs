//! Writing a tar archive member by member, with headers as the server writes them.

use std::fs::File;
use std::io::{self, Read};

use crate::compress::ArchiveOut;
use crate::header::{self, Kind, BLOCK};

/// Appends members to one archive output (plain or compressed, see [`crate::compress::open`])
/// and ends it with the two zero blocks of the end of an archive.
pub struct TarBuilder {
    out: Box<dyn ArchiveOut>,
    /// For copying member data, allocated once: a fresh buffer per member costs more than
    /// the copy (its pages are faulted in every time).
    buf: Vec<u8>,
}

/// Member data is read in pieces this large.
const COPY_BUF: usize = 256 * 1024;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl TarBuilder {
    pub fn new(out: Box<dyn ArchiveOut>) -> TarBuilder {
        TarBuilder {
            out,
            buf: Vec::new(),
        }
    }

    /// Appends a regular file of `size` bytes read from `src` (from its current position).
    /// A source that ends early is an error: the archive would be damaged.
    pub fn append_file(
        &mut self,
        name: &[u8],
        src: &mut File,
        size: u64,
        mode: u32,
        mtime: u64,
    ) -> io::Result<()> {
        let h = header::header(name, Kind::File, size, mode, mtime).map_err(invalid)?;
        self.out.write(&h)?;
        let n = self.copy(src, size)?;
        if n < size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "\"{}\" shrank while being archived ({n} of {size} bytes)",
                    String::from_utf8_lossy(name)
                ),
            ));
        }
        self.pad(size)
    }

    /// Appends a regular file holding `data`.
    pub fn append_bytes(
        &mut self,
        name: &[u8],
        data: &[u8],
        mode: u32,
        mtime: u64,
    ) -> io::Result<()> {
        let size = data.len() as u64;
        let h = header::header(name, Kind::File, size, mode, mtime).map_err(invalid)?;
        self.out.write(&h)?;
        self.out.write(data)?;
        self.pad(size)
    }

    /// Appends a directory (its name gets a trailing `/`).
    pub fn append_dir(&mut self, name: &[u8], mode: u32, mtime: u64) -> io::Result<()> {
        let h = header::header(name, Kind::Dir, 0, mode, mtime).map_err(invalid)?;
        self.out.write(&h)
    }

    /// Copies `len` bytes of `src` to the output; returns how many there were (short only
    /// if `src` ended early).
    fn copy(&mut self, src: &mut File, len: u64) -> io::Result<u64> {
        if self.buf.is_empty() {
            self.buf = vec![0u8; COPY_BUF];
        }
        let mut left = len;
        while left > 0 {
            let want = left.min(COPY_BUF as u64) as usize;
            let n = match src.read(self.buf.get_mut(..want).unwrap_or_default()) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.out.write(self.buf.get(..n).unwrap_or_default())?;
            left -= n as u64;
        }
        Ok(len - left)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let pad = header::padding(size) as usize;
        if pad > 0 {
            self.out
                .write([0u8; BLOCK].get(..pad).unwrap_or_default())?;
        }
        Ok(())
    }

    /// Writes the end-of-archive blocks and ends the output; returns the file (not fsynced).
    pub fn finish(mut self) -> io::Result<File> {
        self.out.write(&[0u8; 2 * BLOCK])?;
        self.out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::open;
    use crate::{Compression, TarReader};
    use pgincr_io::SeqWriter;
    use std::io::Read;

    #[test]
    fn writes_what_the_reader_reads() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::write(&src, vec![3u8; 1000]).unwrap();
        for c in [Compression::None, Compression::Zstd(None)] {
            let p = d.path().join(format!("x.tar{}", c.suffix()));
            let out = open(SeqWriter::create(&p, 0o600, false).unwrap(), c, 1).unwrap();
            let mut b = TarBuilder::new(out);
            b.append_dir(b"global", 0o700, 5).unwrap();
            b.append_file(b"global/f", &mut File::open(&src).unwrap(), 1000, 0o600, 6)
                .unwrap();
            b.append_bytes(b"tablespace_map", b"", 0o600, 7).unwrap();
            let err = b
                .append_file(b"short", &mut File::open(&src).unwrap(), 2000, 0o600, 6)
                .unwrap_err();
            assert!(err.to_string().contains("shrank"), "{err}");
            b.finish().unwrap();
            let r = crate::decoder(File::open(&p).unwrap(), c).unwrap();
            let mut t = TarReader::new(r, &p);
            let dir = t.next_member().unwrap().unwrap();
            assert_eq!((dir.name.as_slice(), dir.kind), (&b"global"[..], Kind::Dir));
            let f = t.next_member().unwrap().unwrap();
            assert_eq!(
                (f.name.as_slice(), f.size, f.mtime),
                (&b"global/f"[..], 1000, 6)
            );
            let mut body = Vec::new();
            t.read_to_end(&mut body).unwrap();
            assert_eq!(body, vec![3u8; 1000]);
            let m = t.next_member().unwrap().unwrap();
            assert_eq!((m.name.as_slice(), m.size), (&b"tablespace_map"[..], 0));
        }
    }
}
