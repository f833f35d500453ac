//! `pgincr backup` against real PostgreSQL 17 and 18: WAL streamed through a replication slot
//! it creates (`-C -S`) and then through the existing slot, and a chain continued on top of a
//! backup combined by `pgincr combine`, finished by upstream pg_combinebackup, started and
//! compared with the source's data.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::Command;

use pgincr_testkit::{Cluster, Major};

fn pgincr(c: &Cluster) -> Command {
    let mut cmd = c.client(env!("CARGO_BIN_EXE_pgincr"));
    cmd.arg("backup");
    cmd
}

/// A digest of everything the test writes, to compare a restored server with the source.
const DIGEST: &str =
    "SELECT md5(string_agg(a::text || b, ',' ORDER BY a)) || '/' || count(*) FROM t";

fn verify(c: &Cluster, dir: &Path) {
    c.run(c.pg.tool("pg_verifybackup").arg(dir));
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn lsn(v: &str) -> pgincr_types::Lsn {
    v.trim().parse().unwrap_or_else(|e| panic!("{e:?}: {v:?}"))
}

/// `slot_type|restart_lsn|active` of `myslot`, or "" when it does not exist.
fn slot_row(c: &Cluster) -> String {
    c.sql(
        "SELECT slot_type || '|' || coalesce(restart_lsn::text, '') || '|' || active \
         FROM pg_replication_slots WHERE slot_name = 'myslot'",
    )
}

fn slots(c: &Cluster, s: &Path) {
    assert_eq!(slot_row(c), "", "no slot before the backup");

    // 1. Full backup that creates the slot and streams WAL through it.
    let full = s.join("slot-full");
    let j = json(
        &c.run(
            pgincr(c)
                .arg("-D")
                .arg(&full)
                .args(["-C", "-S", "myslot", "-X", "stream", "-c", "fast", "--json"]),
        ),
    );
    assert!(j["wal_bytes_streamed"].as_u64().unwrap() > 0, "{j}");
    let row = slot_row(c);
    let parts: Vec<&str> = row.split('|').collect();
    assert_eq!(parts.len(), 3, "slot myslot after the backup: {row:?}");
    assert_eq!(parts[0], "physical", "{row}");
    assert!(!parts[1].is_empty(), "slot has a restart_lsn: {row}");
    assert_eq!(parts[2], "false", "slot released after the backup: {row}");
    let restart1 = lsn(parts[1]);
    // The stream reports its flush position through the slot, which moves restart_lsn past
    // the redo pointer it reserved at creation (before the backup's checkpoint).
    assert!(
        restart1 >= lsn(j["start_lsn"].as_str().unwrap()),
        "restart_lsn {restart1} not advanced by the stream: {j}"
    );
    verify(c, &full);

    // 2. A second backup through the existing slot (no -C).
    c.sql("CREATE TABLE t_slot AS SELECT generate_series(1, 10000) a");
    c.switch_wal();
    let second = s.join("slot-second");
    let j2 = json(
        &c.run(
            pgincr(c)
                .arg("-D")
                .arg(&second)
                .args(["-S", "myslot", "-X", "stream", "-c", "fast", "--json"]),
        ),
    );
    assert!(j2["wal_bytes_streamed"].as_u64().unwrap() > 0, "{j2}");
    let row = slot_row(c);
    let parts: Vec<&str> = row.split('|').collect();
    assert_eq!(
        parts.len(),
        3,
        "slot myslot after the second backup: {row:?}"
    );
    assert_eq!(parts[2], "false", "{row}");
    assert!(
        lsn(parts[1]) >= lsn(j2["start_lsn"].as_str().unwrap()) && lsn(parts[1]) > restart1,
        "restart_lsn not advanced by the second stream: {restart1} -> {row}: {j2}"
    );
    verify(c, &second);

    // -C on a slot that exists already fails, like pg_basebackup.
    let out = pgincr_testkit::output(
        pgincr(c)
            .arg("-D")
            .arg(s.join("slot-dup"))
            .args(["-C", "-S", "myslot", "-c", "fast"]),
    );
    assert!(!out.status.success(), "-C on an existing slot succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert!(!s.join("slot-dup/backup_manifest").exists());

    c.sql("SELECT pg_drop_replication_slot('myslot')");
}

fn combined_base(c: &Cluster, s: &Path, major: Major) {
    c.sql(
        "CREATE TABLE t (a int primary key, b text); \
         INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g",
    );
    let full = s.join("full");
    c.run(
        pgincr(c)
            .arg("-D")
            .arg(&full)
            .args(["-X", "fetch", "-c", "fast"]),
    );

    c.sql("UPDATE t SET b = 'one' WHERE a % 100 = 0; INSERT INTO t SELECT g, 'new1' FROM generate_series(20001, 21000) g");
    c.summarize();
    let inc1 = s.join("inc1");
    c.run(
        pgincr(c)
            .arg("-D")
            .arg(&inc1)
            .arg("-i")
            .arg(full.join("backup_manifest"))
            .args(["-c", "fast"]),
    );

    let comb = s.join("C");
    c.run(
        Command::new(env!("CARGO_BIN_EXE_pgincr"))
            .args(["combine", "-o"])
            .arg(&comb)
            .arg(&full)
            .arg(&inc1),
    );
    verify(c, &comb);

    // Incremental on top of the combined backup's manifest.
    c.sql(
        "DELETE FROM t WHERE a % 7 = 0; UPDATE t SET b = 'two' WHERE a % 13 = 0; \
           INSERT INTO t SELECT g, 'new2' FROM generate_series(30001, 30500) g",
    );
    c.summarize();
    let inc2 = s.join("inc2");
    let j = json(
        &c.run(
            pgincr(c)
                .arg("-D")
                .arg(&inc2)
                .arg("-i")
                .arg(comb.join("backup_manifest"))
                .args(["-c", "fast", "--json"]),
        ),
    );
    assert_eq!(j["incremental"], true, "{j}");
    verify(c, &inc2);
    let expected = c.sql(DIGEST);

    let restored = s.join("restored");
    c.run(
        c.pg.tool("pg_combinebackup")
            .arg(&comb)
            .arg(&inc2)
            .arg("-o")
            .arg(&restored),
    );
    verify(c, &restored);
    let r = Cluster::start_on(major, &restored).expect("installed");
    assert_eq!(
        r.sql(DIGEST),
        expected,
        "combined base + incremental restores the source's data"
    );
}

fn run_all(major: Major) {
    let Some(c) = Cluster::start(major) else {
        return;
    };
    let scratch = pgincr_testkit::scratch("pgincr-backup-slots-");
    slots(&c, scratch.path());
    combined_base(&c, scratch.path(), major);
}

#[test]
fn slots_and_combined_base_17() {
    run_all(Major::V17);
}

#[test]
fn slots_and_combined_base_18() {
    run_all(Major::V18);
}
