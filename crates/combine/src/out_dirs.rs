//! Where the output goes: the staging directory of `OUT` and of each tablespace (see
//! [`crate::output`]), the plain tree that `-F t` archives are packed from, and the
//! tablespace links of a plain output.

use crate::chain::{Chain, Layout};
use crate::error::{CombineError, Result};
use crate::options::{CombineOptions, OutputFormat};
use crate::output;
use crate::tablespaces::{self, Tablespace};
use std::path::{Path, PathBuf};

/// The directories one combine writes, all inside staging directories.
pub(crate) struct OutputDirs {
    /// `-F t`: files are produced as a plain tree, then packed into archives.
    pub tar: bool,
    /// Modes of new directories and files (from the final backup's directory).
    pub dir_mode: u32,
    pub file_mode: u32,
    /// The tablespaces of the final backup, in manifest order.
    pub tablespaces: Vec<Tablespace>,
    /// The staging directory of `OUT`: it receives the manifest, and with `-F t` the
    /// archives.
    pub final_out: PathBuf,
    /// Root of the plain tree: `final_out`, or `final_out/.plain` with `-F t`.
    pub main_out: PathBuf,
    /// Per tablespace, the directory its files are produced in.
    pub ts_out: Vec<PathBuf>,
    /// Directories that only hold the plain tree of `-F t`, removed once it is packed.
    pub scratch_dirs: Vec<PathBuf>,
}

impl OutputDirs {
    /// Finds the final backup's tablespaces and adds a staging directory for `OUT` (first,
    /// so it is put in place last) and for every tablespace that gets a directory of its
    /// own, then creates the scratch directories of `-F t`.
    pub fn stage(
        chain: &Chain,
        opts: &CombineOptions,
        staging: &mut output::Staging,
    ) -> Result<OutputDirs> {
        let last = chain.last();
        let (dir_mode, file_mode) = output::create_modes(&last.dir)?;
        let tar = opts.format == OutputFormat::Tar;
        let mappings = &opts.tablespace_mappings;
        let tablespaces = match &last.layout {
            Layout::Plain => tablespaces::scan(&last.dir, mappings, &opts.output, !tar)?,
            Layout::Tar(index) => tablespaces::from_archives(index, mappings, &opts.output, !tar)?,
        };

        let final_out = staging.add(&opts.output, dir_mode)?;
        // Tar output is produced as a plain tree inside the staging directory first.
        let main_out = if tar {
            final_out.join(".plain")
        } else {
            final_out.clone()
        };
        let mut ts_out = Vec::with_capacity(tablespaces.len());
        let mut scratch_dirs = Vec::new();
        if tar {
            scratch_dirs.push(main_out.clone());
        }
        for ts in &tablespaces {
            ts_out.push(if ts.in_place {
                main_out.join("pg_tblspc").join(ts.oid.to_string())
            } else if tar {
                let d = final_out.join(format!(".tablespace-{}", ts.oid));
                scratch_dirs.push(d.clone());
                d
            } else {
                staging.add(&ts.new_dir, dir_mode)?
            });
        }
        if !opts.dry_run {
            for d in &scratch_dirs {
                std::fs::create_dir(d)
                    .map_err(CombineError::io("could not create directory", d))?;
            }
        }
        Ok(OutputDirs {
            tar,
            dir_mode,
            file_mode,
            tablespaces,
            final_out,
            main_out,
            ts_out,
            scratch_dirs,
        })
    }
}

/// Creates `OUT/pg_tblspc/<oid>` pointing at the tablespace's final directory.
pub(crate) fn link_tablespace(ts: &Tablespace, main_out: &Path, dry_run: bool) -> Result<()> {
    if dry_run || ts.in_place {
        return Ok(());
    }
    let link = main_out.join("pg_tblspc").join(ts.oid.to_string());
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent)
            .map_err(CombineError::io("could not create directory", parent))?;
    }
    std::os::unix::fs::symlink(&ts.new_dir, &link)
        .map_err(CombineError::io("could not create symbolic link", &link))
}
