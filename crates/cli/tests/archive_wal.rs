//! `pgincr archive-push` as PostgreSQL 17's and 18's archive_command and `pgincr archive-get`
//! as restore_command: archived segments are byte-identical to the server's and pg_waldump
//! reads them; a second push of the same file succeeds, a different, truncated or foreign file
//! under an archived name is refused; a backup taken with `-X none` recovers every committed
//! row from a zstd-compressed archive; `archive-check` reports the archive without gaps.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pgincr_testkit::{give_to_server, Cluster, Major};

const BIN: &str = env!("CARGO_BIN_EXE_pgincr");

fn pgincr(args: &[&str]) -> Output {
    pgincr_testkit::output(Command::new(BIN).args(args))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits (at most 60 s) until the archiver reports `name` archived.
fn wait_archived(c: &Cluster, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = c.sql("SELECT coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver");
        if row.split('|').next() >= Some(name) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{name} not archived in 60 s (pg_stat_archiver: {row})\n{}",
                c.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Switches to a new segment and returns the name of the one just completed.
fn switch(c: &Cluster) -> String {
    c.sql("SELECT pg_walfile_name(pg_switch_wal())")
}

/// The LSN of the start of segment `name` (16 MiB segments) plus `plus` segments, as text.
fn seg_start(name: &str, plus: u64) -> String {
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap() + plus;
    let lsn = (log << 32) + seg * (16 << 20);
    format!("{:X}/{:X}", lsn >> 32, lsn as u32)
}

fn archived_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

fn archive_wal(major: Major) {
    let Some(c) = Cluster::start(major) else {
        return;
    };
    let scratch = pgincr_testkit::scratch("pgincr-archive-wal-");
    // The server account owns the parent; pgincr creates the archives themselves (0700).
    let owned = scratch.path().join("owned");
    std::fs::create_dir(&owned).unwrap();
    give_to_server(&owned);
    let plain = owned.join("wal");
    let zst = owned.join("wal-zst");
    c.sql(&format!(
        "ALTER SYSTEM SET archive_command = '{BIN} archive-push %p --archive {} --ahead 2 && {BIN} archive-push %p --archive {} --compress zstd:3'",
        s(&plain),
        s(&zst)
    ));
    c.sql("SELECT pg_reload_conf()");

    // WAL from inserts and pgbench, before and after the backup.
    c.sql("CREATE TABLE t (a int, b text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    c.pgbench(&["-i", "-q", "-s", "1"]);
    let first = switch(&c);
    wait_archived(&c, &first);
    let backup = scratch.path().join("base");
    let out = c.run(
        c.client(BIN)
            .args(["backup", "-D", s(&backup), "-X", "none", "-c", "fast"]),
    );
    drop(out);
    let label = std::fs::read_to_string(backup.join("backup_label")).unwrap();
    let backup_start = label
        .lines()
        .find_map(|l| l.strip_prefix("START WAL LOCATION: "))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_string();
    let backup_start_file = label
        .lines()
        .find_map(|l| l.strip_prefix("START WAL LOCATION: "))
        .and_then(|l| l.split("(file ").nth(1))
        .and_then(|l| l.strip_suffix(')'))
        .unwrap()
        .to_string();
    c.sql("INSERT INTO t SELECT g, 'after' FROM generate_series(20001, 30000) g");
    c.pgbench(&["-t", "200", "-c", "2", "-n"]);
    let want = c.sql("SELECT count(*), md5(string_agg(a::text || b, ',' ORDER BY a)) FROM t");
    let want_bench = c.sql("SELECT sum(abalance) FROM pgbench_accounts");
    // The restore stops here, mid-segment, so that timeline 2 starts inside a segment.
    c.sql("SELECT pg_create_restore_point('pgincr_archive_test')");
    let last = switch(&c);
    wait_archived(&c, &last);

    // Every archived segment is the server's, byte for byte; modes are 0600 / 0700.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let names = archived_names(&plain);
    let segs: Vec<&String> = names.iter().filter(|n| n.len() == 24).collect();
    assert!(segs.len() >= 3, "{names:?}");
    // The backup's history file came through archive_command too (stored as it is).
    assert!(names.iter().any(|n| n.ends_with(".backup")), "{names:?}");
    assert!(segs.iter().any(|n| **n == last), "{last} not in {names:?}");
    let pg_wal = c.data_dir().join("pg_wal");
    let mut compared = 0;
    for n in &segs {
        let ours = std::fs::read(plain.join(n)).unwrap();
        assert_eq!(
            std::fs::metadata(plain.join(n))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        if let Ok(theirs) = std::fs::read(pg_wal.join(n)) {
            assert!(ours == theirs, "{n} differs from the server's");
            compared += 1;
        }
        // The zstd archive holds the same bytes, and archive-get gives them back.
        assert!(zst.join(format!("{n}.zst")).exists(), "{n}.zst missing");
        let dest = scratch.path().join("got");
        let o = pgincr(&["archive-get", n, s(&dest), "--archive", s(&zst)]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            std::fs::read(&dest).unwrap() == ours,
            "{n}: zstd copy differs"
        );
    }
    assert!(compared >= 2, "only {compared} segments still in pg_wal");
    let zst_size: u64 = archived_names(&zst)
        .iter()
        .map(|n| std::fs::metadata(zst.join(n)).unwrap().len())
        .sum();
    eprintln!(
        "{major}: {} segments archived, zstd archive {} KiB",
        segs.len(),
        zst_size / 1024
    );

    // pg_waldump reads the archive.
    let start_lsn = seg_start(segs[0], 0);
    let stop_lsn = seg_start(&last, 1);
    let o = pgincr_testkit::output(c.pg.tool("pg_waldump").args([
        "--stats",
        "-p",
        s(&plain),
        "-t",
        "1",
        "-s",
        &start_lsn,
        "-e",
        &stop_lsn,
    ]));
    let stats = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && stats.contains("Total"),
        "pg_waldump: {}\n{stats}",
        stderr(&o)
    );

    // Pushing an archived file again succeeds quietly; different content under its name fails.
    let seg0 = segs[0].clone();
    let o = pgincr(&[
        "archive-push",
        s(&plain.join(&seg0)),
        "--archive",
        s(&plain),
    ]);
    assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
    let o = pgincr(&[
        "archive-push",
        s(&plain.join(&seg0)),
        "--archive",
        s(&zst),
        "--compress",
        "zstd",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let evil = scratch.path().join("evil");
    std::fs::create_dir(&evil).unwrap();
    let mut bytes = std::fs::read(plain.join(&seg0)).unwrap();
    bytes[100_000] ^= 0xFF;
    std::fs::write(evil.join(&seg0), &bytes).unwrap();
    for dir in [&plain, &zst] {
        let o = pgincr(&["archive-push", s(&evil.join(&seg0)), "--archive", s(dir)]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("sha256") && stderr(&o).contains(&seg0),
            "{}",
            stderr(&o)
        );
    }
    // Truncated, misnamed, another system identifier: refused, naming the field.
    bytes[100_000] ^= 0xFF;
    std::fs::write(evil.join(&seg0), &bytes[..bytes.len() / 2]).unwrap();
    let o = pgincr(&["archive-push", s(&evil.join(&seg0)), "--archive", s(&plain)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("xlp_seg_size"), "{}", stderr(&o));
    let next = format!(
        "{}{:08X}",
        &seg0[..16],
        u64::from_str_radix(&seg0[16..], 16).unwrap() + 10
    );
    std::fs::write(evil.join(&next), &bytes).unwrap();
    let o = pgincr(&["archive-push", s(&evil.join(&next)), "--archive", s(&plain)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("xlp_pageaddr"), "{}", stderr(&o));
    let mut foreign = bytes.clone();
    foreign[24] ^= 1;
    let other = format!(
        "{}{:08X}",
        &seg0[..16],
        u64::from_str_radix(&seg0[16..], 16).unwrap() + 20
    );
    let mut fixed = foreign.clone();
    let segsize = 16u64 << 20;
    let addr = (u64::from_str_radix(&other[8..16], 16).unwrap() << 32)
        + u64::from_str_radix(&other[16..], 16).unwrap() * segsize;
    fixed[8..16].copy_from_slice(&addr.to_le_bytes());
    std::fs::write(evil.join(&other), &fixed).unwrap();
    let o = pgincr(&[
        "archive-push",
        s(&evil.join(&other)),
        "--archive",
        s(&plain),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("system identifier"), "{}", stderr(&o));
    assert!(!plain.join(&other).exists() && !plain.join(&next).exists());
    // Usage errors exit 2.
    assert_eq!(pgincr(&["archive-push", "x"]).status.code(), Some(2));
    assert_eq!(pgincr(&["archive-get", "x"]).status.code(), Some(2));
    // A file that is not there: exit 1, nothing printed.
    let o = pgincr(&[
        "archive-get",
        "00000009.history",
        s(&scratch.path().join("h")),
        "--archive",
        s(&plain),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));

    // The check sees one timeline and no gap; JSON agrees.
    let o = pgincr(&["archive-check", "--archive", s(&plain)]);
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let o = pgincr(&["archive-check", "--archive", s(&zst), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["timelines"].as_array().unwrap().len(), 1, "{j}");
    assert_eq!(j["timelines"][0]["runs"][0]["last"], last.as_str(), "{j}");
    assert_eq!(j["timelines"][0]["gaps"].as_array().unwrap().len(), 0);

    // Every codec round-trips through the CLI; --config/--server finds <repository>/<server>/wal.
    for (method, suffix) in [("gzip:1", ".gz"), ("lz4", ".lz4"), ("zstd:1", ".zst")] {
        let dir = scratch.path().join(format!("codec{suffix}"));
        let o = pgincr(&[
            "archive-push",
            s(&plain.join(&seg0)),
            "--archive",
            s(&dir),
            "--compress",
            method,
        ]);
        assert!(o.status.success(), "{method}: {}", stderr(&o));
        assert!(dir.join(format!("{seg0}{suffix}")).exists());
        let dest = scratch.path().join("codec-got");
        let o = pgincr(&["archive-get", &seg0, s(&dest), "--archive", s(&dir)]);
        assert!(o.status.success(), "{method}: {}", stderr(&o));
        assert!(
            std::fs::read(&dest).unwrap() == bytes,
            "{method}: round trip differs"
        );
    }
    // --ahead: the next .ready segments are archived by the same call.
    let fake_wal = scratch.path().join("fake_pg_wal");
    std::fs::create_dir_all(fake_wal.join("archive_status")).unwrap();
    for n in &segs[..3] {
        std::fs::copy(plain.join(n), fake_wal.join(n)).unwrap();
        std::fs::write(
            fake_wal.join("archive_status").join(format!("{n}.ready")),
            "",
        )
        .unwrap();
    }
    let ahead = scratch.path().join("ahead");
    let o = pgincr(&[
        "archive-push",
        s(&fake_wal.join(segs[0])),
        "--archive",
        s(&ahead),
        "--ahead",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for n in &segs[..3] {
        assert!(
            std::fs::read(ahead.join(n)).unwrap() == std::fs::read(plain.join(n)).unwrap(),
            "{n}"
        );
    }
    let repo = scratch.path().join("repo");
    let config = scratch.path().join("pgincr.toml");
    std::fs::write(
        &config,
        format!(
            "[repository]\npath = '{}'\n[server.main]\nconninfo = 'host=/tmp'\n",
            s(&repo)
        ),
    )
    .unwrap();
    let o = pgincr(&[
        "archive-push",
        s(&plain.join(&seg0)),
        "--config",
        s(&config),
        "--server",
        "main",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(repo.join("main/wal").join(&seg0).exists());
    let o = pgincr(&[
        "archive-push",
        s(&plain.join(&seg0)),
        "--config",
        s(&config),
        "--server",
        "other",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("[server.other]"), "{}", stderr(&o));

    // A full file system: refused with a clear message, nothing half-written left, the
    // archived copy intact, and the push succeeds once there is room (as the archiver retries).
    if is_root() {
        let full = scratch.path().join("full");
        std::fs::create_dir(&full).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
            .arg(&full)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        let _unmount = Unmount(full.clone());
        let dir = full.join("wal");
        let push = |n: &str| pgincr(&["archive-push", s(&plain.join(n)), "--archive", s(&dir)]);
        assert!(push(segs[0]).status.success());
        let o = push(segs[1]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("file system is full"), "{}", stderr(&o));
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            !left.iter().any(|n| n.ends_with(".tmp") || n == segs[1]),
            "{left:?}"
        );
        assert!(
            std::fs::read(dir.join(segs[0])).unwrap()
                == std::fs::read(plain.join(segs[0])).unwrap()
        );
        std::fs::remove_file(dir.join(segs[0])).unwrap();
        let o = push(segs[1]);
        assert!(o.status.success(), "{}", stderr(&o));
    }

    // Restore: the -X none backup recovers from the compressed archive through archive-get.
    std::fs::write(
        backup.join("postgresql.auto.conf"),
        format!(
            "{}\nrestore_command = '{BIN} archive-get %f %p --archive {} --prefetch 2'\n\
             recovery_target_name = 'pgincr_archive_test'\nrecovery_target_action = 'promote'\n",
            std::fs::read_to_string(backup.join("postgresql.auto.conf")).unwrap_or_default(),
            s(&zst)
        ),
    )
    .unwrap();
    std::fs::write(backup.join("recovery.signal"), "").unwrap();
    let r = Cluster::start_on(major, &backup).expect("installed");
    let deadline = Instant::now() + Duration::from_secs(60);
    while r.sql("SELECT pg_is_in_recovery()") == "t" {
        assert!(Instant::now() < deadline, "still in recovery\n{}", r.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        r.sql("SELECT count(*), md5(string_agg(a::text || b, ',' ORDER BY a)) FROM t"),
        want
    );
    assert_eq!(
        r.sql("SELECT sum(abalance) FROM pgbench_accounts"),
        want_bench
    );
    let log = r.log();
    // Prefetching went through its spool in pg_wal; nothing is left there but its marker.
    let spool = r.data_dir().join("pg_wal/pgincr-spool");
    let left: Vec<String> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(
        log.contains(&format!("restored log file \"{last}\" from archive")),
        "{log}"
    );
    assert_eq!(
        r.sql("SELECT timeline_id FROM pg_control_checkpoint()"),
        "2"
    );

    // The restored server is on timeline 2: archive its history file and first segment by
    // hand (it runs with archive_mode off), and the check follows the switch from the backup.
    r.sql("INSERT INTO t SELECT g, 'tli2' FROM generate_series(30001, 31000) g");
    let tli2_seg = r.sql("SELECT pg_walfile_name(pg_switch_wal())");
    assert!(tli2_seg.starts_with("00000002"), "{tli2_seg}");
    let r_wal = r.data_dir().join("pg_wal");
    let history = std::fs::read_to_string(r_wal.join("00000002.history")).unwrap();
    // The switch is mid-segment: timeline 2's first segment is `last`'s number, and its first
    // page is a copy of timeline 1's (xlp_tli 1 in a file named for timeline 2), which
    // archive-push must accept.
    let switch_lsn: u64 = {
        let t = history.split('\t').nth(1).unwrap();
        let (hi, lo) = t.split_once('/').unwrap();
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
    };
    assert_ne!(switch_lsn % (16 << 20), 0, "{history}");
    assert_eq!(tli2_seg[8..], last[8..], "{history}");
    let page0 = std::fs::read(r_wal.join(&tli2_seg)).unwrap();
    assert_eq!(u32::from_le_bytes(page0[4..8].try_into().unwrap()), 1);
    for name in ["00000002.history", tli2_seg.as_str()] {
        let o = pgincr(&["archive-push", s(&r_wal.join(name)), "--archive", s(&plain)]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
    }
    let o = pgincr(&[
        "archive-check",
        "--archive",
        s(&plain),
        "--json",
        "--start-tli",
        "1",
        "--start-lsn",
        &backup_start,
    ]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(o.status.success(), "{j}\n{}", stderr(&o));
    assert_eq!(j["timelines"].as_array().unwrap().len(), 2, "{j}");
    let switch_lsn = history.split('\t').nth(1).unwrap();
    assert_eq!(j["histories"]["2"][0]["parent"], 1, "{j}");
    assert_eq!(
        j["histories"]["2"][0]["switch_lsn"], switch_lsn,
        "{j}\n{history}"
    );
    let reach = &j["reachable"];
    assert_eq!(reach["target_timeline"], 2, "{j}");
    assert_eq!(reach["end_timeline"], 2, "{j}");
    assert_eq!(reach["last_segment"], tli2_seg.as_str(), "{j}");
    assert_eq!(reach["end"], "end-of-archive", "{j}");
    // Timeline 1's own `last` is not on the path (timeline 2's copy is): without it, no gap.
    std::fs::rename(plain.join(&last), scratch.path().join("moved")).unwrap();
    let o = pgincr(&[
        "archive-check",
        "--archive",
        s(&plain),
        "--json",
        "--start-tli",
        "1",
        "--start-lsn",
        &backup_start,
    ]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["reachable"]["end"], "end-of-archive", "{j}");
    assert_eq!(j["reachable"]["last_segment"], tli2_seg.as_str(), "{j}");
    // The backup's first segment is: take it away and the path has a gap there.
    assert_ne!(backup_start_file, last);
    std::fs::rename(
        plain.join(&backup_start_file),
        scratch.path().join("moved2"),
    )
    .unwrap();
    let o = pgincr(&[
        "archive-check",
        "--archive",
        s(&plain),
        "--json",
        "--start-tli",
        "1",
        "--start-lsn",
        &backup_start,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        j["reachable"]["missing_segment"],
        backup_start_file.as_str(),
        "{j}"
    );
    assert_eq!(j["reachable"]["end"], "gap", "{j}");

    // The server's archive on a full file system: archive-push fails, PostgreSQL keeps the
    // segment and retries, and once there is room the segment arrives intact.
    if is_root() {
        drop(r);
        let full = scratch.path().join("full-server");
        std::fs::create_dir(&full).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=40m", "tmpfs"])
            .arg(&full)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        let _unmount = Unmount(full.clone());
        std::fs::write(full.join("filler"), vec![1u8; 30 << 20]).unwrap();
        give_to_server(&full);
        let dir = full.join("wal");
        c.sql(&format!(
            "ALTER SYSTEM SET archive_command = '{BIN} archive-push %p --archive {}'",
            s(&dir)
        ));
        c.sql("SELECT pg_reload_conf()");
        let failed_before: u64 = c
            .sql("SELECT failed_count FROM pg_stat_archiver")
            .parse()
            .unwrap();
        c.sql("INSERT INTO t SELECT g, 'full' FROM generate_series(1, 1000) g");
        let stuck = switch(&c);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let row =
                c.sql("SELECT failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver");
            let (n, wal) = row.split_once('|').unwrap();
            if n.parse::<u64>().unwrap() > failed_before && wal == stuck {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no failure reported: {row}\n{}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(c.log().contains("file system is full"), "{}", c.log());
        let left: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            left.iter()
                .all(|n| n.starts_with(".pgincr-system-identifier")),
            "{left:?}"
        );
        std::fs::remove_file(full.join("filler")).unwrap();
        // A new segment wakes the archiver, which retries the stuck one first.
        c.sql("INSERT INTO t SELECT g, 'room' FROM generate_series(1, 10) g");
        let after = switch(&c);
        wait_archived(&c, &after);
        let ours = std::fs::read(dir.join(&stuck)).unwrap();
        assert!(ours == std::fs::read(c.data_dir().join("pg_wal").join(&stuck)).unwrap());
    }
}

fn is_root() -> bool {
    pgincr_testkit::output(Command::new("id").arg("-u")).stdout == b"0\n"
}

/// Unmounts on drop (before the scratch directory holding the mount point goes).
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn archive_wal_pg17() {
    archive_wal(Major::V17);
}

#[test]
fn archive_wal_pg18() {
    archive_wal(Major::V18);
}
