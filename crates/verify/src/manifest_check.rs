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
//! Tar-format backups (`base.tar`, `<oid>.tar`, `pg_wal.tar`, plain or compressed) are
//! read by [`crate::tar_check`], as PostgreSQL 18's `pg_verifybackup` reads them, plus the WAL
//! inside `pg_wal.tar`. With data checksums on, the pages of relation files are checked too
//! ([`crate::page_check`]).

use crate::page_check::{self, FilePages, PageGeometry, PageProblem, RelationFile};
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
    #[error("could not open directory \"{path}\": {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
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
    /// A data page of a relation file fails its checksum or header check (not a
    /// `pg_verifybackup` check: `pg_checksums`').
    Page,
}

/// One problem, as `pg_verifybackup` words it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The path relative to the backup, when the problem is one file's.
    pub file: Option<String>,
    pub kind: ProblemKind,
    pub message: String,
    /// In a tar-format backup, the archive the file is (or should be) in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// For [`ProblemKind::Page`]: which block and what is wrong with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<crate::PageProblem>,
}

impl Problem {
    pub(crate) fn new(file: Option<&str>, kind: ProblemKind, message: String) -> Problem {
        Problem {
            file: file.map(str::to_string),
            kind,
            message,
            archive: None,
            page: None,
        }
    }
}

/// The backup's format (`-F`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupFormat {
    #[default]
    Plain,
    Tar,
}

/// Whether data pages are checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PageChecks {
    /// When the backup's `pg_control` says data checksums are on (and `-s` is not given).
    #[default]
    Auto,
    /// Always; a problem when the cluster has no data checksums.
    On,
    Off,
}

/// Bytes done and to do, for `-P`: in a plain backup the bytes of the files checksummed, in a
/// tar backup the bytes of the archive files read (compressed), as `pg_verifybackup` counts.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: std::sync::atomic::AtomicU64,
    pub total: std::sync::atomic::AtomicU64,
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
    /// `-w`: where the WAL is, when not `<backup>/pg_wal` (or, in a tar backup, `pg_wal.tar`
    /// or the `pg_wal` directory inside `base.tar`).
    pub wal_directory: Option<PathBuf>,
    /// `-F`: the format; `None`: tar when `PG_VERSION` is absent and an archive is there.
    pub format: Option<BackupFormat>,
    /// Data-page checks.
    pub page_checks: PageChecks,
    /// Updated as bytes are read, when given.
    pub progress: Option<std::sync::Arc<Progress>>,
}

/// The outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    pub directory: PathBuf,
    pub format: BackupFormat,
    pub files_in_manifest: u64,
    /// Files whose checksum was computed, and their bytes.
    pub files_checksummed: u64,
    pub bytes_checksummed: u64,
    /// WAL records parsed (0 with `-n`).
    pub wal_records: u64,
    /// Whether data pages were checked, and if not why not.
    pub page_checks: String,
    /// Relation-file blocks read by the page checks (new pages and pages changed during the
    /// backup included, though not checked).
    pub pages_checked: u64,
    /// Of those, new pages and pages changed during the backup (at or after its start LSN),
    /// which are not checked.
    pub pages_skipped: u64,
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

/// Verifies the backup in `dir`, plain or tar.
pub fn verify_backup(dir: &Path, opts: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
    let manifest_path = opts
        .manifest_path
        .clone()
        .unwrap_or_else(|| dir.join("backup_manifest"));
    let manifest = Manifest::read(&manifest_path).map_err(|source| VerifyError::Manifest {
        path: manifest_path.clone(),
        source,
    })?;
    // As upstream, the directory must exist. Without -F, upstream 18 takes a directory
    // without PG_VERSION for tar, so that a plain backup that lost PG_VERSION gets every
    // entry reported as "not expected in a tar format backup"; here it is tar only when
    // PG_VERSION is absent and an archive (`base.tar`, `<oid>.tar.gz`, ...) is there.
    let names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(d) => d
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(source) => {
            return Err(VerifyError::Directory {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let format = opts.format.unwrap_or_else(|| {
        if !names.iter().any(|n| n == "PG_VERSION")
            && names.iter().any(|n| crate::tar_check::is_archive_name(n))
        {
            BackupFormat::Tar
        } else {
            BackupFormat::Plain
        }
    });
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
            format,
            files_in_manifest: manifest.files.len() as u64,
            page_checks: "off".into(),
            ..VerifyReport::default()
        },
    };
    if format == BackupFormat::Tar {
        v.verify_tar(opts)?;
        return Ok(v.report);
    }
    v.walk(Path::new(""));
    if v.stop() {
        return Ok(v.report);
    }
    v.report_missing();
    let pages = v.plain_page_geometry(opts);
    if v.stop() || (opts.skip_checksums && pages.is_none()) {
        return Ok(v.report);
    }
    v.check_checksums(opts, pages)?;
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

pub(crate) struct Verifier<'a> {
    pub(crate) root: &'a Path,
    pub(crate) manifest: &'a Manifest,
    pub(crate) ignore: Vec<PathBuf>,
    pub(crate) exit_on_error: bool,
    /// Manifest paths found on disk.
    pub(crate) seen: HashSet<Vec<u8>>,
    /// Manifest paths already reported (wrong size): their checksum is not checked.
    pub(crate) bad: HashSet<Vec<u8>>,
    pub(crate) report: VerifyReport,
}

/// How many damaged pages are listed one by one; the rest are counted in one problem.
pub(crate) const PAGE_PROBLEM_LIMIT: usize = 10_000;

/// The start of the backup (the first WAL range's start): pages at or after it are not
/// checked. Without WAL ranges every page is.
pub(crate) fn backup_start_lsn(manifest: &Manifest) -> u64 {
    manifest
        .wal_ranges
        .iter()
        .map(|r| r.start.0)
        .min()
        .unwrap_or(u64::MAX)
}

impl Verifier<'_> {
    pub(crate) fn stop(&self) -> bool {
        self.exit_on_error && !self.report.problems.is_empty()
    }

    pub(crate) fn problem(&mut self, file: Option<&str>, kind: ProblemKind, message: String) {
        self.report.problems.push(Problem::new(file, kind, message));
    }

    pub(crate) fn ignored(&self, rel: &Path) -> bool {
        self.ignore.iter().any(|i| rel.starts_with(i))
    }

    /// Whether (and with what geometry) to check pages of the plain backup, from its
    /// `global/pg_control`; records the decision in the report.
    fn plain_page_geometry(&mut self, opts: &VerifyOptions) -> Option<PageGeometry> {
        let control = ControlFile::read(&self.root.join("global/pg_control")).ok();
        self.decide_page_checks(opts, control.as_ref())
    }

    /// Shared by both formats: `control` is the backup's pg_control, when readable.
    pub(crate) fn decide_page_checks(
        &mut self,
        opts: &VerifyOptions,
        control: Option<&ControlFile>,
    ) -> Option<PageGeometry> {
        let want = match opts.page_checks {
            PageChecks::Off => false,
            PageChecks::Auto => !opts.skip_checksums,
            PageChecks::On => true,
        };
        if !want {
            self.report.page_checks = "off".into();
            return None;
        }
        let Some(c) = control else {
            self.report.page_checks = "off: no readable global/pg_control".into();
            return None;
        };
        if !c.data_checksums_enabled() {
            self.report.page_checks = "off: data checksums are not enabled in the cluster".into();
            if opts.page_checks == PageChecks::On {
                self.problem(
                    Some("global/pg_control"),
                    ProblemKind::Page,
                    "data checksums are not enabled in cluster".into(),
                );
            }
            return None;
        }
        self.report.page_checks = "on".into();
        Some(PageGeometry {
            blcksz: c.blcksz.get() as usize,
            relseg_blocks: c.relseg_size.get(),
            start_lsn: backup_start_lsn(self.manifest),
        })
    }

    /// Adds the problems of one file's pages to the report.
    pub(crate) fn page_problems(
        &mut self,
        file: &str,
        archive: Option<&str>,
        found: &[PageProblem],
        more: u64,
    ) {
        for p in found {
            let mut problem = Problem::new(Some(file), ProblemKind::Page, p.message(file));
            problem.archive = archive.map(str::to_string);
            problem.page = Some(*p);
            self.report.problems.push(problem);
        }
        if more > 0 {
            self.problem(
                Some(file),
                ProblemKind::Page,
                format!("{more} more damaged block(s) in file \"{file}\" not listed"),
            );
        }
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
    pub(crate) fn report_missing(&mut self) {
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

    /// `verify_backup_checksums`: every file found with the right size and a checksum; with
    /// `pages`, the pages of relation files too, in the same read.
    fn check_checksums(
        &mut self,
        opts: &VerifyOptions,
        pages: Option<PageGeometry>,
    ) -> Result<(), VerifyError> {
        let sums = !opts.skip_checksums;
        let mut todo: Vec<(&[u8], &ManifestFile, Option<RelationFile>)> = self
            .manifest
            .files
            .iter()
            .map(|(k, m)| {
                let segno = pages
                    .and(std::str::from_utf8(k).ok())
                    .and_then(page_check::relation_file);
                (k.as_ref(), m, segno)
            })
            .filter(|(k, m, segno)| {
                self.seen.contains(*k)
                    && !self.bad.contains(*k)
                    && ((sums && m.checksum_type != ChecksumType::None) || segno.is_some())
            })
            .collect();
        // Biggest first, so one large file does not start last and leave workers idle.
        todo.sort_by_key(|(_, m, _)| std::cmp::Reverse(m.size));
        let progress = opts.progress.clone();
        if let Some(p) = &progress {
            let total: u64 = todo.iter().map(|(_, m, _)| m.size).sum();
            p.total
                .fetch_add(total, std::sync::atomic::Ordering::Relaxed);
        }
        let threads = match opts.jobs {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("pgincr-verify-{i}"))
            .build()
            .map_err(|e| VerifyError::Threads(e.to_string()))?;
        let root = self.root;
        let results: Vec<FileResult> = pool.install(|| {
            todo.par_iter()
                .map_init(
                    || AlignedBuf::new(1 << 20),
                    |buf, (key, m, segno)| {
                        let check = CheckFile {
                            root,
                            key,
                            m,
                            sum: sums,
                            pages: pages.zip(*segno),
                            progress: progress.as_deref(),
                        };
                        check.run(buf)
                    },
                )
                .collect()
        });
        let summed: Vec<&(&[u8], &ManifestFile, Option<RelationFile>)> = todo
            .iter()
            .filter(|(_, m, _)| sums && m.checksum_type != ChecksumType::None)
            .collect();
        self.report.files_checksummed = summed.len() as u64;
        self.report.bytes_checksummed = summed.iter().map(|(_, m, _)| m.size).sum();
        let mut results = results;
        results.sort_by(|a, b| a.name.cmp(&b.name));
        let mut found: Vec<Problem> = Vec::new();
        for r in results {
            self.report.pages_checked += r.pages_checked;
            self.report.pages_skipped += r.pages_skipped;
            found.extend(r.problem);
            let name = r.name;
            for p in &r.page_problems {
                let mut problem = Problem::new(Some(&name), ProblemKind::Page, p.message(&name));
                problem.page = Some(*p);
                found.push(problem);
            }
            if r.more_page_problems > 0 {
                found.push(Problem::new(
                    Some(&name),
                    ProblemKind::Page,
                    format!(
                        "{} more damaged block(s) in file \"{name}\" not listed",
                        r.more_page_problems
                    ),
                ));
            }
        }
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
        self.parse_wal_from(segment_size, || pgincr_wal::DirectorySource::new(wal_dir));
    }

    /// `parse_required_wal` over any source: `source` makes one per range.
    pub(crate) fn parse_wal_from<S: pgincr_wal::WalSource>(
        &mut self,
        segment_size: Option<u64>,
        mut source: impl FnMut() -> S,
    ) {
        for range in &self.manifest.wal_ranges {
            if self.stop() {
                return;
            }
            let mut ro = pgincr_wal::ReaderOptions::new(range.tli, range.start);
            ro.end = Some(range.end);
            ro.system_identifier = self.manifest.system_identifier;
            ro.segment_size = segment_size;
            let result = pgincr_wal::WalReader::new(source(), ro).and_then(|reader| {
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

/// One file of a plain backup to read: its checksum, its pages, or both.
struct CheckFile<'a> {
    root: &'a Path,
    key: &'a [u8],
    m: &'a ManifestFile,
    sum: bool,
    /// The page geometry and what the file is, when its pages are checked.
    pages: Option<(PageGeometry, RelationFile)>,
    progress: Option<&'a Progress>,
}

/// What reading one file found.
struct FileResult {
    name: String,
    problem: Option<Problem>,
    pages_checked: u64,
    pages_skipped: u64,
    page_problems: Vec<PageProblem>,
    more_page_problems: u64,
}

impl CheckFile<'_> {
    fn run(&self, buf: &mut AlignedBuf) -> FileResult {
        let name = String::from_utf8_lossy(self.key).into_owned();
        let mut result = FileResult {
            name: name.clone(),
            problem: None,
            pages_checked: 0,
            pages_skipped: 0,
            page_problems: Vec::new(),
            more_page_problems: 0,
        };
        let mut pages = self
            .pages
            .map(|(g, file)| FilePages::new(g, file, self.m.size, PAGE_PROBLEM_LIMIT));
        result.problem = self.read(&name, buf, pages.as_mut());
        if let Some(mut p) = pages {
            if result
                .problem
                .as_ref()
                .is_none_or(|p| p.kind == ProblemKind::Checksum)
            {
                p.finish();
            }
            result.pages_checked = p.checked;
            result.pages_skipped = p.skipped;
            result.page_problems = p.problems;
            result.more_page_problems = p.more;
        }
        result
    }

    /// Reads the file once; `Some` problem when its checksum differs or it cannot be read.
    fn read(
        &self,
        name: &str,
        buf: &mut AlignedBuf,
        mut pages: Option<&mut FilePages>,
    ) -> Option<Problem> {
        let path = self.root.join(std::ffi::OsStr::from_bytes(self.key));
        let unreadable = |what: String| Problem::new(Some(name), ProblemKind::Unreadable, what);
        let file = match ReadFile::open(&path, true) {
            Ok(f) => f,
            Err(e) => return Some(unreadable(format!("could not open file \"{name}\": {e}"))),
        };
        let size = self.m.size;
        let mut sum = Checksummer::new(if self.sum {
            self.m.checksum_type
        } else {
            ChecksumType::None
        });
        let mut offset = 0u64;
        while offset < size {
            let n = (size - offset).min(buf.len() as u64) as usize;
            let Some(chunk) = buf.get_mut(..n) else {
                break;
            };
            if let Err(e) = file.read_exact_at(chunk, offset) {
                return Some(unreadable(format!(
                    "could not read file \"{name}\": {e} (at byte {offset} of {size})"
                )));
            }
            sum.update(chunk);
            if let Some(p) = pages.as_deref_mut() {
                p.feed(chunk);
            }
            if let Some(p) = self.progress {
                p.done
                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
            offset += n as u64;
        }
        let computed = sum.finish()?;
        if *computed.bytes == *self.m.checksum {
            return None;
        }
        Some(Problem::new(
            Some(name),
            ProblemKind::Checksum,
            format!("checksum mismatch for file \"{name}\""),
        ))
    }
}
