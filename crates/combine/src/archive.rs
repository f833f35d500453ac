//! Tar-format backups (`pg_basebackup -Ft`) as combine reads them, through `pgincr-archive`:
//! the archives are indexed, never extracted wholesale. An uncompressed archive's members are
//! byte ranges read in place like plain files; a compressed archive is decompressed once, as
//! a stream, and only the members this combine can read are written to a private spill
//! directory: every member of the final backup (they are then moved, not copied, into the
//! output) and, of older backups, only the relation files that the final backup's
//! incremental files may need.

use crate::copy::Source;
use crate::error::{CombineError, Result};
use std::path::{Path, PathBuf};

pub use pgincr_archive::{find_archives, Location, Member, Part, TarIndex};

/// Reading members of a [`TarIndex`] as combine's [`Source`]s.
pub trait TarIndexExt {
    /// Opens a member for reading; `Ok(None)` when the backup has no such file.
    fn open(&self, path: &[u8]) -> Result<Option<Source>>;
    fn open_member(&self, m: &Member) -> Result<Source>;
    /// Reads a small member whole (backup_label, PG_VERSION, pg_control).
    fn read_small(&self, path: &str, max: u64, backup: &Path) -> Result<Vec<u8>>;
}

impl TarIndexExt for TarIndex {
    fn open(&self, path: &[u8]) -> Result<Option<Source>> {
        let Some(m) = self.get(path) else {
            return Ok(None);
        };
        self.open_member(m).map(Some)
    }

    fn open_member(&self, m: &Member) -> Result<Source> {
        match &m.location {
            Location::InArchive {
                archive,
                offset,
                len,
            } => {
                let Some((a, file)) = self.archive_file(*archive) else {
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

    fn read_small(&self, path: &str, max: u64, backup: &Path) -> Result<Vec<u8>> {
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
        use pgincr_archive::header::{self, Kind};
        let mut bytes = Vec::new();
        bytes.extend_from_slice(
            &header::header(b"./pg_wal/summaries/", Kind::Dir, 0, 0o700, 0).unwrap(),
        );
        bytes.extend_from_slice(&header::file_header("base/5/16384", 5, 0).unwrap());
        bytes.extend_from_slice(b"hello");
        bytes.resize(bytes.len() + header::padding(5) as usize, 0);
        bytes.extend_from_slice(&[0u8; 2 * header::BLOCK]);
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
