//! The per-server lock: `flock(2)` on `<repository>/<server>/lock`. The kernel drops it when
//! the holder dies, so a lock left by a killed run is not a lock. The holder writes its PID
//! and start time into the file so the refused run can name it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another pgincr run holds {path} ({holder}); it exits by itself, or wait for it")]
    Held { path: PathBuf, holder: String },
    #[error("lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held until dropped (closing the file releases the flock).
#[derive(Debug)]
pub struct ServerLock {
    _file: File,
    path: PathBuf,
}

impl ServerLock {
    /// Takes the lock of `server_dir` without waiting. `now` is recorded as the start time.
    pub fn acquire(server_dir: &Path, now: i64) -> Result<ServerLock, LockError> {
        let path = server_dir.join("lock");
        let err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(server_dir)
            .map_err(err)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(err)?;
        if let Err(e) = try_flock(&file) {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                let mut holder = String::new();
                // Bounded: the holder writes one short line.
                let _ = (&file).take(256).read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "holder unknown".to_string(),
                    h => h.to_string(),
                };
                return Err(LockError::Held { path, holder });
            }
            return Err(err(e));
        }
        // We hold it: replace the previous holder's line with ours.
        let line = format!(
            "pid {} since {}\n",
            std::process::id(),
            pgincr_types::time::format_utc(now, None, "UTC")
        );
        file.set_len(0).map_err(err)?;
        file.rewind().map_err(err)?;
        file.write_all(line.as_bytes()).map_err(err)?;
        Ok(ServerLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[allow(unsafe_code)]
fn try_flock(file: &File) -> std::io::Result<()> {
    // SAFETY: flock only reads the descriptor number, which `file` keeps open for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_names_holder_and_release_frees() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("main");
        let l = ServerLock::acquire(&dir, 1_737_608_402).unwrap();
        // flock locks belong to the open file description, so a second open in this
        // process conflicts just as another process would.
        let e = ServerLock::acquire(&dir, 0).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(e.contains("2025-01-23 05:00:02 UTC"), "{e}");
        drop(l);
        let _again = ServerLock::acquire(&dir, 5).unwrap();
    }

    #[test]
    fn stale_lock_file_is_not_a_lock() {
        let t = tempfile::tempdir().unwrap();
        fs::write(
            t.path().join("lock"),
            "pid 999999 since 2000-01-01 00:00:00 UTC\n",
        )
        .unwrap();
        let _l = ServerLock::acquire(t.path(), 7).unwrap();
        let text = fs::read_to_string(t.path().join("lock")).unwrap();
        assert!(
            text.starts_with(&format!("pid {} ", std::process::id())),
            "{text}"
        );
    }
}
