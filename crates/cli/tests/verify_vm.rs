//! `pgincr verify --check-vm` and the visibility-map repair from the command line, on a small
//! PostgreSQL 17.10 chain (the affected release), its incremental taken by `pgincr backup`:
//! the un-repaired combine (`--no-vm-repair`, upstream's bytes) has stale bits and the check
//! says so (exit 1, one line per bit, a summary); pgincr's default combine repairs them (its
//! `--json` report counts them) and the check passes (exit 0).

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use pgincr_testkit::{output, scratch, Cluster, Major};
use std::process::Command;

fn pgincr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgincr"))
}

#[test]
fn check_vm_and_repair_from_the_command_line() {
    let Some(c) = Cluster::start(Major::V17) else {
        return;
    };
    let dir = scratch("pgincr-verify-vm-");
    let root = dir.path();
    c.sql("ALTER SYSTEM SET autovacuum = off");
    c.sql("SELECT pg_reload_conf()");
    c.sql("CREATE TABLE t (id int PRIMARY KEY, v int)");
    c.sql("INSERT INTO t SELECT g, g FROM generate_series(1, 20000) g");
    c.sql("VACUUM (FREEZE, ANALYZE) t");
    let (b1, b2) = (root.join("b1"), root.join("b2"));
    c.run(
        c.tool("pg_basebackup")
            .arg("-D")
            .arg(&b1)
            .args(["-c", "fast"]),
    );
    c.sql("DELETE FROM t WHERE id % 3 = 0");
    // The incremental taken by pgincr itself: the repair must not depend on who took it.
    c.run(
        c.client(env!("CARGO_BIN_EXE_pgincr"))
            .args(["backup", "-c", "fast", "-D"])
            .arg(&b2)
            .arg("-i")
            .arg(b1.join("backup_manifest")),
    );

    // The full backup is clean.
    let o = output(pgincr().args(["verify", "--check-vm"]).arg(&b1));
    assert_eq!(o.status.code(), Some(0), "{o:?}");

    // Upstream's (and --no-vm-repair's) output carries stale bits.
    let stale = root.join("stale");
    let o = output(
        pgincr()
            .args(["combine", "--no-vm-repair", "-o"])
            .arg(&stale)
            .arg(&b1)
            .arg(&b2),
    );
    assert!(o.status.success(), "{o:?}");
    let o = output(pgincr().args(["verify", "--check-vm"]).arg(&stale));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("all-visible bit set but the heap page is not marked PD_ALL_VISIBLE"),
        "{text}"
    );
    assert!(text.contains("more stale bit(s) not listed"), "{text}");
    let last = text.lines().last().unwrap_or_default();
    assert!(last.contains(" stale in 1 relation(s)"), "{last}");
    let o = output(
        pgincr()
            .args(["verify", "--check-vm", "--json"])
            .arg(&stale),
    );
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let n_stale = json["stale"].as_array().unwrap().len();
    assert!(n_stale > 20, "{json}");
    assert_eq!(json["stale"][0]["kind"], "all-visible-not-on-page");

    // pgincr's default combine repairs exactly those bits, and says so.
    let fixed = root.join("fixed");
    let o = output(
        pgincr()
            .args(["combine", "--json", "-o"])
            .arg(&fixed)
            .arg(&b1)
            .arg(&b2),
    );
    assert!(o.status.success(), "{o:?}");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let vm = &report["vm_repair"];
    assert_eq!(vm["maps_repaired"], 1, "{vm}");
    assert_eq!(
        vm["all_visible_cleared"].as_u64(),
        Some(n_stale as u64),
        "{vm}"
    );
    let o = output(pgincr().args(["verify", "--check-vm"]).arg(&fixed));
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = output(
        pgincr()
            .args(["combine", "-o"])
            .arg(root.join("again"))
            .arg(&b1)
            .arg(&b2),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("repaired 1 visibility map(s)"), "{err}");

    // A missing directory is an error naming it, exit 1; a usage error exits 2.
    let o = output(
        pgincr()
            .args(["verify", "--check-vm"])
            .arg(root.join("nope")),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope"));
    let o = output(pgincr().args(["verify", "--no-such-flag"]).arg(&fixed));
    assert_eq!(o.status.code(), Some(2));
}
