//! The WAL archive directory: pushing a file into it (`archive_command`) and getting one out
//! (`restore_command`).
//!
//! Push checks a segment's first page before anything is written (magic of a supported
//! version, long header, `xlp_seg_size` = the file's size, `xlp_xlog_blcksz`, `xlp_pageaddr` =
//! the start of the segment its name says, `xlp_tli` not after the name's timeline, and the
//! system identifier when one is expected or pinned). `.history`, `.backup` and `.partial`
//! files are archived without that check. The file is written under a temporary name in the
//! archive, fsynced, linked to its final name (`link(2)` fails instead of overwriting, so two
//! pushers racing on one name cannot replace each other's copy) and the directory fsynced: a
//! push that returns `Ok` is durable. A name already archived is compared by content (after
//! decompression): identical is success (the copy and the directory are fsynced first), as
//! PostgreSQL retries `archive_command` after a crash; different is
//! [`ArchiveError::Conflict`] with both SHA-256 digests. [`push_ahead`] pushes the next
//! `.ready` segments early and leaves a marker so that PostgreSQL's own call returns at once.
//!
//! Segments and `.partial` files may be compressed (gzip, lz4 frame, zstd), recorded in the
//! suffix (`.gz`, `.lz4`, `.zst`); history and backup history files are always stored as
//! they are (small, and read by other tools). Get finds `NAME` or `NAME.{zst,lz4,gz}`,
//! decompresses, and writes the destination atomically (temporary name, fsync, rename);
//! [`get_prefetch`] fetches the next segments of the timeline alongside into a spool.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::page::{PageHeader, WalMagic, LONG_HEADER_SIZE, XLP_ALL_FLAGS, XLP_LONG_HEADER};
use crate::segment_name::{is_valid_segment_size, parse_segment_file_name, segment_start};
use crate::XLOG_BLCKSZ;
use pgincr_types::{Lsn, TimeLineId};

/// Mode of archived files.
pub const FILE_MODE: u32 = 0o600;
/// Mode of an archive directory this module creates.
pub const DIR_MODE: u32 = 0o700;
/// The file in the archive directory holding the system identifier of the first segment
/// pushed (when [`PushOptions::pin_system_identifier`] is on).
pub const SYSID_FILE: &str = ".pgincr-system-identifier";
/// Compression suffixes, in the order `get` tries them after the plain name.
pub const COMPRESSED_SUFFIXES: [&str; 3] = [".zst", ".lz4", ".gz"];

const COPY_BUF: usize = 1 << 20;

/// A temporary-file suffix no other pusher uses at the same time: the process ID and a
/// counter (threads of one process share the ID).
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// A compression method and level for pushed segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip, level 0-9 (default 6).
    Gzip(u32),
    /// lz4 frame, level 0-12 (default 0: the fast mode).
    Lz4(u32),
    /// zstd, level 1-19 (default 3).
    Zstd(i32),
}

impl Compression {
    /// The file-name suffix this method is recorded under.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::Gzip(_) => ".gz",
            Compression::Lz4(_) => ".lz4",
            Compression::Zstd(_) => ".zst",
        }
    }

    /// The method a stored name's suffix says, and the name without it.
    pub fn from_name(name: &str) -> (Option<Codec>, &str) {
        for (suffix, codec) in [
            (".gz", Codec::Gzip),
            (".lz4", Codec::Lz4),
            (".zst", Codec::Zstd),
        ] {
            if let Some(base) = name.strip_suffix(suffix) {
                return (Some(codec), base);
            }
        }
        (None, name)
    }
}

/// A decompressor, chosen by suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Gzip,
    Lz4,
    Zstd,
}

/// Why a `--compress` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid compression \"{0}\": expected gzip, lz4 or zstd, optionally with :LEVEL (gzip 0-9, lz4 0-12, zstd 1-19), or none")]
pub struct ParseCompressionError(pub String);

/// Parses `gzip`, `gzip:9`, `lz4`, `lz4:1`, `zstd`, `zstd:19`; `none` is `Ok(None)`.
pub fn parse_compression(s: &str) -> Result<Option<Compression>, ParseCompressionError> {
    let bad = || ParseCompressionError(s.to_string());
    let (method, lvl) = match s.split_once(':') {
        Some((m, l)) => (m, Some(l)),
        None => (s, None),
    };
    let level = |lo: i64, hi: i64, default: i64| -> Result<i64, ParseCompressionError> {
        match lvl {
            None => Ok(default),
            Some(l) => {
                let l = l.strip_prefix("level=").unwrap_or(l);
                let v: i64 = l.parse().map_err(|_| bad())?;
                if (lo..=hi).contains(&v) {
                    Ok(v)
                } else {
                    Err(bad())
                }
            }
        }
    };
    Ok(Some(match method {
        "none" if lvl.is_none() => return Ok(None),
        "gzip" | "gz" => Compression::Gzip(u32::try_from(level(0, 9, 6)?).map_err(|_| bad())?),
        "lz4" => Compression::Lz4(u32::try_from(level(0, 12, 0)?).map_err(|_| bad())?),
        "zstd" | "zst" => Compression::Zstd(i32::try_from(level(1, 19, 3)?).map_err(|_| bad())?),
        _ => return Err(bad()),
    }))
}

impl FromStr for Compression {
    type Err = ParseCompressionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_compression(s)?.ok_or_else(|| ParseCompressionError(s.to_string()))
    }
}

/// What kind of file an archive name is (compression suffix removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalFileKind {
    /// `TTTTTTTTXXXXXXXXYYYYYYYY`.
    Segment,
    /// `TTTTTTTTXXXXXXXXYYYYYYYY.partial`.
    Partial,
    /// `TTTTTTTT.history`.
    History,
    /// `TTTTTTTTXXXXXXXXYYYYYYYY.OOOOOOOO.backup`.
    BackupHistory,
}

fn is_upper_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Classifies a file name PostgreSQL archives (`IsXLogFileName`, `IsPartialXLogFileName`,
/// `IsTLHistoryFileName`, `IsBackupHistoryFileName`); `None` for anything else, which is never
/// archived or served (it could name a path outside the archive).
pub fn classify(name: &str) -> Option<WalFileKind> {
    if is_upper_hex(name, 24) {
        return Some(WalFileKind::Segment);
    }
    if let Some(seg) = name.strip_suffix(".partial") {
        return is_upper_hex(seg, 24).then_some(WalFileKind::Partial);
    }
    if let Some(tli) = name.strip_suffix(".history") {
        return is_upper_hex(tli, 8).then_some(WalFileKind::History);
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        let (seg, off) = rest.split_once('.')?;
        return (is_upper_hex(seg, 24) && is_upper_hex(off, 8))
            .then_some(WalFileKind::BackupHistory);
    }
    None
}

/// A failure of push or get. Messages name the file and, for a refused segment, the field.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("\"{0}\" is not a WAL file name PostgreSQL archives (a segment, .partial, .history or .backup file)")]
    BadName(String),
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{path}: the file system is full ({op}): {source}")]
    OutOfSpace {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{path}: refused, not a valid WAL segment for its name: {what}")]
    BadSegment { path: PathBuf, what: String },
    #[error("{path}: refused, WAL segment is from a different database system: system identifier {found} in its long page header, expected {expected}{from}")]
    SystemIdMismatch {
        path: PathBuf,
        found: u64,
        expected: u64,
        from: String,
    },
    #[error("{name}: a different file is already archived as {existing} (sha256 {existing_sha256}); the file to push has sha256 {new_sha256}; not overwritten")]
    Conflict {
        name: String,
        existing: PathBuf,
        existing_sha256: String,
        new_sha256: String,
    },
    #[error("{name}: not in the archive {archive}")]
    NotFound { name: String, archive: PathBuf },
    #[error("{path}: could not decompress: {source}")]
    Decompress {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ArchiveError::NotFound { .. })
    }
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> ArchiveError + 'a {
    move |source| {
        if pgincr_io::is_out_of_space(&source) {
            ArchiveError::OutOfSpace {
                path: path.to_path_buf(),
                op,
                source,
            }
        } else {
            ArchiveError::Io {
                path: path.to_path_buf(),
                op,
                source,
            }
        }
    }
}

/// How to push.
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    /// Compression for segments and `.partial` files.
    pub compression: Option<Compression>,
    /// Refuse segments whose long header carries another system identifier.
    pub expected_system_identifier: Option<u64>,
    /// Without an expected identifier: record the first pushed segment's identifier in the
    /// archive ([`SYSID_FILE`]) and hold every later segment to it.
    pub pin_system_identifier: bool,
    /// Skip the fsyncs (tests and benches only: a push is then not durable).
    pub no_sync: bool,
}

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Written as `stored` (the name with its compression suffix), `bytes` on disk.
    Archived { stored: String, bytes: u64 },
    /// The same content was already archived as `stored`: nothing written.
    AlreadyArchived { stored: String },
}

/// What a segment's first page says (checked by [`check_segment`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub magic: WalMagic,
    pub tli: TimeLineId,
    pub segno: u64,
    pub segment_size: u64,
    pub system_identifier: u64,
}

/// Checks the first page of segment file `name` (`first_page`: at least its first 40 bytes)
/// against the name and the file's size. `path` is only used in messages.
pub fn check_segment(
    path: &Path,
    name: &str,
    first_page: &[u8],
    file_size: u64,
) -> Result<SegmentInfo, ArchiveError> {
    let bad = |what: String| ArchiveError::BadSegment {
        path: path.to_path_buf(),
        what,
    };
    if first_page.len() < LONG_HEADER_SIZE {
        return Err(bad(format!(
            "file is truncated: {file_size} bytes, shorter than a long page header ({LONG_HEADER_SIZE} bytes)"
        )));
    }
    let h = PageHeader::parse(first_page)
        .ok_or_else(|| bad("first page header could not be read".into()))?;
    let magic = WalMagic::from_value(h.magic).ok_or_else(|| {
        bad(format!(
            "xlp_magic is {:04X}, not a supported WAL version (D116 for PostgreSQL 17, D118 for 18)",
            h.magic
        ))
    })?;
    if h.info & !XLP_ALL_FLAGS != 0 {
        return Err(bad(format!("xlp_info has invalid bits {:04X}", h.info)));
    }
    let long = match h.long {
        Some(l) if h.info & XLP_LONG_HEADER != 0 => l,
        _ => {
            return Err(bad(format!(
                "xlp_info {:04X}: the first page has no long header (XLP_LONG_HEADER)",
                h.info
            )))
        }
    };
    let seg_size = u64::from(long.seg_size);
    if !is_valid_segment_size(seg_size) {
        return Err(bad(format!(
            "xlp_seg_size {} is not a valid WAL segment size (a power of two from 1 MiB to 1 GiB)",
            long.seg_size
        )));
    }
    if file_size != seg_size {
        return Err(bad(format!(
            "file is {file_size} bytes but xlp_seg_size in its long header says {seg_size} (truncated or padded)"
        )));
    }
    if long.xlog_blcksz as usize != XLOG_BLCKSZ {
        return Err(bad(format!(
            "xlp_xlog_blcksz is {}, expected {XLOG_BLCKSZ}",
            long.xlog_blcksz
        )));
    }
    let (tli, segno) = parse_segment_file_name(name, seg_size).ok_or_else(|| {
        bad(format!(
            "\"{name}\" is not a segment name for {seg_size}-byte segments"
        ))
    })?;
    // The name's position must exist at this segment size (XXXXXXXX < 2^32 / seg_size ... the
    // low word must be below the segments per log id).
    let per_id = 0x1_0000_0000u64 / seg_size;
    let low = u64::from_str_radix(name.get(16..24).unwrap_or(""), 16).unwrap_or(u64::MAX);
    if low >= per_id {
        return Err(bad(format!(
            "the name's segment part {:08X} is out of range for {seg_size}-byte segments",
            low
        )));
    }
    let expected = segment_start(segno, seg_size);
    if h.pageaddr != expected {
        return Err(bad(format!(
            "xlp_pageaddr is {}, but the name says the segment starts at {expected}",
            h.pageaddr
        )));
    }
    // The first segment of a timeline begins with a copy of the parent's pages, so the page
    // timeline may be older than the name's, never newer.
    if h.tli > tli {
        return Err(bad(format!(
            "xlp_tli is {}, newer than timeline {} of the name",
            h.tli, tli
        )));
    }
    if h.tli.0 == 0 {
        return Err(bad("xlp_tli is 0".into()));
    }
    Ok(SegmentInfo {
        magic,
        tli,
        segno,
        segment_size: seg_size,
        system_identifier: long.sysid,
    })
}

/// Pushes `src` into `archive` under its own file name. The directory is created (0700) if
/// missing.
pub fn push(src: &Path, archive: &Path, opts: &PushOptions) -> Result<PushOutcome, ArchiveError> {
    let name = src
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ArchiveError::BadName(src.display().to_string()))?
        .to_string();
    let kind = classify(&name).ok_or_else(|| ArchiveError::BadName(name.clone()))?;
    let mut file = File::open(src).map_err(io_err(src, "open"))?;
    let meta = file.metadata().map_err(io_err(src, "stat"))?;
    let size = meta.len();
    // Pushed ahead by an earlier call, from this very file: done, without reading it again.
    if let Some(stored) = take_ahead_marker(archive, &name, &meta)? {
        return Ok(PushOutcome::AlreadyArchived { stored });
    }

    let mut info = None;
    if kind == WalFileKind::Segment {
        let mut head = vec![0u8; XLOG_BLCKSZ];
        let got = read_full(&mut file, &mut head).map_err(io_err(src, "read"))?;
        head.truncate(got);
        let i = check_segment(src, &name, &head, size)?;
        if let Some(expected) = opts.expected_system_identifier {
            if i.system_identifier != expected {
                return Err(ArchiveError::SystemIdMismatch {
                    path: src.to_path_buf(),
                    found: i.system_identifier,
                    expected,
                    from: String::new(),
                });
            }
        }
        info = Some(i);
    }

    ensure_dir(archive, opts.no_sync)?;
    if let (Some(i), None, true) = (
        info,
        opts.expected_system_identifier,
        opts.pin_system_identifier,
    ) {
        check_pinned_sysid(archive, src, i.system_identifier, opts.no_sync)?;
    }

    // Already there (under any suffix)?
    let existing = stored_copies(archive, &name)?;
    if !existing.is_empty() {
        return compare_existing(&name, &existing, src, archive, opts.no_sync);
    }

    let compression = match kind {
        WalFileKind::Segment | WalFileKind::Partial => opts.compression,
        WalFileKind::History | WalFileKind::BackupHistory => None,
    };
    let stored = format!(
        "{name}{}",
        compression.map(Compression::suffix).unwrap_or("")
    );
    let final_path = archive.join(&stored);
    let tmp = archive.join(format!(".{stored}.{}.tmp", unique()));
    let _ = fs::remove_file(&tmp);
    let written = (|| -> Result<u64, ArchiveError> {
        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(io_err(&tmp, "create"))?;
        let mut input = File::open(src).map_err(io_err(src, "open"))?;
        let out = copy_compressed(&mut input, out, compression, src, &tmp)?;
        if !opts.no_sync {
            out.sync_all().map_err(io_err(&tmp, "fsync"))?;
        }
        let len = out.metadata().map_err(io_err(&tmp, "stat"))?.len();
        Ok(len)
    })();
    let bytes = match written {
        Ok(b) => b,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // link(2) never replaces: a concurrent pusher that got there first wins, and then the
    // contents decide.
    let linked = fs::hard_link(&tmp, &final_path);
    let result = match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(None),
        // A file system without hard links: rename, after one more look for a copy.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::EOPNOTSUPP | libc::EMLINK)
            ) =>
        {
            if stored_copies(archive, &name)?.is_empty() {
                fs::rename(&tmp, &final_path).map_err(|e| Some(io_err(&final_path, "rename")(e)))
            } else {
                Err(None)
            }
        }
        Err(e) => Err(Some(io_err(&final_path, "link")(e))),
    };
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(()) => {}
        Err(Some(e)) => return Err(e),
        Err(None) => {
            let existing = stored_copies(archive, &name)?;
            return compare_existing(&name, &existing, src, archive, opts.no_sync);
        }
    }
    if !opts.no_sync {
        pgincr_io::fsync_dir(archive).map_err(io_err(archive, "fsync directory"))?;
    }
    Ok(PushOutcome::Archived { stored, bytes })
}

/// The marker an ahead push leaves: `.NAME.pushed-ahead`, holding the source file's identity.
fn ahead_marker(archive: &Path, name: &str) -> PathBuf {
    archive.join(format!(".{name}{AHEAD_SUFFIX}"))
}

/// The suffix of ahead-push markers (see [`push_ahead`]).
pub const AHEAD_SUFFIX: &str = ".pushed-ahead";

fn identity(meta: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "{} {} {} {} {}\n",
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    )
}

/// If `name` was pushed ahead from a file with `meta`'s identity (device, inode, size, mtime)
/// and a copy is stored, removes the marker and returns the stored name. A marker that does
/// not match is removed and the push goes on as usual (comparing contents).
fn take_ahead_marker(
    archive: &Path,
    name: &str,
    meta: &fs::Metadata,
) -> Result<Option<String>, ArchiveError> {
    let marker = ahead_marker(archive, name);
    let recorded = match fs::read_to_string(&marker) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Ok(None),
        Err(e) => return Err(io_err(&marker, "read")(e)),
    };
    let _ = fs::remove_file(&marker);
    if recorded != identity(meta) {
        return Ok(None);
    }
    Ok(stored_copies(archive, name)?
        .first()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .map(str::to_string))
}

/// Pushes `src` ahead of PostgreSQL's call for it (see [`ready_after`]): as [`push`], and when
/// it archived the file, leaves a marker with the file's identity so that PostgreSQL's own call
/// later returns at once. The marker is written after the copy is durable and needs no fsync:
/// without it, the later call compares contents instead.
pub fn push_ahead(
    src: &Path,
    archive: &Path,
    opts: &PushOptions,
) -> Result<PushOutcome, ArchiveError> {
    let out = push(src, archive, opts)?;
    if let PushOutcome::Archived { .. } = out {
        if let (Some(name), Ok(meta)) =
            (src.file_name().and_then(|n| n.to_str()), fs::metadata(src))
        {
            let marker = ahead_marker(archive, name);
            let tmp = archive.join(format!(".{name}.{}.tmp", unique()));
            let written = fs::write(&tmp, identity(&meta)).and_then(|()| fs::rename(&tmp, &marker));
            if written.is_err() {
                let _ = fs::remove_file(&tmp);
            }
        }
    }
    Ok(out)
}

/// The segments PostgreSQL will ask to archive after `src`: the next `n` names (by name
/// order, after `src`'s) with a `.ready` file in `archive_status/` next to `src`, as paths.
/// Empty when `src` is not a segment in a `pg_wal` with an `archive_status` directory.
pub fn ready_after(src: &Path, n: usize) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (src.parent(), src.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    if n == 0 || classify(name) != Some(WalFileKind::Segment) {
        return Vec::new();
    }
    let Ok(entries) = fs::read_dir(dir.join("archive_status")) else {
        return Vec::new();
    };
    let mut next: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|f| f.strip_suffix(".ready").map(str::to_string))
        .filter(|f| classify(f) == Some(WalFileKind::Segment) && f.as_str() > name)
        .collect();
    next.sort();
    next.truncate(n);
    next.into_iter().map(|f| dir.join(f)).collect()
}

/// [`ready_after`] without the segments `archive` already holds (pushed ahead by an earlier
/// call, or archived otherwise): PostgreSQL's own call compares those.
pub fn ready_after_unarchived(src: &Path, archive: &Path, n: usize) -> Vec<PathBuf> {
    ready_after(src, n)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| stored_copies(archive, f).is_ok_and(|v| v.is_empty()))
        })
        .collect()
}

/// Compares `src` with every stored copy of its name: byte for byte as they stream (no
/// digest on the common, identical path); the digests are computed only for the message.
fn compare_existing(
    name: &str,
    existing: &[PathBuf],
    src: &Path,
    archive: &Path,
    no_sync: bool,
) -> Result<PushOutcome, ArchiveError> {
    let mut first = None;
    for path in existing {
        let mut a = open_stored(path)?;
        let mut b = File::open(src).map_err(io_err(src, "open"))?;
        let mut ba = vec![0u8; COPY_BUF];
        let mut bb = vec![0u8; COPY_BUF];
        let same = loop {
            let na = read_full(&mut a, &mut ba).map_err(|e| decompress_or_io(path, e))?;
            let nb = read_full(&mut b, &mut bb).map_err(io_err(src, "read"))?;
            if na != nb || ba.get(..na) != bb.get(..nb) {
                break false;
            }
            if na < COPY_BUF {
                break true;
            }
        };
        if !same {
            let new_sha256 = sha256_of(&mut File::open(src).map_err(io_err(src, "open"))?)
                .map_err(io_err(src, "read"))?;
            return Err(ArchiveError::Conflict {
                name: name.to_string(),
                existing: path.clone(),
                existing_sha256: sha256_of_stored(path)?,
                new_sha256,
            });
        }
        first.get_or_insert_with(|| path.clone());
    }
    // The copy may come from a push that died before its fsyncs (or from another tool):
    // make it durable before PostgreSQL is told it is archived.
    if !no_sync {
        for path in existing {
            File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(io_err(path, "fsync"))?;
        }
        pgincr_io::fsync_dir(archive).map_err(io_err(archive, "fsync directory"))?;
    }
    let stored = first
        .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .unwrap_or_else(|| name.to_string());
    Ok(PushOutcome::AlreadyArchived { stored })
}

/// The stored copies of `name` in `archive`: the plain name and each compressed one present.
pub fn stored_copies(archive: &Path, name: &str) -> Result<Vec<PathBuf>, ArchiveError> {
    let mut out = Vec::new();
    for suffix in std::iter::once("").chain(COMPRESSED_SUFFIXES) {
        let p = archive.join(format!("{name}{suffix}"));
        match fs::symlink_metadata(&p) {
            Ok(_) => out.push(p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&p, "stat")(e)),
        }
    }
    Ok(out)
}

fn ensure_dir(dir: &Path, no_sync: bool) -> Result<(), ArchiveError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(ArchiveError::Io {
                path: dir.to_path_buf(),
                op: "use as archive directory",
                source: io::Error::other("not a directory"),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(dir, "stat")(e)),
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true).mode(DIR_MODE);
    b.create(dir).map_err(io_err(dir, "create directory"))?;
    // create_dir_all applies the mode through the umask; the archive itself gets exactly 0700.
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(io_err(dir, "chmod"))?;
    if !no_sync {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            pgincr_io::fsync_dir(parent).map_err(io_err(parent, "fsync directory"))?;
        }
    }
    Ok(())
}

fn check_pinned_sysid(
    archive: &Path,
    src: &Path,
    sysid: u64,
    no_sync: bool,
) -> Result<(), ArchiveError> {
    let pin = archive.join(SYSID_FILE);
    match fs::read_to_string(&pin) {
        Ok(text) => {
            let expected: u64 = text.trim().parse().map_err(|_| ArchiveError::Io {
                path: pin.clone(),
                op: "parse",
                source: io::Error::other("not a decimal system identifier"),
            })?;
            if expected != sysid {
                return Err(ArchiveError::SystemIdMismatch {
                    path: src.to_path_buf(),
                    found: sysid,
                    expected,
                    from: format!(" (recorded in {})", pin.display()),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let tmp = archive.join(format!("{SYSID_FILE}.{}.tmp", unique()));
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(FILE_MODE)
                .open(&tmp)
                .map_err(io_err(&tmp, "create"))?;
            f.write_all(format!("{sysid}\n").as_bytes())
                .map_err(io_err(&tmp, "write"))?;
            if !no_sync {
                f.sync_all().map_err(io_err(&tmp, "fsync"))?;
            }
            drop(f);
            // Another pusher may have pinned meanwhile: link fails then, and we compare.
            let linked = fs::hard_link(&tmp, &pin);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    if !no_sync {
                        pgincr_io::fsync_dir(archive)
                            .map_err(io_err(archive, "fsync directory"))?;
                    }
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    check_pinned_sysid(archive, src, sysid, no_sync)
                }
                Err(e) => Err(io_err(&pin, "link")(e)),
            }
        }
        Err(e) => Err(io_err(&pin, "read")(e)),
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..).filter(|r| !r.is_empty()) {
        match r.read(rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Copies `input` to `out` through the encoder; returns the file, flushed.
fn copy_compressed(
    input: &mut File,
    out: File,
    compression: Option<Compression>,
    src: &Path,
    dst: &Path,
) -> Result<File, ArchiveError> {
    let mut buf = vec![0u8; COPY_BUF];
    let mut pump = |w: &mut dyn Write| -> Result<(), ArchiveError> {
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(src, "read")(e)),
            };
            w.write_all(buf.get(..n).unwrap_or_default())
                .map_err(io_err(dst, "write"))?;
        }
    };
    match compression {
        None => {
            let mut w = io::BufWriter::with_capacity(0, out);
            pump(&mut w)?;
            w.into_inner()
                .map_err(|e| io_err(dst, "write")(e.into_error()))
        }
        Some(Compression::Gzip(level)) => {
            let mut w = flate2::write::GzEncoder::new(
                io::BufWriter::with_capacity(COPY_BUF, out),
                flate2::Compression::new(level),
            );
            pump(&mut w)?;
            let b = w.finish().map_err(io_err(dst, "write"))?;
            b.into_inner()
                .map_err(|e| io_err(dst, "write")(e.into_error()))
        }
        Some(Compression::Lz4(level)) => {
            let mut w = lz4::EncoderBuilder::new()
                .level(level)
                .build(io::BufWriter::with_capacity(COPY_BUF, out))
                .map_err(io_err(dst, "lz4 init"))?;
            pump(&mut w)?;
            let (b, r) = w.finish();
            r.map_err(io_err(dst, "write"))?;
            b.into_inner()
                .map_err(|e| io_err(dst, "write")(e.into_error()))
        }
        Some(Compression::Zstd(level)) => {
            let mut w = zstd::stream::write::Encoder::new(
                io::BufWriter::with_capacity(COPY_BUF, out),
                level,
            )
            .map_err(io_err(dst, "zstd init"))?;
            pump(&mut w)?;
            let b = w.finish().map_err(io_err(dst, "write"))?;
            b.into_inner()
                .map_err(|e| io_err(dst, "write")(e.into_error()))
        }
    }
}

/// A reader of a stored file's content, decompressed as its suffix says.
pub fn open_stored(path: &Path) -> Result<Box<dyn Read>, ArchiveError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let f = File::open(path).map_err(io_err(path, "open"))?;
    let r = BufReader::with_capacity(COPY_BUF, f);
    Ok(match Compression::from_name(name).0 {
        None => Box::new(r),
        Some(Codec::Gzip) => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Some(Codec::Lz4) => {
            Box::new(
                lz4::Decoder::new(r).map_err(|source| ArchiveError::Decompress {
                    path: path.to_path_buf(),
                    source,
                })?,
            )
        }
        Some(Codec::Zstd) => Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(
            |source| ArchiveError::Decompress {
                path: path.to_path_buf(),
                source,
            },
        )?),
    })
}

/// Reads a whole stored file (decompressed), refusing more than `limit` bytes.
pub fn read_stored(path: &Path, limit: u64) -> Result<Vec<u8>, ArchiveError> {
    let mut out = Vec::new();
    let r = open_stored(path)?;
    r.take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|source| decompress_or_io(path, source))?;
    if out.len() as u64 > limit {
        return Err(ArchiveError::Io {
            path: path.to_path_buf(),
            op: "read",
            source: io::Error::other(format!("larger than {limit} bytes")),
        });
    }
    Ok(out)
}

fn decompress_or_io(path: &Path, source: io::Error) -> ArchiveError {
    let compressed =
        Compression::from_name(path.file_name().and_then(|n| n.to_str()).unwrap_or(""))
            .0
            .is_some();
    if compressed && source.raw_os_error().is_none() {
        ArchiveError::Decompress {
            path: path.to_path_buf(),
            source,
        }
    } else {
        io_err(path, "read")(source)
    }
}

fn sha256_of(r: &mut dyn Read) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hex(&h.finalize()))
}

fn sha256_of_stored(path: &Path) -> Result<String, ArchiveError> {
    let mut r = open_stored(path)?;
    sha256_of(&mut r).map_err(|e| decompress_or_io(path, e))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What a get did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetOutcome {
    /// The stored file read.
    pub stored: PathBuf,
    /// Bytes written to the destination.
    pub bytes: u64,
}

/// How to get.
#[derive(Clone, Debug, Default)]
pub struct GetOptions {
    /// Skip the fsyncs of the destination.
    pub no_sync: bool,
}

/// Writes archived `name` (decompressed) to `dest`, atomically: a temporary file next to it,
/// fsynced, renamed over `dest`. A name not in the archive is [`ArchiveError::NotFound`].
pub fn get(
    name: &str,
    archive: &Path,
    dest: &Path,
    opts: &GetOptions,
) -> Result<GetOutcome, ArchiveError> {
    let kind = classify(name).ok_or_else(|| ArchiveError::BadName(name.to_string()))?;
    let stored = stored_copies(archive, name)?
        .into_iter()
        .next()
        .ok_or_else(|| ArchiveError::NotFound {
            name: name.to_string(),
            archive: archive.to_path_buf(),
        })?;
    let dest_name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ArchiveError::BadName(dest.display().to_string()))?;
    let tmp = dest.with_file_name(format!(".{dest_name}.pgincr.{}.tmp", unique()));
    let _ = fs::remove_file(&tmp);
    let result = (|| -> Result<u64, ArchiveError> {
        let mut input = open_stored(&stored)?;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(io_err(&tmp, "create"))?;
        let mut buf = vec![0u8; COPY_BUF];
        let mut total = 0u64;
        let mut head: Vec<u8> = Vec::with_capacity(LONG_HEADER_SIZE);
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(decompress_or_io(&stored, e)),
            };
            let chunk = buf.get(..n).unwrap_or_default();
            // Decoders may return short reads: gather the long header across them.
            let want = LONG_HEADER_SIZE.saturating_sub(head.len());
            head.extend_from_slice(chunk.get(..want.min(n)).unwrap_or_default());
            out.write_all(chunk).map_err(io_err(&tmp, "write"))?;
            total = total.saturating_add(n as u64);
        }
        // A damaged archive copy is refused here rather than replayed.
        if kind == WalFileKind::Segment {
            check_segment(&stored, name, &head, total)?;
        }
        if !opts.no_sync {
            out.sync_all().map_err(io_err(&tmp, "fsync"))?;
        }
        Ok(total)
    })();
    let bytes = match result {
        Ok(b) => b,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = fs::rename(&tmp, dest) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(dest, "rename")(e));
    }
    if !opts.no_sync {
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            pgincr_io::fsync_dir(parent).map_err(io_err(parent, "fsync directory"))?;
        }
    }
    Ok(GetOutcome { stored, bytes })
}

/// Where [`get_prefetch`] keeps segments fetched ahead, and how many.
#[derive(Clone, Debug)]
pub struct Prefetch {
    /// The spool directory (created 0700). Best on the destination's file system, so that a
    /// spooled segment is renamed into place rather than copied.
    pub spool: PathBuf,
    /// How many following segments of the same timeline to fetch with a missing one.
    pub count: usize,
}

/// The file in a spool naming the archive its segments came from.
const SPOOL_SOURCE: &str = ".pgincr-spool-source";

/// As [`get`], with prefetching for segments: a segment found in the spool is moved to `dest`
/// at once; one not found is fetched together with the next `count` segments of its timeline,
/// in parallel, into the spool (each checked and fsynced as `get` does). Whatever else is in
/// the spool then is dropped: segments of another timeline (the timeline changed) or before
/// the one asked for. A spool filled from another archive is emptied first. Non-segments
/// (history files) are never spooled.
pub fn get_prefetch(
    name: &str,
    archive: &Path,
    dest: &Path,
    opts: &GetOptions,
    pf: &Prefetch,
) -> Result<GetOutcome, ArchiveError> {
    if pf.count == 0 || classify(name) != Some(WalFileKind::Segment) {
        return get(name, archive, dest, opts);
    }
    let spool = &pf.spool;
    ensure_dir(spool, true)?;
    let source = archive.display().to_string();
    let marker = spool.join(SPOOL_SOURCE);
    if fs::read_to_string(&marker).ok().as_deref() != Some(source.as_str()) {
        clear_spool(spool, None)?;
        fs::write(&marker, &source).map_err(io_err(&marker, "write"))?;
    }
    let spooled = spool.join(name);
    if spooled.exists() {
        let out = match fs::rename(&spooled, dest) {
            Ok(()) => GetOutcome {
                stored: spooled.clone(),
                bytes: fs::metadata(dest).map_err(io_err(dest, "stat"))?.len(),
            },
            // Another file system: copy it over (atomically), then drop it.
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                let out = get_from(&spooled, name, dest, opts)?;
                let _ = fs::remove_file(&spooled);
                out
            }
            Err(e) => return Err(io_err(dest, "rename")(e)),
        };
        if !opts.no_sync {
            if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
                pgincr_io::fsync_dir(parent).map_err(io_err(parent, "fsync directory"))?;
            }
        }
        clear_spool(spool, Some(name))?;
        return Ok(out);
    }
    // Not spooled: this one now, the next ones alongside.
    clear_spool(spool, Some(name))?;
    let seg_size = {
        let mut r = open_stored(
            &stored_copies(archive, name)?
                .into_iter()
                .next()
                .ok_or_else(|| ArchiveError::NotFound {
                    name: name.to_string(),
                    archive: archive.to_path_buf(),
                })?,
        )?;
        let mut head = [0u8; LONG_HEADER_SIZE];
        let n = read_full(&mut r, &mut head).map_err(io_err(archive, "read"))?;
        PageHeader::parse(head.get(..n).unwrap_or_default())
            .and_then(|h| h.long)
            .map(|l| u64::from(l.seg_size))
            .filter(|&s| is_valid_segment_size(s))
    };
    let next: Vec<String> =
        match seg_size.and_then(|s| parse_segment_file_name(name, s).map(|p| (s, p))) {
            Some((size, (tli, segno))) => (1..=pf.count as u64)
                .filter_map(|k| segno.checked_add(k))
                .map(|s| crate::segment_name::segment_file_name(tli, s, size))
                .collect(),
            None => Vec::new(),
        };
    std::thread::scope(|sc| {
        for n in &next {
            sc.spawn(move || {
                // Absent (the end of the archive) or damaged: PostgreSQL's own call reports it.
                let _ = get(n, archive, &spool.join(n), &GetOptions::default());
            });
        }
        get(name, archive, dest, opts)
    })
}

/// Removes every spooled segment except those after `keep` on its timeline (all with `None`).
fn clear_spool(spool: &Path, keep: Option<&str>) -> Result<(), ArchiveError> {
    for e in fs::read_dir(spool).map_err(io_err(spool, "list"))? {
        let Ok(e) = e else { continue };
        let Ok(n) = e.file_name().into_string() else {
            continue;
        };
        if n == SPOOL_SOURCE {
            continue;
        }
        let stale = match keep {
            None => true,
            // Same timeline (first 8 characters) and later: still useful.
            Some(k) => {
                !(classify(&n) == Some(WalFileKind::Segment)
                    && n.get(..8) == k.get(..8)
                    && n.as_str() > k)
            }
        };
        if stale {
            let _ = fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Copies a plain file holding segment `name` to `dest` the way [`get`] writes (checked,
/// atomically).
fn get_from(
    path: &Path,
    name: &str,
    dest: &Path,
    opts: &GetOptions,
) -> Result<GetOutcome, ArchiveError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| ArchiveError::BadName(path.display().to_string()))?;
    if file != name {
        return Err(ArchiveError::BadName(file.to_string()));
    }
    get(name, dir, dest, opts)
}

/// The segment size of the archive, from the long header of its first segment (plain or
/// compressed); `None` when it holds no readable segment.
pub fn detect_segment_size(archive: &Path) -> Result<Option<u64>, ArchiveError> {
    let mut names: Vec<String> = fs::read_dir(archive)
        .map_err(io_err(archive, "list"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| classify(Compression::from_name(n).1) == Some(WalFileKind::Segment))
        .collect();
    names.sort();
    for n in names {
        let path = archive.join(&n);
        let Ok(mut r) = open_stored(&path) else {
            continue;
        };
        let mut head = [0u8; LONG_HEADER_SIZE];
        if read_full(&mut r, &mut head).ok() != Some(LONG_HEADER_SIZE) {
            continue;
        }
        if let Some(l) = PageHeader::parse(&head).and_then(|h| h.long) {
            if is_valid_segment_size(u64::from(l.seg_size)) {
                return Ok(Some(u64::from(l.seg_size)));
            }
        }
    }
    Ok(None)
}

/// The LSN a segment name starts at, for messages.
pub fn segment_lsn(name: &str, seg_size: u64) -> Option<(TimeLineId, Lsn)> {
    parse_segment_file_name(name, seg_size).map(|(t, s)| (t, segment_start(s, seg_size)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::XLP_BKP_REMOVABLE;

    const SEG: u64 = 1 << 20;

    /// A fake 1 MiB segment: a valid long header, then a byte pattern.
    fn segment(tli: u32, segno: u64, sysid: u64, fill: u8) -> Vec<u8> {
        let mut p = vec![fill; SEG as usize];
        p[0..2].copy_from_slice(&0xD118u16.to_le_bytes());
        p[2..4].copy_from_slice(&(XLP_LONG_HEADER | XLP_BKP_REMOVABLE).to_le_bytes());
        p[4..8].copy_from_slice(&tli.to_le_bytes());
        p[8..16].copy_from_slice(&(segno * SEG).to_le_bytes());
        p[16..24].fill(0);
        p[24..32].copy_from_slice(&sysid.to_le_bytes());
        p[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
        p[36..40].copy_from_slice(&8192u32.to_le_bytes());
        p
    }

    fn name(tli: u32, segno: u64) -> String {
        crate::segment_name::segment_file_name(TimeLineId(tli), segno, SEG)
    }

    fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, data).unwrap();
        p
    }

    #[test]
    fn classify_names() {
        assert_eq!(
            classify("000000010000000000000003"),
            Some(WalFileKind::Segment)
        );
        assert_eq!(
            classify("000000010000000000000003.partial"),
            Some(WalFileKind::Partial)
        );
        assert_eq!(classify("00000002.history"), Some(WalFileKind::History));
        assert_eq!(
            classify("000000010000000000000003.00000028.backup"),
            Some(WalFileKind::BackupHistory)
        );
        for bad in [
            "",
            "../etc/passwd",
            "00000001000000000000000a",
            "0000002.history",
            "x.partial",
            "RECOVERYXLOG",
        ] {
            assert_eq!(classify(bad), None, "{bad}");
        }
    }

    #[test]
    fn compression_specs() {
        assert_eq!(parse_compression("gzip"), Ok(Some(Compression::Gzip(6))));
        assert_eq!(parse_compression("gzip:9"), Ok(Some(Compression::Gzip(9))));
        assert_eq!(parse_compression("lz4"), Ok(Some(Compression::Lz4(0))));
        assert_eq!(parse_compression("zstd"), Ok(Some(Compression::Zstd(3))));
        assert_eq!(
            parse_compression("zstd:level=19"),
            Ok(Some(Compression::Zstd(19)))
        );
        assert_eq!(parse_compression("none"), Ok(None));
        for bad in [
            "", "zstd:0", "zstd:23", "gzip:10", "brotli", "lz4:x", "none:1",
        ] {
            assert!(parse_compression(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn push_get_round_trip_every_codec() {
        for comp in [
            None,
            Some(Compression::Gzip(1)),
            Some(Compression::Lz4(0)),
            Some(Compression::Zstd(3)),
        ] {
            let src = tempfile::tempdir().unwrap();
            let arch = tempfile::tempdir().unwrap();
            let archive = arch.path().join("wal");
            let seg = segment(1, 3, 42, 7);
            let p = write(src.path(), &name(1, 3), &seg);
            let opts = PushOptions {
                compression: comp,
                pin_system_identifier: true,
                ..Default::default()
            };
            let out = push(&p, &archive, &opts).unwrap();
            let stored = format!(
                "{}{}",
                name(1, 3),
                comp.map(Compression::suffix).unwrap_or("")
            );
            assert!(
                matches!(&out, PushOutcome::Archived { stored: s, .. } if *s == stored),
                "{out:?}"
            );
            let meta = fs::metadata(archive.join(&stored)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
            assert_eq!(
                fs::metadata(&archive).unwrap().permissions().mode() & 0o777,
                0o700
            );
            // Again: identical, a no-op.
            assert_eq!(
                push(&p, &archive, &opts).unwrap(),
                PushOutcome::AlreadyArchived {
                    stored: stored.clone()
                }
            );
            // Identical content pushed uncompressed while a compressed copy exists: no-op too.
            let plain = PushOptions::default();
            assert!(matches!(
                push(&p, &archive, &plain).unwrap(),
                PushOutcome::AlreadyArchived { .. }
            ));
            // Different content under the same name: refused, both digests named.
            let other = segment(1, 3, 42, 9);
            let q = write(src.path(), "other", &other);
            let q2 = src.path().join("x");
            fs::create_dir(&q2).unwrap();
            let q3 = q2.join(name(1, 3));
            fs::rename(&q, &q3).unwrap();
            let e = push(&q3, &archive, &opts).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, ArchiveError::Conflict { .. }), "{msg}");
            assert!(msg.contains("sha256") && msg.contains(&stored), "{msg}");
            // The archived copy is untouched.
            let dest = src.path().join("RECOVERYXLOG");
            let g = get(&name(1, 3), &archive, &dest, &GetOptions::default()).unwrap();
            assert_eq!(g.bytes, SEG);
            assert_eq!(fs::read(&dest).unwrap(), seg);
            // No temporary files left behind.
            let left: Vec<_> = fs::read_dir(&archive)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.ends_with(".tmp"))
                .collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }

    #[test]
    fn refuses_bad_segments_naming_the_field() {
        let src = tempfile::tempdir().unwrap();
        let arch = tempfile::tempdir().unwrap();
        let archive = arch.path();
        let opts = PushOptions::default();
        let try_push = |n: &str, data: &[u8]| {
            let d = tempfile::tempdir_in(src.path()).unwrap();
            let p = write(d.path(), n, data);
            push(&p, archive, &opts).unwrap_err().to_string()
        };
        let good = segment(1, 3, 42, 0);
        // Misnamed: pageaddr says segment 3.
        let m = try_push(&name(1, 4), &good);
        assert!(
            m.contains("xlp_pageaddr is 0/300000") && m.contains(&name(1, 4)),
            "{m}"
        );
        // Truncated.
        let m = try_push(&name(1, 3), &good[..SEG as usize / 2]);
        assert!(
            m.contains("xlp_seg_size") && m.contains("524288 bytes"),
            "{m}"
        );
        let m = try_push(&name(1, 3), &good[..20]);
        assert!(m.contains("truncated"), "{m}");
        // Unsupported magic.
        let mut bad = good.clone();
        bad[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        let m = try_push(&name(1, 3), &bad);
        assert!(m.contains("xlp_magic is D110"), "{m}");
        // No long header.
        let mut bad = good.clone();
        bad[2..4].copy_from_slice(&0u16.to_le_bytes());
        assert!(try_push(&name(1, 3), &bad).contains("no long header"));
        // Page TLI newer than the name's.
        let m = try_push(&name(1, 3), &segment(2, 3, 42, 0));
        assert!(m.contains("xlp_tli is 2"), "{m}");
        // Older is fine (first segment of a timeline).
        let d = tempfile::tempdir_in(src.path()).unwrap();
        let p = write(d.path(), &name(2, 3), &segment(1, 3, 42, 0));
        push(&p, archive, &opts).unwrap();
        // Wrong block size.
        let mut bad = good.clone();
        bad[36..40].copy_from_slice(&4096u32.to_le_bytes());
        assert!(try_push(&name(1, 3), &bad).contains("xlp_xlog_blcksz is 4096"));
        // Not a WAL name.
        assert!(try_push("postgresql.conf", b"x").contains("not a WAL file name"));
        // Nothing was archived by the refusals.
        let names: Vec<_> = fs::read_dir(archive)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn system_identifier_expected_and_pinned() {
        let src = tempfile::tempdir().unwrap();
        let arch = tempfile::tempdir().unwrap();
        let archive = arch.path();
        let p = write(src.path(), &name(1, 1), &segment(1, 1, 42, 0));
        let e = push(
            &p,
            archive,
            &PushOptions {
                expected_system_identifier: Some(43),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("system identifier 42"), "{e}");
        let pin = PushOptions {
            pin_system_identifier: true,
            ..Default::default()
        };
        push(&p, archive, &pin).unwrap();
        assert_eq!(
            fs::read_to_string(archive.join(SYSID_FILE)).unwrap(),
            "42\n"
        );
        let q = write(src.path(), &name(1, 2), &segment(1, 2, 99, 0));
        let e = push(&q, archive, &pin).unwrap_err();
        assert!(
            matches!(
                e,
                ArchiveError::SystemIdMismatch {
                    found: 99,
                    expected: 42,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains(SYSID_FILE));
    }

    #[test]
    fn side_files_pass_unchecked_and_uncompressed() {
        let src = tempfile::tempdir().unwrap();
        let arch = tempfile::tempdir().unwrap();
        let archive = arch.path();
        let opts = PushOptions {
            compression: Some(Compression::Zstd(3)),
            ..Default::default()
        };
        let h = write(
            src.path(),
            "00000002.history",
            b"1\t0/3000000\tno recovery target specified\n",
        );
        assert_eq!(
            push(&h, archive, &opts).unwrap(),
            PushOutcome::Archived {
                stored: "00000002.history".into(),
                bytes: 41
            }
        );
        let b = write(
            src.path(),
            "000000010000000000000003.00000028.backup",
            b"START WAL LOCATION\n",
        );
        push(&b, archive, &opts).unwrap();
        let part = write(
            src.path(),
            "000000010000000000000004.partial",
            b"short and not a segment",
        );
        assert!(
            matches!(push(&part, archive, &opts).unwrap(), PushOutcome::Archived { stored, .. } if stored.ends_with(".partial.zst"))
        );
        let dest = src.path().join("RECOVERYHISTORY");
        get("00000002.history", archive, &dest, &GetOptions::default()).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), fs::read(&h).unwrap());
        let dest = src.path().join("p");
        get(
            "000000010000000000000004.partial",
            archive,
            &dest,
            &GetOptions::default(),
        )
        .unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"short and not a segment");
    }

    #[test]
    fn get_missing_and_damaged() {
        let src = tempfile::tempdir().unwrap();
        let arch = tempfile::tempdir().unwrap();
        let archive = arch.path();
        let dest = src.path().join("RECOVERYXLOG");
        let e = get("00000002.history", archive, &dest, &GetOptions::default()).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(!dest.exists());
        assert!(matches!(
            get("../x", archive, &dest, &GetOptions::default()),
            Err(ArchiveError::BadName(_))
        ));
        // A damaged compressed copy: an error, no destination written.
        fs::write(
            archive.join(format!("{}.zst", name(1, 5))),
            b"not zstd at all",
        )
        .unwrap();
        let e = get(&name(1, 5), archive, &dest, &GetOptions::default()).unwrap_err();
        assert!(matches!(e, ArchiveError::Decompress { .. }), "{e}");
        assert!(!dest.exists());
        // A truncated plain copy of a segment is refused too.
        fs::write(archive.join(name(1, 6)), &segment(1, 6, 1, 0)[..4096]).unwrap();
        let e = get(&name(1, 6), archive, &dest, &GetOptions::default()).unwrap_err();
        assert!(matches!(e, ArchiveError::BadSegment { .. }), "{e}");
        let left: Vec<_> = fs::read_dir(src.path()).unwrap().collect();
        assert!(left.is_empty());
    }

    #[test]
    fn concurrent_pushers_never_overwrite() {
        let src = tempfile::tempdir().unwrap();
        let arch = tempfile::tempdir().unwrap();
        let archive = arch.path().join("wal");
        // Eight pushers of the same content: all succeed, one copy.
        let same: Vec<PathBuf> = (0..8)
            .map(|i| {
                let d = src.path().join(format!("s{i}"));
                fs::create_dir(&d).unwrap();
                write(&d, &name(1, 2), &segment(1, 2, 5, 1))
            })
            .collect();
        // Eight pushers of different contents under one name: exactly one wins.
        let diff: Vec<PathBuf> = (0..8u8)
            .map(|i| {
                let d = src.path().join(format!("d{i}"));
                fs::create_dir(&d).unwrap();
                write(&d, &name(1, 3), &segment(1, 3, 5, i))
            })
            .collect();
        let results: Vec<(bool, Result<PushOutcome, ArchiveError>)> = std::thread::scope(|sc| {
            let hs: Vec<_> = same
                .iter()
                .map(|p| (true, p))
                .chain(diff.iter().map(|p| (false, p)))
                .map(|(same, p)| {
                    let archive = &archive;
                    sc.spawn(move || {
                        let opts = PushOptions {
                            pin_system_identifier: true,
                            ..Default::default()
                        };
                        (same, push(p, archive, &opts))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut archived = [0, 0];
        for (same, r) in &results {
            match r {
                Ok(PushOutcome::Archived { .. }) => archived[usize::from(*same)] += 1,
                Ok(PushOutcome::AlreadyArchived { .. }) => assert!(*same, "{r:?}"),
                Err(ArchiveError::Conflict { .. }) => assert!(!*same, "{r:?}"),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(archived, [1, 1], "{results:?}");
        let winner = fs::read(archive.join(name(1, 3))).unwrap();
        assert!(diff.iter().any(|p| fs::read(p).unwrap() == winner));
        let left: Vec<_> = fs::read_dir(&archive)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left.len(), 3, "{left:?}"); // two segments and the system identifier
    }

    #[test]
    fn ready_after_lists_the_next_ready_segments() {
        let d = tempfile::tempdir().unwrap();
        let st = d.path().join("archive_status");
        fs::create_dir(&st).unwrap();
        for n in [name(1, 4), name(1, 5), name(1, 7), name(1, 3)] {
            fs::write(st.join(format!("{n}.ready")), b"").unwrap();
        }
        fs::write(st.join(format!("{}.done", name(1, 6))), b"").unwrap();
        fs::write(st.join("00000002.history.ready"), b"").unwrap();
        let got = ready_after(&d.path().join(name(1, 4)), 2);
        assert_eq!(
            got,
            vec![d.path().join(name(1, 5)), d.path().join(name(1, 7))]
        );
        assert!(ready_after(&d.path().join(name(1, 4)), 0).is_empty());
        assert!(ready_after(&d.path().join("00000002.history"), 3).is_empty());
        assert!(ready_after(Path::new("/nonexistent/000000010000000000000001"), 3).is_empty());
    }

    #[test]
    fn ahead_push_marker_lets_the_later_call_return_at_once() {
        let src = tempfile::tempdir().unwrap();
        let arch = tempfile::tempdir().unwrap();
        let archive = arch.path();
        let p = write(src.path(), &name(1, 8), &segment(1, 8, 5, 3));
        let opts = PushOptions::default();
        assert!(matches!(
            push_ahead(&p, archive, &opts).unwrap(),
            PushOutcome::Archived { .. }
        ));
        let marker = ahead_marker(archive, &name(1, 8));
        assert!(marker.exists());
        // The later call: the marker matches, it is consumed.
        assert!(matches!(
            push(&p, archive, &opts).unwrap(),
            PushOutcome::AlreadyArchived { .. }
        ));
        assert!(!marker.exists());
        // A marker from another file (rewritten source: other identity) is not trusted: the
        // contents are compared, and these differ.
        push_ahead(&p, archive, &opts).unwrap(); // already archived: no marker
        assert!(!marker.exists());
        fs::write(&marker, "1 2 3 4 5\n").unwrap();
        fs::remove_file(&p).unwrap();
        let p = write(src.path(), &name(1, 8), &segment(1, 8, 5, 4));
        assert!(matches!(
            push(&p, archive, &opts),
            Err(ArchiveError::Conflict { .. })
        ));
        assert!(!marker.exists());
        // ready_after_unarchived skips what is stored.
        let st = src.path().join("archive_status");
        fs::create_dir(&st).unwrap();
        for s in [7, 8, 9] {
            fs::write(st.join(format!("{}.ready", name(1, s))), b"").unwrap();
        }
        let got = ready_after_unarchived(&src.path().join(name(1, 7)), archive, 5);
        assert_eq!(got, vec![src.path().join(name(1, 9))]);
    }

    #[test]
    fn prefetch_spools_the_next_segments_and_drops_stale_ones() {
        let src = tempfile::tempdir().unwrap();
        let arch = tempfile::tempdir().unwrap();
        let archive = arch.path().join("wal");
        let opts = PushOptions {
            compression: Some(Compression::Zstd(1)),
            no_sync: true,
            ..Default::default()
        };
        for s in 1..=5 {
            let p = write(src.path(), &name(1, s), &segment(1, s, 5, s as u8));
            push(&p, &archive, &opts).unwrap();
        }
        let pg_wal = src.path().join("pg_wal");
        fs::create_dir(&pg_wal).unwrap();
        let dest = pg_wal.join("RECOVERYXLOG");
        let pf = Prefetch {
            spool: pg_wal.join("pgincr-spool"),
            count: 2,
        };
        let spooled = || -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(&pf.spool)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| !n.starts_with('.'))
                .collect();
            v.sort();
            v
        };
        let g = GetOptions::default();
        let out = get_prefetch(&name(1, 1), &archive, &dest, &g, &pf).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), segment(1, 1, 5, 1));
        assert!(out.stored.starts_with(&archive));
        assert_eq!(spooled(), vec![name(1, 2), name(1, 3)]);
        // The next calls only move spooled files.
        let out = get_prefetch(&name(1, 2), &archive, &dest, &g, &pf).unwrap();
        assert!(out.stored.starts_with(&pf.spool), "{out:?}");
        assert_eq!(fs::read(&dest).unwrap(), segment(1, 2, 5, 2));
        assert_eq!(spooled(), vec![name(1, 3)]);
        get_prefetch(&name(1, 3), &archive, &dest, &g, &pf).unwrap();
        assert!(spooled().is_empty());
        // A batch at the end of the archive: what exists is spooled, the rest is not an error.
        get_prefetch(&name(1, 4), &archive, &dest, &g, &pf).unwrap();
        assert_eq!(spooled(), vec![name(1, 5)]);
        // The timeline changes: the other timeline's spooled segments go.
        let e = get_prefetch(&name(2, 5), &archive, &dest, &g, &pf).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(spooled().is_empty());
        // History files are never spooled; a spool filled from another archive is emptied.
        get_prefetch(&name(1, 1), &archive, &dest, &g, &pf).unwrap();
        assert_eq!(spooled().len(), 2);
        let other = arch.path().join("other");
        fs::create_dir(&other).unwrap();
        let e = get_prefetch(&name(1, 2), &other, &dest, &g, &pf).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(spooled().is_empty());
    }

    #[test]
    fn detects_segment_size() {
        let arch = tempfile::tempdir().unwrap();
        assert_eq!(detect_segment_size(arch.path()).unwrap(), None);
        let src = tempfile::tempdir().unwrap();
        let p = write(src.path(), &name(1, 9), &segment(1, 9, 1, 0));
        push(
            &p,
            arch.path(),
            &PushOptions {
                compression: Some(Compression::Lz4(0)),
                no_sync: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(detect_segment_size(arch.path()).unwrap(), Some(SEG));
    }
}
