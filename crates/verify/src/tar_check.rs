//! What PostgreSQL 18's `pg_verifybackup` checks of a tar-format backup (`verify_tar_backup`,
//! `precheck_tar_backup_file`, astreamer_verify.c), with its messages: every file in the
//! directory is `base.tar`, `<tablespace oid>.tar` or `pg_wal.tar`, each optionally `.gz`,
//! `.lz4` or `.zst`; every member of the data archives is in the manifest (tablespace members
//! under `pg_tblspc/<oid>/`), with its size and checksum; `global/pg_control` is of the
//! manifest's system; every manifest file was found in some archive.
//!
//! Beyond upstream 18 (which hands the WAL to `pg_waldump`, and that cannot read tar): the WAL
//! the manifest's ranges need is taken from `pg_wal.tar` (or `pg_wal/` inside `base.tar`)
//! while it streams and parsed as for a plain backup, unless `-n` or `-w`. And the pages of
//! relation files are checked in the same read ([`crate::page_check`]).
//!
//! Each archive is read once, decompressed and hashed on the fly, nothing written to disk
//! ([`crate::tar_read`], over `pgincr-archive`); archives are read in parallel (one thread
//! each, up to `-j`).
//!
//! `global/pg_control` comes last in `base.tar` (the server sends it last), so whether the
//! cluster has data checksums is known only at the end: the page checks run on every relation
//! file with PostgreSQL's default geometry (8 kB blocks, 1 GB segments) and their findings are
//! kept (up to a limit) until the control file says whether they count. A cluster built with
//! another block or segment size gets no page checks in tar format (the report says so).

use crate::manifest_check::{backup_start_lsn, Verifier, PAGE_PROBLEM_LIMIT};
use crate::page_check::{relation_file, FilePages, PageGeometry, PageProblem};
use crate::tar_read::{compression_of, for_each_member, read_full};
use crate::{Problem, ProblemKind, VerifyError, VerifyOptions};
use pgincr_archive::Compression;
use pgincr_types::checksum::{ChecksumType, Checksummer};
use pgincr_types::manifest::Manifest;
use pgincr_types::ControlFile;
use rayon::prelude::*;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ArchiveKind {
    Base,
    Tablespace(u32),
    Wal,
}

struct Archive {
    name: String,
    path: PathBuf,
    kind: ArchiveKind,
    compression: Compression,
    size: u64,
}

/// `OID_MAX`.
const OID_MAX: u64 = u32::MAX as u64;

/// What one archive's reading found.
#[derive(Default)]
struct ArchiveResult {
    problems: Vec<Problem>,
    matched: Vec<Vec<u8>>,
    bad: Vec<Vec<u8>>,
    control: Option<Vec<u8>>,
    wal: Vec<(String, Vec<u8>)>,
    /// (file, problems, more): speculative until pg_control is known.
    pages: Vec<(String, Vec<PageProblem>, u64)>,
    pages_checked: u64,
    pages_skipped: u64,
    files_checksummed: u64,
    bytes_checksummed: u64,
}

/// The segments the manifest's WAL ranges need, by timeline and segment number.
struct WalWanted {
    ranges: Vec<(u32, u64, u64)>,
}

impl WalWanted {
    fn new(manifest: &Manifest) -> WalWanted {
        WalWanted {
            ranges: manifest
                .wal_ranges
                .iter()
                .map(|r| (r.tli.0, r.start.0, r.end.0))
                .collect(),
        }
    }

    /// Whether `name` (a bare member name) of `size` bytes is a segment some range needs.
    fn wants(&self, name: &str, size: u64) -> bool {
        if name.len() != 24
            || !name
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
            || !size.is_power_of_two()
            || !(1 << 20..=1 << 30).contains(&size)
        {
            return false;
        }
        let hex = |r: std::ops::Range<usize>| {
            name.get(r)
                .and_then(|s| u64::from_str_radix(s, 16).ok())
                .unwrap_or(u64::MAX)
        };
        let (tli, log, seg) = (hex(0..8), hex(8..16), hex(16..24));
        let segno = log.saturating_mul((1u64 << 32) / size).saturating_add(seg);
        self.ranges.iter().any(|&(t, start, end)| {
            u64::from(t) == tli && start / size <= segno && segno <= end / size
        })
    }
}

/// The segments taken from the archives, as a WAL source.
struct Segments<'a>(&'a HashMap<String, Vec<u8>>);

impl pgincr_wal::WalSource for Segments<'_> {
    fn read_at(
        &mut self,
        seg: &pgincr_wal::SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> io::Result<Option<usize>> {
        let Some(data) = self.0.get(&seg.name) else {
            return Ok(None);
        };
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let avail = data.get(start..).unwrap_or(&[]);
        let n = avail.len().min(buf.len());
        if let (Some(d), Some(s)) = (buf.get_mut(..n), avail.get(..n)) {
            d.copy_from_slice(s);
        }
        Ok(Some(n))
    }
}

/// `canonicalize_path` of a relative member path: no `.`, no empty components, `..` applied.
fn canonical(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// `precheck_tar_backup_file`'s naming rule: `base`, `pg_wal` or a tablespace OID, then a
/// tar suffix.
fn archive_name(name: &str) -> Option<(ArchiveKind, Compression)> {
    let (kind, suffix) = if let Some(s) = name.strip_prefix("base") {
        (ArchiveKind::Base, s)
    } else if let Some(s) = name.strip_prefix("pg_wal") {
        (ArchiveKind::Wal, s)
    } else {
        let end = name
            .bytes()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(name.len());
        let (digits, rest) = name.split_at(end);
        let oid = digits
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0 && n <= OID_MAX)?;
        (ArchiveKind::Tablespace(oid as u32), rest)
    };
    Some((kind, compression_of(suffix)?))
}

/// Whether `name` (in a backup's top directory) is an archive of a tar-format backup.
pub(crate) fn is_archive_name(name: &str) -> bool {
    archive_name(name).is_some()
}

/// What every archive's reader shares.
struct Ctx<'a> {
    manifest: &'a Manifest,
    ignore: &'a [PathBuf],
    skip_checksums: bool,
    exit_on_error: bool,
    pages: Option<PageGeometry>,
    wal: Option<WalWanted>,
    done: &'a AtomicU64,
}

impl Ctx<'_> {
    fn ignored(&self, rel: &str) -> bool {
        let rel = Path::new(rel);
        self.ignore.iter().any(|i| rel.starts_with(i))
    }
}

impl Verifier<'_> {
    /// `verify_tar_backup`, then the missing files, then the WAL.
    pub(crate) fn verify_tar(&mut self, opts: &VerifyOptions) -> Result<(), VerifyError> {
        let archives = self.find_archives()?;
        if self.stop() {
            return Ok(());
        }
        let read_wal = !opts.no_parse_wal && opts.wal_directory.is_none();
        let to_read: Vec<&Archive> = archives
            .iter()
            .filter(|a| a.kind != ArchiveKind::Wal || read_wal)
            .collect();
        let local_done = AtomicU64::new(0);
        let done = match &opts.progress {
            Some(p) => {
                let total: u64 = to_read.iter().map(|a| a.size).sum();
                p.total.fetch_add(total, Ordering::Relaxed);
                &p.done
            }
            None => &local_done,
        };
        let speculative_pages = match opts.page_checks {
            crate::PageChecks::Off => false,
            crate::PageChecks::Auto => !opts.skip_checksums,
            crate::PageChecks::On => true,
        };
        let ignore = self.ignore.clone();
        let ctx = Ctx {
            manifest: self.manifest,
            ignore: &ignore,
            skip_checksums: opts.skip_checksums,
            exit_on_error: opts.exit_on_error,
            pages: speculative_pages.then(|| PageGeometry {
                blcksz: PageGeometry::DEFAULT_BLCKSZ,
                relseg_blocks: PageGeometry::DEFAULT_RELSEG_BLOCKS,
                start_lsn: backup_start_lsn(self.manifest),
            }),
            wal: read_wal.then(|| WalWanted::new(self.manifest)),
            done,
        };
        let threads = match opts.jobs {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("pgincr-verify-{i}"))
            .build()
            .map_err(|e| VerifyError::Threads(e.to_string()))?;
        // Biggest first (base.tar, usually), results back in archive order.
        let mut order: Vec<usize> = (0..to_read.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(to_read.get(i).map_or(0, |a| a.size)));
        let mut results: Vec<(usize, ArchiveResult)> = pool.install(|| {
            order
                .par_iter()
                .filter_map(|&i| to_read.get(i).map(|a| (i, read_archive(&ctx, a))))
                .collect()
        });
        results.sort_by_key(|(i, _)| *i);

        let mut control: Option<(String, Vec<u8>)> = None;
        let mut wal: HashMap<String, Vec<u8>> = HashMap::new();
        let mut pages = Vec::new();
        for (i, r) in results {
            let name = to_read.get(i).map(|a| a.name.clone()).unwrap_or_default();
            self.report.problems.extend(r.problems);
            self.seen.extend(r.matched);
            self.bad.extend(r.bad);
            if let Some(c) = r.control {
                control = Some((name.clone(), c));
            }
            wal.extend(r.wal);
            self.report.files_checksummed += r.files_checksummed;
            self.report.bytes_checksummed += r.bytes_checksummed;
            self.report.pages_checked += r.pages_checked;
            self.report.pages_skipped += r.pages_skipped;
            pages.extend(r.pages.into_iter().map(|(f, p, m)| (name.clone(), f, p, m)));
        }
        let control = control.and_then(|(archive, bytes)| self.tar_control(&archive, &bytes));
        if speculative_pages {
            match self.decide_page_checks(opts, control.as_ref()) {
                Some(g)
                    if g.blcksz == PageGeometry::DEFAULT_BLCKSZ
                        && g.relseg_blocks == PageGeometry::DEFAULT_RELSEG_BLOCKS =>
                {
                    for (archive, file, found, more) in &pages {
                        self.page_problems(file, Some(archive), found, *more);
                    }
                }
                Some(g) => {
                    self.report.page_checks = format!(
                        "off: the tar format is checked with 8 kB blocks and 1 GB segments, the cluster has {} byte blocks and {} blocks per segment",
                        g.blcksz, g.relseg_blocks
                    );
                    self.report.pages_checked = 0;
                    self.report.pages_skipped = 0;
                }
                None => {
                    self.report.pages_checked = 0;
                    self.report.pages_skipped = 0;
                }
            }
        }
        if self.stop() {
            self.report.problems.truncate(1);
            return Ok(());
        }
        self.report_missing();
        if self.stop() {
            self.report.problems.truncate(1);
            return Ok(());
        }
        if !opts.no_parse_wal {
            let segment_size = control.as_ref().map(|c| c.xlog_seg_size.as_u64());
            match &opts.wal_directory {
                Some(dir) => {
                    self.parse_wal_from(segment_size, || pgincr_wal::DirectorySource::new(dir))
                }
                None => self.parse_wal_from(segment_size, || Segments(&wal)),
            }
        }
        if self.exit_on_error {
            self.report.problems.truncate(1);
        }
        Ok(())
    }

    /// The first pass of `verify_tar_backup`: the archives, and a problem for anything else.
    fn find_archives(&mut self) -> Result<Vec<Archive>, VerifyError> {
        let entries = std::fs::read_dir(self.root).map_err(|source| VerifyError::Directory {
            path: self.root.to_path_buf(),
            source,
        })?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut archives = Vec::new();
        for name in names {
            if self.ignored(Path::new(&name)) {
                continue;
            }
            let path = self.root.join(&name);
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    self.problem(
                        Some(&name),
                        ProblemKind::Unreadable,
                        format!("could not stat file or directory \"{name}\": {e}"),
                    );
                    continue;
                }
            };
            if !meta.is_file() {
                self.problem(
                    Some(&name),
                    ProblemKind::Extra,
                    format!("file \"{name}\" is not a regular file"),
                );
                continue;
            }
            let Some((kind, compression)) = archive_name(&name) else {
                self.problem(
                    Some(&name),
                    ProblemKind::Extra,
                    format!("file \"{name}\" is not expected in a tar format backup"),
                );
                continue;
            };
            archives.push(Archive {
                name,
                path,
                kind,
                compression,
                size: meta.len(),
            });
        }
        archives.sort_by(|a, b| a.kind.cmp(&b.kind).then_with(|| a.name.cmp(&b.name)));
        Ok(archives)
    }

    /// `member_verify_control_data`: the control file's CRC, version and system identifier.
    fn tar_control(&mut self, archive: &str, bytes: &[u8]) -> Option<ControlFile> {
        let file = "global/pg_control";
        if bytes.len() != pgincr_types::control::PG_CONTROL_FILE_SIZE {
            self.problem(
                Some(file),
                ProblemKind::ControlFile,
                format!(
                    "unexpected control file size {}, expected {}",
                    bytes.len(),
                    pgincr_types::control::PG_CONTROL_FILE_SIZE
                ),
            );
            return None;
        }
        match ControlFile::parse(bytes, &Path::new(archive).join(file)) {
            Err(e) => {
                self.problem(Some(file), ProblemKind::ControlFile, e.to_string());
                None
            }
            Ok(c) => {
                if self.manifest.version != 1
                    && Some(c.system_identifier) != self.manifest.system_identifier
                {
                    let message = format!(
                        "{archive}: {file}: manifest system identifier is {}, but control file has {}",
                        self.manifest.system_identifier.unwrap_or(0),
                        c.system_identifier
                    );
                    self.problem(Some(file), ProblemKind::ControlFile, message);
                }
                Some(c)
            }
        }
    }
}

/// The unit of reading, hashing and page checking within a member.
const CHUNK: usize = 1 << 20;

/// Streams one archive: `astreamer_verify_content` for each member.
fn read_archive(ctx: &Ctx<'_>, a: &Archive) -> ArchiveResult {
    let mut res = ArchiveResult::default();
    // Two buffers: the next chunk is read (decompressed) while the last one is hashed and its
    // pages checked, on another worker.
    let mut buf = vec![0u8; CHUNK];
    let mut next = vec![0u8; CHUNK];
    let problem = |res: &mut ArchiveResult, file: &str, kind: ProblemKind, message: String| {
        let mut p = Problem::new(Some(file), kind, message);
        p.archive = Some(a.name.clone());
        res.problems.push(p);
    };
    let outcome = for_each_member(&a.path, a.compression, ctx.done, |h, body| {
        if !h.is_file {
            return Ok(true);
        }
        let raw = String::from_utf8_lossy(&h.path).into_owned();
        let path = match a.kind {
            ArchiveKind::Tablespace(oid) => canonical(&format!("pg_tblspc/{oid}/{raw}")),
            _ => canonical(&raw),
        };
        if let Some(w) = &ctx.wal {
            let segment = match a.kind {
                ArchiveKind::Wal => Some(path.as_str()),
                ArchiveKind::Base => path.strip_prefix("pg_wal/"),
                ArchiveKind::Tablespace(_) => None,
            };
            if let Some(seg) = segment.filter(|s| w.wants(s, h.size)) {
                let mut bytes = Vec::with_capacity(usize::try_from(h.size).unwrap_or(0));
                body.read_to_end(&mut bytes)?;
                res.wal.push((seg.to_string(), bytes));
                return Ok(true);
            }
        }
        if a.kind == ArchiveKind::Wal || ctx.ignored(&path) {
            return Ok(true);
        }
        let Some(m) = ctx.manifest.file(path.as_bytes()) else {
            let message = format!(
                "file \"{raw}\" is present in archive \"{}\" but not in the manifest",
                a.name
            );
            problem(&mut res, &path, ProblemKind::Extra, message);
            return Ok(!ctx.exit_on_error);
        };
        res.matched.push(path.as_bytes().to_vec());
        if m.size != h.size {
            let message = format!(
                "file \"{raw}\" has size {} in archive \"{}\" but size {} in the manifest",
                h.size, a.name, m.size
            );
            problem(&mut res, &path, ProblemKind::Size, message);
            res.bad.push(path.as_bytes().to_vec());
            return Ok(!ctx.exit_on_error);
        }
        let verify_sum = !ctx.skip_checksums && m.checksum_type != ChecksumType::None;
        let is_control = ctx.manifest.version != 1 && path == "global/pg_control";
        let mut pages = ctx
            .pages
            .zip(relation_file(&path))
            .map(|(g, file)| FilePages::new(g, file, m.size, PAGE_PROBLEM_LIMIT));
        if !verify_sum && !is_control && pages.is_none() {
            return Ok(true);
        }
        let mut sum = Checksummer::new(if verify_sum {
            m.checksum_type
        } else {
            ChecksumType::None
        });
        let mut control = Vec::new();
        let mut read = 0u64;
        let mut n = read_full(body, &mut buf);
        loop {
            let got = match n {
                Ok(got) => got,
                Err(e) => {
                    let message = format!(
                        "could not read file \"{path}\" in archive \"{}\": {e}",
                        a.name
                    );
                    problem(&mut res, &path, ProblemKind::Unreadable, message);
                    return Err(e);
                }
            };
            let Some(chunk) = buf.get(..got).filter(|c| !c.is_empty()) else {
                break;
            };
            read += got as u64;
            let mut work = || {
                match pages.as_mut() {
                    Some(p) if verify_sum && chunk.len() >= CHUNK / 2 => {
                        rayon::join(|| sum.update(chunk), || p.feed(chunk));
                    }
                    Some(p) => {
                        sum.update(chunk);
                        p.feed(chunk);
                    }
                    None => sum.update(chunk),
                }
                if is_control && control.len() <= pgincr_types::control::PG_CONTROL_FILE_SIZE {
                    control.extend_from_slice(chunk);
                }
            };
            if got < CHUNK {
                // read_full stops short only at the member's end.
                work();
                break;
            }
            let (r, ()) = rayon::join(|| read_full(body, &mut next), work);
            n = r;
            std::mem::swap(&mut buf, &mut next);
        }
        if is_control {
            res.control = Some(control);
        }
        if verify_sum {
            res.files_checksummed += 1;
            res.bytes_checksummed += read;
            if read != m.size {
                let message = format!(
                    "file \"{path}\" in archive \"{}\" should contain {} bytes, but {read} bytes were read",
                    a.name, m.size
                );
                problem(&mut res, &path, ProblemKind::Size, message);
            } else if sum.finish().is_some_and(|c| *c.bytes != *m.checksum) {
                let message = format!(
                    "checksum mismatch for file \"{path}\" in archive \"{}\"",
                    a.name
                );
                problem(&mut res, &path, ProblemKind::Checksum, message);
            }
        }
        if let Some(mut p) = pages {
            if read == m.size {
                p.finish();
            }
            res.pages_checked += p.checked;
            res.pages_skipped += p.skipped;
            if !p.problems.is_empty() || p.more > 0 {
                res.pages.push((path, p.problems, p.more));
            }
        }
        Ok(!ctx.exit_on_error || res.problems.is_empty())
    });
    if let Err(e) = outcome {
        let name = a.name.clone();
        problem(
            &mut res,
            &name,
            ProblemKind::Unreadable,
            format!("could not read file \"{name}\": {e}"),
        );
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths() {
        assert_eq!(canonical("./base/1/2"), "base/1/2");
        assert_eq!(canonical("base//1/./2"), "base/1/2");
        assert_eq!(canonical("/global/pg_control"), "global/pg_control");
        assert_eq!(canonical("base/../global/x"), "global/x");
    }

    #[test]
    fn archive_names() {
        assert_eq!(
            archive_name("base.tar"),
            Some((ArchiveKind::Base, Compression::None))
        );
        assert_eq!(
            archive_name("16384.tar.zst"),
            Some((ArchiveKind::Tablespace(16384), Compression::Zstd(None)))
        );
        assert_eq!(
            archive_name("pg_wal.tar.gz"),
            Some((ArchiveKind::Wal, Compression::Gzip(None)))
        );
        for bad in [
            "backup_manifest",
            "0.tar",
            "4294967296.tar",
            "base.tar.bz2",
            "x.tar",
            ".tar",
        ] {
            assert_eq!(archive_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn wanted_segments() {
        let w = WalWanted {
            ranges: vec![(1, 0x0200_0028, 0x0300_0100)],
        };
        let seg = 16 << 20;
        assert!(w.wants("000000010000000000000002", seg));
        assert!(w.wants("000000010000000000000003", seg));
        assert!(!w.wants("000000010000000000000004", seg));
        assert!(!w.wants("000000010000000000000001", seg));
        assert!(!w.wants("000000020000000000000002", seg));
        assert!(!w.wants("000000010000000000000002.partial", seg));
        assert!(!w.wants("000000010000000000000002", 1000));
        let high = WalWanted {
            ranges: vec![(1, 0x1_0000_0028, 0x1_0000_0100)],
        };
        assert!(high.wants("000000010000000100000000", seg));
        assert!(!high.wants("000000010000000000000000", seg));
    }
}
