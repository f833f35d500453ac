//! The walk of the final backup (`process_directory_recursively`): decides, in manifest order,
//! what each output file is made from, and creates the output directories.

use crate::archive::TarIndex;
use crate::chain::{Chain, Layout};
use crate::error::{CombineError, Result};
use crate::incremental::INCREMENTAL_PREFIX;
use crate::tablespaces::{parse_oid, Tablespace};
use pgincr_types::checksum::{Checksum, ChecksumType};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Where an input file is: a path, or a member of the final backup's tar archives.
#[derive(Debug, Clone)]
pub enum FileRef {
    Path(PathBuf),
    /// Index into the final backup's [`crate::archive::TarIndex::members`].
    Member(usize),
}

/// One output file to produce.
#[derive(Debug)]
pub struct Job {
    /// Path in the output manifest (no `INCREMENTAL.` prefix).
    pub manifest_path: Vec<u8>,
    /// Where to write it (inside the staging directories).
    pub output: PathBuf,
    /// Checksum to compute; `None` under `pg_wal`, which the manifest lists without checksums.
    pub checksum_type: ChecksumType,
    pub kind: JobKind,
    /// Bytes of input, for scheduling big files first and for progress.
    pub size_hint: u64,
}

#[derive(Debug)]
pub enum JobKind {
    /// `backup_label`, already rewritten.
    Label(Vec<u8>),
    /// A file of the final backup taken whole. `reuse` is the final manifest's checksum when
    /// it has one of the wanted type.
    Copy {
        source: FileRef,
        reuse: Option<Checksum>,
    },
    /// `INCREMENTAL.<name>` of the final backup, rebuilt from the chain.
    Reconstruct {
        incremental: FileRef,
        /// Directory of the file relative to a backup's root, as a manifest prefix
        /// (`base/5/`, `pg_tblspc/16385/PG_18_202506291/5/`).
        relative_dir: Vec<u8>,
        bare_name: OsString,
    },
}

/// Splits `pg_tblspc/<oid>/rest` into the OID and `rest`.
fn tablespace_of(path: &[u8]) -> Option<(u32, &[u8])> {
    let rest = path.strip_prefix(b"pg_tblspc/")?;
    let (oid, rest) = match rest.iter().position(|&b| b == b'/') {
        Some(p) => split_around(rest, p),
        None => (rest, &[][..]),
    };
    Some((std::str::from_utf8(oid).ok().and_then(parse_oid)?, rest))
}

/// `s` before and after the separator at `at` (which is left out).
fn split_around(s: &[u8], at: usize) -> (&[u8], &[u8]) {
    let (before, from) = s.split_at(at);
    (
        before,
        from.split_first().map_or(&[][..], |(_, after)| after),
    )
}

/// A directory of the final backup, as the walk classified it.
struct DirInfo<'a> {
    /// Manifest prefix of its files (`base/5/`).
    prefix: &'a [u8],
    out_dir: &'a Path,
    /// Whether `INCREMENTAL.*` files here are reconstructed (see `walk`).
    incremental: bool,
    checksum_type: ChecksumType,
}

/// The walk's result.
pub struct WalkResult {
    pub jobs: Vec<Job>,
    /// Directories created (or to create, in a dry run), parents first.
    pub dirs: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

pub struct Walker<'a> {
    pub chain: &'a Chain,
    pub checksum_type: ChecksumType,
    pub dry_run: bool,
    pub dir_mode: u32,
    jobs: Vec<Job>,
    dirs: Vec<PathBuf>,
    warnings: Vec<String>,
    /// Stored names (manifest paths of the final backup) of the files found, to find files
    /// its manifest lists but the directory lacks.
    seen: HashSet<Vec<u8>>,
}

impl<'a> Walker<'a> {
    pub fn new(
        chain: &'a Chain,
        checksum_type: ChecksumType,
        dry_run: bool,
        dir_mode: u32,
    ) -> Self {
        Walker {
            chain,
            checksum_type,
            dry_run,
            dir_mode,
            jobs: Vec::new(),
            dirs: Vec::new(),
            warnings: Vec::new(),
            seen: HashSet::new(),
        }
    }

    pub fn push_label(&mut self, text: Vec<u8>, output: PathBuf) {
        self.jobs.push(Job {
            manifest_path: b"backup_label".to_vec(),
            output,
            checksum_type: self.checksum_type,
            size_hint: text.len() as u64,
            kind: JobKind::Label(text),
        });
    }

    /// Walks the final backup's data directory into `output`.
    pub fn walk_main(&mut self, input: &Path, output: &Path) -> Result<()> {
        self.walk(None, input, output, None)
    }

    /// Walks one tablespace into its output directory.
    pub fn walk_tablespace(&mut self, ts: &Tablespace, output: &Path) -> Result<()> {
        self.walk(Some(ts.oid), &ts.old_dir, output, None)
    }

    pub fn mkdir(&mut self, dir: &Path) -> Result<()> {
        if !self.dry_run {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(self.dir_mode)
                .create(dir)
                .map_err(CombineError::io("could not create directory", dir))?;
        }
        self.dirs.push(dir.to_path_buf());
        Ok(())
    }

    fn walk(
        &mut self,
        tsoid: Option<u32>,
        input_root: &Path,
        output_root: &Path,
        rel: Option<&[u8]>,
    ) -> Result<()> {
        // Classify the directory exactly as pg_combinebackup does: incremental files are
        // only reconstructed where relation files live, so a stray "INCREMENTAL.config" is
        // copied like any other file.
        let (mut is_pg_tblspc, mut is_pg_wal, mut incremental_dir) =
            (false, false, tsoid.is_some());
        if let (None, Some(r)) = (tsoid, rel) {
            is_pg_tblspc = r == b"pg_tblspc";
            is_pg_wal = r == b"pg_wal" || r.starts_with(b"pg_wal/");
            incremental_dir =
                r.starts_with(b"base/") || r == b"global" || r.starts_with(b"pg_tblspc/");
        }
        let checksum_type = if is_pg_wal {
            ChecksumType::None
        } else {
            self.checksum_type
        };
        let mut prefix: Vec<u8> = match tsoid {
            Some(oid) => format!("pg_tblspc/{oid}/").into_bytes(),
            None => Vec::new(),
        };
        if let Some(r) = rel {
            prefix.extend_from_slice(r);
            prefix.push(b'/');
        }
        let (in_dir, out_dir) = match rel {
            None => (input_root.to_path_buf(), output_root.to_path_buf()),
            Some(r) => {
                let r = Path::new(std::ffi::OsStr::from_bytes(r));
                (input_root.join(r), output_root.join(r))
            }
        };
        if rel.is_some() {
            self.mkdir(&out_dir)?;
        }
        let entries = std::fs::read_dir(&in_dir)
            .map_err(CombineError::io("could not open directory", &in_dir))?;
        for entry in entries {
            let entry = entry.map_err(CombineError::io("could not read directory", &in_dir))?;
            let name = entry.file_name();
            let name_bytes = name.as_bytes();
            let in_path = entry.path();
            let ftype = entry
                .file_type()
                .map_err(CombineError::io("could not stat file", &in_path))?;
            if is_pg_tblspc
                && name.to_str().and_then(parse_oid).is_some()
                && (ftype.is_symlink() || ftype.is_dir())
            {
                continue;
            }
            if ftype.is_dir() {
                let mut sub = rel.map(|r| r.to_vec()).unwrap_or_default();
                if !sub.is_empty() {
                    sub.push(b'/');
                }
                sub.extend_from_slice(name_bytes);
                self.walk(tsoid, input_root, output_root, Some(&sub))?;
                continue;
            }
            if !ftype.is_file() {
                let what = if ftype.is_symlink() {
                    "symbolic link"
                } else {
                    "special file"
                };
                let w = format!("skipping {what} \"{}\"", in_path.display());
                tracing::warn!("{w}");
                self.warnings.push(w);
                continue;
            }
            if rel.is_none() && (name_bytes == b"backup_label" || name_bytes == b"backup_manifest")
            {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let dir = DirInfo {
                prefix: &prefix,
                out_dir: &out_dir,
                incremental: incremental_dir,
                checksum_type,
            };
            self.push_file(&dir, name_bytes, FileRef::Path(in_path), size);
        }
        Ok(())
    }

    /// Adds the job for one regular file `name` of the final backup, in directory `dir`.
    fn push_file(&mut self, dir: &DirInfo, name: &[u8], source: FileRef, size: u64) {
        let DirInfo {
            prefix,
            out_dir,
            incremental: incremental_dir,
            checksum_type,
        } = *dir;
        let stored_path = [prefix, name].concat();
        self.seen.insert(stored_path.clone());
        if let Some(bare) = name
            .strip_prefix(INCREMENTAL_PREFIX.as_bytes())
            .filter(|_| incremental_dir)
        {
            self.jobs.push(Job {
                manifest_path: [prefix, bare].concat(),
                output: out_dir.join(std::ffi::OsStr::from_bytes(bare)),
                checksum_type,
                size_hint: size,
                kind: JobKind::Reconstruct {
                    incremental: source,
                    relative_dir: prefix.to_vec(),
                    bare_name: OsString::from_vec(bare.to_vec()),
                },
            });
            return;
        }
        let last = self.chain.last();
        let mut reuse = None;
        if checksum_type != ChecksumType::None {
            match last.manifest.file(&stored_path) {
                None => {
                    let w = format!(
                        "manifest file \"{}\" contains no entry for file \"{}\"",
                        last.dir.join("backup_manifest").display(),
                        String::from_utf8_lossy(&stored_path)
                    );
                    tracing::warn!("{w}");
                    self.warnings.push(w);
                }
                Some(f) => reuse = f.checksum_of(checksum_type),
            }
        }
        self.jobs.push(Job {
            manifest_path: stored_path,
            output: out_dir.join(std::ffi::OsStr::from_bytes(name)),
            checksum_type,
            size_hint: size,
            kind: JobKind::Copy { source, reuse },
        });
    }

    /// Walks the final backup when it is in tar format. Members go to `main_out`, except
    /// those of tablespace archives, which go to their tablespace's directory in `ts_out`.
    pub fn walk_tar(
        &mut self,
        index: &TarIndex,
        main_out: &Path,
        ts_out: &HashMap<u32, PathBuf>,
    ) -> Result<()> {
        let mut made: HashSet<PathBuf> = HashSet::new();
        for (i, m) in index.members.iter().enumerate() {
            let path = m.path.as_slice();
            // Where the member goes: (output root, path below it).
            let (root, below, tsoid) = match tablespace_of(path) {
                Some((oid, rest)) if ts_out.contains_key(&oid) => {
                    (ts_out[&oid].as_path(), rest, Some(oid))
                }
                _ => (main_out, path, None),
            };
            // An in-place tablespace's directory is inside the output; base.tar, which comes
            // first, made its parent `pg_tblspc`.
            if tsoid.is_some() && root.starts_with(main_out) {
                self.mkdir_all(root, main_out, &mut made)?;
            }
            if below.is_empty() {
                continue;
            }
            let (dir_part, name) = match below.iter().rposition(|&b| b == b'/') {
                Some(p) => split_around(below, p),
                None => (&[][..], below),
            };
            if m.is_dir {
                self.mkdir_all(
                    &root.join(std::ffi::OsStr::from_bytes(below)),
                    root,
                    &mut made,
                )?;
                continue;
            }
            if tsoid.is_none()
                && dir_part.is_empty()
                && matches!(
                    name,
                    b"backup_label" | b"backup_manifest" | b"tablespace_map"
                )
            {
                // The label is rewritten, and tablespace symlinks replace tablespace_map.
                self.seen.insert(name.to_vec());
                continue;
            }
            let out_dir = root.join(std::ffi::OsStr::from_bytes(dir_part));
            self.mkdir_all(&out_dir, root, &mut made)?;
            let mut prefix = match tsoid {
                Some(oid) => format!("pg_tblspc/{oid}/").into_bytes(),
                None => Vec::new(),
            };
            if !dir_part.is_empty() {
                prefix.extend_from_slice(dir_part);
                prefix.push(b'/');
            }
            let is_pg_wal =
                tsoid.is_none() && (dir_part == b"pg_wal" || dir_part.starts_with(b"pg_wal/"));
            let incremental_dir = tsoid.is_some()
                || dir_part.starts_with(b"base/")
                || dir_part == b"global"
                || dir_part.starts_with(b"pg_tblspc/");
            let checksum_type = if is_pg_wal {
                ChecksumType::None
            } else {
                self.checksum_type
            };
            let dir = DirInfo {
                prefix: &prefix,
                out_dir: &out_dir,
                incremental: incremental_dir,
                checksum_type,
            };
            self.push_file(&dir, name, FileRef::Member(i), m.size);
        }
        Ok(())
    }

    /// Creates `dir` and any missing parents below `root` (which exists).
    fn mkdir_all(&mut self, dir: &Path, root: &Path, made: &mut HashSet<PathBuf>) -> Result<()> {
        if dir == root || made.contains(dir) {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            if parent.starts_with(root) {
                self.mkdir_all(parent, root, made)?;
            }
        }
        self.mkdir(dir)?;
        made.insert(dir.to_path_buf());
        Ok(())
    }

    /// Refuses a final backup whose manifest lists files its directory lacks.
    pub fn check_nothing_missing(&self) -> Result<()> {
        let last = self.chain.last();
        let mut missing = last
            .manifest
            .files
            .keys()
            .filter(|p| p.as_ref() != b"backup_label" && !self.seen.contains(p.as_ref()));
        if let Some(first) = missing.next() {
            let more = missing.count();
            // Something other than a regular file under that name (a directory, a link, a
            // FIFO) is not read, so it is "missing" only as a file: say what it is instead.
            let found = match &last.layout {
                Layout::Plain => {
                    std::fs::symlink_metadata(last.dir.join(std::ffi::OsStr::from_bytes(first)))
                        .ok()
                        .map(|m| pgincr_types::bounded::FileKind::of(m.file_type()))
                        .filter(|k| *k != pgincr_types::bounded::FileKind::Regular)
                }
                Layout::Tar(_) => None,
            };
            let what = match found {
                Some(kind) => format!("is {kind} in the backup directory, not a regular file"),
                None => "missing from the backup directory".to_string(),
            };
            return Err(CombineError::Input {
                backup: last.dir.clone(),
                message: format!(
                    "file \"{}\" is listed in backup_manifest but {what}{}: the backup is incomplete or damaged",
                    String::from_utf8_lossy(first),
                    if more > 0 { format!(" ({more} more missing)") } else { String::new() }
                ),
            });
        }
        Ok(())
    }

    pub fn finish(self) -> WalkResult {
        WalkResult {
            jobs: self.jobs,
            dirs: self.dirs,
            warnings: self.warnings,
        }
    }
}
