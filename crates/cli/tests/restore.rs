//! `pgincr restore` and `pgincr drill` against real PostgreSQL 17 and 18, one cluster per
//! version: point-in-time targets (time, LSN, XID, restore point, immediate, end of WAL) with
//! rows before the target present and after it absent, a missing WAL segment and a non-empty
//! directory refused before anything is written, a drill that passes and records RTO/RPO,
//! and a drill that finds a corrupt block planted in a backup.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pgincr_testkit::{give_to_server, Cluster, Major};
use serde_json::Value;

struct Env {
    c: Cluster,
    _scratch: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    out: PathBuf,
}

impl Env {
    fn wal(&self) -> PathBuf {
        self.root.join("main/wal")
    }

    fn pgincr(&self, sub: &str) -> Command {
        let mut cmd = self.c.client(env!("CARGO_BIN_EXE_pgincr"));
        cmd.arg(sub).arg("--config").arg(&self.config);
        cmd
    }

    fn run(&self) -> Value {
        let out = self.pgincr("run").arg("--json").output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn wait_archived(&self) {
        let seg = self.c.sql("SELECT pg_walfile_name(pg_switch_wal())");
        let p = self.wal().join(&seg);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !p.exists() {
            assert!(Instant::now() < deadline, "{seg} was not archived in 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `pgincr restore --to <out>/<name> ARGS`.
    fn restore(&self, name: &str, args: &[&str]) -> (PathBuf, Output) {
        let dir = self.out.join(name);
        let out = self
            .pgincr("restore")
            .arg("--to")
            .arg(&dir)
            .args(args)
            .output()
            .unwrap();
        (dir, out)
    }

    /// Restores with `args`, starts it, waits for recovery to end (promote at the target),
    /// and returns the tags present in `pitr`.
    fn tags_after(&self, name: &str, args: &[&str]) -> String {
        let (dir, out) = self.restore(name, args);
        assert!(
            out.status.success(),
            "restore {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = promoted(self.c.major(), &dir);
        r.sql("SELECT string_agg(DISTINCT tag, ',' ORDER BY tag) FROM pitr")
    }
}

/// Starts a restored directory and waits until recovery has ended (promoted).
fn promoted(major: Major, dir: &std::path::Path) -> Cluster {
    let r = Cluster::start_on(major, dir).expect("installed");
    let deadline = Instant::now() + Duration::from_secs(120);
    while r.sql("SELECT pg_is_in_recovery()") != "f" {
        assert!(
            Instant::now() < deadline,
            "recovery did not end:\n{}",
            r.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    r
}

fn setup(major: Major) -> Option<Env> {
    let c = Cluster::start(major)?;
    let scratch = pgincr_testkit::scratch("pgincr-restore-");
    let root = scratch.path().join("repo");
    std::fs::create_dir_all(root.join("main/wal")).unwrap();
    give_to_server(&root.join("main/wal"));
    c.sql(&format!(
        "ALTER SYSTEM SET archive_command = 'cp %p {}/%f'",
        root.join("main/wal").display()
    ));
    c.sql("SELECT pg_reload_conf()");
    let config = scratch.path().join("pgincr.toml");
    std::fs::write(
        &config,
        format!(
            "[repository]\npath = \"{}\"\n[server.main]\nconninfo = \"{}\"\ncheckpoint = \"fast\"\n\
             pg_bin = \"{}\"\n\
             [[server.main.drill_check]]\nsql = \"SELECT count(*) > 0 FROM pitr\"\n",
            root.display(),
            c.conninfo(),
            c.pg.bin.display()
        ),
    )
    .unwrap();
    let out = scratch.path().join("out");
    std::fs::create_dir(&out).unwrap();
    Some(Env {
        c,
        _scratch: scratch,
        root,
        config,
        out,
    })
}

fn insert(e: &Env, tag: &str) {
    e.c.sql(&format!(
        "INSERT INTO pitr SELECT g, '{tag}' FROM generate_series(1, 100) g"
    ));
}

fn restores(major: Major) {
    let Some(mut e) = setup(major) else {
        return;
    };
    let c = &e.c;
    c.sql("CREATE TABLE pitr (a int, tag text); CREATE TABLE dropped AS SELECT g FROM generate_series(1, 50) g");
    insert(&e, "a");
    let full = e.run();
    assert_eq!(full["decision"]["kind"], "Full");
    insert(&e, "b");
    // Commit timestamps have microseconds; a second's gap keeps the target clear of both.
    std::thread::sleep(Duration::from_millis(1100));
    let t_mid = c.sql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    );
    std::thread::sleep(Duration::from_millis(1100));
    insert(&e, "c");
    let lsn_after_c = c.sql("SELECT pg_current_wal_insert_lsn()");
    c.sql("SELECT pg_create_restore_point('before_drop')");
    c.sql("DROP TABLE dropped");
    let xid = c.sql("BEGIN; INSERT INTO pitr SELECT g, 'd' FROM generate_series(1, 100) g; SELECT txid_current(); COMMIT;");
    let xid = xid
        .lines()
        .find(|l| l.chars().all(|ch| ch.is_ascii_digit()) && !l.is_empty())
        .unwrap()
        .to_string();
    c.summarize();
    let incr = e.run();
    assert_eq!(incr["decision"]["kind"], "Incremental");
    insert(&e, "e");
    e.wait_archived();
    // Recovery reads the archive through `pgincr archive-get` (restore's default
    // restore_command), except where a test says otherwise.
    let rc: [&str; 0] = [];

    // End of the archived WAL (the default): even "e", committed after the last backup.
    assert_eq!(e.tags_after("end", &rc), "a,b,c,d,e");
    // The same from explicit backup directories and an archive, without the repository.
    let dirs: Vec<String> = [&full, &incr]
        .iter()
        .map(|r| {
            e.root
                .join("main/backups")
                .join(r["backup"]["name"].as_str().unwrap())
                .display()
                .to_string()
        })
        .collect();
    let wal = e.wal().display().to_string();
    let mut args = vec!["--archive", wal.as_str()];
    args.extend(rc);
    args.extend(dirs.iter().map(String::as_str));
    assert_eq!(e.tags_after("explicit", &args), "a,b,c,d,e");
    // The time between b and c: a and b only, from the full backup (the incremental ends later).
    let mut args = vec!["--time", t_mid.as_str(), "--action", "promote"];
    args.extend(rc);
    assert_eq!(e.tags_after("time", &args), "a,b");
    // The LSN after c: c present, d absent.
    let mut args = vec!["--lsn", lsn_after_c.as_str(), "--action", "promote"];
    args.extend(rc);
    assert_eq!(e.tags_after("lsn", &args), "a,b,c");
    // The transaction that wrote d, inclusive and exclusive.
    let mut args = vec!["--xid", xid.as_str(), "--action", "promote"];
    args.extend(rc);
    assert_eq!(e.tags_after("xid", &args), "a,b,c,d");
    args.push("--exclusive");
    assert_eq!(e.tags_after("xid-exclusive", &args), "a,b,c");
    // The restore point made before the DROP brings the table back.
    let mut args = vec!["--name", "before_drop", "--action", "promote"];
    args.extend(rc);
    let (dir, out) = e.restore("name", &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = promoted(major, &dir);
    assert_eq!(r.sql("SELECT count(*) FROM dropped"), "50");
    drop(r);
    // --immediate: the newest backup's consistency point (a..d, the incremental's state).
    let mut args = vec!["--immediate", "--action", "promote"];
    args.extend(rc);
    assert_eq!(e.tags_after("immediate", &args), "a,b,c,d");

    // --start: started, recovered to the end, left running for the user.
    let mut args = vec![
        "--start",
        "--json",
        "--owner",
        pgincr_testkit::SERVER_ACCOUNT,
    ];
    args.extend(rc);
    let (dir, out) = e.restore("started", &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["reached"]["state"], "production", "{r:#}");
    assert!(r["reached"]["last_transaction"].is_string(), "{r:#}");
    let pid: i32 = std::fs::read_to_string(dir.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // SIGQUIT: an immediate shutdown of the server the restore left running.
    assert_eq!(unsafe_kill(pid), 0);

    // Refusals before anything is written: a non-empty directory, a target past the WAL,
    // a missing segment.
    let busy = e.out.join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("x"), b"x").unwrap();
    let out = e
        .pgincr("restore")
        .arg("--to")
        .arg(&busy)
        .args(rc)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    let (dir, out) = e.restore("future", &["--time", "2999-01-01 00:00:00+00"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("after the last transaction") && err.contains("can restore"),
        "{err}"
    );
    assert!(!dir.exists());
    let start = incr["backup"]["start_lsn"].as_str().unwrap();
    let seg = c.sql(&format!("SELECT pg_walfile_name('{start}'::pg_lsn)"));
    let aside = e.out.join("aside");
    std::fs::rename(e.wal().join(&seg), &aside).unwrap();
    let (dir, out) = e.restore("gap", &rc);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&seg), "the missing segment is named: {err}");
    assert!(!dir.exists(), "nothing written");
    std::fs::rename(&aside, e.wal().join(&seg)).unwrap();

    // A drill: restored, started, checked, timed, recorded.
    let out = e
        .pgincr("drill")
        .arg("--json")
        .args(["--run-as", pgincr_testkit::SERVER_ACCOUNT])
        .output()
        .unwrap();
    let d: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(
        out.status.success(),
        "{d:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(d["ok"], true, "{d:#}");
    let names: Vec<&str> = d["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for n in [
        "databases",
        "amcheck",
        "visibility map",
        "user check",
        "page checksums",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert!(d["rto_secs"].as_f64().unwrap() > 0.0);
    assert!(d["rpo_secs"].is_number(), "{d:#}");
    assert_eq!(d["wal_bytes_behind_archive"].as_u64(), Some(0), "{d:#}");
    let cat: Value =
        serde_json::from_slice(&std::fs::read(e.root.join("main/catalog.json")).unwrap()).unwrap();
    assert_eq!(cat["drills"].as_array().unwrap().len(), 1);
    // Nothing of the drill is left behind.
    let left: Vec<String> = std::fs::read_dir(e.root.join("main"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("drill"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A corrupt block planted in the full backup: the drill fails, naming it.
    let full_dir = e
        .root
        .join("main/backups")
        .join(full["backup"]["name"].as_str().unwrap());
    let rel = c.sql("SELECT pg_relation_filepath('pitr')");
    let f = full_dir.join(&rel);
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[8192 / 2] ^= 0xff;
    std::fs::write(&f, &bytes).unwrap();
    let out = e
        .pgincr("drill")
        .arg("--json")
        .args([
            "--backup",
            full["backup"]["name"].as_str().unwrap(),
            "--immediate",
            "--action",
            "promote",
        ])
        .args(["--run-as", pgincr_testkit::SERVER_ACCOUNT])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["ok"], false);
    let why = d["error"].as_str().unwrap_or("");
    assert!(why.contains(&rel), "the corrupt file is named: {d:#}");
    bytes[8192 / 2] ^= 0xff;
    std::fs::write(&f, &bytes).unwrap();

    // Across a timeline switch: the old primary goes, the newest backup is restored and
    // promoted (timeline 2) as the new primary, archiving into the same repository; the
    // rotation goes on on timeline 2 (a full first: the timeline changed); a restore to the
    // latest point follows timeline 2, one to an LSN on timeline 1 stays there.
    let before_f = c.sql("SELECT pg_current_wal_insert_lsn()");
    insert(&e, "f");
    e.wait_archived();
    e.c.stop();
    let mut args = vec![
        "--start",
        "--json",
        "--owner",
        pgincr_testkit::SERVER_ACCOUNT,
    ];
    args.extend(rc);
    let (b_dir, out) = e.restore("new-primary", &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let port = r["reached"]["port"].as_u64().unwrap();
    let b_pid: i32 = std::fs::read_to_string(b_dir.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let psql_b = |sql: &str| -> String {
        let out = Command::new(e.c.pg.bin.join("psql"))
            .args(["-XAtq", "-h"])
            .arg(&b_dir)
            .args([
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // A new timeline: 2, or later when an earlier restore in this test (the --start one,
    // which keeps archiving on) already promoted one into the archive.
    let tli: u32 = psql_b("SELECT timeline_id FROM pg_control_checkpoint()")
        .parse()
        .unwrap();
    assert!(tli >= 2);
    let cfg = std::fs::read_to_string(&e.config).unwrap();
    let old_conn = e.c.conninfo();
    std::fs::write(
        &e.config,
        cfg.replace(
            &old_conn,
            &format!("host={} port={port} user=postgres", b_dir.display()),
        ),
    )
    .unwrap();
    psql_b("INSERT INTO pitr SELECT g, 'g' FROM generate_series(1, 100) g");
    let v = e.run();
    assert_eq!(v["decision"]["kind"], "Full", "{v:#}");
    assert!(
        v["decision"]["reasons"].to_string().contains("timeline"),
        "{v:#}"
    );
    assert_eq!(v["backup"]["timeline"], tli);
    psql_b("INSERT INTO pitr SELECT g, 'h' FROM generate_series(1, 100) g");
    let seg = psql_b("SELECT pg_walfile_name(pg_switch_wal())");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !e.wal().join(&seg).exists() {
        assert!(
            Instant::now() < deadline,
            "{seg} not archived by the new primary"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(e.wal().join(format!("{tli:08X}.history")).exists());
    // Latest: everything of timeline 1 (f too: the new primary replayed all of it) and the
    // new timeline's rows.
    assert_eq!(e.tags_after("latest", &rc), "a,b,c,d,e,f,g,h");
    // An LSN on timeline 1 before "f": the timeline-1 state then, nothing of the new one.
    let mut args = vec![
        "--lsn",
        before_f.as_str(),
        "--timeline",
        "1",
        "--action",
        "promote",
    ];
    args.extend(rc);
    assert_eq!(e.tags_after("old-timeline", &args), "a,b,c,d,e");
    assert_eq!(unsafe_kill(b_pid), 0);
}

#[allow(unsafe_code)]
fn unsafe_kill(pid: i32) -> i32 {
    // SAFETY: kill(2) with a PID read from the server's own postmaster.pid.
    unsafe { libc::kill(pid, libc::SIGQUIT) }
}

#[test]
fn restore_pg17() {
    restores(Major::V17);
}

#[test]
fn restore_pg18() {
    restores(Major::V18);
}
