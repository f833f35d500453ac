//! `pgincr backup` against real PostgreSQL 17 and 18: full and incremental chains (plain),
//! verified by pg_verifybackup, combined by upstream pg_combinebackup, started, and compared
//! with the source's data; mixed chains with upstream pg_basebackup in both directions.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use pgincr_testkit::{Cluster, Major};

fn pgincr(c: &Cluster) -> Command {
    let mut cmd = c.client(env!("CARGO_BIN_EXE_pgincr"));
    cmd.arg("backup");
    cmd
}

/// A digest of everything the test writes, to compare a restored server with the source.
const DIGEST: &str =
    "SELECT (SELECT md5(string_agg(a::text || b, ',' ORDER BY a)) FROM t_main) || '/' || \
                      (SELECT md5(string_agg(a::text || b, ',' ORDER BY a)) FROM t_ts) || '/' || \
                      (SELECT count(*) FROM t_new)";

fn verify(c: &Cluster, dir: &Path) {
    c.run(c.pg.tool("pg_verifybackup").arg(dir));
}

fn combine(c: &Cluster, chain: &[&Path], out: &Path, ts_map: Option<(&Path, &Path)>) {
    let mut cmd = c.pg.tool("pg_combinebackup");
    cmd.args(chain).arg("-o").arg(out);
    if let Some((o, n)) = ts_map {
        cmd.arg("-T")
            .arg(format!("{}={}", o.display(), n.display()));
    }
    c.run(&mut cmd);
}

fn restored_digest(major: Major, dir: &Path) -> String {
    let r = Cluster::start_on(major, dir).expect("installed");
    r.sql(DIGEST)
}

fn label(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("backup_label")).unwrap()
}

fn chain(major: Major) {
    let Some(c) = Cluster::start(major) else {
        return;
    };
    let scratch = pgincr_testkit::scratch("pgincr-backup-chain-");
    let s = scratch.path();
    let ts = c.create_tablespace("ts1");
    c.sql(
        "CREATE TABLE t_main (a int primary key, b text); \
           INSERT INTO t_main SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g",
    );
    c.sql(
        "CREATE TABLE t_ts (a int, b text) TABLESPACE ts1; \
         INSERT INTO t_ts SELECT g, md5(g::text) FROM generate_series(1, 5000) g",
    );
    c.sql("CREATE TABLE t_new (a int)");

    // 1. Full, plain, WAL fetched, tablespace relocated.
    let full = s.join("full");
    let ts_full = s.join("ts-full");
    let out = c.run(
        pgincr(&c)
            .arg("-D")
            .arg(&full)
            .args(["-X", "fetch", "-c", "fast", "--json"])
            .arg("-T")
            .arg(format!("{}={}", ts.display(), ts_full.display())),
    );
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["incremental"], false);
    assert!(j["files"].as_u64().unwrap() > 500, "{j}");
    assert!(!label(&full).contains("INCREMENTAL"));
    verify(&c, &full);
    assert!(
        std::fs::read_link(
            std::fs::read_dir(full.join("pg_tblspc"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path()
        )
        .unwrap()
            == ts_full
    );

    // 2. Incremental, plain, WAL streamed (the default), with a concurrent workload and a
    //    segment switch during the backup.
    c.sql(
        "UPDATE t_main SET b = 'changed' WHERE a % 100 = 0; DELETE FROM t_ts WHERE a < 100; \
           INSERT INTO t_new SELECT generate_series(1, 1000)",
    );
    c.summarize();
    let inc1 = s.join("inc1");
    let ts_inc1 = s.join("ts-inc1");
    c.sql("CREATE TABLE t_load (a int)");
    // Concurrent writers, and a segment switch half a second in; the backup is throttled so
    // that both happen while it runs.
    let load = spawn_sql(&c, "SELECT pg_sleep(0.2); INSERT INTO t_load SELECT generate_series(1, 100000); \
                              SELECT pg_sleep(0.5); INSERT INTO t_load SELECT generate_series(1, 100000)");
    let switcher = spawn_sql(&c, "SELECT pg_sleep(0.5); SELECT pg_switch_wal()");
    let out = c.run(
        pgincr(&c)
            .arg("-D")
            .arg(&inc1)
            .arg("-i")
            .arg(full.join("backup_manifest"))
            .args(["-c", "fast", "--json", "-r", "6M", "-P"])
            .arg("-T")
            .arg(format!("{}={}", ts.display(), ts_inc1.display())),
    );
    for mut p in [load, switcher] {
        assert!(p.wait().unwrap().success());
    }
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["incremental"], true);
    assert!(j["wal_bytes_streamed"].as_u64().unwrap() > 0);
    let seg = |k: &str| {
        j[k].as_str()
            .unwrap()
            .parse::<pgincr_types::Lsn>()
            .unwrap()
            .segment(16 << 20)
    };
    assert!(
        seg("end_lsn") > seg("start_lsn"),
        "no segment switch during the backup: {j}"
    );
    assert!(j["duration_seconds"].as_f64().unwrap() > 0.7, "{j}");
    assert!(label(&inc1).contains("INCREMENTAL FROM LSN"));
    assert!(
        walk_names(&inc1).iter().any(|n| n.contains("INCREMENTAL.")),
        "no INCREMENTAL files"
    );
    assert!(
        std::fs::read_dir(inc1.join("pg_wal/archive_status"))
            .unwrap()
            .count()
            > 0,
        ".done markers"
    );
    verify(&c, &inc1);

    // 3. A second incremental, then the expected data is the source's at that point.
    c.sql("UPDATE t_ts SET b = 'again' WHERE a % 7 = 0; INSERT INTO t_new SELECT generate_series(1, 10)");
    c.summarize();
    let inc2 = s.join("inc2");
    let ts_inc2 = s.join("ts-inc2");
    c.run(
        pgincr(&c)
            .arg("-D")
            .arg(&inc2)
            .arg("-i")
            .arg(inc1.join("backup_manifest"))
            .args(["-c", "fast"])
            .arg("-T")
            .arg(format!("{}={}", ts.display(), ts_inc2.display())),
    );
    verify(&c, &inc2);
    let expected = c.sql(DIGEST);

    let combined = s.join("combined");
    let ts_comb = s.join("ts-comb");
    combine(
        &c,
        &[&full, &inc1, &inc2],
        &combined,
        Some((&ts_inc2, &ts_comb)),
    );
    verify(&c, &combined);
    assert_eq!(
        restored_digest(major, &combined),
        expected,
        "pgincr chain restores the source's data"
    );

    // 4. Mixed chains: pgincr incremental on an upstream full, and the reverse.
    let up_full = s.join("up-full");
    let ts_up = s.join("ts-up");
    c.run(
        c.tool("pg_basebackup")
            .arg("-D")
            .arg(&up_full)
            .args(["-c", "fast"])
            .arg("-T")
            .arg(format!("{}={}", ts.display(), ts_up.display())),
    );
    c.sql("UPDATE t_main SET b = 'mixed' WHERE a % 50 = 1");
    c.summarize();
    let our_inc = s.join("our-inc");
    let ts_our = s.join("ts-our");
    c.run(
        pgincr(&c)
            .arg("-D")
            .arg(&our_inc)
            .arg("-i")
            .arg(up_full.join("backup_manifest"))
            .args(["-c", "fast", "-X", "fetch"])
            .arg("-T")
            .arg(format!("{}={}", ts.display(), ts_our.display())),
    );
    verify(&c, &our_inc);
    let expected2 = c.sql(DIGEST);
    let up_inc = s.join("up-inc");
    let ts_upinc = s.join("ts-upinc");
    // Upstream incremental on top of pgincr's full backup (inc2 chain's base is `full`).
    c.sql("DELETE FROM t_new WHERE a > 500");
    c.summarize();
    c.run(
        c.tool("pg_basebackup")
            .arg("-D")
            .arg(&up_inc)
            .arg("-i")
            .arg(full.join("backup_manifest"))
            .args(["-c", "fast"])
            .arg("-T")
            .arg(format!("{}={}", ts.display(), ts_upinc.display())),
    );
    let expected3 = c.sql(DIGEST);

    let comb2 = s.join("comb2");
    combine(
        &c,
        &[&up_full, &our_inc],
        &comb2,
        Some((&ts_our, &s.join("ts-comb2"))),
    );
    assert_eq!(
        restored_digest(major, &comb2),
        expected2,
        "upstream full + pgincr incremental"
    );
    let comb3 = s.join("comb3");
    combine(
        &c,
        &[&full, &up_inc],
        &comb3,
        Some((&ts_upinc, &s.join("ts-comb3"))),
    );
    assert_eq!(
        restored_digest(major, &comb3),
        expected3,
        "pgincr full + upstream incremental"
    );
    let _: PathBuf = ts;
}

fn spawn_sql(c: &Cluster, sql: &str) -> std::process::Child {
    c.tool("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql, "postgres"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[test]
fn chain_17() {
    chain(Major::V17);
}

#[test]
fn chain_18() {
    chain(Major::V18);
}
