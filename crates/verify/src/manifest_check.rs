//! What `pg_verifybackup` checks of a plain backup against its `backup_manifest`: the
//! manifest's own checksum, the system identifier in `global/pg_control`, every listed file
//! present with its size and checksum, no unlisted file (outside the same ignore list). In
//! the order upstream reports them: first what a directory walk finds (missing, extra,
//! wrong size), then checksums, so obvious problems come out at once.
//!
//! Checksums are computed in parallel, biggest files first, with the read path the combine
//! uses: cached ranges from the page cache, uncached ranges of 64 KiB and more with direct
//! I/O, one aligned 1 MiB buffer per worker.
//!
//! Then, unless `-n`, the WAL the backup needs is parsed, as `pg_verifybackup` runs
//! `pg_waldump` over each of the manifest's WAL ranges: every record from the range's start
//! to its end must be present in `pg_wal` (or `-w`) and pass the checks of PostgreSQL's
//! xlogreader (page headers, record lengths, the `xl_prev` chain, CRC-32C), with
//! `pgincr-wal` instead of a child process.
//!
//! Not yet here: tar-format backups (with the archive layer).

use pgincr_io::{AlignedBuf, ReadFile};
use pgincr_types::checksum::{ChecksumType, Checksummer};
use pgincr_types::manifest::{Manifest, ManifestFile};
use pgincr_types::ControlFile;
use rayon::prelude::*;
use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Why verification could not run at all (problems found in the backup are not errors: they
/// are the report).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("could not read backup manifest \"{path}\": {source}")]
    Manifest {
        path: PathBuf,
        source: pgincr_types::manifest::ManifestError,
    },
    #[error(
        "\"{0}\" holds tar archives: this verification reads plain backups; extract them first \
         (or use PostgreSQL 18's pg_verifybackup -n)"
    )]
    TarBackup(PathBuf),
    #[error("could not start worker threads: {0}")]
    Threads(String),
}

/// What is wrong with one file, or with the backup as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// Listed in the manifest, absent from the backup.
    Missing,
    /// In the backup, not in the manifest.
    Extra,
    /// Size differs from the manifest.
    Size,
    /// Checksum differs from the manifest.
    Checksum,
    /// Not a regular file or directory, or unreadable.
    Unreadable,
    /// `global/pg_control` unreadable, damaged, or of another system than the manifest.
    ControlFile,
    /// The WAL a range of the manifest needs is missing or does not parse.
    Wal,
}

/// One problem, as `pg_verifybackup` words it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The path relative to the backup, when the problem is one file's.
    pub file: Option<String>,
    pub kind: ProblemKind,
    pub message: String,
}

/// Options, with `pg_verifybackup`'s names.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// `-m`: the manifest, when not `<backup>/backup_manifest`.
    pub manifest_path: Option<PathBuf>,
    /// `-i`: relative paths (files or directories) to leave out, on top of the defaults.
    pub ignore: Vec<PathBuf>,
    /// `-s`: check presence and sizes only.
    pub skip_checksums: bool,
    /// `-e`: stop at the first problem.
    pub exit_on_error: bool,
    /// Worker threads; 0 means one per core.
    pub jobs: usize,
    /// `-n`: do not parse the WAL.
    pub no_parse_wal: bool,
    /// `-w`: where the WAL is, when not `<backup>/pg_wal`.
    pub wal_directory: Option<PathBuf>,
}

/// The outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    pub directory: PathBuf,
    pub files_in_manifest: u64,
    /// Files whose checksum was computed, and their bytes.
    pub files_checksummed: u64,
    pub bytes_checksummed: u64,
    /// WAL records parsed (0 with `-n`).
    pub wal_records: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What `pg_verifybackup` always ignores (besides `-i`): the manifest itself, the WAL (checked
/// separately), and files the user may add to a backup to restore it.
const DEFAULT_IGNORE: [&str; 5] = [
    "backup_manifest",
    "pg_wal",
    "postgresql.auto.conf",
    "recovery.signal",
    "standby.signal",
];

/// Whether `dir` holds a tar-format backup (`base.tar`, compressed or not), which the checks
/// of this crate do not read yet.
pub(crate) fn is_tar_backup(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.file_name().as_bytes().starts_with(b"base.tar")))
    })
}

/// Verifies the plain backup in `dir`.
pub fn verify_backup(dir: &Path, opts: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
    if is_tar_backup(dir) {
        return Err(VerifyError::TarBackup(dir.to_path_buf()));
    }
    let manifest_path = opts
        .manifest_path
        .clone()
        .unwrap_or_else(|| dir.join("backup_manifest"));
    let manifest = Manifest::read(&manifest_path).map_err(|source| VerifyError::Manifest {
        path: manifest_path.clone(),
        source,
    })?;
    let mut ignore: Vec<PathBuf> = DEFAULT_IGNORE.iter().map(PathBuf::from).collect();
    ignore.extend(opts.ignore.iter().cloned());
    let mut v = Verifier {
        root: dir,
        manifest: &manifest,
        ignore,
        exit_on_error: opts.exit_on_error,
        seen: HashSet::new(),
        bad: HashSet::new(),
        report: VerifyReport {
            directory: dir.to_path_buf(),
            files_in_manifest: manifest.files.len() as u64,
            ..VerifyReport::default()
        },
    };
    v.walk(Path::new(""));
    if v.stop() {
        return Ok(v.report);
    }
    v.report_missing();
    if v.stop() || opts.skip_checksums {
        return Ok(v.report);
    }
    v.check_checksums(opts.jobs)?;
    if v.stop() || opts.no_parse_wal {
        return Ok(v.report);
    }
    let wal_dir = opts
        .wal_directory
        .clone()
        .unwrap_or_else(|| dir.join("pg_wal"));
    v.parse_wal(&wal_dir);
    Ok(v.report)
}

struct Verifier<'a> {
    root: &'a Path,
    manifest: &'a Manifest,
    ignore: Vec<PathBuf>,
    exit_on_error: bool,
    /// Manifest paths found on disk.
    seen: HashSet<Vec<u8>>,
    /// Manifest paths already reported (wrong size): their checksum is not checked.
    bad: HashSet<Vec<u8>>,
    report: VerifyReport,
}

impl Verifier<'_> {
    fn stop(&self) -> bool {
        self.exit_on_error && !self.report.problems.is_empty()
    }

    fn problem(&mut self, file: Option<&str>, kind: ProblemKind, message: String) {
        self.report.problems.push(Problem {
            file: file.map(str::to_string),
            kind,
            message,
        });
    }

    fn ignored(&self, rel: &Path) -> bool {
        self.ignore.iter().any(|i| rel.starts_with(i))
    }

    /// `verify_plain_backup_directory`: every entry below `rel`.
    fn walk(&mut self, rel: &Path) {
        let dir = self.root.join(rel);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                let name = rel.display().to_string();
                self.problem(
                    Some(&name),
                    ProblemKind::Unreadable,
                    format!("could not open directory \"{name}\": {e}"),
                );
                return;
            }
        };
        let mut names: Vec<std::ffi::OsString> = entries
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for name in names {
            if self.stop() {
                return;
            }
            let rel = rel.join(&name);
            if self.ignored(&rel) {
                continue;
            }
            self.entry(&rel);
        }
    }

    /// `verify_plain_backup_file`. Symbolic links are followed, as `stat` does: tablespaces
    /// are links in `pg_tblspc`.
    fn entry(&mut self, rel: &Path) {
        let name = rel.display().to_string();
        let meta = match std::fs::metadata(self.root.join(rel)) {
            Ok(m) => m,
            Err(e) => {
                self.problem(
                    Some(&name),
                    ProblemKind::Unreadable,
                    format!("could not stat file or directory \"{name}\": {e}"),
                );
                // Nothing below it is reported again.
                self.ignore.push(rel.to_path_buf());
                return;
            }
        };
        if meta.is_dir() {
            self.walk(rel);
            return;
        }
        if !meta.is_file() {
            self.problem(
                Some(&name),
                ProblemKind::Unreadable,
                format!("\"{name}\" is not a regular file or directory"),
            );
            return;
        }
        let key = rel.as_os_str().as_bytes().to_vec();
        let Some(m) = self.manifest.file(&key) else {
            self.problem(
                Some(&name),
                ProblemKind::Extra,
                format!("\"{name}\" is present on disk but not in the manifest"),
            );
            return;
        };
        self.seen.insert(key.clone());
        if m.size != meta.len() {
            let message = format!(
                "\"{name}\" has size {} on disk but size {} in the manifest",
                meta.len(),
                m.size
            );
            self.problem(Some(&name), ProblemKind::Size, message);
            self.bad.insert(key);
        }
        if rel == Path::new("global/pg_control") && self.manifest.version != 1 {
            self.control_file(rel);
        }
    }

    /// `verify_control_file`: the control file's system identifier is the manifest's.
    fn control_file(&mut self, rel: &Path) {
        let name = rel.display().to_string();
        match ControlFile::read(&self.root.join(rel)) {
            Err(e) => self.problem(Some(&name), ProblemKind::ControlFile, e.to_string()),
            Ok(c) if Some(c.system_identifier) != self.manifest.system_identifier => {
                let message = format!(
                    "{}: manifest system identifier is {}, but control file has {}",
                    self.root.join(rel).display(),
                    self.manifest.system_identifier.unwrap_or(0),
                    c.system_identifier
                );
                self.problem(Some(&name), ProblemKind::ControlFile, message);
            }
            Ok(_) => {}
        }
    }

    /// `report_extra_backup_files`: listed, not found, not ignored.
    fn report_missing(&mut self) {
        let missing: Vec<String> = self
            .manifest
            .files
            .keys()
            .filter(|k| !self.seen.contains(k.as_ref()))
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .filter(|name| !self.ignored(Path::new(name)))
            .collect();
        for name in missing {
            if self.stop() {
                return;
            }
            self.problem(
                Some(&name),
                ProblemKind::Missing,
                format!("\"{name}\" is present in the manifest but not on disk"),
            );
        }
    }

    /// `verify_backup_checksums`: every file found with the right size and a checksum.
    fn check_checksums(&mut self, jobs: usize) -> Result<(), VerifyError> {
        let mut todo: Vec<(&[u8], &ManifestFile)> = self
            .manifest
            .files
            .iter()
            .map(|(k, m)| (k.as_ref(), m))
            .filter(|(k, m)| {
                self.seen.contains(*k)
                    && !self.bad.contains(*k)
                    && m.checksum_type != ChecksumType::None
            })
            .collect();
        // Biggest first, so one large file does not start last and leave workers idle.
        todo.sort_by_key(|(_, m)| std::cmp::Reverse(m.size));
        let threads = match jobs {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("pgincr-verify-{i}"))
            .build()
            .map_err(|e| VerifyError::Threads(e.to_string()))?;
        let root = self.root;
        let results: Vec<Option<Problem>> = pool.install(|| {
            todo.par_iter()
                .map_init(
                    || AlignedBuf::new(1 << 20),
                    |buf, (key, m)| checksum_file(root, key, m, buf),
                )
                .collect()
        });
        self.report.files_checksummed = todo.len() as u64;
        self.report.bytes_checksummed = todo.iter().map(|(_, m)| m.size).sum();
        let mut found: Vec<Problem> = results.into_iter().flatten().collect();
        found.sort_by(|a, b| a.file.cmp(&b.file));
        if self.exit_on_error {
            found.truncate(1);
        }
        self.report.problems.extend(found);
        Ok(())
    }
}

impl Verifier<'_> {
    /// `parse_required_wal`: each WAL range of the manifest, from its start to its end.
    fn parse_wal(&mut self, wal_dir: &Path) {
        // The segment size from the backup's control file, so that a missing first segment
        // is named rather than leaving the reader without a size to compute names from.
        let segment_size = ControlFile::read(&self.root.join("global/pg_control"))
            .ok()
            .map(|c| c.xlog_seg_size.as_u64());
        for range in &self.manifest.wal_ranges {
            if self.stop() {
                return;
            }
            let mut ro = pgincr_wal::ReaderOptions::new(range.tli, range.start);
            ro.end = Some(range.end);
            ro.system_identifier = self.manifest.system_identifier;
            ro.segment_size = segment_size;
            let source = pgincr_wal::DirectorySource::new(wal_dir);
            let result = pgincr_wal::WalReader::new(source, ro).and_then(|reader| {
                let mut n = 0u64;
                for record in reader {
                    record?;
                    n += 1;
                }
                Ok(n)
            });
            match result {
                Ok(n) => self.report.wal_records += n,
                Err(e) => {
                    let message = format!("WAL parsing failed for timeline {}: {e}", range.tli);
                    let segment = Some(e.segment.clone()).filter(|s| !s.is_empty());
                    self.problem(segment.as_deref(), ProblemKind::Wal, message);
                }
            }
        }
    }
}

/// Checks one file's checksum; `Some` problem when it differs or cannot be read.
fn checksum_file(
    root: &Path,
    key: &[u8],
    m: &ManifestFile,
    buf: &mut AlignedBuf,
) -> Option<Problem> {
    let name = String::from_utf8_lossy(key).into_owned();
    let path = root.join(std::ffi::OsStr::from_bytes(key));
    let unreadable = |what: String| Problem {
        file: Some(name.clone()),
        kind: ProblemKind::Unreadable,
        message: what,
    };
    let file = match ReadFile::open(&path, true) {
        Ok(f) => f,
        Err(e) => return Some(unreadable(format!("could not open file \"{name}\": {e}"))),
    };
    let mut sum = Checksummer::new(m.checksum_type);
    let mut offset = 0u64;
    while offset < m.size {
        let n = (m.size - offset).min(buf.len() as u64) as usize;
        let Some(chunk) = buf.get_mut(..n) else {
            break;
        };
        if let Err(e) = file.read_exact_at(chunk, offset) {
            return Some(unreadable(format!(
                "could not read file \"{name}\": {e} (at byte {offset} of {})",
                m.size
            )));
        }
        sum.update(chunk);
        offset += n as u64;
    }
    let computed = sum.finish()?;
    if *computed.bytes == *m.checksum {
        return None;
    }
    Some(Problem {
        file: Some(name.clone()),
        kind: ProblemKind::Checksum,
        message: format!("checksum mismatch for file \"{name}\""),
    })
}
