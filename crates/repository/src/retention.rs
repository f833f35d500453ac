//! Which whole rounds to remove: never the newest round, never a backup a kept backup
//! depends on, and with `keep_for` every round needed to restore to any point in the window.

use std::collections::BTreeSet;

use crate::catalog::{BackupRecord, Catalog};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep the newest N rounds.
    pub keep_rounds: Option<u32>,
    /// Keep every round needed to restore to any point in the last N seconds.
    pub keep_for: Option<u64>,
}

/// One removal: a whole round, its backups oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundRemoval {
    pub round: u32,
    pub backups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionPlan {
    /// Oldest round first; remove in this order.
    pub remove: Vec<RoundRemoval>,
    pub kept_rounds: Vec<u32>,
    /// Why the oldest kept round is kept.
    pub reason: String,
}

impl RetentionPlan {
    pub fn removed_names(&self) -> impl Iterator<Item = &str> {
        self.remove
            .iter()
            .flat_map(|r| r.backups.iter().map(String::as_str))
    }
}

/// The plan for `catalog` at `now` (Unix seconds). With neither keep_rounds nor keep_for
/// everything is kept.
pub fn plan_retention(catalog: &Catalog, policy: RetentionPolicy, now: i64) -> RetentionPlan {
    let rounds: BTreeSet<u32> = catalog.backups.iter().map(|b| b.round).collect();
    let Some(&newest) = rounds.last() else {
        return RetentionPlan::default();
    };
    let (mut oldest_kept, mut reason) = (newest, format!("round {newest} is the newest"));
    let mut any_rule = false;
    if let Some(n) = policy.keep_rounds {
        any_rule = true;
        let r = rounds
            .iter()
            .rev()
            .nth(n.max(1) as usize - 1)
            .or_else(|| rounds.first())
            .copied()
            .unwrap_or(newest);
        if r < oldest_kept {
            (oldest_kept, reason) = (r, format!("keep_rounds = {n}"));
        }
    }
    if let Some(secs) = policy.keep_for {
        any_rule = true;
        let window_start = now.saturating_sub(i64::try_from(secs).unwrap_or(i64::MAX));
        // A point T is restored from the newest backup that can restore before T; for the
        // window's start that is the newest backup restorable at or before it. Its round and
        // every later one are needed. No such backup: every round is needed.
        let base = catalog
            .backups
            .iter()
            .filter(|b| b.restorable_from() <= window_start)
            .map(|b| b.round)
            .max();
        let r = base.unwrap_or_else(|| rounds.first().copied().unwrap_or(newest));
        if r < oldest_kept {
            (oldest_kept, reason) = (
                r,
                format!(
                    "keep_for window starts at {}",
                    pgincr_types::time::format_utc(window_start, None, "UTC")
                ),
            );
        }
    }
    if !any_rule {
        oldest_kept = rounds.first().copied().unwrap_or(newest);
        reason = "no keep_rounds or keep_for set".into();
    }
    // A kept backup's parent chain must stay, whatever round it is in.
    let mut cutoff = oldest_kept;
    for b in catalog.backups.iter().filter(|b| b.round >= oldest_kept) {
        for dep in ancestors(catalog, b) {
            if dep.round < cutoff {
                cutoff = dep.round;
                reason = format!("{} depends on {}", b.name, dep.name);
            }
        }
    }
    let remove = rounds
        .iter()
        .filter(|&&r| r < cutoff)
        .map(|&r| RoundRemoval {
            round: r,
            backups: catalog
                .backups
                .iter()
                .filter(|b| b.round == r)
                .map(|b| b.name.clone())
                .collect(),
        })
        .collect();
    RetentionPlan {
        remove,
        kept_rounds: rounds.into_iter().filter(|&r| r >= cutoff).collect(),
        reason,
    }
}

/// The backups `b` needs to be restored, nearest first. Stops at a missing parent.
fn ancestors<'a>(catalog: &'a Catalog, b: &BackupRecord) -> Vec<&'a BackupRecord> {
    let mut out: Vec<&BackupRecord> = Vec::new();
    let mut cur = b.parent.as_deref();
    while let Some(p) = cur.and_then(|n| catalog.get(n)) {
        if out.iter().any(|o| o.name == p.name) || out.len() > catalog.backups.len() {
            break;
        }
        out.push(p);
        cur = p.parent.as_deref();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{BackupKind, Origin, Verification};
    use pgincr_types::{Lsn, TimeLineId};

    fn rec(name: &str, round: u32, parent: Option<&str>, t: i64) -> BackupRecord {
        BackupRecord {
            name: name.into(),
            kind: if parent.is_some() {
                BackupKind::Incremental
            } else {
                BackupKind::Full
            },
            origin: Origin::Server,
            parent: parent.map(str::to_string),
            round,
            index: 0,
            start_lsn: Lsn(1),
            end_lsn: Lsn(2),
            timeline: TimeLineId(1),
            system_identifier: None,
            start_time: t,
            end_time: Some(t + 10),
            bytes: 0,
            files: 0,
            duration_secs: None,
            verification: Verification::NotVerified,
        }
    }

    fn cat(v: Vec<BackupRecord>) -> Catalog {
        Catalog {
            backups: v,
            ..Catalog::default()
        }
    }

    #[test]
    fn keeps_dependencies_across_rounds() {
        // Round 3's incremental was taken on top of round 2's last backup (a fallback that
        // should not happen, but retention must not break it).
        let c = cat(vec![
            rec("a", 1, None, 0),
            rec("b", 2, None, 100),
            rec("c", 2, Some("b"), 200),
            rec("d", 3, None, 300),
            rec("e", 3, Some("c"), 400),
        ]);
        let p = plan_retention(
            &c,
            RetentionPolicy {
                keep_rounds: Some(1),
                keep_for: None,
            },
            500,
        );
        assert_eq!(p.removed_names().collect::<Vec<_>>(), ["a"]);
        assert_eq!(p.kept_rounds, [2, 3]);
        assert!(p.reason.contains("e depends on c"), "{}", p.reason);
    }

    #[test]
    fn missing_parent_does_not_stop_retention() {
        let c = cat(vec![
            rec("a", 1, None, 0),
            rec("b", 2, None, 100),
            rec("c", 2, Some("gone"), 200),
        ]);
        let p = plan_retention(
            &c,
            RetentionPolicy {
                keep_rounds: Some(1),
                keep_for: None,
            },
            300,
        );
        assert_eq!(p.removed_names().collect::<Vec<_>>(), ["a"]);
        assert_eq!(c.missing_parents().len(), 1);
    }

    #[test]
    fn union_of_rules_and_no_rule() {
        let c = cat(vec![
            rec("a", 1, None, 0),
            rec("b", 2, None, 1000),
            rec("c", 3, None, 2000),
        ]);
        // keep_rounds=1 alone would keep only round 3; keep_for needs round 2 as the base.
        let p = plan_retention(
            &c,
            RetentionPolicy {
                keep_rounds: Some(1),
                keep_for: Some(500),
            },
            2100,
        );
        assert_eq!(p.kept_rounds, [2, 3]);
        assert!(p.reason.contains("keep_for"), "{}", p.reason);
        // Window before every backup: everything is needed.
        let p = plan_retention(
            &c,
            RetentionPolicy {
                keep_rounds: None,
                keep_for: Some(5000),
            },
            2100,
        );
        assert!(p.remove.is_empty());
        assert!(plan_retention(&c, RetentionPolicy::default(), 2100)
            .remove
            .is_empty());
        // keep_rounds = 0 still keeps the newest round.
        let p = plan_retention(
            &c,
            RetentionPolicy {
                keep_rounds: Some(0),
                keep_for: None,
            },
            2100,
        );
        assert_eq!(p.kept_rounds, [3]);
        assert!(
            plan_retention(&Catalog::default(), RetentionPolicy::default(), 0)
                .remove
                .is_empty()
        );
    }
}
