//! Many rotation days through retention and WAL cleanup, clock injected, checked by the
//! names that remain.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use pgincr_repository::naming::NameKind;
use pgincr_repository::{
    plan_retention, plan_wal_cleanup, BackupKind, BackupName, BackupRecord, Catalog, Origin,
    RetentionPolicy, Verification, WalBackup, WalKeep,
};
use pgincr_types::walfile::segment_file_name;
use pgincr_types::{Lsn, TimeLineId};

const SEG: u64 = 16 << 20;
const BASE: i64 = 1_737_608_402; // 2025-01-23 05:00:02 UTC
const DAY: i64 = 86_400;

struct Repo {
    catalog: Catalog,
    wal: Vec<String>,
    max_incrementals: u32,
}

impl Repo {
    /// One day: 4 segments of WAL, then a backup starting in the first new segment.
    fn day(&mut self, d: i64, policy: RetentionPolicy, mode: WalKeep) {
        let now = BASE + d * DAY;
        let seg0 = 4 * d as u64 + 1;
        let tli = TimeLineId(1);
        let start = Lsn(seg0 * SEG + 0x28);
        let last = self.catalog.newest().cloned();
        let (kind, index, round, parent) = match &last {
            Some(l) if l.index < self.max_incrementals => {
                (NameKind::Incr, l.index + 1, l.round, Some(l.name.clone()))
            }
            Some(l) => (NameKind::Full, 0, l.round + 1, None),
            None => (NameKind::Full, 0, 1, None),
        };
        let name = BackupName::new(now, kind, index).unwrap().to_string();
        self.wal.push(format!(
            "{}.{:08X}.backup",
            segment_file_name(tli, seg0, SEG),
            0x28
        ));
        for s in seg0..seg0 + 4 {
            // Some archives compress.
            let suffix = if s % 3 == 0 { ".zst" } else { "" };
            self.wal
                .push(format!("{}{suffix}", segment_file_name(tli, s, SEG)));
        }
        self.catalog.add(BackupRecord {
            name,
            kind: if kind == NameKind::Full {
                BackupKind::Full
            } else {
                BackupKind::Incremental
            },
            origin: Origin::Server,
            parent,
            round,
            index,
            start_lsn: start,
            end_lsn: Lsn(start.0 + 0x1000),
            timeline: tli,
            system_identifier: Some(1),
            start_time: now,
            end_time: Some(now + 600),
            bytes: 1,
            files: 1,
            duration_secs: Some(600.0),
            verification: Verification::Passed { at: now + 600 },
        });
        let plan = plan_retention(&self.catalog, policy, now + 700);
        let removed: Vec<String> = plan.removed_names().map(str::to_string).collect();
        self.catalog.backups.retain(|b| !removed.contains(&b.name));
        let kept: Vec<WalBackup> = self
            .catalog
            .backups
            .iter()
            .map(|b| WalBackup {
                start_lsn: b.start_lsn,
                timeline: b.timeline,
            })
            .collect();
        let wplan = plan_wal_cleanup(&self.wal, &kept, SEG, mode);
        self.wal.retain(|n| !wplan.delete.contains(n));
        self.check_invariants(mode);
    }

    fn check_invariants(&self, mode: WalKeep) {
        for b in &self.catalog.backups {
            if let Some(p) = &b.parent {
                assert!(
                    self.catalog.get(p).is_some(),
                    "{} lost its parent {p}",
                    b.name
                );
            }
        }
        let from = match mode {
            WalKeep::OldestBackup => self.catalog.backups.first().unwrap(),
            WalKeep::LatestBackup => self.catalog.backups.last().unwrap(),
        };
        let first = from.start_lsn.segment(SEG);
        let last = self.catalog.newest().unwrap().start_lsn.segment(SEG) + 3;
        for s in first..=last {
            let n = segment_file_name(TimeLineId(1), s, SEG);
            assert!(
                self.wal
                    .iter()
                    .any(|w| w.starts_with(&n) && !w.contains(".backup")),
                "segment {n} missing"
            );
        }
        assert!(
            self.wal
                .iter()
                .all(|w| w.contains(".backup") || w.ends_with(".history") || {
                    let seg = &w[..24];
                    u64::from_str_radix(&seg[16..], 16).unwrap() >= first
                }),
            "WAL older than needed kept: {:?}",
            self.wal.first()
        );
    }

    fn names(&self) -> Vec<String> {
        self.catalog
            .backups
            .iter()
            .map(|b| b.name.clone())
            .collect()
    }
}

fn repo() -> Repo {
    Repo {
        catalog: Catalog::default(),
        wal: vec!["00000001.history".into()],
        max_incrementals: 3,
    }
}

#[test]
fn thirty_days_keep_two_rounds() {
    let mut r = repo();
    let policy = RetentionPolicy {
        keep_rounds: Some(2),
        keep_for: None,
    };
    for d in 0..30 {
        r.day(d, policy, WalKeep::OldestBackup);
    }
    // Rounds of 4 (FULL_0, INCR_1..3): days 24..27 and 28..29 remain.
    let expect: Vec<String> = (24..30)
        .map(|d| {
            let i = (d % 4) as u32;
            let kind = if i == 0 {
                NameKind::Full
            } else {
                NameKind::Incr
            };
            BackupName::new(BASE + d * DAY, kind, i)
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(r.names(), expect);
    assert_eq!(r.names()[0], "2025-02-16-050002_FULL_0");
    // WAL from day 24's backup start (segment 97) to the newest, plus the history file and
    // the kept backups' .backup files.
    assert!(r.wal.contains(&"00000001.history".to_string()));
    let backups: Vec<_> = r.wal.iter().filter(|w| w.ends_with(".backup")).collect();
    assert_eq!(backups.len(), 6);
    assert_eq!(
        r.wal
            .iter()
            .filter(|w| !w.ends_with(".backup") && !w.ends_with(".history"))
            .count(),
        6 * 4
    );
    assert!(r.wal.contains(&"000000010000000000000061".to_string()));
    assert!(!r
        .wal
        .iter()
        .any(|w| w.starts_with("000000010000000000000060")));
}

#[test]
fn latest_backup_keeps_wal_from_newest_only() {
    let mut r = repo();
    let policy = RetentionPolicy {
        keep_rounds: Some(2),
        keep_for: None,
    };
    for d in 0..10 {
        r.day(d, policy, WalKeep::LatestBackup);
    }
    // Backups are unchanged by wal_keep; WAL starts at the newest backup's segment (37).
    assert_eq!(r.names().len(), 6);
    let segs: Vec<_> = r
        .wal
        .iter()
        .filter(|w| !w.ends_with(".backup") && !w.ends_with(".history"))
        .collect();
    assert_eq!(segs.len(), 4);
    assert_eq!(r.wal.iter().filter(|w| w.ends_with(".backup")).count(), 6);
}

#[test]
fn keep_for_keeps_the_base_round_of_the_window() {
    let mut r = repo();
    // 10 days: with rounds of 4 days the window [now-10d, now] starts inside a round whose
    // full backup is before it; that round stays.
    let policy = RetentionPolicy {
        keep_rounds: None,
        keep_for: Some(10 * DAY as u64),
    };
    for d in 0..40 {
        r.day(d, policy, WalKeep::OldestBackup);
    }
    let now = BASE + 39 * DAY + 700;
    let window_start = now - 10 * DAY;
    let oldest = r.catalog.backups.first().unwrap();
    // Something restorable at the window's start is kept...
    assert!(oldest.end_time.unwrap() <= window_start, "{}", oldest.name);
    assert_eq!(oldest.kind, BackupKind::Full);
    // ...and no more than needed: the round after it already starts inside the window.
    let second_round_full = r
        .catalog
        .backups
        .iter()
        .find(|b| b.round == oldest.round + 1)
        .unwrap();
    assert!(second_round_full.end_time.unwrap() > window_start);
    // Days 28..39: rounds starting days 28, 32, 36.
    assert_eq!(
        oldest.name,
        BackupName::new(BASE + 28 * DAY, NameKind::Full, 0)
            .unwrap()
            .to_string()
    );
}
