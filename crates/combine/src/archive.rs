//! Tar-format backups (`pg_basebackup -Ft`): `base.tar`, one `<oid>.tar` per tablespace and
//! `pg_wal.tar`, each plain or compressed with gzip, lz4 or zstd.
//!
//! Nothing is extracted wholesale. An uncompressed archive is indexed by reading its headers
//! only: each member is a byte range of the archive, read in place like a plain file. A compressed archive
//! cannot be read at random, so it is decompressed once, as a stream, and only the members
//! this combine can read are written to a private spill directory: every member of the final
//! backup (they are then moved, not copied, into the output) and, of older backups, only the
//! relation files that the final backup's incremental files may need.

use crate::copy::Source;
use crate::error::{CombineError, Result};
use pgincr_io::ReadFile;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Compression of one archive, from its file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Lz4,
    Zstd,
}

impl Compression {
    const ALL: [(Compression, &'static str); 4] = [
        (Compression::None, ".tar"),
        (Compression::Gzip, ".tar.gz"),
        (Compression::Lz4, ".tar.lz4"),
        (Compression::Zstd, ".tar.zst"),
    ];
}

/// Which part of the cluster an archive holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Base,
    Tablespace(u32),
    Wal,
}

impl Part {
    /// Manifest-path prefix of the archive's members.
    fn prefix(self) -> String {
        match self {
            Part::Base => String::new(),
            Part::Tablespace(oid) => format!("pg_tblspc/{oid}/"),
            Part::Wal => "pg_wal/".into(),
        }
    }
}

/// One archive file of a backup.
#[derive(Clone, Debug)]
pub struct ArchiveFile {
    pub path: PathBuf,
    pub part: Part,
    pub compression: Compression,
}

/// Lists the archives of a tar-format backup, or `None` if `dir` has no `base.tar*`.
pub fn find_archives(dir: &Path) -> Result<Option<Vec<ArchiveFile>>> {
    let mut found = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(CombineError::io("could not open directory", dir))?;
    for e in entries {
        let e = e.map_err(CombineError::io("could not read directory", dir))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        for (compression, suffix) in Compression::ALL {
            let Some(stem) = name.strip_suffix(suffix) else {
                continue;
            };
            let part = match stem {
                "base" => Part::Base,
                "pg_wal" => Part::Wal,
                s => match crate::tablespaces::parse_oid(s) {
                    Some(oid) => Part::Tablespace(oid),
                    None => continue,
                },
            };
            found.push(ArchiveFile {
                path: e.path(),
                part,
                compression,
            });
        }
    }
    if !found.iter().any(|a| a.part == Part::Base) {
        return Ok(None);
    }
    // Base first, then tablespaces by OID, then WAL: a stable order for the walk.
    found.sort_by_key(|a| match a.part {
        Part::Base => (0, 0),
        Part::Tablespace(oid) => (1, oid),
        Part::Wal => (2, 0),
    });
    for w in found.windows(2) {
        if let [a, b] = w {
            if a.part == b.part {
                return Err(CombineError::Damaged(format!(
                    "\"{}\" and \"{}\" hold the same part of the backup",
                    a.path.display(),
                    b.path.display()
                )));
            }
        }
    }
    Ok(Some(found))
}

/// An archive's members, and its map when it is read in place.
type IndexedArchive = (Vec<Member>, Option<Arc<ReadFile>>);

/// Where a member's bytes are.
#[derive(Clone, Debug)]
pub enum Location {
    /// A byte range of an uncompressed archive (index into [`TarIndex::archives`]).
    InArchive {
        archive: usize,
        offset: u64,
        len: u64,
    },
    /// Decompressed into the spill directory.
    Spilled(PathBuf),
    /// In a compressed archive, but not needed by this combine, so not kept.
    Skipped,
}

/// One member of a tar-format backup.
#[derive(Clone, Debug)]
pub struct Member {
    /// Manifest-style path (`base/5/16384`, `pg_tblspc/16385/PG_18_.../5/16390`,
    /// `pg_wal/000000010000000000000002`), without a trailing slash.
    pub path: Vec<u8>,
    pub is_dir: bool,
    pub size: u64,
    pub location: Location,
}

/// All members of a tar-format backup, in archive order.
pub struct TarIndex {
    pub archives: Vec<ArchiveFile>,
    pub members: Vec<Member>,
    by_path: HashMap<Vec<u8>, usize>,
    /// Open archive files, for uncompressed archives.
    maps: Vec<Option<Arc<ReadFile>>>,
}

impl TarIndex {
    /// Indexes the archives of one backup. Regular-file members for which `keep` returns
    /// true are spilled under `spill_dir` when their archive is compressed.
    pub fn build(
        archives: Vec<ArchiveFile>,
        spill_dir: &Path,
        keep: &(dyn Fn(&[u8]) -> bool + Sync),
    ) -> Result<TarIndex> {
        use rayon::prelude::*;
        // Archives are independent streams: decompress them in parallel.
        let per_archive: Vec<IndexedArchive> = archives
            .par_iter()
            .enumerate()
            .map(|(i, a)| index_archive(i, a, spill_dir, keep))
            .collect::<Result<_>>()?;
        let mut members = Vec::new();
        let mut maps = Vec::new();
        for (m, map) in per_archive {
            members.extend(m);
            maps.push(map);
        }
        let mut by_path = HashMap::with_capacity(members.len());
        for (i, m) in members.iter().enumerate() {
            if !m.is_dir && by_path.insert(m.path.clone(), i).is_some() {
                return Err(CombineError::Damaged(format!(
                    "backup archives hold \"{}\" twice",
                    String::from_utf8_lossy(&m.path)
                )));
            }
        }
        Ok(TarIndex {
            archives,
            members,
            by_path,
            maps,
        })
    }

    pub fn get(&self, path: &[u8]) -> Option<&Member> {
        self.by_path.get(path).and_then(|&i| self.members.get(i))
    }

    /// Opens a member for reading; `Ok(None)` when the backup has no such file.
    pub fn open(&self, path: &[u8]) -> Result<Option<Source>> {
        let Some(m) = self.get(path) else {
            return Ok(None);
        };
        self.open_member(m).map(Some)
    }

    pub fn open_member(&self, m: &Member) -> Result<Source> {
        match &m.location {
            Location::InArchive {
                archive,
                offset,
                len,
            } => {
                let (Some(Some(file)), Some(a)) =
                    (self.maps.get(*archive), self.archives.get(*archive))
                else {
                    return Err(CombineError::Internal(
                        "internal error: archive without a map".into(),
                    ));
                };
                let name = PathBuf::from(format!(
                    "{}:{}",
                    a.path.display(),
                    String::from_utf8_lossy(&m.path)
                ));
                Ok(Source::slice(name, file.clone(), *offset, *len))
            }
            Location::Spilled(p) => {
                Source::open(p).map_err(CombineError::io("could not open file", p))
            }
            Location::Skipped => Err(CombineError::Internal(format!(
                "internal error: \"{}\" was not kept from its compressed archive",
                String::from_utf8_lossy(&m.path)
            ))),
        }
    }

    /// Reads a small member whole (backup_label, PG_VERSION, pg_control).
    pub fn read_small(&self, path: &str, max: u64, backup: &Path) -> Result<Vec<u8>> {
        let src = self
            .open(path.as_bytes())?
            .ok_or_else(|| CombineError::Input {
                backup: backup.to_path_buf(),
                message: format!("the archives contain no \"{path}\""),
            })?;
        if src.len() > max {
            return Err(CombineError::Damaged(format!(
                "file \"{}\" is too large",
                src.path.display()
            )));
        }
        src.read_prefix(max)
    }
}

fn index_archive(
    index: usize,
    a: &ArchiveFile,
    spill_dir: &Path,
    keep: &(dyn Fn(&[u8]) -> bool + Sync),
) -> Result<IndexedArchive> {
    // A regular file only: a FIFO named base.tar would block the open forever.
    let (file, _) = pgincr_types::bounded::open_regular(&a.path, u64::MAX, "backup archive")
        .map_err(CombineError::Metadata)?;
    let bad = |e: std::io::Error| CombineError::Input {
        backup: a.path.clone(),
        message: format!("could not read the archive: {e}"),
    };
    let prefix = a.part.prefix();
    let reader: Box<dyn Read> = match a.compression {
        Compression::None => return index_mapped(index, a, file, &prefix),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            file,
        ))),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(std::io::BufReader::new(
            file,
        ))),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(file).map_err(bad)?),
    };
    let mut members = Vec::new();
    let mut ar = tar::Archive::new(reader);
    let spill_root = spill_dir.join(index_name(a));
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let m = member(&prefix, &entry, |_| Ok(Location::Skipped)).map_err(bad)?;
        let Some(mut m) = m else { continue };
        if !m.is_dir && keep(&m.path) {
            let dest = spill_root.join(std::ffi::OsStr::from_bytes(&m.path));
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(CombineError::io("could not create directory", parent))?;
            }
            let mut out =
                File::create(&dest).map_err(CombineError::io("could not create file", &dest))?;
            let n = std::io::copy(&mut entry, &mut out).map_err(|e| {
                // Only the write to the spill file can run out of space.
                if crate::error::is_out_of_space(&e) {
                    CombineError::DiskFull {
                        message: format!(
                            "backup \"{}\": could not read the archive: {e}",
                            a.path.display()
                        ),
                        path: dest.clone(),
                        source: e,
                    }
                } else {
                    bad(e)
                }
            })?;
            if n != m.size {
                return Err(bad(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("member \"{}\" ends early", String::from_utf8_lossy(&m.path)),
                )));
            }
            m.location = Location::Spilled(dest);
        }
        members.push(m);
    }
    Ok((members, None))
}

/// Indexes an uncompressed archive in place: members are byte ranges of its map.
fn index_mapped(index: usize, a: &ArchiveFile, file: File, prefix: &str) -> Result<IndexedArchive> {
    let bad = |e: std::io::Error| CombineError::Input {
        backup: a.path.clone(),
        message: format!("could not read the archive: {e}"),
    };
    let mut members = Vec::new();
    let reader = std::io::BufReader::with_capacity(64 * 1024, file);
    let mut ar = tar::Archive::new(reader);
    // Seeking skips the member data, so only headers are read.
    for entry in ar.entries_with_seek().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        let located = member(prefix, &entry, |e| {
            Ok(Location::InArchive {
                archive: index,
                offset: e.raw_file_position(),
                len: e.size(),
            })
        });
        if let Some(m) = located.map_err(bad)? {
            members.push(m);
        }
    }
    let file = ReadFile::open(&a.path, true).map_err(bad)?;
    Ok((members, Some(Arc::new(file))))
}

/// Spill subdirectory of one archive: its file name, unique within a backup.
fn index_name(a: &ArchiveFile) -> std::ffi::OsString {
    a.path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default()
}

/// Turns a tar entry into a member: regular files and directories only (the server writes
/// no other kinds when it also writes tablespace_map). `./` prefixes are dropped.
fn member<R: Read>(
    prefix: &str,
    entry: &tar::Entry<'_, R>,
    locate: impl Fn(&tar::Entry<'_, R>) -> std::io::Result<Location>,
) -> std::io::Result<Option<Member>> {
    let kind = entry.header().entry_type();
    let is_dir = kind.is_dir();
    if !is_dir && !kind.is_file() {
        return Ok(None);
    }
    let raw = entry.path_bytes();
    let mut p: &[u8] = &raw;
    while let Some(rest) = p.strip_prefix(b"./") {
        p = rest;
    }
    let p = p.strip_suffix(b"/").unwrap_or(p);
    if p.is_empty() || p == b"." {
        return Ok(None);
    }
    if p.split(|&b| b == b'/').any(|c| c == b".." || c.is_empty()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unsafe member name \"{}\"", String::from_utf8_lossy(&raw)),
        ));
    }
    let mut path = prefix.as_bytes().to_vec();
    path.extend_from_slice(p);
    Ok(Some(Member {
        path,
        is_dir,
        size: if is_dir { 0 } else { entry.size() },
        location: if is_dir {
            Location::Skipped
        } else {
            locate(entry)?
        },
    }))
}

/// Parses `tablespace_map` ([`pgincr_types::tablespace_map`]: `<oid> <path>` per line, a
/// backslash escaping the next byte, newlines included).
pub fn parse_tablespace_map(text: &[u8]) -> Result<Vec<(u32, PathBuf)>> {
    let entries = pgincr_types::tablespace_map::parse(text)
        .map_err(|e| CombineError::Damaged(e.to_string()))?;
    Ok(entries.into_iter().map(|e| (e.oid, e.path)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tablespace_maps() {
        let m = parse_tablespace_map(b"16385 /srv/ts one\n16386 /a\\\\b\n").unwrap();
        assert_eq!(
            m,
            vec![
                (16385, PathBuf::from("/srv/ts one")),
                (16386, PathBuf::from("/a\\b"))
            ]
        );
        assert!(parse_tablespace_map(b"x /a\n").is_err());
    }

    #[test]
    fn indexes_plain_and_compressed_archives() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        b.append_data(&mut h, "./pg_wal/summaries/", &[][..])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        b.append_data(&mut h, "base/5/16384", &b"hello"[..])
            .unwrap();
        let bytes = b.into_inner().unwrap();
        std::fs::write(dir.path().join("base.tar"), &bytes).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &bytes).unwrap();
        std::fs::write(dir.path().join("16385.tar.gz"), gz.finish().unwrap()).unwrap();
        let archives = find_archives(dir.path()).unwrap().unwrap();
        assert_eq!(archives.len(), 2);
        let spill = dir.path().join("spill");
        let idx = TarIndex::build(archives, &spill, &|p: &[u8]| p.ends_with(b"16384")).unwrap();
        assert!(idx
            .members
            .iter()
            .any(|m| m.is_dir && m.path == b"pg_wal/summaries"));
        assert_eq!(
            idx.open(b"base/5/16384")
                .unwrap()
                .unwrap()
                .read_prefix(100)
                .unwrap(),
            b"hello"
        );
        assert_eq!(
            idx.open(b"pg_tblspc/16385/base/5/16384")
                .unwrap()
                .unwrap()
                .read_prefix(100)
                .unwrap(),
            b"hello"
        );
        assert!(idx.open(b"base/5/nope").unwrap().is_none());
    }
}
