//! Reading the archives of a tar-format backup as one stream each, through the workspace's
//! archive layer (`pgincr-archive`: its decoders for gzip, lz4 frames and zstd, and its
//! bounds-checked ustar reader): each member is handed to a callback with a reader over its
//! contents. Nothing is extracted to disk and every byte is read once.
//!
//! The only module of this crate that knows how archives are read.

use pgincr_archive::header::Kind;
use pgincr_archive::{Compression, TarReader};
use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// `parse_tar_compress_algorithm`: the compression of an archive by how the rest of its name
/// (after `base`, `pg_wal` or the tablespace OID) ends, as upstream matches it.
pub(crate) fn compression_of(suffix: &str) -> Option<Compression> {
    if suffix.ends_with(".tar") {
        Some(Compression::None)
    } else if suffix.ends_with(".tgz") || suffix.ends_with(".tar.gz") {
        Some(Compression::Gzip(None))
    } else if suffix.ends_with(".tar.lz4") {
        Some(Compression::Lz4(None))
    } else if suffix.ends_with(".tar.zst") {
        Some(Compression::Zstd(None))
    } else {
        None
    }
}

/// One member's header.
pub(crate) struct MemberHeader {
    /// The path as stored, `./` and trailing `/` removed.
    pub path: Vec<u8>,
    pub size: u64,
    /// A regular file (not a directory, link or other entry).
    pub is_file: bool,
}

/// Adds to `done` the bytes of the archive file read so far (what `-P` reports, as upstream
/// counts): the position of a duplicate of the decoder's descriptor, which shares its offset.
struct FilePosition<'a> {
    file: File,
    last: u64,
    done: &'a AtomicU64,
}

impl FilePosition<'_> {
    fn update(&mut self) {
        if let Ok(pos) = self.file.stream_position() {
            self.done
                .fetch_add(pos.saturating_sub(self.last), Ordering::Relaxed);
            self.last = self.last.max(pos);
        }
    }
}

/// A member's contents, updating the progress every few MB.
struct Body<'a, 'b, R: Read> {
    tar: &'a mut TarReader<R>,
    pos: &'a mut FilePosition<'b>,
    since: usize,
}

impl<R: Read> Read for Body<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.tar.read(buf)?;
        self.since += n;
        if self.since >= 4 << 20 {
            self.since = 0;
            self.pos.update();
        }
        Ok(n)
    }
}

/// Opens `path` and calls `member` for each member of the archive, in order, with a reader
/// over the member's contents (what the callback does not read is skipped). Stops early when
/// the callback returns `Ok(false)`. An error names what could not be read; members before it
/// have been handed over.
pub(crate) fn for_each_member(
    path: &Path,
    compression: Compression,
    done: &AtomicU64,
    mut member: impl FnMut(&MemberHeader, &mut (dyn Read + Send)) -> io::Result<bool>,
) -> io::Result<()> {
    let file = File::open(path)?;
    let mut pos = FilePosition {
        file: file.try_clone()?,
        last: 0,
        done,
    };
    let mut tar = TarReader::new(pgincr_archive::decoder(file, compression)?, path);
    let result = (|| {
        while let Some(h) = tar.next_member().map_err(io::Error::other)? {
            pos.update();
            let header = MemberHeader {
                path: h.name,
                size: h.size,
                is_file: h.kind == Kind::File,
            };
            let mut body = Body {
                tar: &mut tar,
                pos: &mut pos,
                since: 0,
            };
            if !member(&header, &mut body)? {
                break;
            }
        }
        Ok(())
    })();
    pos.update();
    if result.is_ok() {
        // The end-of-archive blocks and what follows them count as read: the archive is done.
        if let Ok(len) = pos.file.metadata().map(|m| m.len()) {
            done.fetch_add(len.saturating_sub(pos.last), Ordering::Relaxed);
        }
    }
    result
}

/// Reads until `buf` is full or the reader ends; how many bytes were read.
pub(crate) fn read_full(r: &mut (dyn Read + Send), buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..).filter(|r| !r.is_empty()) {
        match r.read(rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn archive() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        h.set_mode(0o600);
        b.append_data(&mut h, "base/1/1", &b"hello"[..]).unwrap();
        let mut d = tar::Header::new_ustar();
        d.set_entry_type(tar::EntryType::Directory);
        d.set_size(0);
        b.append_data(&mut d, "base/2", &[][..]).unwrap();
        // A long name, in ustar's prefix field.
        let long = format!("{}/x", "d".repeat(150));
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o600);
        b.append_data(&mut h, &long, &b"hi"[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn members(bytes: &[u8], c: Compression, name: &str) -> Vec<(String, u64, bool, Vec<u8>)> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let done = AtomicU64::new(0);
        let mut out = Vec::new();
        for_each_member(&p, c, &done, |h, r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v)?;
            out.push((
                String::from_utf8_lossy(&h.path).into_owned(),
                h.size,
                h.is_file,
                v,
            ));
            Ok(true)
        })
        .unwrap();
        // A decoder may stop before the end mark it does not need.
        assert_eq!(done.load(Ordering::Relaxed), bytes.len() as u64);
        out
    }

    #[test]
    fn every_codec() {
        let raw = archive();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let gz = gz.finish().unwrap();
        let mut lz = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        lz.write_all(&raw).unwrap();
        let (lz, r) = lz.finish();
        r.unwrap();
        let zst = zstd::encode_all(&raw[..], 3).unwrap();
        for (bytes, c, name) in [
            (raw.clone(), Compression::None, "base.tar"),
            (gz, Compression::Gzip(None), "base.tar.gz"),
            (lz, Compression::Lz4(None), "base.tar.lz4"),
            (zst, Compression::Zstd(None), "base.tar.zst"),
        ] {
            let m = members(&bytes, c, name);
            assert_eq!(m.len(), 3, "{name}");
            assert_eq!(m[0], ("base/1/1".into(), 5, true, b"hello".to_vec()));
            assert!(!m[1].2);
            assert_eq!(m[2].0.len(), 152);
            assert_eq!(m[2].3, b"hi");
        }
    }

    #[test]
    fn truncated_is_an_error() {
        let raw = archive();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("base.tar");
        std::fs::write(&p, &raw[..700]).unwrap();
        let done = AtomicU64::new(0);
        let mut short = false;
        let r = for_each_member(&p, Compression::None, &done, |h, r| {
            let mut v = vec![0u8; 16];
            let n = read_full(r, &mut v)?;
            short |= (n as u64) < h.size;
            Ok(true)
        });
        assert!(r.is_err() || short);
    }

    #[test]
    fn suffixes() {
        assert_eq!(compression_of(".tar"), Some(Compression::None));
        assert_eq!(compression_of(".tar.gz"), Some(Compression::Gzip(None)));
        assert_eq!(compression_of(".tgz"), Some(Compression::Gzip(None)));
        assert_eq!(compression_of(".tar.lz4"), Some(Compression::Lz4(None)));
        assert_eq!(compression_of(".tar.zst"), Some(Compression::Zstd(None)));
        assert_eq!(compression_of(".tar.bz2"), None);
        assert_eq!(compression_of(""), None);
    }
}
