//! pgincr-server against real PostgreSQL 17 and 18: initdb, start on a free port, psql, stop,
//! a standby promoted, a start that fails with the server's reason, a dropped server stopped.
//!
//! The installs are found as the test kit finds them (`PGINCR_PG17_BIN` / `PGINCR_PG18_BIN`,
//! else `.pg/env` from `scripts/install-postgres`); this crate cannot use the test kit, which
//! is built on it. Missing installs skip the test, except under `CI=true`, where they fail.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgincr_server::{
    Error, InitdbOptions, Installation, Major, RecoveryEnd, RunAs, StartOptions, StopMode,
};

const ACCOUNT: &str = "pgincr-pg";
const TIMEOUT: Duration = Duration::from_secs(120);

fn bin_dir(major: Major) -> Option<PathBuf> {
    let var = format!("PGINCR_PG{}_BIN", major.number());
    if let Some(v) = std::env::var_os(&var) {
        return Some(PathBuf::from(v));
    }
    let env = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.pg/env");
    let env = std::fs::read_to_string(env).ok()?;
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{var}=")))
        .map(PathBuf::from)
        .filter(|p| p.join("postgres").exists())
}

fn require(major: Major) -> Option<Installation> {
    match bin_dir(major) {
        Some(bin) => Some(Installation::at(major, &bin).unwrap_or_else(|e| panic!("{e}"))),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{major} is not installed, and CI=true forbids skipping: run scripts/install-postgres")
        }
        None => {
            eprintln!("SKIP: {major} is not installed; run scripts/install-postgres");
            None
        }
    }
}

/// A directory the server account can reach, with a socket directory it owns.
fn workdir(major: Major, run_as: &RunAs) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("pgincr-server-{}-", major.number()))
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(dir.path().join("sock")).unwrap();
    run_as.give(&dir.path().join("sock")).unwrap();
    dir
}

fn initdb_options() -> InitdbOptions {
    InitdbOptions {
        auth: Some("trust".into()),
        encoding: Some("UTF8".into()),
        locale: Some("C".into()),
        no_sync: true,
        ..InitdbOptions::default()
    }
}

fn start_options(dir: &Path, log: &str) -> StartOptions {
    StartOptions::new(dir.join("sock"), dir.join(log))
        .setting("listen_addresses", "127.0.0.1")
        .setting("fsync", "off")
}

#[allow(unsafe_code)] // kill(2)
fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

fn control(major: Major) {
    let Some(pg) = require(major) else { return };
    assert_eq!(pg.version().major, major.number());
    let run_as = RunAs::unless_root(ACCOUNT);
    let dir = workdir(major, &run_as);
    let data = dir.path().join("data");
    pg.initdb(&data, &initdb_options(), &run_as)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(data.join("PG_VERSION").exists());

    let mut primary = pg
        .start(&data, &start_options(dir.path(), "primary.log"), &run_as)
        .unwrap_or_else(|e| panic!("{e}"));
    let port = primary.port();
    assert_eq!(
        primary.psql("postgres", "SHOW port").unwrap(),
        port.to_string()
    );
    assert!(primary
        .psql("postgres", "SHOW server_version_num")
        .unwrap()
        .starts_with(&major.number().to_string()));
    assert_eq!(
        primary.psql("postgres", "SHOW data_checksums").unwrap(),
        "on"
    );
    // Listening on TCP too, where it was asked to.
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(
        primary.wait_recovery_end(TIMEOUT).unwrap(),
        RecoveryEnd::InProduction
    );
    // Promoting a primary changes nothing and leaves no signal file behind.
    primary.promote(TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(!data.join("promote").exists());
    // A failing statement is an error with psql's message, not a panic.
    let e = primary
        .psql("postgres", "SELECT * FROM nowhere")
        .unwrap_err();
    assert!(matches!(e, Error::Command { .. }), "{e}");
    assert!(e.to_string().contains("\"nowhere\" does not exist"), "{e}");
    assert!(!e.to_string().contains("SELECT"), "SQL in the error: {e}");

    // A standby from a base backup, promoted.
    let standby_data = dir.path().join("standby");
    let out = primary
        .client(pg.tool_path("pg_basebackup"))
        .arg("-D")
        .arg(&standby_data)
        .args(["-R", "-c", "fast", "-X", "stream"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Before the standby starts: copies of the backup for recoveries to a target.
    for copy in ["pause", "shutdown"] {
        let out = Command::new("cp")
            .arg("-a")
            .arg(&standby_data)
            .arg(dir.path().join(copy))
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    std::fs::set_permissions(&standby_data, std::fs::Permissions::from_mode(0o700)).unwrap();
    run_as.give(&standby_data).unwrap();
    let mut standby = pg
        .start(
            &standby_data,
            &start_options(dir.path(), "standby.log"),
            &run_as,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(standby.port(), port);
    assert_eq!(
        standby
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .unwrap(),
        "t"
    );
    // Streaming never ends recovery by itself.
    let e = standby
        .wait_recovery_end(Duration::from_millis(500))
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    standby.promote(TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        standby
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .unwrap(),
        "f"
    );
    standby.stop(StopMode::Immediate, TIMEOUT).unwrap();
    assert!(!standby.is_running());

    // Archive recovery to the end of the backup, then what recovery_target_action says.
    for action in ["pause", "shutdown"] {
        let target = dir.path().join(action);
        std::fs::remove_file(target.join("standby.signal")).unwrap();
        std::fs::write(target.join("recovery.signal"), "").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
        run_as.give(&target).unwrap();
        let mut opts = start_options(dir.path(), &format!("{action}.log"))
            .setting("restore_command", "/bin/false")
            .setting("recovery_target", "immediate")
            .setting("recovery_target_action", action);
        // A recovery that ends in a shutdown is never "up": do not wait for that.
        opts.wait = false;
        let mut server = pg
            .start(&target, &opts, &run_as)
            .unwrap_or_else(|e| panic!("{e}"));
        let end = server
            .wait_recovery_end(TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        if action == "pause" {
            assert_eq!(end, RecoveryEnd::Paused);
            // Promotion also ends a pause.
            server.promote(TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                server
                    .psql("postgres", "SELECT pg_is_in_recovery()")
                    .unwrap(),
                "f"
            );
            server.stop(StopMode::Fast, TIMEOUT).unwrap();
        } else {
            assert_eq!(end, RecoveryEnd::ShutDown);
            assert!(!server.is_running());
            assert!(server
                .log_tail()
                .text
                .contains("shutdown at recovery target"));
        }
    }

    primary
        .stop(StopMode::Fast, TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!data.join("postmaster.pid").exists());
    // Stopping twice is no error.
    primary.stop(StopMode::Fast, TIMEOUT).unwrap();
    assert!(matches!(primary.promote(TIMEOUT), Err(Error::NotRunning)));

    // A bad setting: the server exits, and the error says why in the log's words.
    let bad = start_options(dir.path(), "bad.log").setting("shared_buffers", "banana");
    match pg.start(&data, &bad, &run_as) {
        Err(e @ Error::StartFailed { .. }) => {
            let log = e.log_tail().expect("a log tail");
            assert!(log.text.contains("shared_buffers"), "{e}");
            assert!(e.to_string().contains("invalid value for parameter"), "{e}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("started with shared_buffers=banana"),
    }

    // A fixed port that is taken is not replaced by another.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut fixed = start_options(dir.path(), "fixed.log");
    fixed.port = Some(taken.local_addr().unwrap().port());
    let e = pg.start(&data, &fixed, &run_as).unwrap_err();
    assert!(e.to_string().contains("could not bind"), "{e}");
    drop(taken);

    // A dropped server is stopped.
    let server = pg
        .start(&data, &start_options(dir.path(), "again.log"), &run_as)
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = server.pid().unwrap();
    assert!(pid_alive(pid));
    drop(server);
    assert!(!pid_alive(pid), "postmaster {pid} survived its handle");
    assert!(!data.join("postmaster.pid").exists());
}

#[test]
fn postgres_17() {
    control(Major::V17);
}

#[test]
fn postgres_18() {
    control(Major::V18);
}

#[test]
fn locate_finds_the_installs_on_path() {
    for major in Major::ALL {
        let Some(pg) = require(major) else { continue };
        // An explicit directory is authoritative.
        let other = match major {
            Major::V17 => Major::V18,
            Major::V18 => Major::V17,
        };
        assert!(matches!(
            Installation::locate(other, Some(pg.bin_dir())),
            Err(Error::WrongVersion { .. })
        ));
        // The install's pg_config names its own bin directory, which is what the
        // `pg_config --bindir` fallback of locate relies on.
        let out = Command::new(pg.tool_path("pg_config"))
            .arg("--bindir")
            .output()
            .unwrap();
        assert_eq!(
            Path::new(String::from_utf8_lossy(&out.stdout).trim())
                .canonicalize()
                .ok(),
            pg.bin_dir().canonicalize().ok()
        );
    }
}
