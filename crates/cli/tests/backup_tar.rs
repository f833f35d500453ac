//! `pgincr backup -F t` with client-side gzip, lz4 and zstd: the files decompress with the
//! standard tools, pg_verifybackup accepts them (tar directly on 18, where this build supports
//! it; extracted on both), and the extracted chain combines and restores the source's data.

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

use pgincr_testkit::{output, Cluster, Major};

fn pgincr(c: &Cluster) -> Command {
    let mut cmd = c.client(env!("CARGO_BIN_EXE_pgincr"));
    cmd.arg("backup");
    cmd
}

const DIGEST: &str = "SELECT md5(string_agg(a::text || b, ',' ORDER BY a)) FROM t";

/// Turns a tar-format backup into a plain one: base.tar into the root, pg_wal.tar into pg_wal.
fn extract(tar_dir: &Path, out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    for e in std::fs::read_dir(tar_dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let dest = if name.starts_with("base.tar") {
            out.to_path_buf()
        } else if name.starts_with("pg_wal.tar") {
            out.join("pg_wal")
        } else if name == "backup_manifest" {
            std::fs::copy(e.path(), out.join(&name)).unwrap();
            continue;
        } else {
            panic!("unexpected file {name} in tar backup");
        };
        std::fs::create_dir_all(&dest).unwrap();
        pgincr_archive::unpack(&e.path(), &dest).unwrap();
    }
}

fn tool_check(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let n = p.to_string_lossy().into_owned();
        let tool = if n.ends_with(".gz") {
            "gzip"
        } else if n.ends_with(".lz4") {
            "lz4"
        } else if n.ends_with(".zst") {
            "zstd"
        } else {
            continue;
        };
        let o = output(Command::new(tool).arg("-t").arg(&p));
        assert!(
            o.status.success(),
            "{tool} -t {n}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

fn chain(major: Major) {
    let Some(c) = Cluster::start(major) else {
        return;
    };
    let scratch = pgincr_testkit::scratch("pgincr-backup-tar-");
    let s = scratch.path();
    c.sql("CREATE TABLE t (a int, b text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 30000) g");
    let steps: [(&str, &str, &[&str]); 4] = [
        ("full", "", &["-Z", "gzip", "--compress-threads", "2"]),
        (
            "inc1",
            "UPDATE t SET b = 'one' WHERE a % 10 = 0",
            &["-Z", "lz4", "-X", "fetch"],
        ),
        ("inc2", "DELETE FROM t WHERE a % 3 = 0", &["-Z", "zstd:5"]),
        (
            "inc3",
            "INSERT INTO t SELECT g, 'new' FROM generate_series(30001, 31000) g",
            &["--manifest-checksums", "sha256"],
        ),
    ];
    let mut prev: Option<std::path::PathBuf> = None;
    let mut plain = Vec::new();
    for (name, change, args) in steps {
        if !change.is_empty() {
            c.sql(change);
            c.summarize();
        }
        let dir = s.join(name);
        let mut cmd = pgincr(&c);
        cmd.arg("-D")
            .arg(&dir)
            .args(["-F", "t", "-c", "fast"])
            .args(args);
        if let Some(p) = &prev {
            cmd.arg("-i").arg(p.join("backup_manifest"));
        }
        c.run(&mut cmd);
        let files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(files.iter().any(|f| f.starts_with("base.tar")), "{files:?}");
        assert!(files.contains(&"backup_manifest".to_string()), "{files:?}");
        tool_check(&dir);
        // This PostgreSQL 18 build reads plain and gzip tar backups (no lz4/zstd support).
        if major == Major::V18
            && !files
                .iter()
                .any(|f| f.ends_with(".lz4") || f.ends_with(".zst"))
        {
            c.run(c.pg.tool("pg_verifybackup").arg("-n").arg(&dir));
        }
        let x = s.join(format!("{name}-plain"));
        extract(&dir, &x);
        c.run(c.pg.tool("pg_verifybackup").arg(&x));
        plain.push(x);
        prev = Some(dir);
    }
    let expected = c.sql(DIGEST);
    let out = s.join("combined");
    c.run(
        c.pg.tool("pg_combinebackup")
            .args(&plain)
            .arg("-o")
            .arg(&out),
    );
    c.run(c.pg.tool("pg_verifybackup").arg("-n").arg(&out));
    let r = Cluster::start_on(major, &out).unwrap();
    assert_eq!(r.sql(DIGEST), expected);
}

#[test]
fn tar_chain_17() {
    chain(Major::V17);
}

#[test]
fn tar_chain_18() {
    chain(Major::V18);
}
