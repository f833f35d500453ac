//! The archives of a tar-format backup as `pg_basebackup -Ft` names them: `base.tar`, one
//! `<oid>.tar` per tablespace and `pg_wal.tar`, each possibly `.gz`, `.lz4` or `.zst`.

use std::path::{Path, PathBuf};

use crate::compression::Compression;
use crate::error::{ArchiveError, Result};

/// Which part of the cluster an archive holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Base,
    Tablespace(u32),
    Wal,
}

impl Part {
    /// Manifest-path prefix of the archive's members.
    pub fn prefix(self) -> String {
        match self {
            Part::Base => String::new(),
            Part::Tablespace(oid) => format!("pg_tblspc/{oid}/"),
            Part::Wal => "pg_wal/".into(),
        }
    }

    /// The part an archive stem (`base`, `pg_wal`, `16385`) names.
    pub fn from_stem(stem: &str) -> Option<Part> {
        match stem {
            "base" => Some(Part::Base),
            "pg_wal" => Some(Part::Wal),
            s => pgincr_types::tablespace_map::parse_oid(s).map(Part::Tablespace),
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

/// Lists the archives of a tar-format backup (base first, then tablespaces by OID, then
/// WAL), or `None` if `dir` has no `base.tar*`. Two archives of the same part are an error.
pub fn find_archives(dir: &Path) -> Result<Option<Vec<ArchiveFile>>> {
    let mut found = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(ArchiveError::io("could not open directory", dir))?;
    for e in entries {
        let e = e.map_err(ArchiveError::io("could not read directory", dir))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((stem, compression)) = Compression::split_archive_name(name) else {
            continue;
        };
        let Some(part) = Part::from_stem(stem) else {
            continue;
        };
        found.push(ArchiveFile {
            path: e.path(),
            part,
            compression,
        });
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
                return Err(ArchiveError::Layout(format!(
                    "\"{}\" and \"{}\" hold the same part of the backup",
                    a.path.display(),
                    b.path.display()
                )));
            }
        }
    }
    Ok(Some(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_orders_archives() {
        let d = tempfile::tempdir().unwrap();
        assert!(find_archives(d.path()).unwrap().is_none());
        for n in [
            "pg_wal.tar",
            "16390.tar.zst",
            "base.tar.gz",
            "16385.tar",
            "backup_manifest",
            "notes.tar",
        ] {
            std::fs::write(d.path().join(n), b"").unwrap();
        }
        let parts: Vec<_> = find_archives(d.path())
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|a| (a.part, a.compression))
            .collect();
        assert_eq!(
            parts,
            vec![
                (Part::Base, Compression::Gzip(None)),
                (Part::Tablespace(16385), Compression::None),
                (Part::Tablespace(16390), Compression::Zstd(None)),
                (Part::Wal, Compression::None),
            ]
        );
        std::fs::write(d.path().join("base.tar"), b"").unwrap();
        let e = find_archives(d.path()).unwrap_err().to_string();
        assert!(e.contains("hold the same part"), "{e}");
    }
}
