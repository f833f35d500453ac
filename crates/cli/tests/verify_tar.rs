//! `pgincr verify` from the command line on tar-format backups that `pgincr backup -F t`
//! writes (uncompressed, lz4, zstd; a tablespace), against real PostgreSQL 17 and 18: they
//! pass with their pages and the WAL inside `pg_wal.tar` checked (PostgreSQL 18's
//! `pg_verifybackup -n` agrees where this build reads the compression); the text output, `-P`
//! progress, `--json` and the exit status are upstream's (0 good, 1 damaged, 2 usage); a
//! damaged page is reported with its file and block. (Damage cases against `pg_verifybackup`:
//! crates/verify/tests/tar_pages.rs.)

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use pgincr_testkit::{output, scratch, Cluster, Major};
use std::path::{Path, PathBuf};
use std::process::Command;

fn pgincr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgincr"))
}

fn json(dir: &Path) -> (i32, serde_json::Value) {
    let o = output(pgincr().args(["verify", "--json"]).arg(dir));
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code().unwrap(), v)
}

fn check(major: Major) {
    let Some(mut c) = Cluster::start(major) else {
        return;
    };
    let ts = c.create_tablespace("ts");
    c.sql("CREATE TABLE t (a int, b text)");
    c.sql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    c.sql("CREATE TABLE u (a int, b text) TABLESPACE ts");
    c.sql("INSERT INTO u SELECT g, md5(g::text) FROM generate_series(1, 5000) g");
    c.checkpoint();
    let t_path = c.sql("SELECT pg_relation_filepath('t')").trim().to_string();
    let dir = scratch("pgincr-verify-tar-cli-");
    let root = dir.path();
    let ours = |name: &str, args: &[&str]| -> PathBuf {
        let d = root.join(name);
        c.run(
            c.client(env!("CARGO_BIN_EXE_pgincr"))
                .args(["backup", "-F", "t", "-c", "fast", "-D"])
                .arg(&d)
                .args(args),
        );
        d
    };
    let none = ours("none", &[]);
    let lz4 = ours("lz4", &["-Z", "lz4"]);
    let zst = ours("zst", &["-Z", "zstd:5", "--compress-threads", "2"]);
    let plain = root.join("plain");
    c.run(
        c.tool("pg_basebackup")
            .arg("-D")
            .arg(&plain)
            .args(["-c", "fast"])
            .arg(format!(
                "-T{}={}",
                ts.display(),
                root.join("plain-ts").display()
            )),
    );
    c.stop();

    for d in [&none, &lz4, &zst] {
        let (code, v) = json(d);
        assert_eq!(code, 0, "{}: {v:#}", d.display());
        assert_eq!(v["format"], "tar");
        assert_eq!(v["page_checks"], "on");
        assert!(v["pages_checked"].as_u64().unwrap() > 100, "{v:#}");
        assert!(v["wal_records"].as_u64().unwrap() > 0, "{v:#}");
        let names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.len() >= 4,
            "base, tablespace, pg_wal, manifest: {names:?}"
        );
        let o = output(pgincr().arg("verify").arg(d));
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "backup successfully verified\n"
        );
        // This PostgreSQL 18 build reads plain and gzip tar backups, not lz4 or zstd.
        if major == Major::V18 && d == &none {
            let o = output(c.pg.tool("pg_verifybackup").arg("-n").arg(d));
            assert!(o.status.success(), "{o:?}");
        }
    }

    // -P: "done/total kB (n%) verified" on stderr, the last line at 100%; not with -q.
    let o = output(pgincr().args(["verify", "-P"]).arg(&zst));
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.ends_with("kB (100%) verified"), "{err}");
    let o = output(pgincr().args(["verify", "-P"]).arg(&plain));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.trim_end().ends_with("kB (100%) verified"), "{err}");
    let o = output(pgincr().args(["verify", "-P", "-q"]).arg(&plain));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let o = output(pgincr().args(["verify", "-F", "x"]).arg(&plain));
    assert_eq!(o.status.code(), Some(2), "{o:?}");

    // A damaged page in block 5 of t: exit 1, named with its block, in text and JSON.
    let p = plain.join(&t_path);
    let mut b = std::fs::read(&p).unwrap();
    b[5 * 8192 + 3000] ^= 0x55;
    std::fs::write(&p, b).unwrap();
    let o = output(
        pgincr()
            .args(["verify", "-s", "--page-checksums"])
            .arg(&plain),
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "pgincr: error: checksum verification failed in file \"{t_path}\", block 5: calculated checksum"
        )),
        "{err}"
    );
    assert!(err.contains("1 problem(s) found"), "{err}");
    assert!(o.stdout.is_empty());
    let (code, v) = json(&plain);
    assert_eq!(code, 1);
    let kinds: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["checksum", "page"], "{v:#}");
    assert_eq!(v["problems"][1]["page"]["block"], 5);
    assert_eq!(v["problems"][1]["page"]["fork_block"], 5);
}

#[test]
fn pg17_verify_tar_cli() {
    check(Major::V17);
}

#[test]
fn pg18_verify_tar_cli() {
    check(Major::V18);
}
