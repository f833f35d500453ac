//! Failure paths of `pgincr backup`: each refusal explains itself, and a failed or cancelled
//! run leaves nothing that looks like a backup while the server side ends cleanly.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pgincr_testkit::{output, Cluster, Major};

fn pgincr(c: &Cluster) -> Command {
    let mut cmd = c.client(env!("CARGO_BIN_EXE_pgincr"));
    cmd.arg("backup");
    cmd
}

fn fails(cmd: &mut Command) -> String {
    let o: Output = output(cmd);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    err
}

/// Nothing in `parent` but the names given (no target, no hidden partial directory).
fn only(parent: &Path, names: &[&str]) {
    let mut left: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(left, want, "leftovers in {}", parent.display());
}

fn wait_until(c: &Cluster, sql: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.sql(sql) != "t" {
        assert!(Instant::now() < deadline, "timed out waiting for: {sql}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A slow backup to interrupt: throttled to 32 kB/s, with a tablespace to clean up.
fn slow_backup(c: &Cluster, dir: &Path, ts_old: &Path, ts_new: &Path) -> std::process::Child {
    pgincr(c)
        .arg("-D")
        .arg(dir)
        .args(["-c", "fast", "-r", "32"])
        .arg("-T")
        .arg(format!("{}={}", ts_old.display(), ts_new.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn failures(major: Major) {
    let Some(mut c) = Cluster::start(major) else {
        return;
    };
    let scratch = pgincr_testkit::scratch("pgincr-backup-fail-");
    let s = scratch.path();
    let ts = c.create_tablespace("tsf");
    c.sql("CREATE TABLE t TABLESPACE tsf AS SELECT g FROM generate_series(1, 100000) g");

    // A non-empty target is refused before anything happens.
    let busy = s.join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("x"), b"x").unwrap();
    let e = fails(pgincr(&c).arg("-D").arg(&busy));
    assert!(e.contains("not empty"), "{e}");

    // An unreadable or corrupt old manifest is refused with the file named.
    let e = fails(
        pgincr(&c)
            .arg("-D")
            .arg(s.join("b1"))
            .arg("-i")
            .arg(s.join("missing_manifest")),
    );
    assert!(e.contains("missing_manifest"), "{e}");
    std::fs::write(
        s.join("bad_manifest"),
        b"{ \"PostgreSQL-Backup-Manifest-Version\": 2 }",
    )
    .unwrap();
    let e = fails(
        pgincr(&c)
            .arg("-D")
            .arg(s.join("b1"))
            .arg("-i")
            .arg(s.join("bad_manifest")),
    );
    assert!(e.contains("bad_manifest"), "{e}");

    // A full backup to build on.
    let full = s.join("full");
    c.run(
        pgincr(&c)
            .arg("-D")
            .arg(&full)
            .args(["-c", "fast", "-X", "none"])
            .arg("-T")
            .arg(format!("{}={}", ts.display(), s.join("ts-full").display())),
    );

    // A manifest from another system (valid checksum, other identifier) is refused.
    let m = pgincr_types::manifest::Manifest::read(&full.join("backup_manifest")).unwrap();
    let other = pgincr_types::manifest::Manifest {
        system_identifier: Some(42),
        ..m
    };
    let f = std::fs::File::create(s.join("other_manifest")).unwrap();
    other.write_to(f).unwrap();
    let e = fails(
        pgincr(&c)
            .arg("-D")
            .arg(s.join("b1"))
            .arg("-i")
            .arg(s.join("other_manifest")),
    );
    assert!(e.contains("system") && e.contains("42"), "{e}");

    // summarize_wal off: refused with the fix.
    c.sql("ALTER SYSTEM SET summarize_wal = off");
    c.sql("SELECT pg_reload_conf()");
    wait_until(&c, "SELECT current_setting('summarize_wal') = 'off'");
    let e = fails(
        pgincr(&c)
            .arg("-D")
            .arg(s.join("b1"))
            .arg("-i")
            .arg(full.join("backup_manifest")),
    );
    assert!(
        e.contains("summarize_wal") && e.contains("ALTER SYSTEM"),
        "{e}"
    );
    c.sql("ALTER SYSTEM RESET summarize_wal");
    c.sql("SELECT pg_reload_conf()");
    wait_until(&c, "SELECT current_setting('summarize_wal') = 'on'");

    // Wrong password: SQLSTATE shown, password never.
    c.sql("SET password_encryption = 'scram-sha-256'; CREATE ROLE pwuser LOGIN REPLICATION PASSWORD 'right-pw'");
    let hba = c.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("host all pwuser 127.0.0.1/32 scram-sha-256\nhost replication pwuser 127.0.0.1/32 scram-sha-256\n{old}")).unwrap();
    c.sql("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(300));
    let e = fails(
        pgincr(&c)
            .arg("-D")
            .arg(s.join("b1"))
            .args(["-h", "127.0.0.1", "-U", "pwuser", "-X", "none"])
            .env("PGPASSWORD", "wrong-pw-xyz"),
    );
    assert!(e.contains("28P01") && !e.contains("wrong-pw-xyz"), "{e}");
    // The right password works (SCRAM over TCP).
    c.run(
        pgincr(&c)
            .arg("-D")
            .arg(s.join("scram"))
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "pwuser",
                "-X",
                "stream",
                "-c",
                "fast",
            ])
            .arg("-T")
            .arg(format!("{}={}", ts.display(), s.join("ts-scram").display()))
            .env("PGPASSWORD", "right-pw"),
    );
    c.run(c.pg.tool("pg_verifybackup").arg(s.join("scram")));
    std::fs::remove_dir_all(s.join("scram")).unwrap();
    std::fs::remove_dir_all(s.join("ts-scram")).unwrap();
    std::fs::remove_file(s.join("other_manifest")).unwrap();
    std::fs::remove_file(s.join("bad_manifest")).unwrap();
    std::fs::remove_dir_all(&busy).unwrap();

    // Ctrl-C: the server's backup and temporary slot end, nothing is left behind.
    let child = slow_backup(&c, &s.join("cancelled"), &ts, &s.join("ts-cancel"));
    wait_until(&c, "SELECT count(*) > 0 FROM pg_stat_progress_basebackup");
    wait_until(
        &c,
        "SELECT count(*) > 0 FROM pg_replication_slots WHERE temporary",
    );
    // SAFETY: sending a signal to our own child.
    signal(child.id(), libc::SIGINT);
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cancel"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    wait_until(&c, "SELECT count(*) = 0 FROM pg_stat_progress_basebackup");
    wait_until(&c, "SELECT count(*) = 0 FROM pg_replication_slots");
    only(s, &["full", "ts-full"]);

    // SIGTERM (what a service manager sends) is handled exactly like Ctrl-C.
    let child = slow_backup(&c, &s.join("terminated"), &ts, &s.join("ts-term"));
    wait_until(&c, "SELECT count(*) > 0 FROM pg_stat_progress_basebackup");
    // Meanwhile, a second run into the same target is refused, naming the first.
    let e = fails(pgincr(&c).arg("-D").arg(s.join("terminated")));
    let partial = s.join(format!(".terminated.pgincr-partial-{}", child.id()));
    assert!(
        e.contains(&partial.display().to_string())
            && e.contains(&format!("process {}", child.id())),
        "{e}"
    );
    // SAFETY: sending a signal to our own child.
    signal(child.id(), libc::SIGTERM);
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("cancel"));
    wait_until(&c, "SELECT count(*) = 0 FROM pg_stat_progress_basebackup");
    wait_until(&c, "SELECT count(*) = 0 FROM pg_replication_slots");
    only(s, &["full", "ts-full"]);

    // SIGKILL leaves the staging directory; the next run into the same target removes it,
    // says so, and succeeds.
    let mut child = slow_backup(&c, &s.join("killed"), &ts, &s.join("ts-killed"));
    wait_until(&c, "SELECT count(*) > 0 FROM pg_stat_progress_basebackup");
    let partial = s.join(format!(".killed.pgincr-partial-{}", child.id()));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(partial.is_dir(), "{} missing", partial.display());
    let o = output(
        pgincr(&c)
            .arg("-D")
            .arg(s.join("killed"))
            .args(["-c", "fast", "-X", "fetch"])
            .arg("-T")
            .arg(format!(
                "{}={}",
                ts.display(),
                s.join("ts-killed").display()
            )),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!("removed \"{}\"", partial.display())),
        "{err}"
    );
    c.run(c.pg.tool("pg_verifybackup").arg(s.join("killed")));
    std::fs::remove_dir_all(s.join("killed")).unwrap();
    std::fs::remove_dir_all(s.join("ts-killed")).unwrap();
    wait_until(&c, "SELECT count(*) = 0 FROM pg_stat_progress_basebackup");
    only(s, &["full", "ts-full"]);

    // Ctrl-C before any backup started, while waiting on a server that never answers (the
    // kernel accepts the connection; nobody reads it): the run ends at once, nothing left.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut child = pgincr(&c)
        .arg("-D")
        .arg(s.join("hung"))
        .args(["-d", &format!("host=127.0.0.1 port={port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "should still be waiting"
    );
    let asked = Instant::now();
    // SAFETY: sending a signal to our own child.
    signal(child.id(), libc::SIGINT);
    let o = child.wait_with_output().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "Ctrl-C took {:?}",
        asked.elapsed()
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cancel"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    only(s, &["full", "ts-full"]);
    drop(silent);

    // The server stops mid-backup: the run fails and nothing looks complete.
    let child = slow_backup(&c, &s.join("stopped"), &ts, &s.join("ts-stop"));
    wait_until(&c, "SELECT count(*) > 0 FROM pg_stat_progress_basebackup");
    c.stop();
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success());
    only(s, &["full", "ts-full"]);
}

#[test]
fn failures_17() {
    failures(Major::V17);
}

#[test]
fn failures_18() {
    failures(Major::V18);
}

/// `-i` must name a regular backup_manifest: `/dev/zero` used to be read 2 GB deep and a FIFO
/// to block forever; both are refused before any connection is made (there is no server at
/// the address given).
#[test]
fn refuses_a_prior_manifest_that_is_not_a_file() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("backup_manifest");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for (manifest, kind) in [
        (Path::new("/dev/zero"), "character device"),
        (&*fifo, "FIFO"),
    ] {
        let err = fails(
            Command::new(env!("CARGO_BIN_EXE_pgincr"))
                .arg("backup")
                .arg("-D")
                .arg(d.path().join("out"))
                .arg("-i")
                .arg(manifest)
                .args(["-d", "host=/nonexistent-pgincr-test port=1"]),
        );
        assert!(
            err.contains(kind) && err.contains(&manifest.display().to_string()),
            "{err}"
        );
    }
    only(d.path(), &["backup_manifest"]);
}

/// Sends `sig` to our child process `pid`.
#[allow(unsafe_code)] // kill(2)
fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) takes a process id and a signal number; nothing else is touched.
    unsafe { libc::kill(pid as i32, sig) };
}
