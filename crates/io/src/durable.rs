//! Making writes durable.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Fsyncs a directory, so that entries created or renamed in it survive a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether `e` says the file system is full (`ENOSPC`, or `EDQUOT`: a quota), also when it is
/// wrapped in another `io::Error` (as `tar` and `BufWriter` pass errors on). What a caller
/// should tell apart from other I/O failures: more space, not a retry, fixes it.
pub fn is_out_of_space(e: &io::Error) -> bool {
    if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
        return true;
    }
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<io::Error>())
        .is_some_and(is_out_of_space)
}

/// Asks the kernel to start writing `file` back without waiting (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`, what PostgreSQL's pre-sync pass does), so that a later fsync
/// mostly finds clean pages. Best effort: only the fsync guarantees anything.
#[allow(unsafe_code)] // sync_file_range(2)
pub fn start_writeback(file: &File) {
    // SAFETY: a valid descriptor; offset 0 and length 0 mean the whole file.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Threads to fsync with: they wait on the device, not the CPU, and concurrent fsyncs on one
/// file system share journal commits.
pub const FSYNC_THREADS: usize = 8;

/// Fsyncs every regular file and directory under `root` (symlinks are not followed), the
/// files on `threads` threads: concurrent fsyncs on one file system share journal commits,
/// where one after another each waits for its own. Directories go last, children first.
/// The error names the path that failed.
pub fn fsync_tree(root: &Path, threads: usize) -> Result<(), (PathBuf, io::Error)> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    let mut i = 0;
    while let Some(dir) = dirs.get(i).cloned() {
        i += 1;
        for e in fs::read_dir(&dir).map_err(|e| (dir.clone(), e))? {
            let e = e.map_err(|e| (dir.clone(), e))?;
            let t = e.file_type().map_err(|err| (e.path(), err))?;
            if t.is_dir() {
                dirs.push(e.path());
            } else if t.is_file() {
                files.push(e.path());
            }
        }
    }
    fsync_all(&files, threads)?;
    // Deepest directories first, so each parent is synced after its entries settled.
    for d in dirs.iter().rev() {
        fsync_dir(d).map_err(|e| (d.clone(), e))?;
    }
    Ok(())
}

/// Fsyncs `files` on `threads` threads; the first failure is returned.
pub fn fsync_all(files: &[PathBuf], threads: usize) -> Result<(), (PathBuf, io::Error)> {
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<(PathBuf, io::Error)>> = Mutex::new(None);
    let work = || {
        while let Some(p) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
            if let Err(e) = File::open(p).and_then(|f| f.sync_all()) {
                if let Ok(mut slot) = failed.lock() {
                    slot.get_or_insert((p.clone(), e));
                }
                // Make the other threads stop too.
                next.store(files.len(), Ordering::Relaxed);
                return;
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads.clamp(1, files.len().max(1)) {
            s.spawn(work);
        }
        work();
    });
    match failed.into_inner() {
        Ok(Some(err)) => Err(err),
        Ok(None) => Ok(()),
        Err(p) => Err(p
            .into_inner()
            .unwrap_or_else(|| (PathBuf::new(), io::Error::other("fsync worker panicked")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_a_tree_and_names_failures() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("a/b")).unwrap();
        for (i, p) in ["x", "a/y", "a/b/z"].iter().enumerate() {
            fs::write(d.path().join(p), vec![i as u8; 10_000]).unwrap();
        }
        std::os::unix::fs::symlink("/nonexistent", d.path().join("link")).unwrap();
        fsync_tree(d.path(), 4).unwrap();
        fsync_tree(d.path(), 1).unwrap();
        let (p, _) = fsync_tree(&d.path().join("missing"), 2).unwrap_err();
        assert!(p.ends_with("missing"));
        let (p, _) = fsync_all(&[d.path().join("x"), d.path().join("gone")], 2).unwrap_err();
        assert!(p.ends_with("gone"));
    }
}
