//! The backup directory is built under a temporary name next to `-D` and renamed into place
//! only when complete, so a failed or killed run never leaves something that looks like a
//! finished backup.

use std::fs::{self, DirBuilder, File};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{BackupError, Result};
use pgincr_io::SeqWriter;

/// A backup under construction.
pub struct Staging {
    target: PathBuf,
    tmp: PathBuf,
    /// Directories filled outside `tmp` (tablespaces), and whether each existed before: on
    /// failure a pre-existing one is emptied, a created one removed.
    outside: Vec<(PathBuf, bool)>,
    committed: bool,
}

/// Creates a new backup file, mode 0600; an existing file is an error, never overwritten.
pub(crate) fn create_0600(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| BackupError::io(path, e))
}

/// Creates a new backup file for sequential writing, mode 0600, with direct I/O if `direct`,
/// the file system allows, and the file is expected to be large (`expected_len`; `u64::MAX`
/// when unknown).
pub(crate) fn create_writer(path: &Path, direct: bool, expected_len: u64) -> Result<SeqWriter> {
    SeqWriter::create_sized(path, 0o600, direct, expected_len).map_err(|e| BackupError::io(path, e))
}

pub(crate) fn mkdir_0700(path: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| BackupError::io(path, e))
}

/// Refuses a target that exists and is not an empty directory, as pg_basebackup does.
pub(crate) fn check_empty_or_missing(path: &Path, what: &str) -> Result<bool> {
    match fs::read_dir(path) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(BackupError::Target(format!(
                    "{what} \"{}\" exists but is not empty: choose a new directory or empty it first",
                    path.display()
                )));
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(BackupError::Target(format!(
            "{what} \"{}\" cannot be used: {e}",
            path.display()
        ))),
    }
}

impl Staging {
    /// Checks `target` and creates the temporary directory beside it.
    pub fn create(target: &Path) -> Result<Staging> {
        check_empty_or_missing(target, "directory")?;
        let name = target.file_name().ok_or_else(|| {
            BackupError::Target(format!("\"{}\" has no directory name", target.display()))
        })?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        mkdir_0700(&parent)?;
        let tmp = parent.join(format!(
            ".{}.pgincr-partial-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| BackupError::io(&tmp, e))?;
        }
        DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(|e| BackupError::io(&tmp, e))?;
        Ok(Staging {
            target: target.to_path_buf(),
            tmp,
            outside: Vec::new(),
            committed: false,
        })
    }

    /// Where files go until the backup is complete.
    pub fn dir(&self) -> &Path {
        &self.tmp
    }

    /// Remembers a directory created outside the staging area, to remove it on failure.
    pub fn created_outside(&mut self, path: PathBuf, existed: bool) {
        self.outside.push((path, existed));
    }

    /// Makes everything durable (unless `no_sync`), renames `backup_manifest.tmp` to
    /// `backup_manifest`, then the directory to its final name.
    pub fn commit(mut self, no_sync: bool) -> Result<PathBuf> {
        if !no_sync {
            sync_tree(&self.tmp)?;
            for (d, _) in &self.outside {
                sync_tree(d)?;
                if let Some(p) = d.parent() {
                    sync_dir(p)?;
                }
            }
        }
        let m_tmp = self.tmp.join("backup_manifest.tmp");
        if m_tmp.exists() {
            let m = self.tmp.join("backup_manifest");
            fs::rename(&m_tmp, &m).map_err(|e| BackupError::io(&m, e))?;
            if !no_sync {
                sync_dir(&self.tmp)?;
            }
        }
        // rename(2) replaces an empty directory, which is what an existing -D must be.
        fs::rename(&self.tmp, &self.target).map_err(|e| BackupError::io(&self.target, e))?;
        if !no_sync {
            if let Some(p) = self.target.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(p)?;
            }
        }
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
            for (d, existed) in &self.outside {
                if *existed {
                    if let Ok(it) = fs::read_dir(d) {
                        for e in it.flatten() {
                            let p = e.path();
                            let _ = if e.file_type().is_ok_and(|t| t.is_dir()) {
                                fs::remove_dir_all(&p)
                            } else {
                                fs::remove_file(&p)
                            };
                        }
                    }
                } else {
                    let _ = fs::remove_dir_all(d);
                }
            }
        }
    }
}

fn sync_dir(p: &Path) -> Result<()> {
    pgincr_io::fsync_dir(p).map_err(|e| BackupError::io(p, e))
}

/// fsyncs every file and directory under `root`, without following symlinks.
pub(crate) fn sync_tree(root: &Path) -> Result<()> {
    pgincr_io::fsync_tree(root, pgincr_io::FSYNC_THREADS).map_err(|(p, e)| BackupError::io(p, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_and_abandon() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("b");
        let s = Staging::create(&target).unwrap();
        fs::write(s.dir().join("backup_manifest.tmp"), b"m").unwrap();
        s.commit(false).unwrap();
        assert!(target.join("backup_manifest").exists());
        assert!(
            Staging::create(&target).is_err(),
            "non-empty target refused"
        );

        let t2 = d.path().join("c");
        fs::create_dir(&t2).unwrap();
        let s = Staging::create(&t2).unwrap();
        let tmp = s.dir().to_path_buf();
        fs::write(tmp.join("x"), b"x").unwrap();
        drop(s);
        assert!(!tmp.exists());
        assert!(fs::read_dir(&t2).unwrap().next().is_none());
    }
}
