//! The backup checked against its manifest as it was written: the extractor computes each
//! file's size and checksum while the bytes pass (they are in the CPU cache then), and once
//! the manifest has arrived every file it lists must have been received with that size and
//! checksum, and nothing else but WAL. This is `pg_verifybackup`'s file check without reading
//! the backup back, which costs about as much as the backup itself on a fast disk.

use std::collections::HashMap;
use std::path::Path;

use pgincr_archive::FileSum;
use pgincr_types::manifest::Manifest;
use serde::Serialize;

/// The result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StreamCheck {
    /// Files the manifest lists.
    pub files: u64,
    /// Of those, files whose checksum was compared (all but checksum type NONE).
    pub checksummed: u64,
    /// What did not match, as `pg_verifybackup` words it; empty when the backup is sound.
    pub problems: Vec<String>,
}

impl StreamCheck {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Compares the received files with the manifest at `manifest_path`.
pub(crate) fn check(manifest_path: &Path, sums: &[FileSum]) -> StreamCheck {
    let manifest = match Manifest::read(manifest_path) {
        Ok(m) => m,
        Err(e) => {
            return StreamCheck {
                problems: vec![format!("the backup's manifest does not parse: {e}")],
                ..StreamCheck::default()
            }
        }
    };
    compare(&manifest, sums)
}

fn compare(manifest: &Manifest, sums: &[FileSum]) -> StreamCheck {
    let mut out = StreamCheck::default();
    let got: HashMap<&[u8], &FileSum> = sums.iter().map(|s| (s.name.as_bytes(), s)).collect();
    for (path, f) in &manifest.files {
        out.files += 1;
        let name = String::from_utf8_lossy(path);
        let Some(s) = got.get(&path[..]) else {
            out.problems.push(format!(
                "\"{name}\" is present in the manifest but was not received"
            ));
            continue;
        };
        if s.size != f.size {
            out.problems.push(format!(
                "\"{name}\" has size {} on disk but size {} in the manifest",
                s.size, f.size
            ));
            continue;
        }
        match &s.checksum {
            Some(c) if c.kind == f.checksum_type => {
                out.checksummed += 1;
                if c.bytes != f.checksum {
                    out.problems
                        .push(format!("checksum mismatch for file \"{name}\""));
                }
            }
            // The manifest asked for another checksum than the one computed: sizes only.
            _ => {}
        }
    }
    for s in sums {
        // WAL fetched into the backup (-X fetch) is not in the manifest, as upstream.
        if s.name.starts_with("pg_wal/") || s.name == "backup_manifest" {
            continue;
        }
        if !manifest.files.contains_key(s.name.as_bytes()) {
            out.problems.push(format!(
                "\"{}\" was received but is not present in the manifest",
                s.name
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgincr_types::checksum::{ChecksumType, Checksummer};
    use pgincr_types::manifest::ManifestFile;

    fn sum(name: &str, data: &[u8]) -> FileSum {
        let mut c = Checksummer::new(ChecksumType::Crc32c);
        c.update(data);
        FileSum {
            name: name.into(),
            size: data.len() as u64,
            checksum: c.finish(),
        }
    }

    fn manifest(files: &[(&str, &[u8])]) -> Manifest {
        let mut m = Manifest {
            version: 2,
            system_identifier: Some(1),
            files: Default::default(),
            wal_ranges: Vec::new(),
        };
        for (n, d) in files {
            let s = sum(n, d);
            m.files.insert(
                n.as_bytes().to_vec().into_boxed_slice(),
                ManifestFile {
                    size: s.size,
                    last_modified: None,
                    checksum_type: ChecksumType::Crc32c,
                    checksum: s.checksum.map(|c| c.bytes).unwrap_or_default(),
                },
            );
        }
        m
    }

    #[test]
    fn matches_and_mismatches() {
        let m = manifest(&[("PG_VERSION", b"17\n"), ("base/1/1", b"abcd")]);
        let ok = compare(
            &m,
            &[
                sum("PG_VERSION", b"17\n"),
                sum("base/1/1", b"abcd"),
                sum("pg_wal/000000010000000000000001", b"w"),
            ],
        );
        assert!(ok.is_ok(), "{ok:?}");
        assert_eq!((ok.files, ok.checksummed), (2, 2));
        let bad = compare(&m, &[sum("PG_VERSION", b"18\n"), sum("extra", b"x")]);
        assert_eq!(bad.problems.len(), 3, "{bad:?}");
        assert!(bad
            .problems
            .iter()
            .any(|p| p.contains("checksum mismatch for file \"PG_VERSION\"")));
        assert!(bad
            .problems
            .iter()
            .any(|p| p.contains("\"base/1/1\" is present in the manifest but was not received")));
        assert!(bad
            .problems
            .iter()
            .any(|p| p.contains("\"extra\" was received")));
        let short = compare(&m, &[sum("PG_VERSION", b"17"), sum("base/1/1", b"abcd")]);
        assert!(short.problems[0].contains("size 2 on disk but size 3"));
    }
}
