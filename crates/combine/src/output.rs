//! Output directories that never look complete before they are, on [`pgincr_io::Staging`]:
//! everything is written under a sibling staging name, `.<name>.pgincr-partial-<pid>`, and
//! renamed into place at the very end, tablespaces first and the data directory (with its
//! manifest already inside) last. A failure removes the staging directories; a crash leaves
//! only those, and the next combine into the same target removes them (and says so) once
//! their process is gone. A tablespace mapped inside the output is built inside its staging
//! directory.

use crate::error::{CombineError, Result};
use std::path::{Path, PathBuf};

/// The set of output directories of one combine.
pub struct Staging {
    inner: Option<pgincr_io::Staging>,
    dry_run: bool,
}

impl Staging {
    pub fn new(dry_run: bool) -> Staging {
        Staging {
            inner: None,
            dry_run,
        }
    }

    /// Checks that `fin` is absent or an empty directory, and creates its staging directory.
    /// Returns the staging path (in a dry run, the path that would be used).
    pub fn add(&mut self, fin: &Path, dir_mode: u32) -> Result<PathBuf> {
        let dry_run = self.dry_run;
        let inner = self
            .inner
            .get_or_insert_with(|| pgincr_io::Staging::new(dir_mode, dry_run));
        Ok(inner.add(fin)?)
    }

    /// Leftovers of killed runs removed on the way in, as report warnings.
    pub fn warnings(&self) -> Vec<String> {
        self.inner
            .as_ref()
            .map(|s| s.warnings())
            .unwrap_or_default()
    }

    /// Renames every staging directory into place, the first one added (the data directory)
    /// last, then fsyncs the parents unless `no_sync`.
    pub fn commit(self, no_sync: bool) -> Result<()> {
        match self.inner {
            Some(s) => Ok(s.commit(no_sync)?),
            None => Ok(()),
        }
    }
}

pub fn fsync_dir(dir: &Path) -> Result<()> {
    pgincr_io::fsync_dir(dir).map_err(CombineError::io("could not fsync directory", dir))
}

/// Modes for new directories and files, from the final input directory as pg_combinebackup's
/// `SetDataDirectoryCreatePerm` does: group access is kept if the input allows it.
pub fn create_modes(last_input: &Path) -> Result<(u32, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(last_input)
        .map_err(CombineError::io("could not stat file", last_input))?
        .permissions()
        .mode();
    Ok(if mode & 0o750 == 0o750 {
        (0o750, 0o640)
    } else {
        (0o700, 0o600)
    })
}

/// Private scratch space for members decompressed from compressed tar archives: a sibling of
/// the output (so spilled files can be renamed into it), removed when the combine ends,
/// whichever way it ends. Created only when first used.
pub struct SpillDir {
    path: PathBuf,
}

impl SpillDir {
    /// `.<name>.pgincr-spill-<pid>` next to the output; spill directories of killed runs
    /// hold only scratch copies and are removed.
    pub fn new(output: &Path) -> Result<SpillDir> {
        let (path, removed) = pgincr_io::staging::scratch_dir(output, "spill")?;
        for l in removed {
            tracing::warn!("{l}");
        }
        Ok(SpillDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        if self.path.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                tracing::error!("could not remove \"{}\": {e}", self.path.display());
            }
        }
    }
}

/// Asks the kernel to start writing `path` back (see [`pgincr_io::start_writeback`]).
pub fn start_writeback(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        pgincr_io::start_writeback(&f);
    }
}
