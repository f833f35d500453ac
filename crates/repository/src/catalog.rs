//! `catalog.json` per server: what the rotation knows about each backup, written atomically.
//! It is a cache: [`Catalog::rebuild`] re-derives every fact it can from the backups on disk
//! (backup_label, backup_manifest, the name), so the catalog is never the only copy.

use pgincr_types::manifest::Manifest;
use pgincr_types::{BackupLabel, Lsn, TimeLineId};
use serde::{Deserialize, Serialize};

use crate::naming::{BackupName, NameKind};
use crate::storage::{Storage, StorageError};

pub const CATALOG_FORMAT_VERSION: u32 = 1;
/// A catalog larger than this is refused rather than read into memory.
pub const CATALOG_LIMIT: u64 = 64 << 20;
/// PostgreSQL refuses manifests above 1 GB too (`MaxAllocSize`-bound reads).
const MANIFEST_LIMIT: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("catalog {path}: {source}; rebuild it with `pgincr info --rebuild-catalog`")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("catalog {path} has format version {found}, this pgincr reads {CATALOG_FORMAT_VERSION}; rebuild it with `pgincr info --rebuild-catalog`")]
    Version { path: String, found: u32 },
    #[error("backup {name}: {message}")]
    Backup { name: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupKind {
    Full,
    Incremental,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    Server,
    /// Combined inside the repository from these backups (oldest first).
    Synthetic {
        from: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Verification {
    NotVerified,
    Passed { at: i64 },
    Failed { at: i64, reason: String },
}

mod lsn_text {
    use pgincr_types::Lsn;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(l: &Lsn, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&l.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(|e| serde::de::Error::custom(format!("{e:?}")))
    }
}

mod tli_num {
    use pgincr_types::TimeLineId;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(t: &TimeLineId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(t.0)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TimeLineId, D::Error> {
        Ok(TimeLineId(u32::deserialize(d)?))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub name: String,
    pub kind: BackupKind,
    pub origin: Origin,
    /// The backup this incremental was taken on top of; `None` for a full backup.
    pub parent: Option<String>,
    /// Rounds are numbered from 1, a new one at every full backup.
    pub round: u32,
    pub index: u32,
    #[serde(with = "lsn_text")]
    pub start_lsn: Lsn,
    #[serde(with = "lsn_text")]
    pub end_lsn: Lsn,
    #[serde(with = "tli_num")]
    pub timeline: TimeLineId,
    pub system_identifier: Option<u64>,
    /// Unix seconds.
    pub start_time: i64,
    pub end_time: Option<i64>,
    pub bytes: u64,
    pub files: u64,
    pub duration_secs: Option<f64>,
    pub verification: Verification,
}

impl BackupRecord {
    /// The time from which this backup can restore (its end, else its start).
    pub fn restorable_from(&self) -> i64 {
        self.end_time.unwrap_or(self.start_time)
    }
}

/// The decision of [`Catalog::next_backup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextBackup {
    pub name: BackupName,
    pub round: u32,
    pub parent: Option<String>,
}

/// A run that did not produce a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub time: i64,
    pub reason: String,
}

/// One restore test (`pgincr drill`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    pub time: i64,
    pub ok: bool,
    /// The newest backup of the chain restored.
    pub backup: String,
    pub rto_secs: f64,
    pub restore_secs: f64,
    pub recovery_secs: f64,
    pub rpo_secs: Option<f64>,
    pub reached_lsn: Option<String>,
    pub failed_checks: Vec<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    pub format_version: u32,
    /// Sorted by name (= by time).
    pub backups: Vec<BackupRecord>,
    #[serde(default)]
    pub events: Vec<Event>,
    /// Restore tests, oldest first (the newest 100).
    #[serde(default)]
    pub drills: Vec<DrillRecord>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            format_version: CATALOG_FORMAT_VERSION,
            backups: Vec::new(),
            events: Vec::new(),
            drills: Vec::new(),
        }
    }
}

/// `<server>/catalog.json`.
pub fn catalog_path(server: &str) -> String {
    format!("{server}/catalog.json")
}

/// `<server>/backups`.
pub fn backups_dir(server: &str) -> String {
    format!("{server}/backups")
}

impl Catalog {
    /// `Ok(None)` when there is no catalog yet (the caller then rebuilds).
    pub fn load(storage: &dyn Storage, server: &str) -> Result<Option<Catalog>, CatalogError> {
        let path = catalog_path(server);
        let bytes = match storage.read_small(&path, CATALOG_LIMIT) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let v: Version = serde_json::from_slice(&bytes).map_err(|source| CatalogError::Json {
            path: path.clone(),
            source,
        })?;
        if v.format_version != CATALOG_FORMAT_VERSION {
            return Err(CatalogError::Version {
                path,
                found: v.format_version,
            });
        }
        let c =
            serde_json::from_slice(&bytes).map_err(|source| CatalogError::Json { path, source })?;
        Ok(Some(c))
    }

    pub fn save(&self, storage: &dyn Storage, server: &str) -> Result<(), CatalogError> {
        let path = catalog_path(server);
        let mut text = serde_json::to_vec_pretty(self).map_err(|source| CatalogError::Json {
            path: path.clone(),
            source,
        })?;
        text.push(b'\n');
        storage.write_atomic(&path, &text)?;
        Ok(())
    }

    /// Adds a backup, keeping the list sorted by name.
    pub fn add(&mut self, record: BackupRecord) {
        self.backups.retain(|b| b.name != record.name);
        self.backups.push(record);
        self.backups.sort_by(|a, b| a.name.cmp(&b.name));
    }

    pub fn get(&self, name: &str) -> Option<&BackupRecord> {
        self.backups.iter().find(|b| b.name == name)
    }

    pub fn newest(&self) -> Option<&BackupRecord> {
        self.backups.last()
    }

    /// `name` and its ancestors back to their full backup, oldest first; `None` when a link
    /// is missing (the backup cannot be restored).
    pub fn chain(&self, name: &str) -> Option<Vec<&BackupRecord>> {
        let mut chain = Vec::new();
        let mut cur = self.get(name)?;
        loop {
            chain.push(cur);
            match (&cur.kind, &cur.parent) {
                (BackupKind::Full, _) => break,
                (BackupKind::Incremental, Some(p)) => cur = self.get(p)?,
                (BackupKind::Incremental, None) => return None,
            }
            if chain.len() > self.backups.len() {
                return None;
            }
        }
        chain.reverse();
        Some(chain)
    }

    /// Incrementals whose parent is not in the catalog: they cannot be restored.
    pub fn missing_parents(&self) -> Vec<&BackupRecord> {
        self.backups
            .iter()
            .filter(|b| {
                b.kind == BackupKind::Incremental
                    && b.parent.as_ref().is_none_or(|p| self.get(p).is_none())
            })
            .collect()
    }

    /// What retention keeps, as WAL cleanup needs it.
    pub fn wal_backups(&self) -> Vec<crate::wal_cleanup::WalBackup> {
        self.backups
            .iter()
            .map(|b| crate::wal_cleanup::WalBackup {
                start_lsn: b.start_lsn,
                timeline: b.timeline,
            })
            .collect()
    }

    /// The next backup by the round rules alone: a full when there is none, the round is
    /// complete (`max_incrementals` reached) or `force_full`; else the next incremental on
    /// top of the newest backup. The server-side checks (summaries, damage) come on top.
    pub fn next_backup(
        &self,
        max_incrementals: u32,
        force_full: bool,
        now: i64,
    ) -> Result<NextBackup, crate::naming::NameError> {
        let (kind, index, round, parent) = match self.newest() {
            Some(l) if !force_full && l.index < max_incrementals => {
                (NameKind::Incr, l.index + 1, l.round, Some(l.name.clone()))
            }
            Some(l) => (NameKind::Full, 0, l.round.saturating_add(1), None),
            None => (NameKind::Full, 0, 1, None),
        };
        Ok(NextBackup {
            name: BackupName::new(now, kind, index)?,
            round,
            parent,
        })
    }

    /// Re-derives the catalog from `<server>/backups/*`: names that are not backup names
    /// (e.g. a staging directory of a killed run) are skipped. `previous` supplies the facts
    /// that are not on disk (end time, duration, verification result, events), matched by
    /// name; everything else comes from the backup itself.
    pub fn rebuild(
        storage: &dyn Storage,
        server: &str,
        previous: Option<&Catalog>,
    ) -> Result<Catalog, CatalogError> {
        let dir = backups_dir(server);
        let entries = match storage.list(&dir) {
            Ok(e) => e,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut found = Vec::new();
        for e in entries.iter().filter(|e| e.is_dir) {
            let Ok(name) = BackupName::parse(&e.name) else {
                continue;
            };
            found.push((
                name,
                read_backup_facts(storage, &format!("{dir}/{}", e.name), &e.name)?,
            ));
        }
        found.sort_by_key(|(n, _)| *n);
        let mut cat = Catalog {
            events: previous.map(|p| p.events.clone()).unwrap_or_default(),
            drills: previous.map(|p| p.drills.clone()).unwrap_or_default(),
            ..Catalog::default()
        };
        let mut round = 0u32;
        for (i, (name, facts)) in found.iter().enumerate() {
            let earlier = found.get(..i).unwrap_or(&[]);
            let text = name.to_string();
            let (kind, parent, origin) = match facts.incremental_from {
                // Tar format, label not read: the name says incremental; its parent is the
                // backup before it.
                None if !facts.label_read && name.kind == NameKind::Incr => (
                    BackupKind::Incremental,
                    earlier.last().map(|(n, _)| n.to_string()),
                    Origin::Server,
                ),
                None => {
                    round += 1;
                    // A combined full keeps the start LSN of the last backup it was made from.
                    let origin = match earlier.iter().rev().find(|(_, f)| {
                        f.start_lsn == facts.start_lsn && f.start_tli == facts.start_tli
                    }) {
                        Some((src, _)) => Origin::Synthetic {
                            from: chain(earlier, &src.to_string()),
                        },
                        None => Origin::Server,
                    };
                    (BackupKind::Full, None, origin)
                }
                Some((lsn, tli)) => {
                    // The newest earlier backup that started at INCREMENTAL FROM LSN/TLI.
                    let parent = earlier
                        .iter()
                        .rev()
                        .find(|(_, f)| f.start_lsn == lsn && f.start_tli == tli)
                        .map(|(n, _)| n.to_string());
                    (BackupKind::Incremental, parent, Origin::Server)
                }
            };
            let prev = previous.and_then(|p| p.get(&text));
            cat.backups.push(BackupRecord {
                name: text.clone(),
                kind,
                origin,
                parent,
                round: round.max(1),
                index: name.index,
                start_lsn: facts.start_lsn,
                end_lsn: facts.end_lsn,
                timeline: facts.start_tli,
                system_identifier: facts.system_identifier,
                start_time: name.time,
                end_time: prev.and_then(|p| p.end_time),
                bytes: facts.bytes,
                files: facts.files,
                duration_secs: prev.and_then(|p| p.duration_secs),
                verification: prev
                    .map(|p| p.verification.clone())
                    .unwrap_or(Verification::NotVerified),
            });
            if kind == BackupKind::Full && name.kind != NameKind::Full {
                return Err(CatalogError::Backup {
                    name: text,
                    message: "named INCR but its backup_label has no INCREMENTAL FROM LSN".into(),
                });
            }
        }
        Ok(cat)
    }
}

/// A backup directory anywhere (not in a repository) as a record: its facts from
/// backup_label and backup_manifest, named by the directory, without a parent.
pub fn record_from_dir(dir: &std::path::Path) -> Result<BackupRecord, CatalogError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let parent = dir.parent().unwrap_or(std::path::Path::new("/"));
    let storage = crate::storage::LocalDir::new(parent);
    let f = read_backup_facts(&storage, &name, &name)?;
    Ok(BackupRecord {
        name,
        kind: if f.incremental_from.is_some() {
            BackupKind::Incremental
        } else {
            BackupKind::Full
        },
        origin: Origin::Server,
        parent: None,
        round: 1,
        index: 0,
        start_lsn: f.start_lsn,
        end_lsn: f.end_lsn,
        timeline: f.start_tli,
        system_identifier: f.system_identifier,
        start_time: 0,
        end_time: None,
        bytes: f.bytes,
        files: f.files,
        duration_secs: None,
        verification: Verification::NotVerified,
    })
}

/// The names of `last`'s chain back to its full, oldest first, among `earlier`.
fn chain(earlier: &[(BackupName, DiskFacts)], last: &str) -> Vec<String> {
    let mut out = vec![last.to_string()];
    let mut cur = earlier.iter().find(|(n, _)| n.to_string() == last);
    while let Some((_, f)) = cur {
        let Some((lsn, tli)) = f.incremental_from else {
            break;
        };
        cur = earlier
            .iter()
            .rev()
            .find(|(_, p)| p.start_lsn == lsn && p.start_tli == tli);
        if let Some((n, _)) = cur {
            out.push(n.to_string());
        }
        if out.len() > earlier.len() {
            break;
        }
    }
    out.reverse();
    out
}

pub(crate) struct DiskFacts {
    pub(crate) start_lsn: Lsn,
    pub(crate) start_tli: TimeLineId,
    incremental_from: Option<(Lsn, TimeLineId)>,
    pub(crate) end_lsn: Lsn,
    system_identifier: Option<u64>,
    bytes: u64,
    files: u64,
    label_read: bool,
}

/// Facts of one backup directory from its backup_label and backup_manifest.
pub(crate) fn read_backup_facts(
    storage: &dyn Storage,
    dir: &str,
    name: &str,
) -> Result<DiskFacts, CatalogError> {
    let bad = |message: String| CatalogError::Backup {
        name: name.to_string(),
        message,
    };
    let mbytes = storage.read_small(&format!("{dir}/backup_manifest"), MANIFEST_LIMIT)?;
    let manifest =
        Manifest::parse(&mbytes[..]).map_err(|e| bad(format!("backup_manifest: {e}")))?;
    let label = match storage.read_small(
        &format!("{dir}/backup_label"),
        pgincr_types::backup_label::MAX_BACKUP_LABEL_LEN as u64 + 1,
    ) {
        Ok(b) => Some(BackupLabel::parse(&b).map_err(|e| bad(e.to_string()))?),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let first = manifest
        .wal_ranges
        .first()
        .ok_or_else(|| bad("backup_manifest has no WAL-Ranges".into()))?;
    let last = manifest.wal_ranges.last().unwrap_or(first);
    // A tar-format backup keeps its backup_label inside base.tar; the manifest's first WAL
    // range starts at the backup's start. Its INCREMENTAL FROM lines are then not read.
    let (start_lsn, start_tli, incremental_from) = match &label {
        Some(l) => (l.start_lsn, l.start_tli, l.incremental_from),
        None => (first.start, first.tli, None),
    };
    Ok(DiskFacts {
        start_lsn,
        start_tli,
        incremental_from,
        end_lsn: last.end,
        system_identifier: manifest.system_identifier,
        // What the backup takes in the repository (compressed and incremental files are
        // smaller than the manifest's sizes).
        bytes: storage
            .size(dir)
            .unwrap_or_else(|_| manifest.files.values().map(|f| f.size).sum()),
        files: manifest.files.len() as u64,
        label_read: label.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalDir;
    use pgincr_types::manifest::WalRange;

    fn label(start: &str, seg: &str, incr: Option<&str>) -> String {
        let mut t = format!("START WAL LOCATION: {start} (file {seg})\nCHECKPOINT LOCATION: {start}\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2025-01-23 05:00:02 UTC\nLABEL: pgincr\nSTART TIMELINE: 1\n");
        if let Some(i) = incr {
            t.push_str(&format!(
                "INCREMENTAL FROM LSN: {i}\nINCREMENTAL FROM TLI: 1\n"
            ));
        }
        t
    }

    fn manifest(start: u64, end: u64) -> Vec<u8> {
        let mut files = indexmap::IndexMap::new();
        files.insert(
            b"PG_VERSION".to_vec().into_boxed_slice(),
            pgincr_types::manifest::ManifestFile {
                size: 3,
                last_modified: None,
                checksum_type: pgincr_types::checksum::ChecksumType::None,
                checksum: Box::new([]),
            },
        );
        let m = Manifest {
            version: 2,
            system_identifier: Some(7_000_000_000_000_000_001),
            files,
            wal_ranges: vec![WalRange {
                tli: TimeLineId(1),
                start: Lsn(start),
                end: Lsn(end),
            }],
        };
        m.write_to(Vec::new()).unwrap()
    }

    fn put(s: &LocalDir, name: &str, start: u64, end: u64, incr: Option<&str>) {
        let d = format!("main/backups/{name}");
        let seg = format!(
            "{:024X}",
            0x1_0000_0000_0000_0000u128 + u128::from(start >> 24)
        );
        s.write_atomic(
            &format!("{d}/backup_label"),
            label(&Lsn(start).to_string(), &seg, incr).as_bytes(),
        )
        .unwrap();
        s.write_atomic(&format!("{d}/backup_manifest"), &manifest(start, end))
            .unwrap();
    }

    #[test]
    fn save_load_and_rebuild() {
        let t = tempfile::tempdir().unwrap();
        let s = LocalDir::new(t.path());
        assert_eq!(Catalog::load(&s, "main").unwrap(), None);
        put(&s, "2025-01-20-050002_FULL_0", 0x2000028, 0x2000100, None);
        put(
            &s,
            "2025-01-21-050002_INCR_1",
            0x4000028,
            0x4000100,
            Some("0/2000028"),
        );
        put(
            &s,
            "2025-01-22-050002_INCR_2",
            0x6000028,
            0x6000100,
            Some("0/4000028"),
        );
        // A synthetic full combined from the round keeps INCR_2's start.
        put(&s, "2025-01-23-050002_FULL_0", 0x6000028, 0x6000100, None);
        put(
            &s,
            "2025-01-24-050002_INCR_1",
            0x8000028,
            0x8000100,
            Some("0/6000028"),
        );
        // Not a backup name: a killed run's staging directory.
        s.write_atomic("main/backups/.2025-01-25-050002_INCR_2.tmp/x", b"")
            .unwrap();
        let c = Catalog::rebuild(&s, "main", None).unwrap();
        let names: Vec<_> = c
            .backups
            .iter()
            .map(|b| (b.name.as_str(), b.round, b.parent.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("2025-01-20-050002_FULL_0", 1, None),
                (
                    "2025-01-21-050002_INCR_1",
                    1,
                    Some("2025-01-20-050002_FULL_0")
                ),
                (
                    "2025-01-22-050002_INCR_2",
                    1,
                    Some("2025-01-21-050002_INCR_1")
                ),
                ("2025-01-23-050002_FULL_0", 2, None),
                // Both INCR_2 and the synthetic full started there: the newer one is the parent.
                (
                    "2025-01-24-050002_INCR_1",
                    2,
                    Some("2025-01-23-050002_FULL_0")
                ),
            ]
        );
        assert_eq!(c.backups[0].origin, Origin::Server);
        assert_eq!(
            c.backups[3].origin,
            Origin::Synthetic {
                from: vec![
                    "2025-01-20-050002_FULL_0".into(),
                    "2025-01-21-050002_INCR_1".into(),
                    "2025-01-22-050002_INCR_2".into()
                ]
            }
        );
        let b = &c.backups[1];
        assert_eq!(
            (b.start_lsn, b.end_lsn, b.timeline, b.files),
            (Lsn(0x4000028), Lsn(0x4000100), TimeLineId(1), 1)
        );
        // What the backup takes on disk, not the manifest's sum.
        assert_eq!(
            b.bytes,
            s.size(&format!("main/backups/{}", b.name)).unwrap()
        );
        assert_eq!(b.system_identifier, Some(7_000_000_000_000_000_001));
        assert!(c.missing_parents().is_empty());

        let mut c2 = c.clone();
        c2.backups[4].verification = Verification::Passed { at: 5 };
        c2.events.push(Event {
            time: 9,
            reason: "server stopped".into(),
        });
        c2.save(&s, "main").unwrap();
        assert_eq!(Catalog::load(&s, "main").unwrap().unwrap(), c2);
        // Rebuild carries what is not on disk over from the previous catalog, by name.
        let c3 = Catalog::rebuild(&s, "main", Some(&c2)).unwrap();
        assert_eq!(c3, c2);

        // A missing parent is reported, not guessed.
        s.remove_tree("main/backups/2025-01-21-050002_INCR_1")
            .unwrap();
        let c4 = Catalog::rebuild(&s, "main", None).unwrap();
        let missing: Vec<_> = c4
            .missing_parents()
            .iter()
            .map(|b| b.name.clone())
            .collect();
        assert_eq!(missing, ["2025-01-22-050002_INCR_2"]);
    }

    #[test]
    fn next_backup_follows_rounds() {
        let mut c = Catalog::default();
        let mut seen = Vec::new();
        for d in 0..6i64 {
            let n = c.next_backup(2, false, 1_737_608_402 + d * 86_400).unwrap();
            seen.push(n.name.to_string());
            let mut r = BackupRecord {
                name: n.name.to_string(),
                kind: if n.parent.is_some() {
                    BackupKind::Incremental
                } else {
                    BackupKind::Full
                },
                origin: Origin::Server,
                parent: n.parent,
                round: n.round,
                index: n.name.index,
                start_lsn: Lsn(1),
                end_lsn: Lsn(2),
                timeline: TimeLineId(1),
                system_identifier: None,
                start_time: n.name.time,
                end_time: None,
                bytes: 0,
                files: 0,
                duration_secs: None,
                verification: Verification::NotVerified,
            };
            r.round = n.round;
            c.add(r);
        }
        assert_eq!(
            seen,
            [
                "2025-01-23-050002_FULL_0",
                "2025-01-24-050002_INCR_1",
                "2025-01-25-050002_INCR_2",
                "2025-01-26-050002_FULL_0",
                "2025-01-27-050002_INCR_1",
                "2025-01-28-050002_INCR_2",
            ]
        );
        assert_eq!(c.backups[5].round, 2);
        let f = c.next_backup(2, true, 1_737_608_402 + 9 * 86_400).unwrap();
        assert_eq!((f.name.kind, f.round, f.parent), (NameKind::Full, 3, None));
        assert_eq!(c.wal_backups().len(), 6);
    }

    #[test]
    fn version_and_damage_refused() {
        let t = tempfile::tempdir().unwrap();
        let s = LocalDir::new(t.path());
        s.write_atomic("main/catalog.json", b"{\"format_version\": 99}")
            .unwrap();
        assert!(matches!(
            Catalog::load(&s, "main"),
            Err(CatalogError::Version { found: 99, .. })
        ));
        s.write_atomic(
            "main/catalog.json",
            b"{\"format_version\": 1, \"backups\": [",
        )
        .unwrap();
        let e = Catalog::load(&s, "main").unwrap_err().to_string();
        assert!(e.contains("--rebuild-catalog"), "{e}");
    }
}
