//! `pgincr run`, `info` and `check` against real PostgreSQL 17 and 18, one cluster per version
//! shared by every scenario: many runs with an injected clock and a workload between them (the
//! FULL/INCR sequence, names, retention and WAL cleanup checked by listing what remains), the
//! oldest and newest kept backups restored with upstream pg_combinebackup plus the archived
//! WAL, a synthetic round start compared with pg_combinebackup, expired summaries, a held
//! lock, notifications to a local HTTP server, SIGKILL at random points, a stopped server.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pgincr_testkit::{give_to_server, Cluster, Major};
use serde_json::Value;

/// 2025-01-23 05:00:02 UTC: the first run; each later one a day on.
const T0: i64 = 1_737_608_402;
const DAY: i64 = 86_400;

struct Env {
    c: Cluster,
    _scratch: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
}

impl Env {
    fn wal(&self, server: &str) -> PathBuf {
        self.root.join(server).join("wal")
    }

    fn backups(&self, server: &str) -> PathBuf {
        self.root.join(server).join("backups")
    }

    fn cmd(&self, sub: &str, server: &str) -> Command {
        let mut cmd = self.c.client(env!("CARGO_BIN_EXE_pgincr"));
        cmd.arg(sub)
            .arg("--config")
            .arg(&self.config)
            .arg("--server")
            .arg(server);
        cmd
    }

    /// `pgincr run --json` at day `day`; returns the exit code and the report.
    fn run(&self, server: &str, day: i64, extra: &[&str]) -> (i32, Value, Output) {
        let out = self
            .cmd("run", server)
            .arg("--json")
            .arg("--now")
            .arg((T0 + day * DAY).to_string())
            .args(extra)
            .output()
            .unwrap();
        let code = out.status.code().unwrap_or(-1);
        let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (code, v, out)
    }

    fn run_ok(&self, server: &str, day: i64) -> Value {
        let (code, v, out) = self.run(server, day, &[]);
        assert_eq!(
            code,
            0,
            "run failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        v
    }

    fn listing(&self, server: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.backups(server))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn catalog(&self, server: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.root.join(server).join("catalog.json")).unwrap())
            .unwrap()
    }

    /// A little data, committed, in its own WAL segment (so it is archived).
    fn workload(&self, tag: &str) {
        self.c.sql(&format!(
            "INSERT INTO rot SELECT g, '{tag}' FROM generate_series(1, 500) g; \
             UPDATE rot SET b = b || '.' WHERE a % 7 = 0 AND b = '{tag}'"
        ));
        self.c.switch_wal();
    }

    /// Waits until the segment the current WAL switch closed is in `server`'s archive.
    fn wait_archived(&self, server: &str) {
        let seg = self.c.sql("SELECT pg_walfile_name(pg_switch_wal())");
        let p = self.wal(server).join(&seg);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !p.exists() {
            assert!(Instant::now() < deadline, "{seg} was not archived in 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn setup(major: Major) -> Option<Env> {
    let c = Cluster::start(major)?;
    let scratch = pgincr_testkit::scratch("pgincr-rotation-");
    let root = scratch.path().join("repo");
    // The server's archive_command writes into <repo>/main/wal as the server's account.
    for s in ["main", "syn"] {
        std::fs::create_dir_all(root.join(s).join("wal")).unwrap();
        give_to_server(&root.join(s).join("wal"));
    }
    c.sql(&format!(
        "ALTER SYSTEM SET archive_command = 'cp %p {}/%f'",
        root.join("main/wal").display()
    ));
    c.sql("SELECT pg_reload_conf()");
    c.sql("CREATE TABLE rot (a int, b text); CREATE INDEX ON rot (a)");
    let config = scratch.path().join("pgincr.toml");
    let conninfo = c.conninfo();
    std::fs::write(
        &config,
        format!(
            r#"
[repository]
path = "{root}"

[server.main]
conninfo = "{conninfo}"
max_incrementals = 2
keep_rounds = 2
checkpoint = "fast"

[server.syn]
conninfo = "{conninfo}"
max_incrementals = 1
round_start = "synthetic"
checkpoint = "fast"

[server.tar]
conninfo = "{conninfo}"
max_incrementals = 1
round_start = "synthetic"
format = "tar"
compress = "gzip"
checkpoint = "fast"
"#,
            root = root.display()
        ),
    )
    .unwrap();
    Some(Env {
        c,
        _scratch: scratch,
        root,
        config,
    })
}

fn name_of(report: &Value) -> String {
    report["backup"]["name"].as_str().unwrap().to_string()
}

fn kind_of(report: &Value) -> String {
    let d = &report["decision"];
    format!(
        "{}{}",
        d["kind"].as_str().unwrap(),
        if d["origin"] == "synthetic" { "*" } else { "" }
    )
}

/// Combines `chain` (directories, full first) with upstream pg_combinebackup into `out`.
fn upstream_combine(e: &Env, chain: &[PathBuf], out: &Path) {
    let mut cmd = e.c.pg.tool("pg_combinebackup");
    cmd.args(chain).arg("-o").arg(out);
    e.c.run(&mut cmd);
}

/// Starts `dir` with the archive as restore_command, waits for the end of recovery, and
/// returns the row count and digest of `rot`.
fn restore_and_query(e: &Env, dir: &Path, archive: &Path) -> String {
    std::fs::write(
        dir.join("postgresql.auto.conf"),
        format!("restore_command = 'cp {}/%f %p'\n", archive.display()),
    )
    .unwrap();
    std::fs::write(dir.join("recovery.signal"), b"").unwrap();
    let r = Cluster::start_on(e.c.major(), dir).expect("installed");
    let deadline = Instant::now() + Duration::from_secs(120);
    while r.sql("SELECT pg_is_in_recovery()") != "f" {
        assert!(
            Instant::now() < deadline,
            "recovery did not end:\n{}",
            r.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A heap scan and an index-only scan must agree.
    let heap = r.sql("SET enable_indexscan = off; SET enable_bitmapscan = off; SET enable_indexonlyscan = off; SELECT count(*) || '/' || md5(string_agg(a || b, ',' ORDER BY a, b)) FROM rot");
    let ios = r.sql("SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT count(a) FROM rot WHERE a > -100");
    assert_eq!(
        heap.split('/').next().unwrap(),
        ios,
        "index-only scan disagrees with the heap"
    );
    heap
}

fn source_digest(e: &Env) -> String {
    e.c.sql("SET enable_indexscan = off; SET enable_bitmapscan = off; SET enable_indexonlyscan = off; SELECT count(*) || '/' || md5(string_agg(a || b, ',' ORDER BY a, b)) FROM rot")
}

/// A one-request HTTP server on 127.0.0.1 that records the body.
fn webhook_server() -> (u16, std::thread::JoinHandle<(String, String)>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut head = String::new();
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line.to_ascii_lowercase().starts_with("content-length:") {
                len = line[15..].trim().parse().unwrap();
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let mut s = s;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .unwrap();
        (head, String::from_utf8(body).unwrap())
    });
    (port, h)
}

fn rotation(major: Major) {
    let Some(mut e) = setup(major) else {
        return;
    };

    // `check` before the first run: everything in order, the switched segment arrives.
    let out = e.cmd("check", "main").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("[ok  ] archive"), "{text}");
    // `syn`'s archive_command points elsewhere: named, with the fix.
    let out = e
        .cmd("check", "syn")
        .args(["--archive-timeout", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[FAIL] archive_command") && text.contains("fix:"),
        "{text}"
    );

    // --- Eight runs, a day apart, a workload between them.
    let mut kinds = Vec::new();
    let mut names = Vec::new();
    for day in 0..8 {
        e.workload(&format!("day{day}"));
        if day == 3 {
            // A dry run changes nothing and says what would happen.
            let before = e.listing("main");
            let (code, v, _) = e.run("main", day, &["--dry-run"]);
            assert_eq!(code, 0);
            assert_eq!(v["status"], "dry-run");
            // Round 1 (FULL_0, INCR_1, INCR_2) is complete.
            assert_eq!(v["decision"]["kind"], "Full");
            assert_eq!(v["backup_cleanup"]["removed"], 0);
            assert_eq!(e.listing("main"), before);
        }
        if day == 5 {
            // A second run while one holds the lock: exit 3, naming the holder.
            let lock = pgincr_repository::ServerLock::acquire(&e.root.join("main"), T0).unwrap();
            let (code, _, out) = e.run("main", day, &[]);
            assert_eq!(code, 3);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(&format!("pid {}", std::process::id())),
                "{err}"
            );
            drop(lock);
        }
        let v = e.run_ok("main", day);
        assert_eq!(v["status"], "success");
        kinds.push(kind_of(&v));
        names.push(name_of(&v));
        assert!(v["backup"]["verification"]["Passed"].is_object(), "{v:#}");
    }
    assert_eq!(
        kinds,
        [
            "Full",
            "Incremental",
            "Incremental",
            "Full",
            "Incremental",
            "Incremental",
            "Full",
            "Incremental"
        ]
    );
    let suffixes: Vec<&str> = names.iter().map(|n| &n[18..]).collect();
    assert_eq!(
        suffixes,
        ["FULL_0", "INCR_1", "INCR_2", "FULL_0", "INCR_1", "INCR_2", "FULL_0", "INCR_1"]
    );
    assert_eq!(names[0], "2025-01-23-050002_FULL_0");
    // keep_rounds = 2: round 1 went when round 3 started; the rest is there, nothing else.
    assert_eq!(e.listing("main"), names[3..].to_vec());
    let cat = e.catalog("main");
    let in_cat: Vec<&str> = cat["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        in_cat,
        names[3..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    // WAL cleanup by name: nothing before the oldest kept backup's start segment, everything
    // from it on.
    let oldest_start = cat["backups"][0]["start_lsn"].as_str().unwrap().to_string();
    let first_needed =
        e.c.sql(&format!("SELECT pg_walfile_name('{oldest_start}'::pg_lsn)"));
    let mut wal: Vec<String> = std::fs::read_dir(e.wal("main"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24)
        .collect();
    wal.sort();
    assert_eq!(wal.first(), Some(&first_needed), "{wal:?}");

    // --- Summaries gone (as if wal_summary_keep_time expired them): FULL, saying why.
    e.workload("day8");
    for f in std::fs::read_dir(e.c.data_dir().join("pg_wal/summaries")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let v = e.run_ok("main", 8);
    assert_eq!(kind_of(&v), "Full", "{v:#}");
    let why = v["decision"]["reasons"].to_string();
    assert!(why.contains("summar"), "{why}");
    names.push(name_of(&v));
    e.c.summarize();
    e.workload("day9");
    let v = e.run_ok("main", 9);
    assert_eq!(kind_of(&v), "Incremental");
    names.push(name_of(&v));

    // --- A row committed after the last backup, archived: both restores must have it.
    e.c.sql("INSERT INTO rot VALUES (-1, 'after the last backup')");
    e.wait_archived("main");
    let want = source_digest(&e);
    let scratch = pgincr_testkit::scratch("pgincr-rotation-restore-");
    let oldest = e.listing("main")[0].clone();
    let out = scratch.path().join("oldest");
    upstream_combine(&e, &[e.backups("main").join(&oldest)], &out);
    assert_eq!(
        restore_and_query(&e, &out, &e.wal("main")),
        want,
        "restore of {oldest}"
    );
    let newest: Vec<PathBuf> = names[names.len() - 2..]
        .iter()
        .map(|n| e.backups("main").join(n))
        .collect();
    let out = scratch.path().join("newest");
    upstream_combine(&e, &newest, &out);
    assert_eq!(
        restore_and_query(&e, &out, &e.wal("main")),
        want,
        "restore of the newest chain"
    );

    // --- info: rounds, the window reaching the archive's end, Prometheus figures.
    let out = e
        .cmd("info", "main")
        .arg("--json")
        .arg("--now")
        .arg((T0 + 9 * DAY).to_string())
        .output()
        .unwrap();
    assert!(out.status.success());
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(info["window"]["latest_lsn"].is_string(), "{info:#}");
    assert!(info["window"]["gap_at"].is_null(), "{info:#}");
    // No warning but that no drill has tested a restore yet.
    let warnings = info["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .all(|w| w.as_str().unwrap().contains("no restore test")),
        "{info:#}"
    );
    let out = e
        .cmd("info", "main")
        .args(["--format", "prometheus"])
        .output()
        .unwrap();
    let prom = String::from_utf8_lossy(&out.stdout);
    assert!(
        prom.contains("pgincr_backup_newest_age_seconds{server=\"main\",type=\"full\"}"),
        "{prom}"
    );
    assert!(
        prom.contains("pgincr_wal_archive_gap{server=\"main\"} 0"),
        "{prom}"
    );

    // --- Notifications: a webhook on 127.0.0.1 gets the report; a dead one fails nothing;
    // the URL's token and the signing secret are never printed.
    let (port, server) = webhook_server();
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret = e.root.join("webhook.secret");
    std::fs::write(&secret, "s3cr3t-signing-key\n").unwrap();
    let url_file = e.root.join("webhook.url");
    std::fs::write(
        &url_file,
        format!("http://127.0.0.1:{port}/hook/TOKEN-abc123\n"),
    )
    .unwrap();
    let cfg = std::fs::read_to_string(&e.config).unwrap();
    let notify_cfg = format!(
        "{cfg}\n[notify]\nattempts = 2\nbackoff_ms = 10\n[[notify.webhook]]\nurl_file = \"{}\"\nsecret_file = \"{}\"\n[[notify.slack]]\nurl = \"http://127.0.0.1:{dead}/services/TOKEN-dead\"\n",
        url_file.display(),
        secret.display()
    );
    std::fs::write(&e.config, notify_cfg).unwrap();
    e.workload("day10");
    let (code, v, out) = e.run("main", 10, &["-v"]);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    names.push(name_of(&v));
    let (head, body) = server.join().unwrap();
    assert!(head.starts_with("POST /hook/TOKEN-abc123"), "{head}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["server"], "main");
    assert_eq!(body["backup"]["name"], v["backup"]["name"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("notification"),
        "the dead notifier is reported: {all}"
    );
    assert!(!all.contains("TOKEN-") && !all.contains("s3cr3t"), "{all}");
    std::fs::write(&e.config, cfg).unwrap();

    // --- Synthetic round start, on server `syn` (WAL from the backups' own pg_wal).
    synthetic(&e);

    // --- Tar format, gzip: server full, incremental, synthetic full (combined to tar), each
    // checked against its manifest before it is recorded.
    tar_rotation(&e);

    // --- SIGKILL at random points: the repository stays readable, the catalog never lists a
    // partial backup, and the next run succeeds.
    kill_trials(&e, 11);

    // --- The server stopped: exit 1, the failure recorded as an event, nothing else changed.
    let before = e.listing("main");
    e.c.stop();
    let (code, v, _) = e.run("main", 30, &[]);
    assert_eq!(code, 1);
    assert_eq!(v["status"], "failure");
    assert!(v["error"].as_str().unwrap().contains("connect"), "{v:#}");
    assert_eq!(e.listing("main"), before);
    let cat = e.catalog("main");
    assert!(cat["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|ev| ev["time"] == T0 + 30 * DAY));
}

fn synthetic(e: &Env) {
    let mut v = Vec::new();
    for day in 0..4 {
        e.workload(&format!("syn{day}"));
        e.c.summarize();
        v.push(e.run_ok("syn", day));
    }
    let kinds: Vec<String> = v.iter().map(kind_of).collect();
    assert_eq!(kinds, ["Full", "Incremental", "Full*", "Incremental"]);
    let names: Vec<String> = v.iter().map(name_of).collect();
    let dirs: Vec<PathBuf> = names.iter().map(|n| e.backups("syn").join(n)).collect();
    assert_eq!(
        v[2]["backup"]["origin"]["Synthetic"]["from"],
        serde_json::json!([names[0], names[1]])
    );
    // The server sent one full backup only: every later server backup is incremental.
    for d in [&dirs[1], &dirs[3]] {
        let label = std::fs::read_to_string(d.join("backup_label")).unwrap();
        assert!(label.contains("INCREMENTAL FROM LSN"), "{label}");
    }
    // The synthetic full is what pg_combinebackup makes of the same round (visibility maps
    // aside: ours repairs stale bits that pg_combinebackup carries over, see vm_repair).
    let scratch = pgincr_testkit::scratch("pgincr-rotation-syn-");
    let reference = scratch.path().join("reference");
    upstream_combine(e, &dirs[..2], &reference);
    pgincr_testkit::assert_same_backup_except_vm(&reference, &dirs[2], "synthetic full");
    e.c.run(e.c.pg.tool("pg_verifybackup").arg(&dirs[2]));
    // The incremental on top of it combines and restores with the source's data.
    let want = source_digest(e);
    let out = scratch.path().join("restored");
    upstream_combine(e, &dirs[2..], &out);
    let empty = scratch.path().join("no-archive");
    std::fs::create_dir(&empty).unwrap();
    give_to_server(&empty);
    // Nothing was committed after the last backup: the restore is the source.
    assert_eq!(restore_and_query(e, &out, &empty), want);
}

fn tar_rotation(e: &Env) {
    let mut kinds = Vec::new();
    for day in 0..3 {
        e.workload(&format!("tar{day}"));
        e.c.summarize();
        let v = e.run_ok("tar", day);
        assert!(v["backup"]["verification"]["Passed"].is_object(), "{v:#}");
        kinds.push(kind_of(&v));
        let dir = e.backups("tar").join(name_of(&v));
        // The server's backups are compressed on the client; combine writes plain tar.
        let base = if day < 2 { "base.tar.gz" } else { "base.tar" };
        assert!(dir.join(base).is_file(), "{}", dir.display());
        if e.c.major() == Major::V18 {
            // PostgreSQL 18's pg_verifybackup reads tar backups.
            e.c.run(e.c.pg.tool("pg_verifybackup").arg("-n").arg(&dir));
        }
    }
    assert_eq!(kinds, ["Full", "Incremental", "Full*"]);
}

fn kill_trials(e: &Env, trials: u64) {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for t in 0..trials {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % 2500);
        e.workload(&format!("kill{t}"));
        let mut child = e
            .cmd("run", "main")
            .arg("--now")
            .arg((T0 + (11 + t as i64) * DAY).to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        // Readable, and every backup the catalog lists is complete.
        let out = e.cmd("info", "main").arg("--json").output().unwrap();
        assert!(
            out.status.success(),
            "trial {t}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cat = e.catalog("main");
        let listed = cat["backups"].as_array().unwrap();
        for b in listed {
            let d = e.backups("main").join(b["name"].as_str().unwrap());
            assert!(
                d.join("backup_manifest").is_file(),
                "trial {t}: {} incomplete",
                d.display()
            );
        }
        let newest = e
            .backups("main")
            .join(listed.last().unwrap()["name"].as_str().unwrap());
        e.c.run(e.c.pg.tool("pg_verifybackup").arg(&newest));
    }
    // The next run cleans up after the killed ones and succeeds.
    let v = e.run_ok("main", 11 + trials as i64);
    assert_eq!(v["status"], "success");
    let recorded: Vec<String> = e.catalog("main")["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        e.listing("main"),
        recorded,
        "leftovers remain after the clean run"
    );
}

#[test]
fn rotation_pg17() {
    rotation(Major::V17);
}

#[test]
fn rotation_pg18() {
    rotation(Major::V18);
}
