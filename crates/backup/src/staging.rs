//! The backup directory is built under a temporary name next to `-D` and renamed into place
//! only when complete, so a failed or killed run never leaves something that looks like a
//! finished backup.

use std::fs::{self, DirBuilder, File};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{BackupError, Result};
use pgincr_io::SeqWriter;

/// A backup under construction: the backup directory and its tablespace directories, staged
/// by [`pgincr_io::Staging`] (hidden `.NAME.pgincr-partial-PID` siblings, renamed into place
/// at the end, leftovers of killed runs removed).
pub struct Staging {
    inner: pgincr_io::Staging,
    tmp: PathBuf,
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

impl Staging {
    /// Checks `target` (absent or empty; a dead run's leftover for it is removed, a live
    /// run's refused) and creates the temporary directory beside it.
    pub fn create(target: &Path) -> Result<Staging> {
        let mut inner = pgincr_io::Staging::new(0o700, false);
        let tmp = inner.add(target)?;
        Ok(Staging { inner, tmp })
    }

    /// Where files go until the backup is complete.
    pub fn dir(&self) -> &Path {
        &self.tmp
    }

    /// Stages a tablespace directory (absent or empty); returns where its files go until
    /// commit.
    pub fn add_tablespace(&mut self, dir: &Path) -> Result<PathBuf> {
        Ok(self.inner.add(dir)?)
    }

    /// What was removed on the way in: leftovers of killed runs.
    pub fn warnings(&self) -> Vec<String> {
        self.inner.warnings()
    }

    /// Makes everything durable (unless `no_sync`), renames `backup_manifest.tmp` to
    /// `backup_manifest`, then the directories to their final names, the backup directory
    /// last.
    pub fn commit(self, no_sync: bool) -> Result<()> {
        if !no_sync {
            self.inner
                .sync_trees(pgincr_io::FSYNC_THREADS)
                .map_err(BackupError::from)?;
        }
        let m_tmp = self.tmp.join("backup_manifest.tmp");
        if m_tmp.exists() {
            let m = self.tmp.join("backup_manifest");
            fs::rename(&m_tmp, &m).map_err(|e| BackupError::io(&m, e))?;
            if !no_sync {
                sync_dir(&self.tmp)?;
            }
        }
        self.inner.commit(no_sync)?;
        Ok(())
    }
}

fn sync_dir(p: &Path) -> Result<()> {
    pgincr_io::fsync_dir(p).map_err(|e| BackupError::io(p, e))
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
            !target.join(pgincr_io::staging::MARKER).exists(),
            "no marker in a finished backup"
        );
        assert!(
            Staging::create(&target).is_err(),
            "non-empty target refused"
        );

        let t2 = d.path().join("c");
        fs::create_dir(&t2).unwrap();
        let mut s = Staging::create(&t2).unwrap();
        let tmp = s.dir().to_path_buf();
        fs::write(tmp.join("x"), b"x").unwrap();
        let ts = s.add_tablespace(&d.path().join("ts")).unwrap();
        fs::write(ts.join("y"), b"y").unwrap();
        drop(s);
        assert!(!tmp.exists() && !ts.exists() && !d.path().join("ts").exists());
        assert!(fs::read_dir(&t2).unwrap().next().is_none());
    }
}
