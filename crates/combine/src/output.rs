//! Output directories that never look complete before they are: everything is written under
//! a sibling staging name and renamed into place at the very end, tablespaces first and the
//! data directory (with its manifest already inside) last. A failure removes the staging
//! directories; a crash leaves only directories named `.<name>.pgincr-partial`.

use crate::error::{CombineError, Result};
use std::path::{Path, PathBuf};

/// Suffix of staging directories.
pub const STAGING_SUFFIX: &str = ".pgincr-partial";

struct Target {
    staging: PathBuf,
    fin: PathBuf,
    created: bool,
}

/// The set of output directories of one combine.
pub struct Staging {
    targets: Vec<Target>,
    dry_run: bool,
    committed: bool,
}

impl Staging {
    pub fn new(dry_run: bool) -> Staging {
        Staging {
            targets: Vec::new(),
            dry_run,
            committed: false,
        }
    }

    /// Checks that `fin` is absent or an empty directory, and creates its staging directory.
    /// Returns the staging path (in a dry run, the path that would be used).
    pub fn add(&mut self, fin: &Path, dir_mode: u32) -> Result<PathBuf> {
        match std::fs::read_dir(fin) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(CombineError::Output(format!(
                        "directory \"{}\" exists but is not empty",
                        fin.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CombineError::io("could not access directory", fin)(e)),
        }
        let (Some(parent), Some(name)) = (fin.parent(), fin.file_name()) else {
            return Err(CombineError::Output(format!(
                "\"{}\" cannot be an output directory",
                fin.display()
            )));
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let mut staged_name = std::ffi::OsString::from(".");
        staged_name.push(name);
        staged_name.push(STAGING_SUFFIX);
        let staging = parent.join(staged_name);
        if staging.symlink_metadata().is_ok() {
            return Err(CombineError::Output(format!(
                "\"{}\" exists: an earlier combine into \"{}\" was interrupted; remove it and run again",
                staging.display(),
                fin.display()
            )));
        }
        let mut created = false;
        if !self.dry_run {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(dir_mode)
                .create(parent)
                .map_err(CombineError::io("could not create directory", parent))?;
            std::fs::DirBuilder::new()
                .mode(dir_mode)
                .create(&staging)
                .map_err(CombineError::io("could not create directory", &staging))?;
            created = true;
        }
        self.targets.push(Target {
            staging: staging.clone(),
            fin: fin.to_path_buf(),
            created,
        });
        Ok(staging)
    }

    /// Renames every staging directory into place, the first one added (the data directory)
    /// last, then fsyncs the parents unless `no_sync`.
    pub fn commit(mut self, no_sync: bool) -> Result<()> {
        if self.dry_run {
            self.committed = true;
            return Ok(());
        }
        for t in self.targets.iter().rev() {
            std::fs::rename(&t.staging, &t.fin).map_err(|e| {
                CombineError::Output(format!(
                    "could not rename \"{}\" to \"{}\": {e}",
                    t.staging.display(),
                    t.fin.display()
                ))
            })?;
            if !no_sync {
                if let Some(p) = t.fin.parent() {
                    let p = if p.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        p
                    };
                    fsync_dir(p)?;
                }
            }
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for t in &self.targets {
            if t.created {
                if let Err(e) = std::fs::remove_dir_all(&t.staging) {
                    tracing::error!("could not remove \"{}\": {e}", t.staging.display());
                }
            }
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
    pub fn new(output: &Path) -> Result<SpillDir> {
        let name = output.file_name().ok_or_else(|| {
            CombineError::Output(format!(
                "\"{}\" cannot be an output directory",
                output.display()
            ))
        })?;
        let parent = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut n = std::ffi::OsString::from(".");
        n.push(name);
        n.push(".pgincr-spill");
        let path = parent.join(n);
        // A leftover from an interrupted run holds only scratch copies.
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(CombineError::io("could not remove", &path))?;
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
