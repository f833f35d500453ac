//! Where WAL segments come from. A [`WalSource`] serves byte ranges of segment files; the
//! reader does all validation. Today: a directory (`pg_wal`, an archive directory, a copy);
//! compressed files, an archive and tar members implement the same trait later.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::segment_name;
use pgincr_types::TimeLineId;

/// One segment: its timeline, number and file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentId {
    pub tli: TimeLineId,
    pub segno: u64,
    /// `XLogFileName`.
    pub name: String,
}

impl SegmentId {
    pub fn new(tli: TimeLineId, segno: u64, segment_size: u64) -> SegmentId {
        SegmentId {
            tli,
            segno,
            name: segment_name::segment_file_name(tli, segno, segment_size),
        }
    }
}

/// A provider of segment bytes.
pub trait WalSource {
    /// Reads bytes of `seg` starting at `offset` into `buf`; returns how many were read (fewer
    /// than asked only at the end of what the source has, 0 past it), or `Ok(None)` when the
    /// source has no such segment.
    fn read_at(
        &mut self,
        seg: &SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> io::Result<Option<usize>>;

    /// The first bytes of some segment of `tli`, when the source can tell without being asked
    /// for a particular one: lets the reader learn the segment size from a long page header
    /// when the caller does not know it.
    fn any_segment_header(&mut self, tli: TimeLineId) -> io::Result<Option<Vec<u8>>> {
        let _ = tli;
        Ok(None)
    }
}

/// Segment files `TTTTTTTTXXXXXXXXYYYYYYYY` in one directory.
pub struct DirectorySource {
    dir: PathBuf,
    open: Option<(String, File)>,
}

impl DirectorySource {
    pub fn new(dir: impl AsRef<Path>) -> DirectorySource {
        DirectorySource {
            dir: dir.as_ref().to_path_buf(),
            open: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&mut self, name: &str) -> io::Result<Option<&File>> {
        let reuse = matches!(&self.open, Some((n, _)) if n == name);
        if !reuse {
            self.open = None;
            let path = self.dir.join(name);
            let f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let meta = f.metadata()?;
            if !meta.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a regular file", path.display()),
                ));
            }
            self.open = Some((name.to_string(), f));
        }
        Ok(self.open.as_ref().map(|(_, f)| f))
    }
}

impl WalSource for DirectorySource {
    fn read_at(
        &mut self,
        seg: &SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> io::Result<Option<usize>> {
        let Some(f) = self.file(&seg.name)? else {
            return Ok(None);
        };
        let mut got = 0;
        while got < buf.len() {
            let Some(rest) = buf.get_mut(got..) else {
                break;
            };
            match f.read_at(rest, offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Some(got))
    }

    fn any_segment_header(&mut self, tli: TimeLineId) -> io::Result<Option<Vec<u8>>> {
        let prefix = format!("{:08X}", tli.0);
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| {
                n.len() == 24
                    && n.starts_with(&prefix)
                    && n.bytes()
                        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
            })
            .collect();
        names.sort();
        for n in names {
            let f = File::open(self.dir.join(&n))?;
            let mut buf = vec![0u8; crate::page::LONG_HEADER_SIZE];
            if f.read_exact_at(&mut buf, 0).is_ok() {
                return Ok(Some(buf));
            }
        }
        Ok(None)
    }
}

/// Segments held in memory, by file name (tests, and members already read from elsewhere).
#[derive(Default, Clone)]
pub struct MemorySource {
    segments: std::collections::HashMap<String, Vec<u8>>,
}

impl MemorySource {
    pub fn new() -> MemorySource {
        MemorySource::default()
    }
    pub fn insert(&mut self, name: impl Into<String>, bytes: Vec<u8>) {
        self.segments.insert(name.into(), bytes);
    }
}

impl WalSource for MemorySource {
    fn read_at(
        &mut self,
        seg: &SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> io::Result<Option<usize>> {
        let Some(data) = self.segments.get(&seg.name) else {
            return Ok(None);
        };
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let avail = data.get(start..).unwrap_or(&[]);
        let n = avail.len().min(buf.len());
        if let (Some(d), Some(s)) = (buf.get_mut(..n), avail.get(..n)) {
            d.copy_from_slice(s);
        }
        Ok(Some(n))
    }

    fn any_segment_header(&mut self, tli: TimeLineId) -> io::Result<Option<Vec<u8>>> {
        let prefix = format!("{:08X}", tli.0);
        let mut names: Vec<&String> = self
            .segments
            .keys()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        names.sort();
        Ok(names.first().and_then(|n| self.segments.get(*n)).map(|d| {
            d.iter()
                .take(crate::page::LONG_HEADER_SIZE)
                .copied()
                .collect()
        }))
    }
}
