//! Chain checks, done before anything is written (pg_combinebackup's `read_pg_version_file`,
//! `check_control_files`, `check_backup_label_files` and `load_backup_manifests`, in that
//! order), plus the checks pgincr adds: every backup has a manifest and one cluster geometry.

use crate::archive::TarIndexExt as _;
use crate::archive::{self, TarIndex};
use crate::copy::Source;
use crate::error::{CombineError, Result};
use crate::geometry::Geometry;
use pgincr_types::backup_label::MAX_BACKUP_LABEL_LEN;
use pgincr_types::bounded::PG_CONTROL_LIMIT;
use pgincr_types::control::ControlFileError;
use pgincr_types::manifest::Manifest;
use pgincr_types::{BackupLabel, ControlFile};
use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How a backup's files are stored.
pub enum Layout {
    /// A data directory, as `pg_basebackup -Fp` writes it.
    Plain,
    /// `base.tar` and friends, as `pg_basebackup -Ft` writes them.
    Tar(TarIndex),
}

/// One input backup, checked.
pub struct Backup {
    pub dir: PathBuf,
    pub layout: Layout,
    pub control: ControlFile,
    pub label: BackupLabel,
    pub manifest: Manifest,
}

impl Backup {
    /// Opens the file at manifest path `rel`; `Ok(None)` if the backup has no such file.
    pub fn open(&self, rel: &[u8]) -> Result<Option<Source>> {
        match &self.layout {
            Layout::Tar(index) => index.open(rel),
            Layout::Plain => match Source::open_in_backup(&self.dir, rel) {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(CombineError::io(
                    "could not open file",
                    self.dir.join(std::ffi::OsStr::from_bytes(rel)),
                )(e)),
            },
        }
    }
}

/// The checked chain, oldest first.
pub struct Chain {
    pub backups: Vec<Backup>,
    pub system_identifier: u64,
    pub geometry: Geometry,
    /// Major version from the final backup's PG_VERSION.
    pub pg_major: u32,
    pub warnings: Vec<String>,
}

impl Chain {
    /// The final backup.
    #[allow(clippy::indexing_slicing)] // load() refuses an empty chain: `backups` has one.
    pub fn last(&self) -> &Backup {
        &self.backups[self.backups.len() - 1]
    }
}

fn chain_err<T>(msg: String) -> Result<T> {
    Err(CombineError::Chain(msg))
}

/// Loads and checks the chain `dirs` (oldest first). Compressed tar archives are decompressed
/// into `spill_dir` as far as the combine needs (see [`archive`]).
pub fn load(dirs: &[PathBuf], spill_dir: &Path) -> Result<Chain> {
    let no_input = || CombineError::Usage("no input directories specified".into());
    if dirs.is_empty() {
        return Err(no_input());
    }
    for d in dirs {
        let meta = std::fs::metadata(d).map_err(|e| {
            // A backup directory that is gone is a backup missing from the chain.
            if e.kind() == std::io::ErrorKind::NotFound {
                CombineError::Chain(format!(
                    "could not access backup directory \"{}\": {e}",
                    d.display()
                ))
            } else {
                CombineError::io("could not access backup directory", d)(e)
            }
        })?;
        if !meta.is_dir() {
            return chain_err(format!(
                "\"{}\" is not a directory: pass backup directories (plain, or holding base.tar)",
                d.display()
            ));
        }
    }
    // Manifests are plain files in both formats: read them first, since the final one says
    // which members of older tar backups may be needed.
    let manifests = dirs
        .iter()
        .map(|d| load_manifest(d))
        .collect::<Result<Vec<_>>>()?;
    let needed = needed_paths(manifests.last().ok_or_else(no_input)?);
    let last_index = dirs.len() - 1;
    let mut backups = Vec::with_capacity(dirs.len());
    for (i, (dir, manifest)) in dirs.iter().zip(manifests).enumerate() {
        let layout = match archive::find_archives(dir)? {
            None => Layout::Plain,
            Some(archives) => {
                let spill = spill_dir.join(format!("backup-{i}"));
                let keep =
                    |p: &[u8]| i == last_index || needed.contains(p) || ALWAYS_READ.contains(&p);
                Layout::Tar(TarIndex::build(archives, &spill, &keep)?)
            }
        };
        backups.push(PartialBackup {
            dir: dir.clone(),
            layout,
            manifest,
        });
    }
    let pg_major = read_pg_version(backups.last().ok_or_else(no_input)?)?;
    let warnings = Vec::new();
    let controls = check_control_files(&backups, pg_major)?;
    let labels = check_backup_labels(&backups)?;
    let last_control = controls.last().ok_or_else(no_input)?;
    let system_identifier = last_control.system_identifier;
    let geometry = Geometry::from_control(last_control);
    let mut out = Vec::with_capacity(backups.len());
    for ((b, control), label) in backups.into_iter().zip(controls).zip(labels) {
        let sysid = b.manifest.system_identifier.unwrap_or(0);
        if sysid != system_identifier {
            return chain_err(format!(
                "{}: manifest system identifier is {sysid}, but control file has {system_identifier}",
                b.dir.join("global/pg_control").display()
            ));
        }
        out.push(Backup {
            dir: b.dir,
            layout: b.layout,
            control,
            label,
            manifest: b.manifest,
        });
    }
    Ok(Chain {
        backups: out,
        system_identifier,
        geometry,
        pg_major,
        warnings,
    })
}

/// Files every backup's checks read.
const ALWAYS_READ: [&[u8]; 4] = [
    b"backup_label",
    b"PG_VERSION",
    b"global/pg_control",
    b"tablespace_map",
];

/// A backup whose files are reachable but not yet checked.
struct PartialBackup {
    dir: PathBuf,
    layout: Layout,
    manifest: Manifest,
}

/// Paths older backups may have to supply: for every `INCREMENTAL.<name>` of the final
/// manifest, `<name>` and `INCREMENTAL.<name>` in the same directory.
fn needed_paths(last: &Manifest) -> HashSet<Vec<u8>> {
    let prefix = crate::incremental::INCREMENTAL_PREFIX.as_bytes();
    let mut set = HashSet::new();
    for p in last.files.keys() {
        let cut = p.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
        let (dir, name) = p.split_at(cut);
        if let Some(bare_name) = name.strip_prefix(prefix) {
            let mut bare = dir.to_vec();
            bare.extend_from_slice(bare_name);
            set.insert(bare);
            set.insert(p.to_vec());
        }
    }
    set
}

impl PartialBackup {
    /// Reads the small metadata file `rel` (`what` names it in errors), refusing anything but a
    /// regular file of at most `max` bytes.
    fn read_small(&self, rel: &str, max: u64, what: &'static str) -> Result<Vec<u8>> {
        match &self.layout {
            Layout::Tar(index) => index.read_small(rel, max, &self.dir),
            Layout::Plain => read_small(&self.dir.join(rel), max, what),
        }
    }

    fn display(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }
}

/// `PG_VERSION` must be a decimal major version followed by a newline.
fn read_pg_version(b: &PartialBackup) -> Result<u32> {
    let text = b.read_small("PG_VERSION", 128, "PG_VERSION file")?;
    let path = b.display("PG_VERSION");
    let digits_end = text
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    let version = std::str::from_utf8(text.split_at(digits_end).0)
        .ok()
        .and_then(|s| s.parse::<u32>().ok());
    match (version, text.get(digits_end)) {
        (Some(v), Some(b'\n')) => Ok(v),
        _ => Err(CombineError::Damaged(format!(
            "{path}: could not parse version number"
        ))),
    }
}

/// Reads a regular file of at most `max` bytes (a FIFO, device or directory is refused
/// before anything is read).
fn read_small(path: &Path, max: u64, what: &'static str) -> Result<Vec<u8>> {
    pgincr_types::read_bounded(path, max, what).map_err(CombineError::Metadata)
}

fn check_control_files(backups: &[PartialBackup], pg_major: u32) -> Result<Vec<ControlFile>> {
    let mut controls: Vec<ControlFile> = Vec::with_capacity(backups.len());
    let Some(last_dir) = backups.last().map(|b| &b.dir) else {
        return Ok(controls);
    };
    // Last to first, as pg_combinebackup does, so errors name the same backup it would.
    for b in backups.iter().rev() {
        let dir = &b.dir;
        let path = PathBuf::from(b.display("global/pg_control"));
        let bytes = b.read_small("global/pg_control", PG_CONTROL_LIMIT, "control file")?;
        let c = ControlFile::parse(&bytes, &path).map_err(|e| match e {
            // Not damaged: a cluster pgincr cannot combine.
            ControlFileError::UnsupportedVersion { .. } => CombineError::Chain(e.to_string()),
            e => CombineError::Damaged(e.to_string()),
        })?;
        match controls.first() {
            None => {
                if c.major_version() != pg_major {
                    return chain_err(format!(
                        "{}: control file is from PostgreSQL {}, but PG_VERSION says {pg_major}",
                        path.display(),
                        c.major_version()
                    ));
                }
            }
            Some(last) => {
                if c.system_identifier != last.system_identifier {
                    return chain_err(format!(
                        "{}: expected system identifier {}, but found {}: backup \"{}\" belongs to another cluster than backup \"{}\"",
                        path.display(),
                        last.system_identifier,
                        c.system_identifier,
                        dir.display(),
                        last_dir.display()
                    ));
                }
                if c.pg_control_version != last.pg_control_version {
                    return chain_err(format!(
                        "{}: unexpected control file version {} (the final backup has {})",
                        path.display(),
                        c.pg_control_version,
                        last.pg_control_version
                    ));
                }
                if (c.blcksz, c.relseg_size) != (last.blcksz, last.relseg_size) {
                    return chain_err(format!(
                        "{}: block size {} / segment size {} differ from the final backup's {} / {}",
                        path.display(),
                        c.blcksz,
                        c.relseg_size,
                        last.blcksz,
                        last.relseg_size
                    ));
                }
                // Pages of a backup taken without data checksums carry none, and the
                // restored cluster (which verifies them, as the final backup's control file
                // says) would fail on every one it reads. pg_combinebackup only warns.
                if last.data_checksums_enabled()
                    && c.data_checksum_version != last.data_checksum_version
                {
                    return chain_err(format!(
                        "{}: data checksums are {} in backup \"{}\" but on in the final backup \"{}\": data checksums were switched within the chain, so older pages would fail their checksums after a restore; start a new chain with a full backup (or combine with pg_combinebackup and run pg_checksums --enable on the stopped output)",
                        path.display(),
                        if c.data_checksums_enabled() { "of another version" } else { "off" },
                        dir.display(),
                        last_dir.display()
                    ));
                }
            }
        }
        // Block and segment sizes were validated by ControlFile::parse.
        controls.insert(0, c);
    }
    Ok(controls)
}

fn check_backup_labels(backups: &[PartialBackup]) -> Result<Vec<BackupLabel>> {
    let mut labels: Vec<BackupLabel> = Vec::with_capacity(backups.len());
    // The backup checked just before this one (the next newer).
    let mut next: Option<&PartialBackup> = None;
    for (i, view) in backups.iter().enumerate().rev() {
        let text = view.read_small("backup_label", MAX_BACKUP_LABEL_LEN as u64, "backup_label")?;
        let label = BackupLabel::parse(&text)
            .map_err(|e| CombineError::Damaged(format!("{}: {e}", view.display("backup_label"))))?;
        let dir = view.dir.display();
        match (i, label.incremental_from) {
            (0, Some(_)) => {
                return chain_err(format!(
                    "backup at \"{dir}\" is an incremental backup, but the first backup should be a full backup"
                ))
            }
            (i, None) if i > 0 => {
                return chain_err(format!(
                    "backup at \"{dir}\" is a full backup, but only the first backup should be a full backup"
                ))
            }
            _ => {}
        }
        // Backup i+1, checked just before, is incremental and must build on this one.
        if let (Some(next), Some((from_lsn, from_tli))) =
            (next, labels.first().and_then(|l| l.incremental_from))
        {
            let next_dir = next.dir.display();
            if label.start_tli != from_tli {
                return chain_err(format!(
                    "backup at \"{dir}\" starts on timeline {}, but backup \"{next_dir}\" was taken incrementally from timeline {from_tli}: the backups are out of order or not one chain",
                    label.start_tli
                ));
            }
            if label.start_lsn != from_lsn {
                return chain_err(format!(
                    "backup at \"{dir}\" starts at LSN {}, but backup \"{next_dir}\" was taken incrementally from LSN {from_lsn}: the backups are out of order, or a backup in between is missing",
                    label.start_lsn
                ));
            }
        }
        labels.insert(0, label);
        next = Some(view);
    }
    Ok(labels)
}

fn load_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("backup_manifest");
    if !path.exists() {
        return chain_err(format!(
            "backup \"{}\" has no backup_manifest: pgincr needs the manifest of every backup in the chain to check it",
            dir.display()
        ));
    }
    let m = Manifest::read(&path)?;
    if m.version == 1 {
        return chain_err(format!(
            "{}: backup manifest version 1 does not support incremental backup",
            path.display()
        ));
    }
    Ok(m)
}
