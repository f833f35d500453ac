//! The members of a tar-format backup, found without extracting it.
//!
//! An uncompressed archive is indexed by reading its headers only: each member is a byte
//! range of the archive, read in place like a plain file. A compressed archive cannot be read
//! at random, so it is decompressed once, as a stream, and only the members the caller asks
//! for are written to a spill directory.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pgincr_io::ReadFile;

use crate::compression::Compression;
use crate::error::{ArchiveError, Result};
use crate::header::{self, Header, Kind, BLOCK};
use crate::layout::ArchiveFile;
use crate::reader::{decoder, TarReader};

/// An archive's members, and its open file when it is read in place.
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
    /// In a compressed archive, but not asked for, so not kept (and every directory).
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

/// All regular files and directories of a tar-format backup, in archive order (the server
/// writes no other kinds when it also writes `tablespace_map`; any others are left out).
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
                return Err(ArchiveError::Layout(format!(
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

    /// The regular file at `path` (manifest-style).
    pub fn get(&self, path: &[u8]) -> Option<&Member> {
        self.by_path.get(path).and_then(|&i| self.members.get(i))
    }

    /// An uncompressed archive, open for reading its members in place.
    pub fn archive_file(&self, archive: usize) -> Option<(&ArchiveFile, &Arc<ReadFile>)> {
        match (self.archives.get(archive), self.maps.get(archive)) {
            (Some(a), Some(Some(f))) => Some((a, f)),
            _ => None,
        }
    }
}

fn index_archive(
    index: usize,
    a: &ArchiveFile,
    spill_dir: &Path,
    keep: &(dyn Fn(&[u8]) -> bool + Sync),
) -> Result<IndexedArchive> {
    // A regular file only: a FIFO named base.tar would block the open forever.
    let (file, len) = pgincr_types::bounded::open_regular(&a.path, u64::MAX, "backup archive")
        .map_err(ArchiveError::Open)?;
    let prefix = a.part.prefix();
    if a.compression == Compression::None {
        return index_in_place(index, a, &file, len, &prefix);
    }
    let read_err = |source, spill: Option<&Path>| ArchiveError::Read {
        archive: a.path.clone(),
        spill: spill.map(Path::to_path_buf),
        source,
    };
    let reader = decoder(file, a.compression).map_err(|e| read_err(e, None))?;
    let mut tar = TarReader::new(reader, &a.path);
    let mut members = Vec::new();
    let spill_root = spill_dir.join(a.path.file_name().unwrap_or_default());
    while let Some(h) = tar.next_member()? {
        if let Some(msg) = extended(&h) {
            return Err(ArchiveError::Malformed {
                archive: a.path.display().to_string(),
                offset: tar.offset(),
                msg,
            });
        }
        let Some(mut m) = member(&prefix, &h, || Location::Skipped) else {
            continue;
        };
        if !m.is_dir && keep(&m.path) {
            let dest = spill_root.join(std::ffi::OsStr::from_bytes(&m.path));
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(ArchiveError::io("could not create directory", parent))?;
            }
            let mut out =
                File::create(&dest).map_err(ArchiveError::io("could not create file", &dest))?;
            let n = std::io::copy(&mut tar, &mut out).map_err(|e| read_err(e, Some(&dest)))?;
            if n != m.size {
                return Err(read_err(
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("member \"{}\" ends early", String::from_utf8_lossy(&m.path)),
                    ),
                    None,
                ));
            }
            m.location = Location::Spilled(dest);
        }
        members.push(m);
    }
    Ok((members, None))
}

/// Indexes an uncompressed archive in place, reading only its headers: members are byte
/// ranges of the file, which must hold them whole.
fn index_in_place(
    index: usize,
    a: &ArchiveFile,
    file: &File,
    len: u64,
    prefix: &str,
) -> Result<IndexedArchive> {
    let malformed = |offset, msg: String| ArchiveError::Malformed {
        archive: a.path.display().to_string(),
        offset,
        msg,
    };
    let mut members = Vec::new();
    let mut offset = 0u64;
    let mut block = [0u8; BLOCK];
    loop {
        if offset == len {
            tracing::warn!(
                "{}: archive ended without end-of-archive blocks",
                a.path.display()
            );
            break;
        }
        if len - offset < BLOCK as u64 {
            return Err(malformed(offset, "archive is truncated".into()));
        }
        file.read_exact_at(&mut block, offset)
            .map_err(|source| ArchiveError::Read {
                archive: a.path.clone(),
                spill: None,
                source,
            })?;
        let Some(h) = header::parse_raw(&block).map_err(|m| malformed(offset, m))? else {
            break;
        };
        if let Some(msg) = extended(&h) {
            return Err(malformed(offset, msg));
        }
        let data = offset + BLOCK as u64;
        let end = data
            .checked_add(h.size)
            .filter(|&e| e <= len)
            .ok_or_else(|| malformed(offset, "archive is truncated".into()))?;
        if let Some(m) = member(prefix, &h, || Location::InArchive {
            archive: index,
            offset: data,
            len: h.size,
        }) {
            members.push(m);
        }
        offset = (end + header::padding(h.size)).min(len);
    }
    let file = ReadFile::open(&a.path, true).map_err(|source| ArchiveError::Read {
        archive: a.path.clone(),
        spill: None,
        source,
    })?;
    Ok((members, Some(Arc::new(file))))
}

/// GNU long-name and pax extended headers change the name of the member after them; the
/// server never writes them (it refuses names over 99 bytes), so rather than mis-name that
/// member they are refused.
fn extended(h: &Header<Vec<u8>>) -> Option<String> {
    match h.kind {
        Kind::Other(t @ (b'L' | b'K' | b'x' | b'g')) => Some(format!(
            "member \"{}\" is an extended header (type '{}'), which PostgreSQL never writes",
            String::from_utf8_lossy(&h.name),
            char::from(t)
        )),
        _ => None,
    }
}

/// A header as a member: regular files and directories only, the archive's root left out.
fn member(prefix: &str, h: &Header<Vec<u8>>, locate: impl FnOnce() -> Location) -> Option<Member> {
    let is_dir = match h.kind {
        Kind::Dir => true,
        Kind::File => false,
        Kind::Symlink | Kind::Other(_) => return None,
    };
    if h.name.is_empty() {
        return None;
    }
    let mut path = prefix.as_bytes().to_vec();
    path.extend_from_slice(&h.name);
    Some(Member {
        path,
        is_dir,
        size: if is_dir { 0 } else { h.size },
        location: if is_dir { Location::Skipped } else { locate() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::find_archives;
    use crate::header::file_header;

    #[test]
    fn indexes_plain_and_compressed_archives() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(
            &header::header(b"./pg_wal/summaries/", Kind::Dir, 0, 0o700, 0).unwrap(),
        );
        bytes.extend_from_slice(&file_header("base/5/16384", 5, 0).unwrap());
        bytes.extend_from_slice(b"hello");
        bytes.resize(bytes.len() + header::padding(5) as usize, 0);
        bytes.extend_from_slice(&[0u8; 2 * BLOCK]);
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
        let m = idx.get(b"base/5/16384").unwrap();
        let Location::InArchive {
            archive,
            offset,
            len,
        } = m.location
        else {
            panic!("{m:?}");
        };
        let (_, f) = idx.archive_file(archive).unwrap();
        let mut back = vec![0u8; len as usize];
        f.read_exact_at(&mut back, offset).unwrap();
        assert_eq!(back, b"hello");
        let m = idx.get(b"pg_tblspc/16385/base/5/16384").unwrap();
        let Location::Spilled(p) = &m.location else {
            panic!("{m:?}");
        };
        assert_eq!(std::fs::read(p).unwrap(), b"hello");
        assert!(idx.get(b"base/5/nope").is_none());

        // GNU long names are refused, not mis-read.
        let mut gnu = header::header(b"././@LongLink", Kind::Other(b'L'), 0, 0o600, 0)
            .unwrap()
            .to_vec();
        gnu.extend_from_slice(&[0u8; 2 * BLOCK]);
        let g = tempfile::tempdir().unwrap();
        std::fs::write(g.path().join("base.tar"), &gnu).unwrap();
        let archives = find_archives(g.path()).unwrap().unwrap();
        let e = TarIndex::build(archives, &spill, &|_| false).err().unwrap();
        assert!(e.to_string().contains("extended header"), "{e}");

        // A member running past the end of an uncompressed archive.
        std::fs::write(dir.path().join("base.tar"), &bytes[..BLOCK * 2 + 3]).unwrap();
        std::fs::remove_file(dir.path().join("16385.tar.gz")).unwrap();
        let archives = find_archives(dir.path()).unwrap().unwrap();
        let e = TarIndex::build(archives, &spill, &|_| false).err().unwrap();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
