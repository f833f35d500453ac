//! `pgincr check`: before the first run and for monitoring, everything a rotation needs from
//! the server and the repository, each failure with its fix. The archive check forces a WAL
//! switch and waits until that segment arrives in this server's `wal/` directory.

use std::time::{Duration, Instant};

use pgincr_protocol::Connection;
use serde::Serialize;

use crate::config::Config;
use crate::rotation::{connection, Repository, RunError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warning,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckItem {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
    /// What to do about a failure or warning.
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub server: String,
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    /// 0 when nothing failed (warnings allowed), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.items.iter().any(|i| i.verdict == Verdict::Failed))
    }

    pub fn text(&self) -> String {
        let mut t = format!("pgincr check {}\n", self.server);
        for i in &self.items {
            let v = match i.verdict {
                Verdict::Ok => "ok  ",
                Verdict::Warning => "WARN",
                Verdict::Failed => "FAIL",
            };
            t.push_str(&format!("  [{v}] {:<20} {}\n", i.name, i.detail));
            if let Some(f) = &i.fix {
                t.push_str(&format!("         fix: {f}\n"));
            }
        }
        t
    }

    fn push(&mut self, name: &'static str, verdict: Verdict, detail: String, fix: Option<String>) {
        self.items.push(CheckItem {
            name,
            verdict,
            detail,
            fix,
        });
    }

    fn ok(&mut self, name: &'static str, detail: String) {
        self.push(name, Verdict::Ok, detail, None);
    }

    fn fail(&mut self, name: &'static str, detail: String, fix: impl Into<String>) {
        self.push(name, Verdict::Failed, detail, Some(fix.into()));
    }

    fn warn(&mut self, name: &'static str, detail: String, fix: impl Into<String>) {
        self.push(name, Verdict::Warning, detail, Some(fix.into()));
    }
}

/// Runs every check for `server`; waits at most `archive_timeout` for the switched segment.
pub async fn check(
    config: &Config,
    server: &str,
    archive_timeout: Duration,
) -> Result<CheckReport, RunError> {
    let sc = config
        .server
        .get(server)
        .ok_or_else(|| RunError::Config(format!("no [server.{server}] in the configuration")))?;
    let conn = connection(sc)?;
    let repo = Repository::new(&config.repository.path, server);
    let mut r = CheckReport {
        server: server.to_string(),
        items: Vec::new(),
    };
    check_repository(&repo, &mut r);
    check_replication(&conn, &mut r).await;
    match sql_connection(&conn).await {
        Ok(mut c) => {
            check_settings(&mut c, &repo, &mut r).await;
            check_archiving(&mut c, &repo, archive_timeout, &mut r).await;
            let _ = c.close().await;
        }
        Err(e) => r.fail(
            "connection",
            format!("cannot connect: {e}"),
            "check conninfo, pg_hba.conf, and the password (PGPASSWORD, ~/.pgpass or password_file)",
        ),
    }
    Ok(r)
}

async fn sql_connection(
    conn: &pgincr_protocol::Config,
) -> Result<Connection, pgincr_protocol::Error> {
    let mut c = conn.clone();
    c.replication = None;
    if c.dbname.is_none() {
        c.dbname = Some("postgres".into());
    }
    pgincr_protocol::connect(&c).await
}

fn check_repository(repo: &Repository, r: &mut CheckReport) {
    if let Err(e) = repo.create_dirs() {
        r.fail(
            "repository",
            format!("cannot create {}: {e}", repo.server_dir().display()),
            "create the directory and give it to the user pgincr runs as (mode 0700)",
        );
        return;
    }
    let probe = repo
        .server_dir()
        .join(format!(".check.pgincr-tmp-{}", std::process::id()));
    match std::fs::write(&probe, b"pgincr check\n").and_then(|()| std::fs::remove_file(&probe)) {
        Ok(()) => r.ok(
            "repository",
            format!("{} is writable", repo.server_dir().display()),
        ),
        Err(e) => {
            r.fail(
                "repository",
                format!("cannot write in {}: {e}", repo.server_dir().display()),
                "give the directory to the user pgincr runs as",
            );
            return;
        }
    }
    match free_bytes(&repo.server_dir()) {
        Some(free) => {
            let need = crate::catalog::Catalog::load(repo.storage(), repo.server())
                .ok()
                .flatten()
                .and_then(|c| {
                    c.backups
                        .iter()
                        .filter(|b| b.kind == crate::catalog::BackupKind::Full)
                        .map(|b| b.bytes)
                        .max()
                })
                .unwrap_or(0);
            let text = format!(
                "{} free{}",
                crate::report::human_bytes(free),
                if need > 0 {
                    format!(
                        ", the largest full backup takes {}",
                        crate::report::human_bytes(need)
                    )
                } else {
                    String::new()
                }
            );
            if need > 0 && free < need.saturating_add(need / 5) {
                r.warn(
                    "free space",
                    text,
                    "a new round needs room for a full backup: free space or lower keep_rounds",
                );
            } else {
                r.ok("free space", text);
            }
        }
        None => r.warn(
            "free space",
            "unknown (statvfs failed)".into(),
            "check the file system",
        ),
    }
}

#[allow(unsafe_code)] // statvfs(2)
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `s` points to writable memory of the right
    // type; statvfs fills it completely when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let s = unsafe { s.assume_init() };
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

async fn check_replication(conn: &pgincr_protocol::Config, r: &mut CheckReport) {
    let repl = pgincr_protocol::replication_config(conn, "pgincr");
    match pgincr_protocol::connect(&repl).await {
        Ok(mut c) => {
            match c.identify_system().await {
                Ok(i) => r.ok(
                    "replication",
                    format!(
                        "system {} on timeline {} at {}",
                        i.system_identifier, i.timeline, i.xlogpos
                    ),
                ),
                Err(e) => r.fail("replication", format!("IDENTIFY_SYSTEM failed: {e}"), "the role needs the REPLICATION attribute: ALTER ROLE ... REPLICATION"),
            }
            let _ = c.close().await;
        }
        Err(e) => r.fail(
            "replication",
            format!("cannot open a replication connection: {e}"),
            "add a `host replication <user> <address> scram-sha-256` line to pg_hba.conf (or `local replication`), give the role REPLICATION, and check max_wal_senders",
        ),
    }
}

async fn show(c: &mut Connection, name: &str) -> Option<String> {
    let sets = c
        .simple_query(&format!("SELECT current_setting('{name}', true)"))
        .await
        .ok()?;
    sets.first()?.text(0, 0).map(str::to_string)
}

async fn check_settings(c: &mut Connection, repo: &Repository, r: &mut CheckReport) {
    let major = c.server_major().unwrap_or(0);
    if major >= 17 {
        r.ok("version", format!("PostgreSQL {major}"));
    } else {
        r.fail(
            "version",
            format!("PostgreSQL {major}"),
            "incremental backup needs PostgreSQL 17 or later",
        );
    }
    match show(c, "wal_level").await.as_deref() {
        Some("replica") | Some("logical") => r.ok("wal_level", "replica or higher".into()),
        other => r.fail(
            "wal_level",
            other.unwrap_or("unknown").to_string(),
            "ALTER SYSTEM SET wal_level = replica; then restart the server",
        ),
    }
    match show(c, "summarize_wal").await.as_deref() {
        Some("on") => r.ok("summarize_wal", "on".into()),
        other => r.fail("summarize_wal", other.unwrap_or("unknown").to_string(), "ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf(); (incrementals need it; until then every run takes a full backup)"),
    }
    if let Some(keep) = show(c, "wal_summary_keep_time").await {
        check_keep_time(&keep, repo, r);
    }
    match show(c, "max_wal_senders").await.and_then(|v| v.parse::<u32>().ok()) {
        Some(n) if n >= 2 => r.ok("max_wal_senders", n.to_string()),
        Some(n) => r.fail("max_wal_senders", n.to_string(), "a backup uses two walsenders (data and WAL): set max_wal_senders to at least 2 plus your standbys, then restart"),
        None => {}
    }
    match show(c, "archive_mode").await.as_deref() {
        Some("on") | Some("always") => r.ok("archive_mode", "on".into()),
        other => r.fail(
            "archive_mode",
            other.unwrap_or("unknown").to_string(),
            "ALTER SYSTEM SET archive_mode = on; then restart the server",
        ),
    }
    let wal_dir = repo.wal_dir().display().to_string();
    let command = show(c, "archive_command").await.unwrap_or_default();
    let library = show(c, "archive_library").await.unwrap_or_default();
    let suggested = format!("ALTER SYSTEM SET archive_command = 'pgincr archive-push %p --archive {wal_dir}'; SELECT pg_reload_conf(); (or 'test ! -f {wal_dir}/%f && cp %p {wal_dir}/%f')");
    if !library.is_empty() {
        r.warn(
            "archive_command",
            format!("archive_library = {library}: cannot tell where it writes"),
            format!("make sure it archives into {wal_dir}; the archive check below tells"),
        );
    } else if command.is_empty() || command == "(disabled)" {
        r.fail("archive_command", "not set".into(), suggested);
    } else if command.contains(&wal_dir) {
        r.ok("archive_command", command);
    } else {
        r.fail(
            "archive_command",
            format!("{command} does not write into {wal_dir}"),
            suggested,
        );
    }
    let role = c
        .simple_query("SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user")
        .await
        .ok()
        .and_then(|s| {
            let s = s.first()?;
            Some((s.text(0, 0)? == "t", s.text(0, 1)? == "t"))
        });
    match role {
        Some((true, _)) => r.ok("privileges", "superuser".into()),
        Some((false, true)) => {
            // Without them the run still works, but cannot see the summarizer's state first.
            let can = c
                .simple_query("SELECT has_function_privilege('pg_get_wal_summarizer_state()', 'EXECUTE') AND has_function_privilege('pg_available_wal_summaries()', 'EXECUTE')")
                .await
                .ok()
                .and_then(|s| s.first().and_then(|s| s.text(0, 0).map(|t| t == "t")))
                .unwrap_or(false);
            if can {
                r.ok(
                    "privileges",
                    "REPLICATION, and EXECUTE on the WAL summary functions".into(),
                );
            } else {
                r.warn("privileges", "REPLICATION, but no EXECUTE on pg_get_wal_summarizer_state() / pg_available_wal_summaries()".into(), "GRANT EXECUTE ON FUNCTION pg_get_wal_summarizer_state(), pg_available_wal_summaries() TO <role>; so runs can see expired summaries before a backup fails");
            }
        }
        Some((false, false)) => r.fail(
            "privileges",
            "the role has neither SUPERUSER nor REPLICATION".into(),
            "ALTER ROLE <role> REPLICATION;",
        ),
        None => r.warn(
            "privileges",
            "could not read pg_roles".into(),
            "check the role's privileges by hand",
        ),
    }
}

/// Forces a WAL switch and waits until that segment is in the repository's `wal/`.
async fn check_archiving(
    c: &mut Connection,
    repo: &Repository,
    timeout: Duration,
    r: &mut CheckReport,
) {
    // Some WAL first, so the switch has a segment to finish.
    let _ = c
        .simple_query("SELECT pg_logical_emit_message(false, 'pgincr', 'check')")
        .await;
    let seg = match c
        .simple_query("SELECT pg_walfile_name(pg_switch_wal())")
        .await
    {
        Ok(s) => match s.first().and_then(|s| s.text(0, 0)) {
            Some(n) => n.to_string(),
            None => {
                r.fail(
                    "archive",
                    "pg_switch_wal() returned nothing".into(),
                    "run it by hand to see why",
                );
                return;
            }
        },
        Err(e) => {
            r.fail(
                "archive",
                format!("cannot force a WAL switch: {e}"),
                "run pgincr check as a role that may call pg_switch_wal() (GRANT EXECUTE ON FUNCTION pg_switch_wal() TO <role>), on the primary",
            );
            return;
        }
    };
    let started = Instant::now();
    let wal = repo.wal_dir();
    loop {
        let found = ["", ".gz", ".lz4", ".zst"]
            .iter()
            .any(|s| wal.join(format!("{seg}{s}")).is_file());
        if found {
            r.ok(
                "archive",
                format!(
                    "segment {seg} arrived in {} after {:.1} s",
                    wal.display(),
                    started.elapsed().as_secs_f64()
                ),
            );
            return;
        }
        if started.elapsed() >= timeout {
            let hint = c
                .simple_query("SELECT coalesce(last_failed_wal, ''), coalesce(last_failed_time::text, '') FROM pg_stat_archiver")
                .await
                .ok()
                .and_then(|s| {
                    let s = s.first()?;
                    let f = s.text(0, 0)?;
                    (!f.is_empty()).then(|| format!("; pg_stat_archiver: last failed {f} at {}", s.text(0, 1).unwrap_or("")))
                })
                .unwrap_or_default();
            r.fail(
                "archive",
                format!("segment {seg} did not arrive in {} within {} s{hint}", wal.display(), timeout.as_secs()),
                "check archive_command (it must write into this directory, as a user that may write there) and the server log",
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `wal_summary_keep_time` against the interval between backups: summaries that expire
/// before the next planned incremental turn every run into a full backup.
fn check_keep_time(keep: &str, repo: &Repository, r: &mut CheckReport) {
    let Some(keep_secs) = guc_seconds(keep) else {
        r.ok("wal_summary_keep_time", keep.to_string());
        return;
    };
    if keep_secs == 0 {
        r.ok("wal_summary_keep_time", "0 (summaries never expire)".into());
        return;
    }
    let starts: Vec<i64> = crate::catalog::Catalog::load(repo.storage(), repo.server())
        .ok()
        .flatten()
        .map(|c| c.backups.iter().map(|b| b.start_time).collect())
        .unwrap_or_default();
    let longest = starts
        .windows(2)
        .filter_map(|w| match w {
            [a, b] => Some(b.saturating_sub(*a)),
            _ => None,
        })
        .max();
    match longest {
        Some(gap) if gap > 0 && u64::try_from(gap).unwrap_or(0) * 3 / 2 > keep_secs => r.warn(
            "wal_summary_keep_time",
            format!("{keep}, but backups are up to {gap} s apart: summaries may expire before the next incremental, which then becomes a full backup"),
            "raise wal_summary_keep_time well above the interval between runs (ALTER SYSTEM SET wal_summary_keep_time = '10d'; SELECT pg_reload_conf();)",
        ),
        _ => r.ok("wal_summary_keep_time", format!("{keep} (summaries older than this expire; an incremental after that becomes a full backup)")),
    }
}

/// A time GUC as SHOW prints it (`10d`, `36h`, `90min`, `30s`, `0`) in seconds.
fn guc_seconds(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "min" => 60,
        "ms" => return Some(n / 1000),
        "s" => 1,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::guc_seconds;

    #[test]
    fn time_gucs() {
        assert_eq!(guc_seconds("10d"), Some(864_000));
        assert_eq!(guc_seconds("90min"), Some(5_400));
        assert_eq!(guc_seconds("0"), Some(0));
        assert_eq!(guc_seconds("weird"), None);
    }
}
