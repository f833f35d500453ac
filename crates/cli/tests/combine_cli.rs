//! `pgincr combine` from the command line: pg_combinebackup's flags, --json, --dry-run,
//! --progress, exit codes and error messages, on a small real PostgreSQL 18 chain.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use pgincr_testkit::{output, run, scratch, Cluster, Major};
use std::path::Path;
use std::process::Command;

fn pgincr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgincr"))
}

fn files_equal(a: &Path, b: &Path, rel: &str) {
    assert_eq!(
        std::fs::read(a.join(rel)).unwrap(),
        std::fs::read(b.join(rel)).unwrap(),
        "{rel}"
    );
}

#[test]
fn combine_command_line() {
    let Some(c) = Cluster::start(Major::V18) else {
        return;
    };
    let dir = scratch("pgincr-combine-cli-");
    let root = dir.path();
    c.pgbench(&["-i", "-s", "1", "-q"]);
    let (b1, b2) = (root.join("b1"), root.join("b2"));
    c.run(
        c.tool("pg_basebackup")
            .arg("-D")
            .arg(&b1)
            .args(["-c", "fast"]),
    );
    c.pgbench(&["-t", "100"]);
    c.run(
        c.tool("pg_basebackup")
            .arg("-D")
            .arg(&b2)
            .args(["-c", "fast"])
            .arg(format!(
                "--incremental={}",
                b1.join("backup_manifest").display()
            )),
    );

    // --dry-run --json: a report, no output.
    let out = root.join("out");
    let json = run(pgincr()
        .args(["combine", "-n", "--json", "-o"])
        .arg(&out)
        .arg(&b1)
        .arg(&b2));
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["backups"], 2);
    assert!(report["reconstructed"].as_u64().unwrap() > 0, "{json}");
    assert!(!out.exists());

    // A real run with one thread, progress and SHA-512, against pg_combinebackup.
    let o = output(
        pgincr()
            .args([
                "combine",
                "-j",
                "1",
                "--progress",
                "--manifest-checksums=sha512",
                "--copy-file-range",
                "-o",
            ])
            .arg(&out)
            .arg(&b1)
            .arg(&b2),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("files"),
        "no progress shown"
    );
    let reference = root.join("ref");
    run(c
        .pg
        .tool("pg_combinebackup")
        .arg("-o")
        .arg(&reference)
        .arg(&b1)
        .arg(&b2));
    for rel in [
        "base/5/16384",
        "base/5/1259",
        "global/pg_control",
        "backup_label",
    ] {
        if reference.join(rel).exists() {
            files_equal(&reference, &out, rel);
        }
    }
    let manifest = std::fs::read_to_string(out.join("backup_manifest")).unwrap();
    assert!(manifest.contains("\"Checksum-Algorithm\": \"SHA512\""));
    run(c.pg.tool("pg_verifybackup").arg(&out));

    // Killed mid-way: nothing appears under the output name.
    let killed = root.join("killed");
    let mut child = pgincr()
        .args(["combine", "-j", "1", "-o"])
        .arg(&killed)
        .arg(&b1)
        .arg(&b2)
        .spawn()
        .unwrap();
    let killed_pid = child.id();
    std::thread::sleep(std::time::Duration::from_millis(150));
    let _ = child.kill();
    let status = child.wait().unwrap();
    if !status.success() {
        assert!(
            !killed.exists(),
            "a killed combine left {}",
            killed.display()
        );
        let partial = root.join(format!(".killed.pgincr-partial-{killed_pid}"));
        if partial.exists() {
            // A rerun removes the dead run's leftover, says so, and succeeds.
            let o = output(
                pgincr()
                    .args(["combine", "-o"])
                    .arg(&killed)
                    .arg(&b1)
                    .arg(&b2),
            );
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(0), "{err}");
            assert!(
                err.contains(&format!("removed \"{}\"", partial.display())),
                "{err}"
            );
            assert!(!partial.exists());
            run(c.pg.tool("pg_verifybackup").arg(&killed));
        }
    }

    // Failures: exit 1 with the backups named; usage errors: exit 2.
    let o = output(
        pgincr()
            .args(["combine", "-o"])
            .arg(root.join("x"))
            .arg(&b2)
            .arg(&b1),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("b1") && err.contains("full backup"), "{err}");
    let o = output(pgincr().args(["combine", "-o"]).arg(&out).arg(&b1).arg(&b2));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));
    let o = output(
        pgincr()
            .args(["combine", "-T", "relative=/x", "-o"])
            .arg(root.join("y"))
            .arg(&b1),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("absolute"));
    let o = output(
        pgincr()
            .args(["combine", "--copy", "--link", "-o"])
            .arg(root.join("y"))
            .arg(&b1),
    );
    assert_eq!(o.status.code(), Some(2));
}
