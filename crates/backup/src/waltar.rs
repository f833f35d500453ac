//! `pg_wal.tar` for tar format with `-X stream`: the streamed segments, their `.done` markers
//! and history files, as pg_basebackup writes it (gzip-compressed only with `-Z gzip`).

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

use crate::compress;
use crate::error::{BackupError, Result};
use crate::options::Compression;
use crate::staging::create_writer;
use crate::tar;

pub(crate) fn write(
    wal: &Path,
    dir: &Path,
    gzip: Option<Compression>,
    threads: usize,
) -> Result<()> {
    let name = if gzip.is_some() {
        "pg_wal.tar.gz"
    } else {
        "pg_wal.tar"
    };
    let path = dir.join(name);
    let f = create_writer(&path, false, 0)?;
    let mut out = compress::open(f, gzip, threads).map_err(|e| BackupError::io(&path, e))?;
    let io = |e| BackupError::io(&path, e);
    let mut members: Vec<String> = Vec::new();
    let mut names: Vec<_> = fs::read_dir(wal)
        .map_err(|e| BackupError::io(wal, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    members.extend(names);
    let mut done: Vec<_> = fs::read_dir(wal.join("archive_status"))
        .map_err(|e| BackupError::io(wal, e))?
        .filter_map(|e| e.ok())
        .map(|e| format!("archive_status/{}", e.file_name().to_string_lossy()))
        .collect();
    done.sort();
    members.extend(done);
    let mut buf = vec![0u8; 1 << 20];
    for m in &members {
        let p = wal.join(m);
        let mut src = File::open(&p).map_err(|e| BackupError::io(&p, e))?;
        let meta = src.metadata().map_err(|e| BackupError::io(&p, e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let h = tar::file_header(m, meta.len(), mtime).map_err(BackupError::Other)?;
        out.write(&h).map_err(io)?;
        let mut left = meta.len();
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = src
                .read(buf.get_mut(..want).unwrap_or_default())
                .map_err(|e| BackupError::io(&p, e))?;
            if n == 0 {
                return Err(BackupError::Other(format!(
                    "{} shrank while being archived",
                    p.display()
                )));
            }
            out.write(buf.get(..n).unwrap_or_default()).map_err(io)?;
            left -= n as u64;
        }
        out.write(&vec![0u8; tar::padding(meta.len()) as usize])
            .map_err(io)?;
    }
    out.write(&[0u8; 2 * tar::BLOCK]).map_err(io)?;
    out.finish().map_err(io)?;
    fs::remove_dir_all(wal).map_err(|e| BackupError::io(wal, e))?;
    Ok(())
}
