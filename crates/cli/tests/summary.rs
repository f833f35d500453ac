//! `pgincr summary` end to end: `show` must print exactly what `pg_walsummary` prints (with and
//! without `-i`, also up to the error on a corrupt file), on kept real files and on files a
//! PostgreSQL 17 / 18 workload produces; `list`, `blocks` and `estimate` run on the same data.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pgincr_testkit::{Cluster, Major};

fn pgincr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgincr"))
}

fn out(cmd: &mut Command) -> Output {
    pgincr_testkit::output(cmd)
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/summaries")
}

fn kept_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for major in ["pg17", "pg18"] {
        let mut names: Vec<PathBuf> = std::fs::read_dir(testdata().join(major))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "summary"))
            .collect();
        names.sort();
        v.extend(names);
    }
    v
}

#[test]
fn show_matches_recorded_pg_walsummary_output() {
    let files = kept_files();
    let mut expected = String::new();
    for f in &files {
        expected.push_str(&std::fs::read_to_string(f.with_extension("txt")).unwrap());
    }
    let o = out(pgincr().args(["summary", "show"]).args(&files));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8(o.stdout).unwrap(), expected);

    let o = out(pgincr().args(["summary", "show", "-q"]).args(&files));
    assert!(o.status.success() && o.stdout.is_empty());

    let o = out(pgincr()
        .args(["summary", "show", "--individual"])
        .arg(&files[2]));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.lines().count() > 4000 && !text.contains("blocks "));

    let o = out(pgincr().args(["summary", "show", "--json"]).arg(&files[0]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!v[0]["entries"].as_array().unwrap().is_empty());

    let o = out(pgincr().args(["summary", "show"]));
    assert_eq!(o.status.code(), Some(2), "no files is a usage error");
}

#[test]
fn corrupt_files_fail_after_the_same_output() {
    let scratch = pgincr_testkit::scratch("pgincr-summary-cli-");
    let src = &kept_files()[3];
    let mut bytes = std::fs::read(src).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    let bad = scratch.path().join("bad.summary");
    std::fs::write(&bad, &bytes).unwrap();
    let o = out(pgincr().args(["summary", "show"]).arg(&bad));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("wrong checksum") && err.contains("bad.summary"),
        "{err}"
    );
    // pg_walsummary prints every fork before it checks the CRC at the end; so do we.
    let expected = std::fs::read_to_string(src.with_extension("txt")).unwrap();
    assert_eq!(String::from_utf8(o.stdout).unwrap(), expected);
    for m in Major::ALL {
        if let Some(pg) = pgincr_testkit::require(m) {
            let theirs = out(pg.tool("pg_walsummary").arg(&bad));
            assert_eq!(theirs.status.code(), Some(1));
            assert_eq!(String::from_utf8(theirs.stdout).unwrap(), expected);
        }
    }
    let o = out(pgincr()
        .args(["summary", "show"])
        .arg(scratch.path().join("missing.summary")));
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn list_reports_gaps() {
    let o = out(pgincr()
        .args(["summary", "list"])
        .arg(testdata().join("pg17")));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(o.status.success());
    assert!(text.contains("4 files, 2 gaps, 0 overlaps"), "{text}");
    assert!(
        text.contains("gap: 0/2000028..0/3C9F908 is not summarized"),
        "{text}"
    );
    let o = out(pgincr()
        .args(["summary", "list", "--json"])
        .arg(testdata().join("pg18")));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["files"].as_array().unwrap().len(), 4);
    assert_eq!(v["timelines"][0]["gaps"].as_array().unwrap().len(), 2);
}

#[test]
fn pg17() {
    against_server(Major::V17);
}

#[test]
fn pg18() {
    against_server(Major::V18);
}

fn against_server(major: Major) {
    let Some(c) = Cluster::start(major) else {
        return;
    };
    let scratch = pgincr_testkit::scratch("pgincr-summary-cli-");
    let full = scratch.path().join("full");
    c.run(
        c.tool("pg_basebackup")
            .arg("-D")
            .arg(&full)
            .args(["-c", "fast"]),
    );
    c.pgbench(&["-i", "-s", "1", "-q"]);
    c.summarize();
    c.pgbench(&["-t", "100", "-c", "2", "-n"]);
    c.sql("TRUNCATE pgbench_history");
    c.sql("CREATE TABLE gone AS SELECT g FROM generate_series(1, 1000) g");
    c.sql("DROP TABLE gone");
    c.sql("CREATE DATABASE d2");
    c.sql("DROP DATABASE d2");
    c.sql("CREATE TABLE shrink AS SELECT g AS a, repeat('x', 200) AS b FROM generate_series(1, 3000) g");
    c.summarize();
    c.sql("DELETE FROM shrink WHERE a > 100");
    c.sql("VACUUM shrink");
    c.summarize();

    let mut files: Vec<PathBuf> = std::fs::read_dir(c.summaries_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "summary"))
        .collect();
    files.sort();
    assert!(files.len() >= 3);
    for flags in [&[][..], &["-i"][..]] {
        let ours = out(pgincr().args(["summary", "show"]).args(flags).args(&files));
        let theirs = out(c.pg.tool("pg_walsummary").args(flags).args(&files));
        assert!(ours.status.success() && theirs.status.success());
        assert!(!theirs.stdout.is_empty());
        assert_eq!(
            String::from_utf8(ours.stdout).unwrap(),
            String::from_utf8(theirs.stdout).unwrap(),
            "{major} {flags:?}"
        );
    }
    let theirs = String::from_utf8(out(c.pg.tool("pg_walsummary").args(&files)).stdout).unwrap();
    assert!(
        theirs.contains(": limit 0") && theirs.contains("FORK vm: limit"),
        "{theirs}"
    );

    let o = out(pgincr().args(["summary", "list"]).arg(c.summaries_dir()));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains(" 0 gaps, 0 overlaps"), "{text}");

    let label = std::fs::read_to_string(full.join("backup_label")).unwrap();
    let start = label
        .lines()
        .find_map(|l| l.strip_prefix("START WAL LOCATION: "))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_string();
    let end = c.sql("SELECT max(end_lsn) FROM pg_available_wal_summaries()");
    let o = out(pgincr()
        .args([
            "summary", "blocks", "--tli", "1", "--start", &start, "--end", &end,
        ])
        .arg(c.summaries_dir()));
    let blocks = String::from_utf8(o.stdout).unwrap();
    assert!(
        o.status.success() && blocks.contains("FORK main: limit 0"),
        "{blocks}"
    );
    let o = out(pgincr()
        .args([
            "summary", "blocks", "--tli", "2", "--start", &start, "--end", &end,
        ])
        .arg(c.summaries_dir()));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no WAL summaries exist on timeline 2"));

    let o = out(pgincr()
        .args(["summary", "estimate", "--json", "--prior"])
        .arg(&full)
        .arg(c.data_dir()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let incr = v["incremental_backup_bytes"].as_u64().unwrap();
    let fullb = v["full_backup_bytes"].as_u64().unwrap();
    assert!(incr > 0 && incr < fullb, "{v}");
    assert_eq!(v["end_lsn"].as_str().unwrap(), end);
    let o = out(pgincr()
        .args(["summary", "estimate", "--prior"])
        .arg(&full)
        .arg(c.data_dir()));
    assert!(String::from_utf8_lossy(&o.stdout).contains("incremental backup: "));
}

/// Errors are printed with each cause once, and bad inputs are refused at once with a message
/// naming the path and what it is (a FIFO used to hang, /dev/zero to be read until the kernel
/// killed the process, a pg_control with block size 0 to divide by zero).
#[test]
fn refuses_bad_inputs_clearly() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("nope");
    let o = out(pgincr().args(["summary", "list"]).arg(&missing));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");

    // A data directory whose pg_control has a valid CRC but block size 0.
    let data = d.path().join("data");
    std::fs::create_dir_all(data.join("global")).unwrap();
    std::fs::create_dir_all(data.join("pg_wal/summaries")).unwrap();
    let mut ctl = vec![0u8; 8192];
    ctl[8..12].copy_from_slice(&1700u32.to_le_bytes());
    ctl[220..224].copy_from_slice(&131072u32.to_le_bytes());
    ctl[224..228].copy_from_slice(&8192u32.to_le_bytes());
    ctl[228..232].copy_from_slice(&(16u32 << 20).to_le_bytes());
    let crc = crc32c(&ctl[..288]);
    ctl[288..292].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(data.join("global/pg_control"), &ctl).unwrap();
    let o = out(pgincr()
        .args([
            "summary",
            "estimate",
            "--start",
            "0/1000000",
            "--end",
            "0/1000000",
        ])
        .arg(&data));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("global/pg_control") && err.contains("blcksz is 0"),
        "{err}"
    );

    // With a valid control file, a manifest that is a device or a FIFO is refused at once.
    ctl[216..220].copy_from_slice(&8192u32.to_le_bytes());
    let crc = crc32c(&ctl[..288]);
    ctl[288..292].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(data.join("global/pg_control"), &ctl).unwrap();
    let fifo = d.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for (manifest, kind) in [
        (Path::new("/dev/zero"), "character device"),
        (&fifo, "FIFO"),
    ] {
        let o = out(pgincr()
            .args([
                "summary",
                "estimate",
                "--start",
                "0/1000000",
                "--end",
                "0/1000000",
            ])
            .arg("--manifest")
            .arg(manifest)
            .arg(&data));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains(kind) && err.contains("backup manifest"),
            "{err}"
        );
    }
    let o = out(pgincr().args(["summary", "show"]).arg(&fifo));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("FIFO"), "{err}");
}

/// CRC-32C (Castagnoli, reflected), as pg_control's CRC.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
