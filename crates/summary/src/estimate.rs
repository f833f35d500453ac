//! Estimate of an incremental backup's size from summaries and a data directory.
//!
//! Each relation file of the data directory goes through the server's `GetFileBackupMethod`
//! rules (full file or `INCREMENTAL.*` file, and how many blocks) against a merged summary
//! table; the sizes are summed. Approximations, all small:
//!
//! * Files are measured now, not when the server would read them.
//! * Rule 3 ("the file is not in the prior backup's manifest: full") is applied only when the
//!   prior manifest's paths are given; without them every file is assumed to have existed.
//!   Files created since are normally caught anyway by their summary entry (limit 0).
//! * Non-relation files are counted in full, minus what `BASE_BACKUP` leaves out (`pg_wal`
//!   contents, `postmaster.pid`, temporary files, ... see [`EXCLUDED_DIR_CONTENTS`]). The
//!   `backup_label`, `tablespace_map` and `backup_manifest` the server adds, tar headers and WAL
//!   are not counted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use pgincr_types::manifest::Manifest;
use pgincr_types::{
    BlockSize, ForkNumber, RelFileName, RelGeometry, DEFAULTTABLESPACE_OID, GLOBALTABLESPACE_OID,
    INVALID_BLOCK_NUMBER,
};

use crate::block_ref_table::{BlockRefKey, BlockRefTable};
use crate::error::{Result, SummaryError};

/// Directories whose contents `BASE_BACKUP` skips (the directory itself is sent).
const EXCLUDED_DIR_CONTENTS: &[&str] = &[
    "pg_wal",
    "pg_stat_tmp",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// Files `BASE_BACKUP` skips anywhere in the data directory.
const EXCLUDED_FILES: &[&str] = &[
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "postmaster.pid",
    "postmaster.opts",
];

/// Build constants the rules need (from `pg_control`).
#[derive(Clone, Debug)]
pub struct EstimateParams {
    /// `BLCKSZ` and `RELSEG_SIZE`, validated when `pg_control` was parsed.
    pub geometry: RelGeometry,
    /// `PG_<major>_<catversion>`: the tablespace subdirectory of this server.
    pub tablespace_version_dir: String,
    /// Paths listed in the prior backup's manifest, if known (enables rule 3).
    pub prior_files: Option<HashSet<String>>,
}

impl EstimateParams {
    /// The parameters of the cluster whose `pg_control` is `control`.
    pub fn for_cluster(
        control: &pgincr_types::ControlFile,
        prior_files: Option<HashSet<String>>,
    ) -> EstimateParams {
        EstimateParams {
            geometry: control.geometry(),
            tablespace_version_dir: tablespace_version_dir(
                control.major_version(),
                control.catalog_version_no,
            ),
            prior_files,
        }
    }
}

/// How one relation file would be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Method {
    Full,
    Incremental {
        num_blocks: u32,
        truncation_block_length: u32,
    },
}

/// Where a relation file lives, as `GetFileBackupMethod` sees it.
#[derive(Clone, Copy, Debug)]
struct RelationFile {
    pub spc_oid: u32,
    pub db_oid: u32,
    pub name: RelFileName,
    pub size: u64,
}

/// `GetFileBackupMethod`, rules 1, 2 and 4-10 (rule 3, the manifest lookup, is the caller's).
fn file_backup_method(table: &BlockRefTable, file: &RelationFile, geom: RelGeometry) -> Method {
    let (blcksz, relseg_size) = (geom.blcksz.get(), geom.relseg_size.get());
    let size = file.size;
    // Never zero: the geometry was validated.
    let bs = geom.block_bytes();
    if !size.is_multiple_of(bs) || size / bs > u64::from(relseg_size) {
        return Method::Full;
    }
    if file.name.fork == ForkNumber::Fsm {
        return Method::Full;
    }
    let db_key = BlockRefKey::new(file.spc_oid, file.db_oid, 0, ForkNumber::Main);
    if table.get(&db_key).is_some() {
        return Method::Full;
    }
    let key = BlockRefKey::new(
        file.spc_oid,
        file.db_oid,
        file.name.rel_number,
        file.name.fork,
    );
    let nblocks_file = (size / bs) as u32;
    let Some(entry) = table.get(&key) else {
        if size == 0 {
            return Method::Full;
        }
        return Method::Incremental {
            num_blocks: 0,
            truncation_block_length: nblocks_file,
        };
    };
    let seg_start = u64::from(file.name.segno) * u64::from(relseg_size);
    let limit = entry.limit_block();
    if u64::from(limit) <= seg_start {
        return Method::Full;
    }
    // seg_start < limit <= u32::MAX here, so these fit in u32.
    let start = seg_start as u32;
    let stop = start.saturating_add(nblocks_file);
    let n = entry.blocks_in(start, stop).len() as u32;
    if f64::from(n) * f64::from(blcksz) > size as f64 * 0.9 {
        return Method::Full;
    }
    let mut t = nblocks_file;
    if limit != INVALID_BLOCK_NUMBER {
        t = t.max(limit - start);
    }
    Method::Incremental {
        num_blocks: n,
        truncation_block_length: t,
    }
}

/// `GetIncrementalFileSize`: header (rounded up to a block when blocks follow) plus blocks,
/// the formula the combiner's reader checks files against.
fn incremental_file_size(num_blocks: u32, blcksz: BlockSize) -> u64 {
    pgincr_types::incremental::file_size(num_blocks, blcksz)
}

/// The decision for one relation file.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FileEstimate {
    /// Path as in a backup manifest (`base/5/16384`, `pg_tblspc/16390/PG_.../5/16400`).
    pub path: String,
    pub size: u64,
    #[serde(flatten)]
    pub method: Method,
    /// Bytes this file takes in the incremental backup.
    pub backup_bytes: u64,
}

/// Totals for a data directory.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Estimate {
    pub relation_files: u64,
    pub relation_bytes: u64,
    pub full_files: u64,
    pub full_bytes: u64,
    pub incremental_files: u64,
    /// Size of the `INCREMENTAL.*` files.
    pub incremental_bytes: u64,
    /// Size of the relation files they stand for.
    pub incremental_source_bytes: u64,
    pub other_files: u64,
    pub other_bytes: u64,
    /// Relation and other files, all in full.
    pub full_backup_bytes: u64,
    pub incremental_backup_bytes: u64,
    /// Per relation file, sorted by path.
    pub files: Vec<FileEstimate>,
}

/// Walks `data_dir` and estimates an incremental backup against `table`.
pub fn estimate(
    data_dir: &Path,
    table: &BlockRefTable,
    params: &EstimateParams,
) -> Result<Estimate> {
    let mut est = Estimate::default();
    let mut walker = Walker {
        table,
        params,
        est: &mut est,
    };
    walker.walk(data_dir, "")?;
    est.files.sort_by(|a, b| a.path.cmp(&b.path));
    est.full_backup_bytes = est.relation_bytes + est.other_bytes;
    est.incremental_backup_bytes = est.full_bytes + est.incremental_bytes + est.other_bytes;
    Ok(est)
}

/// Paths of the `Files` of a `backup_manifest` (plain `Path`, or hex `Encoded-Path`), read
/// with the manifest parser every other command uses: the file must be a regular file of
/// bounded size and its SHA-256 manifest checksum must match.
pub fn manifest_paths(path: &Path) -> Result<HashSet<String>> {
    let m = Manifest::read(path).map_err(|e| SummaryError::Manifest(Box::new(e)))?;
    Ok(m.files
        .keys()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect())
}

struct Walker<'a> {
    table: &'a BlockRefTable,
    params: &'a EstimateParams,
    est: &'a mut Estimate,
}

impl Walker<'_> {
    /// `rel` is the manifest-form path of `dir` ("" for the data directory).
    fn walk(&mut self, dir: &Path, rel: &str) -> Result<()> {
        let mut names = read_names(dir)?;
        names.sort();
        let relation_dir = self.relation_dir(rel);
        let has_init: HashSet<u32> = if relation_dir.is_some() {
            names
                .iter()
                .filter_map(|n| RelFileName::parse(n))
                .filter(|r| r.fork == ForkNumber::Init)
                .map(|r| r.rel_number)
                .collect()
        } else {
            HashSet::new()
        };
        for name in names {
            let path = dir.join(&name);
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            // Follow the pg_tblspc links; nothing else is a link in a data directory.
            let md = std::fs::metadata(&path).map_err(|e| SummaryError::io("stat", &path, e))?;
            if md.is_dir() {
                if EXCLUDED_DIR_CONTENTS.contains(&child.as_str()) || name.starts_with("pgsql_tmp")
                {
                    continue;
                }
                if rel.starts_with("pg_tblspc/")
                    && rel.matches('/').count() == 1
                    && name != self.params.tablespace_version_dir
                {
                    continue; // another server version's directory
                }
                self.walk(&path, &child)?;
                continue;
            }
            if !md.is_file() || is_excluded_file(&name) {
                continue;
            }
            let size = md.len();
            match (relation_dir, RelFileName::parse(&name)) {
                (Some((spc_oid, db_oid)), Some(rf)) => {
                    // An unlogged relation's other forks are not backed up at all.
                    if rf.fork != ForkNumber::Init && has_init.contains(&rf.rel_number) {
                        continue;
                    }
                    self.relation_file(&child, spc_oid, db_oid, rf, size);
                }
                (Some(_), None) if looks_like_temp_rel(&name) => {}
                _ => {
                    self.est.other_files += 1;
                    self.est.other_bytes += size;
                }
            }
        }
        Ok(())
    }

    /// `(spcoid, dboid)` when `rel` is a relation directory.
    fn relation_dir(&self, rel: &str) -> Option<(u32, u32)> {
        let parts: Vec<&str> = rel.split('/').collect();
        let oid = |s: &str| -> Option<u32> {
            if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        match parts.as_slice() {
            ["global"] => Some((GLOBALTABLESPACE_OID, 0)),
            ["base", db] => Some((DEFAULTTABLESPACE_OID, oid(db)?)),
            ["pg_tblspc", spc, v, db] if *v == self.params.tablespace_version_dir => {
                Some((oid(spc)?, oid(db)?))
            }
            _ => None,
        }
    }

    fn relation_file(
        &mut self,
        path: &str,
        spc_oid: u32,
        db_oid: u32,
        name: RelFileName,
        size: u64,
    ) {
        let p = self.params;
        let in_prior = match &p.prior_files {
            None => true,
            Some(set) => set.contains(path) || set.contains(&incremental_path(path)),
        };
        let method = if in_prior {
            file_backup_method(
                self.table,
                &RelationFile {
                    spc_oid,
                    db_oid,
                    name,
                    size,
                },
                p.geometry,
            )
        } else {
            Method::Full
        };
        let backup_bytes = match method {
            Method::Full => size,
            Method::Incremental { num_blocks, .. } => {
                incremental_file_size(num_blocks, p.geometry.blcksz)
            }
        };
        let e = &mut *self.est;
        e.relation_files += 1;
        e.relation_bytes += size;
        match method {
            Method::Full => {
                e.full_files += 1;
                e.full_bytes += size;
            }
            Method::Incremental { .. } => {
                e.incremental_files += 1;
                e.incremental_bytes += backup_bytes;
                e.incremental_source_bytes += size;
            }
        }
        e.files.push(FileEstimate {
            path: path.to_string(),
            size,
            method,
            backup_bytes,
        });
    }
}

/// `base/5/16384` → `base/5/INCREMENTAL.16384`.
fn incremental_path(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/INCREMENTAL.{name}"),
        None => format!("INCREMENTAL.{path}"),
    }
}

fn is_excluded_file(name: &str) -> bool {
    EXCLUDED_FILES.contains(&name)
        || name.starts_with("pg_internal.init")
        || name.starts_with("pgsql_tmp")
}

/// `t<digits>_<digits>...`: a temporary relation's file (`looks_like_temp_rel_name`).
fn looks_like_temp_rel(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && rest[digits..].starts_with('_')
}

fn read_names(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| SummaryError::io("read directory", dir, e))?;
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| SummaryError::io("read directory", dir, e))?;
        out.push(ent.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

/// The data directory's tablespace version directory name, `PG_<major>_<catversion>`.
fn tablespace_version_dir(major: u32, catalog_version_no: u32) -> String {
    format!("PG_{major}_{catalog_version_no}")
}

/// The summaries directory of a data directory.
pub fn summaries_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pg_wal/summaries")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rf(rel: u32, fork: ForkNumber, segno: u32, size: u64) -> RelationFile {
        RelationFile {
            spc_oid: 1663,
            db_oid: 5,
            name: RelFileName {
                rel_number: rel,
                fork,
                segno,
            },
            size,
        }
    }

    #[test]
    fn applies_the_server_rules_in_order() {
        let bs = 8192u64;
        let seg = 131_072;
        let mut t = BlockRefTable::new();
        let g = RelGeometry::from_raw(8192, seg).unwrap();
        let m = |t: &BlockRefTable, f: RelationFile| file_backup_method(t, &f, g);
        assert_eq!(m(&t, rf(1, ForkNumber::Main, 0, 100)), Method::Full);
        assert_eq!(m(&t, rf(1, ForkNumber::Fsm, 0, bs * 3)), Method::Full);
        assert_eq!(m(&t, rf(1, ForkNumber::Main, 0, 0)), Method::Full);
        assert_eq!(
            m(&t, rf(1, ForkNumber::Main, 0, bs * 3)),
            Method::Incremental {
                num_blocks: 0,
                truncation_block_length: 3
            }
        );
        let k = BlockRefKey::new(1663, 5, 1, ForkNumber::Main);
        t.mark_block_modified(k, 2);
        t.mark_block_modified(k, seg + 1);
        t.mark_block_modified(k, seg);
        assert_eq!(
            m(&t, rf(1, ForkNumber::Main, 0, bs * 10)),
            Method::Incremental {
                num_blocks: 1,
                truncation_block_length: 10
            }
        );
        // 2 of 2 blocks: more than 90%.
        assert_eq!(m(&t, rf(1, ForkNumber::Main, 1, bs * 2)), Method::Full);
        t.set_limit_block(k, 20);
        assert_eq!(
            m(&t, rf(1, ForkNumber::Main, 0, bs * 10)),
            Method::Incremental {
                num_blocks: 1,
                truncation_block_length: 20
            }
        );
        t.set_limit_block(k, 0);
        assert_eq!(m(&t, rf(1, ForkNumber::Main, 0, bs * 10)), Method::Full);
        t.set_limit_block(BlockRefKey::new(1663, 5, 0, ForkNumber::Main), 0);
        assert_eq!(m(&t, rf(9, ForkNumber::Main, 0, bs * 10)), Method::Full);
    }

    #[test]
    fn incremental_sizes() {
        let b = BlockSize::DEFAULT;
        assert_eq!(incremental_file_size(0, b), 12);
        assert_eq!(incremental_file_size(1, b), 16384);
        assert_eq!(incremental_file_size(2045, b), 8192 + 2045 * 8192);
        assert_eq!(incremental_file_size(2046, b), 16384 + 2046 * 8192);
        assert!(looks_like_temp_rel("t3_16384"));
        assert!(!looks_like_temp_rel("t_1"));
        assert_eq!(
            incremental_path("base/5/16384.1"),
            "base/5/INCREMENTAL.16384.1"
        );
    }

    #[test]
    fn manifest_paths_verifies_and_bounds_the_manifest() {
        use pgincr_types::manifest::ManifestWriter;
        let d = tempfile::tempdir().unwrap();
        let mut w = ManifestWriter::new(Vec::new(), 7).unwrap();
        w.add_file(b"base/5/16384", 8192, 0, None).unwrap();
        w.add_file(b"base/5/INCREMENTAL.16385", 12, 0, None)
            .unwrap();
        let text = w.finish(&[]).unwrap();
        let p = d.path().join("backup_manifest");
        std::fs::write(&p, &text).unwrap();
        let paths = manifest_paths(&p).unwrap();
        assert!(paths.contains("base/5/16384") && paths.contains("base/5/INCREMENTAL.16385"));
        // Its own serde_json parse accepted a manifest without (or with a wrong) checksum.
        let mut edited = text.clone();
        let at = edited.windows(5).position(|w| w == b"16384").unwrap();
        edited[at] = b'9';
        std::fs::write(&p, &edited).unwrap();
        let err = manifest_paths(&p).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
        std::fs::write(
            &p,
            br#"{"PostgreSQL-Backup-Manifest-Version": 2, "Files": []}"#,
        )
        .unwrap();
        assert!(manifest_paths(&p).is_err());
        // /dev/zero used to be read until the kernel killed the process.
        let err = manifest_paths(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("character device"), "{err}");
    }
}
