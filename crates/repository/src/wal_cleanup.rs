//! Which archived WAL files to delete, decided from names only (timeline, segment number)
//! and the kept backups' start LSNs and timelines — never from file times.

use std::collections::BTreeMap;

use pgincr_types::{Lsn, TimeLineId};

use crate::config::WalKeep;

/// What WAL cleanup needs of a kept backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalBackup {
    pub start_lsn: Lsn,
    pub timeline: TimeLineId,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WalPlan {
    /// Names from the listing to delete, sorted.
    pub delete: Vec<String>,
    /// Names kept because they are not recognised (never deleted by guess).
    pub unrecognized: Vec<String>,
    /// How many names are kept (recognised or not).
    pub kept: usize,
}

const COMPRESSION_SUFFIXES: [&str; 3] = [".zst", ".lz4", ".gz"];

enum WalName {
    Segment(TimeLineId, u64),
    Partial(TimeLineId, u64),
    /// `<segment>.<offset>.backup`: the backup that started at this position.
    BackupHistory(TimeLineId, Lsn),
    History,
}

fn classify(name: &str, seg_size: u64) -> Option<WalName> {
    let base = COMPRESSION_SUFFIXES
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    if let Some((tli, segno)) = pgincr_wal::segment_name::parse_segment_file_name(base, seg_size) {
        return Some(WalName::Segment(tli, segno));
    }
    if let Some(seg) = base.strip_suffix(".partial") {
        let (tli, segno) = pgincr_wal::segment_name::parse_segment_file_name(seg, seg_size)?;
        return Some(WalName::Partial(tli, segno));
    }
    if let Some(rest) = base.strip_suffix(".backup") {
        let (seg, off) = rest.split_once('.')?;
        let (tli, segno) = pgincr_wal::segment_name::parse_segment_file_name(seg, seg_size)?;
        if off.len() != 8 {
            return None;
        }
        let off = u64::from_str_radix(off, 16).ok()?;
        let start = pgincr_wal::segment_name::segment_start(segno, seg_size);
        return Some(WalName::BackupHistory(tli, Lsn(start.0.checked_add(off)?)));
    }
    let hex = base.strip_suffix(".history")?;
    (hex.len() == 8 && u32::from_str_radix(hex, 16).is_ok()).then_some(WalName::History)
}

/// The plan for an archive listing `names`, given the backups retention keeps and the WAL
/// segment size (from pg_control or the server). With no kept backup nothing is deleted.
pub fn plan_wal_cleanup(
    names: &[String],
    kept: &[WalBackup],
    seg_size: u64,
    mode: WalKeep,
) -> WalPlan {
    let mut plan = WalPlan::default();
    // Kept backups define which WAL is needed; with latest-backup only the newest one does.
    let needed: Vec<WalBackup> = match mode {
        WalKeep::OldestBackup => kept.to_vec(),
        WalKeep::LatestBackup => kept
            .iter()
            .max_by_key(|b| (b.start_lsn, b.timeline))
            .copied()
            .into_iter()
            .collect(),
    };
    if needed.is_empty() || !pgincr_wal::segment_name::is_valid_segment_size(seg_size) {
        plan.kept = names.len();
        return plan;
    }
    // Per timeline with a needed backup: the first segment it needs.
    let mut own: BTreeMap<TimeLineId, u64> = BTreeMap::new();
    for b in &needed {
        let s = b.start_lsn.segment(seg_size);
        own.entry(b.timeline)
            .and_modify(|v| *v = (*v).min(s))
            .or_insert(s);
    }
    // A segment of timeline T is needed from the earliest start of a needed backup on T or
    // an earlier timeline: recovery from a backup on an earlier timeline follows the history
    // into T at the switch point, which lies after that backup's start. A timeline earlier
    // than every needed backup is needed from the earliest start (more than recovery reads,
    // the safe side). Timelines later than every needed backup's are kept whole.
    let newest_tli = own.keys().next_back().copied();
    let earliest = own.values().min().copied();
    let cutoff = |tli: TimeLineId| {
        if newest_tli.is_none_or(|n| tli > n) {
            return None;
        }
        own.range(..=tli).map(|(_, &s)| s).min().or(earliest)
    };
    for name in names {
        let delete = match classify(name, seg_size) {
            None => {
                plan.unrecognized.push(name.clone());
                false
            }
            Some(WalName::History) => false,
            Some(WalName::Segment(tli, segno)) => cutoff(tli).is_some_and(|c| segno < c),
            // Kept unless older than every kept backup on its own timeline.
            Some(WalName::Partial(tli, segno)) => own.get(&tli).is_some_and(|&c| segno < c),
            // Goes with its backup: kept while a kept backup (any mode) started there.
            Some(WalName::BackupHistory(tli, lsn)) => {
                !kept.iter().any(|b| b.timeline == tli && b.start_lsn == lsn)
            }
        };
        if delete {
            plan.delete.push(name.clone());
        } else {
            plan.kept += 1;
        }
    }
    plan.delete.sort();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn b(tli: u32, segno: u64) -> WalBackup {
        WalBackup {
            start_lsn: Lsn(segno * SEG + 0x28),
            timeline: TimeLineId(tli),
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn timeline_switch() {
        // Timeline 1 to segment 5, promoted at segment 5 to timeline 2; a kept backup on
        // each; segments of timeline 3 (a later promotion) are kept whole.
        let listing = names(&[
            "000000010000000000000001",
            "000000010000000000000002.gz",
            "000000010000000000000003",
            "000000010000000000000004.lz4",
            "000000010000000000000005.partial",
            "00000002.history",
            "000000020000000000000005",
            "000000020000000000000006.zst",
            "000000020000000000000007",
            "00000003.history",
            "000000030000000000000002",
            "000000010000000000000003.00000028.backup",
            "000000010000000000000001.00000028.backup",
            "000000020000000000000007.00000028.backup",
            "archive_status",
        ]);
        let kept = [b(1, 3), b(2, 7)];
        let p = plan_wal_cleanup(&listing, &kept, SEG, WalKeep::OldestBackup);
        assert_eq!(
            p.delete,
            names(&[
                "000000010000000000000001",
                "000000010000000000000001.00000028.backup",
                "000000010000000000000002.gz",
            ])
        );
        // Recovery from the timeline 1 backup continues on timeline 2 from segment 5.
        assert!(!p.delete.contains(&"000000020000000000000005".to_string()));
        assert_eq!(p.unrecognized, names(&["archive_status"]));
        assert_eq!(p.kept + p.delete.len(), listing.len());

        // Only the timeline 2 backup kept: timeline 1 WAL before its start goes, but the
        // .partial stays (no kept backup on timeline 1 to be older than), as do histories.
        let p = plan_wal_cleanup(&listing, &[b(2, 7)], SEG, WalKeep::OldestBackup);
        assert!(p
            .delete
            .contains(&"000000010000000000000004.lz4".to_string()));
        assert!(p
            .delete
            .contains(&"000000020000000000000006.zst".to_string()));
        assert!(!p
            .delete
            .contains(&"000000010000000000000005.partial".to_string()));
        assert!(!p.delete.contains(&"000000020000000000000007".to_string()));
        assert!(!p.delete.iter().any(|n| n.ends_with(".history")));
        assert!(!p.delete.contains(&"000000030000000000000002".to_string()));
    }

    #[test]
    fn partial_older_than_every_backup_on_its_timeline_goes() {
        let listing = names(&[
            "000000010000000000000002.partial",
            "000000010000000000000009.partial",
        ]);
        let p = plan_wal_cleanup(&listing, &[b(1, 5), b(1, 8)], SEG, WalKeep::OldestBackup);
        assert_eq!(p.delete, names(&["000000010000000000000002.partial"]));
    }

    #[test]
    fn latest_backup_and_nothing_kept() {
        let listing = names(&[
            "000000010000000000000003",
            "000000010000000000000007",
            "000000010000000000000003.00000028.backup",
        ]);
        let p = plan_wal_cleanup(&listing, &[b(1, 3), b(1, 7)], SEG, WalKeep::LatestBackup);
        // The older backup's WAL goes, its .backup file stays with it.
        assert_eq!(p.delete, names(&["000000010000000000000003"]));
        let p = plan_wal_cleanup(&listing, &[], SEG, WalKeep::OldestBackup);
        assert!(p.delete.is_empty());
        // A bad segment size deletes nothing rather than guess.
        assert!(
            plan_wal_cleanup(&listing, &[b(1, 7)], 12345, WalKeep::OldestBackup)
                .delete
                .is_empty()
        );
        // Lower-case or misshapen names are not WAL to pgincr.
        let odd = names(&[
            "00000001000000000000000a",
            "000000010000000000000003.backup",
            "0000000100000000000000030.gz",
        ]);
        let p = plan_wal_cleanup(&odd, &[b(1, 7)], SEG, WalKeep::OldestBackup);
        assert!(p.delete.is_empty());
        assert_eq!(p.unrecognized.len(), 3);
    }
}
