//! What a combine is asked to do, and what it reports back.

use pgincr_types::checksum::ChecksumType;
use std::path::{Component, Path, PathBuf};

/// How whole files are brought into the output (`--copy`, `--copy-file-range`, `--clone`,
/// `-k/--link`). Reconstructed files are always written block by block; only `CopyFileRange`
/// changes how their blocks are moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyMode {
    #[default]
    Copy,
    CopyFileRange,
    Clone,
    Link,
}

/// `-T OLDDIR=NEWDIR`: where a tablespace of the final backup goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablespaceMapping {
    pub old_dir: PathBuf,
    pub new_dir: PathBuf,
}

impl TablespaceMapping {
    /// Parses `OLDDIR=NEWDIR` as pg_combinebackup does: `\=` is a literal `=`, exactly one
    /// separator, both sides absolute, both canonicalized.
    pub fn parse(arg: &str) -> Result<TablespaceMapping, String> {
        let (mut old, mut new) = (String::new(), String::new());
        let mut in_new = false;
        let mut chars = arg.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&'=') => {
                    chars.next();
                    if in_new { &mut new } else { &mut old }.push('=');
                }
                '=' if in_new => return Err("multiple \"=\" signs in tablespace mapping".into()),
                '=' => in_new = true,
                c => if in_new { &mut new } else { &mut old }.push(c),
            }
        }
        if old.is_empty() || new.is_empty() {
            return Err(format!(
                "invalid tablespace mapping format \"{arg}\", must be \"OLDDIR=NEWDIR\""
            ));
        }
        for (side, dir) in [("old", &old), ("new", &new)] {
            if !Path::new(dir).is_absolute() {
                return Err(format!(
                    "{side} directory is not an absolute path in tablespace mapping: {dir}"
                ));
            }
        }
        Ok(TablespaceMapping {
            old_dir: canonicalize_path(Path::new(&old)),
            new_dir: canonicalize_path(Path::new(&new)),
        })
    }
}

/// Lexical canonicalization like PostgreSQL's `canonicalize_path`: no symlinks are resolved;
/// `.` components, repeated and trailing separators go, `..` removes its parent.
pub fn canonicalize_path(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            c => out.push(c.as_os_str()),
        }
    }
    out
}

/// Output layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// A data directory, as pg_combinebackup writes.
    #[default]
    Plain,
    /// `base.tar`, `<oid>.tar`, `pg_wal.tar` and `backup_manifest`, as `pg_basebackup -Ft`.
    Tar,
}

/// Everything [`crate::combine`] needs.
#[derive(Clone, Debug)]
pub struct CombineOptions {
    /// The chain, oldest (full) first.
    pub backups: Vec<PathBuf>,
    pub output: PathBuf,
    pub tablespace_mappings: Vec<TablespaceMapping>,
    /// Check everything and plan, write nothing.
    pub dry_run: bool,
    /// Skip fsync.
    pub no_sync: bool,
    pub manifest_checksums: ChecksumType,
    pub no_manifest: bool,
    pub copy_mode: CopyMode,
    /// Worker threads; 0 means one per core.
    pub jobs: usize,
    pub format: OutputFormat,
    /// Write large files with direct I/O (bypassing the page cache) where the file system
    /// allows; off, every write goes through the page cache as pg_combinebackup's do.
    pub direct_io: bool,
    /// Repair stale visibility-map bits (see the crate's `vm_repair` module); off, every file
    /// is exactly what `pg_combinebackup` writes.
    pub vm_repair: bool,
    /// Set from another thread (a signal handler) to stop: checked before each output file
    /// and before the output is put in place; the staging directories are then removed and
    /// [`crate::CombineError::Cancelled`] returned.
    pub cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CombineOptions {
    pub fn new(backups: Vec<PathBuf>, output: PathBuf) -> CombineOptions {
        CombineOptions {
            backups,
            output,
            tablespace_mappings: Vec::new(),
            dry_run: false,
            no_sync: false,
            manifest_checksums: ChecksumType::Crc32c,
            no_manifest: false,
            copy_mode: CopyMode::Copy,
            jobs: 0,
            format: OutputFormat::Plain,
            direct_io: true,
            vm_repair: true,
            cancel: Default::default(),
        }
    }
}

/// Progress, reported after each output file.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// What a combine did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CombineReport {
    pub output: PathBuf,
    pub dry_run: bool,
    pub backups: usize,
    pub system_identifier: u64,
    pub pg_major: u32,
    /// Output files (all of them, including `backup_label`).
    pub files: u64,
    /// Files rebuilt from `INCREMENTAL.*` block by block.
    pub reconstructed: u64,
    /// Files taken whole (copied, cloned or linked), including reconstructions that reduced
    /// to a whole-file copy from an older backup.
    pub copied_whole: u64,
    pub bytes: u64,
    /// Blocks written as zeros: never seen in any backup within a file's length.
    pub zero_blocks: u64,
    pub manifest_written: bool,
    /// What the visibility-map repair found and changed.
    pub vm_repair: crate::VmRepairReport,
    pub warnings: Vec<String>,
    pub elapsed_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mappings_like_pg_combinebackup() {
        let m = TablespaceMapping::parse("/a/b/=/c//d/./e").unwrap();
        assert_eq!(m.old_dir, PathBuf::from("/a/b"));
        assert_eq!(m.new_dir, PathBuf::from("/c/d/e"));
        let m = TablespaceMapping::parse("/x\\=y=/z").unwrap();
        assert_eq!(m.old_dir, PathBuf::from("/x=y"));
        assert!(TablespaceMapping::parse("/a=/b=/c").is_err());
        assert!(TablespaceMapping::parse("a=/b")
            .unwrap_err()
            .contains("absolute"));
        assert!(TablespaceMapping::parse("/a=").is_err());
        assert_eq!(
            canonicalize_path(Path::new("/a/b/../c")),
            PathBuf::from("/a/c")
        );
    }
}
