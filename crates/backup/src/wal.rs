//! `-X stream`: a second replication connection receives WAL while the backup runs and writes
//! full-size segment files, with `archive_status/<segment>.done` for each completed one, as
//! pg_basebackup does: into the `pg_wal` directory (plain format), or straight into
//! `pg_wal.tar` (tar format, see `waltar`).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgincr_protocol::{Config, Connection, WalEvent};
use pgincr_types::walfile::{history_file_name, segment_file_name};
use pgincr_types::{Lsn, TimeLineId};
use tokio::sync::watch;

use crate::error::{BackupError, Result};
use crate::staging::mkdir_0700;
use crate::waltar::WalTar;

/// Where streamed WAL goes.
#[derive(Clone, Debug)]
pub(crate) enum WalTarget {
    /// Segment files in this `pg_wal` directory.
    Dir(PathBuf),
    /// `pg_wal.tar` in this directory, gzip-compressed if `compression` is gzip.
    Tar {
        dir: PathBuf,
        compression: pgincr_archive::Compression,
        threads: usize,
    },
}

pub(crate) struct WalSetup {
    /// Replication connection settings, environment already applied.
    pub conn: Config,
    pub system_identifier: u64,
    pub start: Lsn,
    pub tli: TimeLineId,
    pub seg_size: u64,
    pub target: WalTarget,
    pub slot: Option<String>,
    pub create_slot: bool,
    pub no_sync: bool,
}

#[derive(Debug, Default)]
pub(crate) struct WalStats {
    pub segments: u64,
    pub bytes: u64,
}

/// Writes streamed WAL into segment files, or into `pg_wal.tar` when `tar` is set.
struct Segments {
    dir: PathBuf,
    tar: Option<WalTar>,
    seg_size: u64,
    tli: TimeLineId,
    cur: Option<(u64, File, PathBuf)>,
    /// Full segments waiting for fsync and their `.done` marker, with their end position.
    done: Vec<(u64, File, PathBuf, Lsn)>,
    written: Lsn,
    flushed: Lsn,
    no_sync: bool,
    stats: WalStats,
}

fn touch(path: &Path) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map(|_| ())
        .map_err(|e| BackupError::io(path, e))
}

impl Segments {
    fn write(&mut self, start: Lsn, mut data: &[u8]) -> Result<()> {
        if start != self.written {
            return Err(BackupError::Other(format!(
                "WAL stream jumped from {} to {}; the server skipped WAL",
                self.written, start
            )));
        }
        while !data.is_empty() {
            let segno = self.written.segment(self.seg_size);
            let off = self.written.segment_offset(self.seg_size);
            let n = ((self.seg_size - off) as usize).min(data.len());
            if let Some(t) = self.tar.as_mut() {
                let (now, rest) = data.split_at_checked(n).unwrap_or((data, &[]));
                t.write(segno, off, now)?;
                self.written = Lsn(self.written.0 + n as u64);
                self.stats.bytes += n as u64;
                data = rest;
                if off + n as u64 == self.seg_size {
                    t.complete()?;
                    // Durable with the rest of the backup, at its commit.
                    self.flushed = self.written;
                    self.stats.segments += 1;
                }
                continue;
            }
            if self.cur.as_ref().map(|c| c.0) != Some(segno) {
                let name = segment_file_name(self.tli, segno, self.seg_size);
                let path = self.dir.join(&name);
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| BackupError::io(&path, e))?;
                // Pre-sized to a full segment of zeros, like pg_basebackup's padded files.
                f.set_len(self.seg_size)
                    .map_err(|e| BackupError::io(&path, e))?;
                self.cur = Some((segno, f, path));
            }
            let (now, rest) = data.split_at_checked(n).unwrap_or((data, &[]));
            if let Some((_, f, path)) = self.cur.as_ref() {
                f.write_all_at(now, off)
                    .map_err(|e| BackupError::io(path.as_path(), e))?;
            }
            self.written = Lsn(self.written.0 + n as u64);
            self.stats.bytes += n as u64;
            data = rest;
            if off + n as u64 == self.seg_size {
                self.complete()?;
            }
        }
        Ok(())
    }

    /// Closes a full segment; its fsync and `.done` marker come later, in [`Segments::settle`].
    fn complete(&mut self) -> Result<()> {
        if let Some((segno, f, path)) = self.cur.take() {
            self.done.push((segno, f, path, self.written));
        }
        Ok(())
    }

    /// fsyncs completed segments off the async thread (the base backup is received on the same
    /// thread), then marks them done.
    async fn settle(&mut self) -> Result<()> {
        for (segno, f, path, end) in std::mem::take(&mut self.done) {
            if !self.no_sync {
                tokio::task::spawn_blocking(move || {
                    f.sync_all().map_err(|e| BackupError::io(&path, e))
                })
                .await
                .map_err(|e| BackupError::Other(format!("fsync task: {e}")))??;
            }
            let name = segment_file_name(self.tli, segno, self.seg_size);
            touch(&self.dir.join("archive_status").join(format!("{name}.done")))?;
            self.flushed = end;
            self.stats.segments += 1;
        }
        Ok(())
    }
}

/// Streams until the end position arrives on `end` and has been written. Dropping the sender
/// of `end` without a value aborts the stream.
pub(crate) async fn stream(
    setup: WalSetup,
    mut end: watch::Receiver<Option<Lsn>>,
) -> Result<WalStats> {
    let (dir, mut tar) = match &setup.target {
        WalTarget::Dir(dir) => {
            mkdir_0700(&dir.join("archive_status"))?;
            (dir.clone(), None)
        }
        WalTarget::Tar {
            dir,
            compression,
            threads,
        } => {
            let t = WalTar::create(dir, *compression, *threads, setup.seg_size, setup.tli)?;
            (dir.clone(), Some(t))
        }
    };
    let mut conn = Connection::connect(&setup.conn.resolve()?).await?;
    let sys = conn.identify_system().await?;
    if sys.system_identifier != setup.system_identifier {
        return Err(BackupError::Other(format!(
            "the WAL streaming connection reached system {}, not {}: are several servers behind this address?",
            sys.system_identifier, setup.system_identifier
        )));
    }
    if sys.timeline < setup.tli {
        return Err(BackupError::Other(format!(
            "the server's timeline {} is older than the backup's start timeline {}",
            sys.timeline, setup.tli
        )));
    }
    if setup.tli.0 > 1 {
        let (name, content) = conn.timeline_history(setup.tli).await?;
        if let Some(t) = tar.as_mut() {
            // The name is ours, not the server's: it becomes a member name.
            t.history(&history_file_name(setup.tli), &content)?;
        } else {
            let p = dir.join(&name);
            std::fs::write(&p, &content).map_err(|e| BackupError::io(&p, e))?;
            touch(
                &dir.join("archive_status")
                    .join(format!("{}.done", history_file_name(setup.tli))),
            )?;
        }
    }
    let slot = match &setup.slot {
        Some(s) => {
            if setup.create_slot {
                conn.create_physical_slot(s, false).await?;
            }
            s.clone()
        }
        None => {
            let s = format!("pgincr_{}", std::process::id());
            conn.create_physical_slot(&s, true).await?;
            s
        }
    };
    let seg_start = Lsn(setup.start.0 - setup.start.segment_offset(setup.seg_size));
    let mut segs = Segments {
        dir,
        tar,
        seg_size: setup.seg_size,
        tli: setup.tli,
        cur: None,
        done: Vec::new(),
        written: seg_start,
        flushed: seg_start,
        no_sync: setup.no_sync,
        stats: WalStats::default(),
    };
    let mut ws = conn
        .start_replication(Some(&slot), seg_start, Some(setup.tli))
        .await?;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut stop: Option<Lsn> = *end.borrow();
    loop {
        if stop.is_some_and(|s| segs.written >= s) {
            break;
        }
        tokio::select! {
            ev = ws.next() => match ev? {
                WalEvent::Data { start, data, .. } => {
                    segs.write(start, &data)?;
                    segs.settle().await?;
                }
                WalEvent::Keepalive { reply_requested, .. } => {
                    if reply_requested {
                        ws.send_status(segs.written, segs.flushed, Lsn::INVALID, false).await?;
                    }
                }
                WalEvent::ServerDone => {
                    return Err(BackupError::Other(format!(
                        "the server ended WAL streaming at {} (timeline {} ended) before the backup's end",
                        segs.written, setup.tli
                    )));
                }
            },
            changed = end.changed() => {
                if changed.is_err() {
                    return Err(BackupError::Cancelled);
                }
                stop = *end.borrow();
            }
            _ = tick.tick() => ws.send_status(segs.written, segs.flushed, Lsn::INVALID, false).await?,
        }
    }
    let _ = ws
        .send_status(segs.written, segs.written, Lsn::INVALID, false)
        .await;
    ws.finish().await?;
    if let Some((_, f, path)) = segs.cur.take() {
        if !setup.no_sync {
            f.sync_all().map_err(|e| BackupError::io(&path, e))?;
        }
    }
    if let Some(t) = segs.tar.take() {
        t.finish()?;
    }
    let _ = conn.close().await;
    Ok(segs.stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_across_segments() {
        let d = tempfile::tempdir().unwrap();
        mkdir_0700(&d.path().join("archive_status")).unwrap();
        let seg = 1u64 << 20;
        let mut s = Segments {
            dir: d.path().into(),
            tar: None,
            seg_size: seg,
            tli: TimeLineId(1),
            cur: None,
            done: Vec::new(),
            written: Lsn(seg),
            flushed: Lsn(seg),
            no_sync: true,
            stats: WalStats::default(),
        };
        let data = vec![1u8; (seg + 100) as usize];
        s.write(Lsn(seg), &data).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(s.settle())
            .unwrap();
        assert!(s.write(Lsn(5), b"x").is_err());
        let first = d.path().join("000000010000000000000001");
        let second = d.path().join("000000010000000000000002");
        assert_eq!(std::fs::metadata(&second).unwrap().len(), seg);
        assert!(std::fs::read(&first).unwrap().iter().all(|&b| b == 1));
        assert!(d
            .path()
            .join("archive_status/000000010000000000000001.done")
            .exists());
        assert!(!d
            .path()
            .join("archive_status/000000010000000000000002.done")
            .exists());
    }
}
