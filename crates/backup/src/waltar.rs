//! `pg_wal.tar` for tar format with `-X stream`, written as the WAL arrives (as
//! pg_basebackup's tar WAL method does): each segment is a member of the full segment size,
//! followed once complete by its `archive_status/<segment>.done` marker; a timeline history
//! file comes first; the last, partial segment is padded with zeros to its full size and has
//! no marker. gzip-compressed (`pg_wal.tar.gz`) only with `-Z gzip`, as pg_basebackup does.
//!
//! Nothing is fsynced here: the archive is part of the staged backup, which is fsynced as a
//! whole before it is put in place, and WAL streamed for a backup is of no use without it.

use std::path::{Path, PathBuf};

use pgincr_archive::compress::{self, ArchiveOut};
use pgincr_archive::header::{self, Kind, BLOCK};
use pgincr_archive::Compression;
use pgincr_types::walfile::segment_file_name;
use pgincr_types::TimeLineId;

use crate::error::{BackupError, Result};
use crate::staging::create_writer;

pub(crate) struct WalTar {
    out: Box<dyn ArchiveOut>,
    path: PathBuf,
    seg_size: u64,
    tli: TimeLineId,
    /// The segment being written and how many of its bytes are written.
    cur: Option<(u64, u64)>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl WalTar {
    /// Creates `pg_wal.tar` (or `pg_wal.tar.gz` when `compression` is gzip; other algorithms
    /// leave it uncompressed) in `dir`.
    pub fn create(
        dir: &Path,
        compression: Compression,
        threads: usize,
        seg_size: u64,
        tli: TimeLineId,
    ) -> Result<WalTar> {
        let compression = match compression {
            c @ Compression::Gzip(_) => c,
            _ => Compression::None,
        };
        let path = dir.join(format!("pg_wal.tar{}", compression.suffix()));
        let f = create_writer(&path, false, 0)?;
        let out = compress::open(f, compression, threads).map_err(|e| BackupError::io(&path, e))?;
        Ok(WalTar {
            out,
            path,
            seg_size,
            tli,
            cur: None,
        })
    }

    fn put(&mut self, data: &[u8]) -> Result<()> {
        self.out
            .write(data)
            .map_err(|e| BackupError::io(&self.path, e))
    }

    fn member(&mut self, name: &str, size: u64) -> Result<()> {
        let h = header::header(name.as_bytes(), Kind::File, size, 0o600, now())
            .map_err(BackupError::Other)?;
        self.put(&h)
    }

    fn done_marker(&mut self, name: &str) -> Result<()> {
        self.member(&format!("archive_status/{name}.done"), 0)
    }

    /// A timeline history file and its marker.
    pub fn history(&mut self, name: &str, content: &[u8]) -> Result<()> {
        self.member(name, content.len() as u64)?;
        self.put(content)?;
        let pad = header::padding(content.len() as u64) as usize;
        self.put([0u8; BLOCK].get(..pad).unwrap_or_default())?;
        self.done_marker(name)
    }

    /// Writes WAL of segment `segno` from offset `off` (the stream is sequential).
    pub fn write(&mut self, segno: u64, off: u64, data: &[u8]) -> Result<()> {
        if self.cur.map(|c| c.0) != Some(segno) {
            if self.cur.is_some() {
                return Err(BackupError::Other(
                    "internal error: a WAL segment was left before it was complete".into(),
                ));
            }
            let name = segment_file_name(self.tli, segno, self.seg_size);
            self.member(&name, self.seg_size)?;
            self.cur = Some((segno, 0));
            self.zeros_to(off)?;
        }
        if self.cur.map(|c| c.1) != Some(off) {
            return Err(BackupError::Other(format!(
                "internal error: WAL for offset {off} of segment {segno} arrived out of order"
            )));
        }
        self.put(data)?;
        if let Some(c) = self.cur.as_mut() {
            c.1 += data.len() as u64;
        }
        Ok(())
    }

    /// Zeros in the current segment up to `end`.
    fn zeros_to(&mut self, end: u64) -> Result<()> {
        let zeros = vec![0u8; 1 << 20];
        while let Some((_, written)) = self.cur.filter(|c| c.1 < end) {
            let n = (end - written).min(zeros.len() as u64);
            self.put(zeros.get(..n as usize).unwrap_or_default())?;
            if let Some(c) = self.cur.as_mut() {
                c.1 += n;
            }
        }
        Ok(())
    }

    /// The current segment is complete: its marker follows.
    pub fn complete(&mut self) -> Result<()> {
        if let Some((segno, _)) = self.cur.take() {
            let name = segment_file_name(self.tli, segno, self.seg_size);
            self.done_marker(&name)?;
        }
        Ok(())
    }

    /// Pads the last, partial segment to its full size and ends the archive.
    pub fn finish(mut self) -> Result<()> {
        self.zeros_to(self.seg_size)?;
        self.cur = None;
        self.put(&[0u8; 2 * BLOCK])?;
        let path = self.path;
        self.out
            .finish()
            .map(drop)
            .map_err(|e| BackupError::io(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_markers_and_padding() {
        let d = tempfile::tempdir().unwrap();
        let seg = 1u64 << 20;
        let mut t =
            WalTar::create(d.path(), Compression::Zstd(None), 1, seg, TimeLineId(2)).unwrap();
        t.history(
            "00000002.history",
            b"1\t0/3000000\tno recovery target specified\n",
        )
        .unwrap();
        t.write(1, 0, &vec![1u8; seg as usize / 2]).unwrap();
        t.write(1, seg / 2, &vec![1u8; seg as usize / 2]).unwrap();
        t.complete().unwrap();
        t.write(2, 0, &[2u8; 100]).unwrap();
        assert!(t.write(2, 5, b"x").is_err());
        t.finish().unwrap();
        // zstd is not gzip: uncompressed.
        let x = d.path().join("x");
        pgincr_archive::unpack(&d.path().join("pg_wal.tar"), &x).unwrap();
        let first = std::fs::read(x.join("000000020000000000000001")).unwrap();
        assert!(first.len() as u64 == seg && first.iter().all(|&b| b == 1));
        let second = std::fs::read(x.join("000000020000000000000002")).unwrap();
        assert_eq!(second.len() as u64, seg);
        assert!(second[..100].iter().all(|&b| b == 2) && second[100..].iter().all(|&b| b == 0));
        assert!(x.join("archive_status/00000002.history.done").exists());
        assert!(x
            .join("archive_status/000000020000000000000001.done")
            .exists());
        assert!(!x
            .join("archive_status/000000020000000000000002.done")
            .exists());
        assert!(x.join("00000002.history").exists());
    }
}
