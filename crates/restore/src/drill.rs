//! `pgincr drill`: a restore test. The chosen chain is restored into a hidden directory on the
//! repository's file system, started as a throwaway PostgreSQL (a free port, a Unix socket in
//! its own directory, no TCP, archiving off: nothing of it can reach production or the
//! repository), recovered to the target, checked, timed, and removed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgincr_repository::catalog::{Catalog, DrillRecord};
use pgincr_repository::Repository;
use serde::Serialize;

use crate::{restore, Plan, RestoreError, RestoreOptions, StartSpec};

/// A check the drill runs on the recovered cluster.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub pg_bin: Option<PathBuf>,
    /// The account the throwaway server runs as when pgincr runs as root.
    pub run_as: String,
    /// Keep the restored directory (stopped) for inspection.
    pub keep: bool,
    /// SQL that must return `t`, with the database to run it in.
    pub user_checks: Vec<(String, String)>,
    pub timeout: Duration,
    /// Unix seconds at the drill's start (RPO is measured against it).
    pub now: i64,
    pub restore_command: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub server: String,
    pub ok: bool,
    pub chain: Vec<String>,
    pub target: crate::TargetOptions,
    /// Seconds from the drill's start until the server accepted connections at the target,
    /// and its parts.
    pub rto_secs: f64,
    pub restore_secs: f64,
    pub recovery_secs: f64,
    /// The point reached: replay LSN and the commit time of the last transaction replayed.
    pub reached_lsn: Option<String>,
    pub last_transaction: Option<String>,
    /// Seconds between the last replayed transaction and the drill's start: the data a
    /// restore now would lose (if the source committed after it).
    pub rpo_secs: Option<f64>,
    /// Bytes of archived WAL past the point reached (0: every archived transaction replayed).
    pub wal_bytes_behind_archive: Option<u64>,
    pub checks: Vec<CheckResult>,
    pub error: Option<String>,
    pub kept: Option<PathBuf>,
}

impl DrillReport {
    pub fn text(&self) -> String {
        let mut t = format!(
            "pgincr drill {}: {}\n  chain:      {}\n",
            self.server,
            if self.ok { "passed" } else { "FAILED" },
            self.chain.join(" + ")
        );
        t.push_str(&format!(
            "  RTO:        {:.1} s (restore {:.1} s, recovery {:.1} s)\n",
            self.rto_secs, self.restore_secs, self.recovery_secs
        ));
        t.push_str(&format!(
            "  reached:    {} (last transaction {})\n",
            self.reached_lsn.as_deref().unwrap_or("-"),
            self.last_transaction.as_deref().unwrap_or("-")
        ));
        if let Some(r) = self.rpo_secs {
            t.push_str(&format!(
                "  RPO:        {r:.0} s before the drill; {} bytes of archived WAL not replayed\n",
                self.wal_bytes_behind_archive.unwrap_or(0)
            ));
        }
        for c in &self.checks {
            t.push_str(&format!(
                "  [{}] {:<18} {}\n",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            ));
        }
        if let Some(e) = &self.error {
            t.push_str(&format!("  error:      {e}\n"));
        }
        if let Some(k) = &self.kept {
            t.push_str(&format!("  kept:       {}\n", k.display()));
        }
        t
    }

    /// What the catalog keeps of it.
    pub fn record(&self, time: i64) -> DrillRecord {
        DrillRecord {
            time,
            ok: self.ok,
            backup: self.chain.last().cloned().unwrap_or_default(),
            rto_secs: self.rto_secs,
            restore_secs: self.restore_secs,
            recovery_secs: self.recovery_secs,
            rpo_secs: self.rpo_secs,
            reached_lsn: self.reached_lsn.clone(),
            failed_checks: self
                .checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| c.name.clone())
                .collect(),
            error: self.error.clone(),
        }
    }
}

/// Runs a drill of `plan` for `repo`'s server. Never leaves a server running; removes its
/// directory unless `keep`.
pub fn drill(repo: &Repository, plan: &Plan, opts: &DrillOptions) -> DrillReport {
    let started = Instant::now();
    let mut report = DrillReport {
        server: repo.server().to_string(),
        ok: false,
        chain: plan.chain.clone(),
        target: plan.target.clone(),
        rto_secs: 0.0,
        restore_secs: 0.0,
        recovery_secs: 0.0,
        reached_lsn: None,
        last_transaction: None,
        rpo_secs: None,
        wal_bytes_behind_archive: None,
        checks: Vec::new(),
        error: None,
        kept: None,
    };
    let place = repo.server_dir().join("drill");
    let work = match pgincr_io::staging::scratch_dir(&place, "drill") {
        Ok((w, _)) => w,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    if let Err(e) = run(&work, plan, opts, started, &mut report) {
        report.error = Some(e.to_string());
    }
    report.ok = report.error.is_none() && report.checks.iter().all(|c| c.ok);
    if opts.keep {
        report.kept = Some(work.join("data"));
    } else if let Err(e) = std::fs::remove_dir_all(&work) {
        if e.kind() != std::io::ErrorKind::NotFound {
            report.error.get_or_insert(format!(
                "could not remove the drill directory {}: {e}",
                work.display()
            ));
            report.ok = false;
        }
    }
    report
}

fn run(
    work: &Path,
    plan: &Plan,
    opts: &DrillOptions,
    started: Instant,
    report: &mut DrillReport,
) -> Result<(), RestoreError> {
    use std::os::unix::fs::DirBuilderExt;
    let data = work.join("data");
    let sock = work.join("sock");
    for d in [work, &sock] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(d)
            .map_err(|source| RestoreError::Io {
                context: "could not create",
                path: d.to_path_buf(),
                source,
            })?;
    }
    // The server account must reach the socket and log directory; the data directory is
    // handed over by `start`.
    let run_as = pgincr_server::RunAs::unless_root(&opts.run_as);
    run_as.give(work)?;
    let ro = RestoreOptions {
        to: data.clone(),
        force: false,
        tablespace_mappings: Vec::new(),
        copy_mode: pgincr_combine::CopyMode::Copy,
        restore_command: opts.restore_command.clone(),
        // The throwaway server must never write into the repository's archive.
        extra_settings: vec![("archive_mode".into(), "off".into())],
        verify: true,
    };
    let r = restore(plan, &ro)?;
    report.restore_secs = r.restore_secs;
    let spec = StartSpec {
        pg_bin: opts.pg_bin.clone(),
        run_as: opts.run_as.clone(),
        port: None,
        socket_dir: sock.clone(),
        log_file: work.join("server.log"),
        settings: vec![
            ("listen_addresses".into(), String::new()),
            ("archive_mode".into(), "off".into()),
            ("primary_conninfo".into(), String::new()),
            // max_wal_senders and the like stay as the source had them: hot standby refuses
            // to recover with lower settings than the primary's ("recovery aborted because
            // of insufficient parameter settings").
            ("summarize_wal".into(), "off".into()),
        ],
        timeout: opts.timeout,
    };
    let (mut server, reached) = crate::start(&data, &spec)?;
    report.recovery_secs = reached.recovery_secs;
    report.rto_secs = started.elapsed().as_secs_f64();
    report.reached_lsn = reached.lsn.clone();
    report.last_transaction = reached.last_transaction.clone();
    if let Some(t) = &reached.last_transaction {
        if let Ok(micros) = server.psql(
            "postgres",
            &format!(
                "SELECT (extract(epoch FROM '{}'::timestamptz) * 1000000)::bigint",
                t.replace('\'', "")
            ),
        ) {
            if let Ok(m) = micros.parse::<i64>() {
                report.rpo_secs = Some((opts.now as f64) - (m as f64) / 1e6);
            }
        }
    }
    if let (Some(l), Some(end)) = (&reached.lsn, plan.window.latest_lsn) {
        if let Ok(l) = l.parse::<pgincr_types::Lsn>() {
            report.wal_bytes_behind_archive = Some(end.0.saturating_sub(l.0));
        }
    }
    checks(&server, opts, report);
    // A clean shutdown, then the page checksums of the stopped copy.
    server.stop(pgincr_server::StopMode::Fast, opts.timeout)?;
    report
        .checks
        .push(page_checksums(server.installation(), &data, &run_as));
    Ok(())
}

fn check(report: &mut DrillReport, name: &str, r: Result<String, String>) {
    let (ok, detail) = match r {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    report.checks.push(CheckResult {
        name: name.into(),
        ok,
        detail,
    });
}

fn checks(server: &pgincr_server::Server, opts: &DrillOptions, report: &mut DrillReport) {
    let dbs: Vec<String> = match server.psql(
        "postgres",
        "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1",
    ) {
        Ok(t) => t.lines().map(str::to_string).collect(),
        Err(e) => {
            check(report, "databases", Err(e.to_string()));
            return;
        }
    };
    check(
        report,
        "databases",
        Ok(format!("{} connectable: {}", dbs.len(), dbs.join(", "))),
    );
    let ts = server.psql(
        "postgres",
        "SELECT count(*) FILTER (WHERE pg_tablespace_location(oid) <> '' AND pg_tablespace_size(oid) >= 0), count(*) - 2 FROM pg_tablespace",
    );
    check(
        report,
        "tablespaces",
        ts.map(|t| {
            format!(
                "{} user tablespace(s) readable",
                t.split('|').next().unwrap_or("0")
            )
        })
        .map_err(|e| e.to_string()),
    );
    // amcheck: every heap and B-tree index of every database.
    let amcheck = server.installation().tool_path("pg_amcheck");
    if amcheck.is_file() {
        let mut cmd = server.client(&amcheck);
        cmd.args(["--all", "--install-missing"]);
        let r = match cmd.output() {
            Ok(o) if o.status.success() => {
                Ok("every table and B-tree index of every database passed pg_amcheck".to_string())
            }
            Ok(o) => Err(format!(
                "pg_amcheck found problems ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .chain(String::from_utf8_lossy(&o.stderr).lines())
                    .take(6)
                    .collect::<Vec<_>>()
                    .join(" | ")
            )),
            Err(e) => Err(format!("could not run {}: {e}", amcheck.display())),
        };
        check(report, "amcheck", r);
    } else {
        // No amcheck: at least read every table once.
        let mut errors = Vec::new();
        for db in &dbs {
            if let Err(e) = server.psql(db, "DO $$DECLARE r record; n bigint; BEGIN FOR r IN SELECT oid::regclass AS t FROM pg_class WHERE relkind IN ('r','m','t') LOOP EXECUTE format('SELECT count(*) FROM %s', r.t) INTO n; END LOOP; END$$") {
                errors.push(format!("{db}: {e}"));
            }
        }
        check(
            report,
            "tables readable",
            if errors.is_empty() {
                Ok("every table of every database read".into())
            } else {
                Err(errors.join("; "))
            },
        );
    }
    // The visibility map against the heap: what amcheck does not see (the stale bits of
    // PostgreSQL 17 incremental restores give wrong index-only scans).
    let mut bad = Vec::new();
    let mut checked = 0u64;
    for db in &dbs {
        let r = server.psql(
            db,
            "CREATE EXTENSION IF NOT EXISTS pg_visibility; \
             SELECT count(*) || '|' || coalesce(sum((SELECT count(*) FROM pg_check_visible(c.oid)) + (SELECT count(*) FROM pg_check_frozen(c.oid))), 0) \
             FROM pg_class c WHERE c.relkind IN ('r', 'm', 't')",
        );
        match r {
            Ok(t) => {
                let mut it = t.lines().last().unwrap_or("").split('|');
                let n: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let wrong: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                checked += n;
                if wrong > 0 {
                    bad.push(format!(
                        "{db}: {wrong} tuple(s) on all-visible/all-frozen pages that are not"
                    ));
                }
            }
            Err(e) => bad.push(format!("{db}: {e}")),
        }
    }
    check(
        report,
        "visibility map",
        if bad.is_empty() {
            Ok(format!(
                "{checked} relation(s) checked with pg_check_visible/pg_check_frozen"
            ))
        } else {
            Err(bad.join("; "))
        },
    );
    for (db, sql) in &opts.user_checks {
        let r = match server.psql(db, sql) {
            Ok(t) if t.trim() == "t" => Ok(format!("{db}: true")),
            Ok(t) => Err(format!("{db}: returned {t:?}, not true")),
            Err(e) => Err(format!("{db}: {e}")),
        };
        check(report, "user check", r);
    }
}

fn page_checksums(
    pg: &pgincr_server::Installation,
    data: &Path,
    run_as: &pgincr_server::RunAs,
) -> CheckResult {
    let mut cmd = pg.command("pg_checksums");
    cmd.arg("--check").arg("-D").arg(data);
    let (ok, detail) = match run_as.apply(&mut cmd).map(|()| cmd.output()) {
        Ok(Ok(o)) if o.status.success() => (
            true,
            "every page checksum verified (pg_checksums --check)".to_string(),
        ),
        Ok(Ok(o)) => {
            let err = String::from_utf8_lossy(&o.stderr).to_string();
            if err.contains("not enabled") {
                (
                    true,
                    "data checksums are off in this cluster: not checked".to_string(),
                )
            } else {
                (
                    false,
                    format!(
                        "pg_checksums: {}{}",
                        String::from_utf8_lossy(&o.stdout).trim(),
                        err.trim()
                    ),
                )
            }
        }
        Ok(Err(e)) => (false, format!("could not run pg_checksums: {e}")),
        Err(e) => (false, e.to_string()),
    };
    CheckResult {
        name: "page checksums".into(),
        ok,
        detail,
    }
}

/// Appends `record` to the catalog's drill history (bounded) and saves it.
pub fn record_drill(
    repo: &Repository,
    catalog: &mut Catalog,
    record: DrillRecord,
) -> Result<(), RestoreError> {
    catalog.drills.push(record);
    let excess = catalog.drills.len().saturating_sub(100);
    catalog.drills.drain(..excess);
    catalog.save(repo.storage(), repo.server())?;
    Ok(())
}
