//! The report of one `pgincr run`: what `--json` prints, what the webhook receives, and the
//! human text and markdown made from it. It says what our users put in their hand-written
//! reports: status, type, index in round, name, duration, size, WAL and backup cleanup,
//! totals, whether the round is complete and verified, and the recoverable window.

use serde::Serialize;

use crate::catalog::{BackupKind, BackupRecord};
use crate::info::Window;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    Success,
    Failure,
    DryRun,
}

/// FULL or INCR, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub kind: BackupKind,
    /// "server" or "synthetic".
    pub origin: &'static str,
    pub name: String,
    pub round: u32,
    pub index: u32,
    pub max_incrementals: u32,
    pub parent: Option<String>,
    pub reasons: Vec<String>,
    /// For a synthetic full: the backups it is combined from, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub synthetic_from: Vec<String>,
}

/// What a cleanup step removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cleanup {
    pub removed: usize,
    /// Items before the cleanup.
    pub total: usize,
    pub errors: usize,
    /// The removed names (WAL: the first and last few).
    pub names: Vec<String>,
    /// The rule that decided it.
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub full: usize,
    pub incremental: usize,
    pub repository_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoundState {
    pub round: u32,
    pub index: u32,
    pub max_incrementals: u32,
    pub complete: bool,
    /// Every backup of the round passed its manifest check.
    pub verified: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub server: String,
    pub status: RunStatus,
    /// The run's time (Unix seconds) and as text.
    pub time: i64,
    pub time_text: String,
    pub dry_run: bool,
    pub system_identifier: Option<String>,
    pub decision: Option<Decision>,
    /// The backup this run made and recorded.
    pub backup: Option<BackupRecord>,
    pub error: Option<String>,
    pub duration_secs: f64,
    pub wal_cleanup: Cleanup,
    pub backup_cleanup: Cleanup,
    pub totals: Totals,
    pub round: Option<RoundState>,
    pub window: Option<Window>,
    pub warnings: Vec<String>,
    /// Seconds per phase: prepare (lock, repair, catalog, server identity, decision),
    /// backup (the engine's own time), verify, backup_and_verify, record, retention,
    /// wal_cleanup.
    pub phase_secs: std::collections::BTreeMap<&'static str, f64>,
}

impl RunReport {
    pub fn new(server: &str, now: i64, dry_run: bool) -> RunReport {
        RunReport {
            server: server.to_string(),
            status: RunStatus::Failure,
            time: now,
            time_text: pgincr_types::time::format_utc(now, None, "UTC"),
            dry_run,
            system_identifier: None,
            decision: None,
            backup: None,
            error: None,
            duration_secs: 0.0,
            wal_cleanup: Cleanup::default(),
            backup_cleanup: Cleanup::default(),
            totals: Totals::default(),
            round: None,
            window: None,
            warnings: Vec::new(),
            phase_secs: std::collections::BTreeMap::new(),
        }
    }

    /// 0 done (or planned), 1 the backup failed.
    pub fn exit_code(&self) -> i32 {
        match self.status {
            RunStatus::Success | RunStatus::DryRun => 0,
            RunStatus::Failure => 1,
        }
    }

    fn kind_text(&self) -> String {
        match &self.decision {
            Some(d) => {
                let k = match d.kind {
                    BackupKind::Full if d.origin == "synthetic" => "FULL (synthetic)",
                    BackupKind::Full => "FULL",
                    BackupKind::Incremental => "INCR",
                };
                format!("{k} {}/{}", d.index, d.max_incrementals)
            }
            None => "-".into(),
        }
    }

    /// The human report `pgincr run` prints.
    pub fn text(&self) -> String {
        let mut t = String::new();
        let status = match self.status {
            RunStatus::Success => "success",
            RunStatus::Failure => "FAILURE",
            RunStatus::DryRun => "dry run (nothing changed)",
        };
        t.push_str(&format!("pgincr run {}: {status}\n", self.server));
        if let Some(d) = &self.decision {
            t.push_str(&format!("  decision:   {} {}\n", self.kind_text(), d.name));
            for r in &d.reasons {
                t.push_str(&format!("    because   {r}\n"));
            }
            if let Some(p) = &d.parent {
                t.push_str(&format!("  parent:     {p}\n"));
            }
        }
        if let Some(b) = &self.backup {
            t.push_str(&format!(
                "  backup:     {} ({}, {} to {}, timeline {})\n",
                b.name,
                human_bytes(b.bytes),
                b.start_lsn,
                b.end_lsn,
                b.timeline
            ));
        }
        if let Some(e) = &self.error {
            t.push_str(&format!("  error:      {e}\n"));
        }
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        t.push_str(&format!(
            "  backups:    {verb} {} of {} ({} errors){}\n",
            self.backup_cleanup.removed,
            self.backup_cleanup.total,
            self.backup_cleanup.errors,
            list(&self.backup_cleanup.names)
        ));
        t.push_str(&format!(
            "  WAL:        {verb} {} of {} archived files ({} errors){}\n",
            self.wal_cleanup.removed,
            self.wal_cleanup.total,
            self.wal_cleanup.errors,
            list(&self.wal_cleanup.names)
        ));
        t.push_str(&format!(
            "  totals:     {} full, {} incremental, repository {}\n",
            self.totals.full,
            self.totals.incremental,
            human_bytes(self.totals.repository_bytes)
        ));
        if let Some(r) = &self.round {
            t.push_str(&format!(
                "  round:      {} at {}/{}, {}, {}\n",
                r.round,
                r.index,
                r.max_incrementals,
                if r.complete { "complete" } else { "open" },
                if r.verified {
                    "verified"
                } else {
                    "NOT all verified"
                }
            ));
        }
        if let Some(w) = &self.window {
            t.push_str(&format!("  recoverable: {}\n", w.text()));
        }
        t.push_str(&format!("  duration:   {:.1} s\n", self.duration_secs));
        for w in &self.warnings {
            t.push_str(&format!("  warning:    {w}\n"));
        }
        t
    }

    /// The markdown chat notifiers send.
    pub fn markdown(&self) -> String {
        let mut m = format!(
            "### pgincr {}: {}\n\n",
            self.server,
            match self.status {
                RunStatus::Success => "backup succeeded",
                RunStatus::Failure => "backup FAILED",
                RunStatus::DryRun => "dry run",
            }
        );
        let mut line = |k: &str, v: String| m.push_str(&format!("- **{k}**: {v}\n"));
        line("type", self.kind_text());
        if let Some(d) = &self.decision {
            line("name", d.name.clone());
        }
        if let Some(e) = &self.error {
            line("error", e.clone());
        }
        line("duration", format!("{:.1} s", self.duration_secs));
        if let Some(b) = &self.backup {
            line("size", human_bytes(b.bytes));
        }
        line(
            "WAL cleanup",
            format!(
                "{} removed / {} total / {} errors",
                self.wal_cleanup.removed, self.wal_cleanup.total, self.wal_cleanup.errors
            ),
        );
        line(
            "backup cleanup",
            format!(
                "{} removed / {} total / {} errors",
                self.backup_cleanup.removed, self.backup_cleanup.total, self.backup_cleanup.errors
            ),
        );
        line(
            "totals",
            format!(
                "{} full, {} incremental, {}",
                self.totals.full,
                self.totals.incremental,
                human_bytes(self.totals.repository_bytes)
            ),
        );
        if let Some(r) = &self.round {
            line(
                "round",
                format!(
                    "{} ({}/{}), {}, {}",
                    r.round,
                    r.index,
                    r.max_incrementals,
                    if r.complete { "complete" } else { "open" },
                    if r.verified {
                        "verified"
                    } else {
                        "not all verified"
                    }
                ),
            );
        }
        if let Some(w) = &self.window {
            line("recoverable", w.text());
        }
        for w in &self.warnings {
            line("warning", w.clone());
        }
        m
    }

    /// What the notifiers send.
    pub fn notification(&self) -> pgincr_notify::Notification {
        let status = match self.status {
            RunStatus::Failure => pgincr_notify::Status::Failure,
            _ => pgincr_notify::Status::Success,
        };
        pgincr_notify::Notification {
            status,
            title: format!("pgincr backup {}: {}", self.server, status.as_str()),
            markdown: self.markdown(),
            report: serde_json::to_value(self).unwrap_or(serde_json::Value::Null),
        }
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(": {}", names.join(", "))
    }
}

/// 1.5 GiB, 320 MiB, 12 KiB, 100 B.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    let unit = UNITS.get(u).copied().unwrap_or("B");
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(100), "100 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn failure_report_exits_one_and_names_the_error() {
        let mut r = RunReport::new("main", 1_737_608_402, false);
        r.error = Some("cannot connect to the server: refused".into());
        assert_eq!(r.exit_code(), 1);
        assert!(r.text().contains("FAILURE"));
        let n = r.notification();
        assert_eq!(n.status, pgincr_notify::Status::Failure);
        assert!(n.markdown.contains("cannot connect"));
        assert_eq!(n.report["server"], "main");
    }
}
