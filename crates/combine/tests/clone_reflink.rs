//! `--clone` on a file system that has reflinks (a scratch XFS on a loop device): the output
//! is byte-identical to pg_combinebackup's, shares extents with the inputs, passes
//! pg_verifybackup, and PostgreSQL started on it sees the data of the last backup.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use pgincr_combine::{combine, CombineOptions, CopyMode};
use pgincr_testkit::{
    assert_same_backup_except_vm, give_to_server, manifest_without, run, Cluster, Major,
    ReflinkScratch,
};
use std::path::Path;
use std::process::Command;

/// Whether any extent of `file` is shared with another file (FIEMAP via `filefrag -v`).
fn has_shared_extents(file: &Path) -> bool {
    let o = Command::new("filefrag")
        .arg("-v")
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).contains("shared")
}

fn check(major: Major) {
    let fs = match ReflinkScratch::mount("pgincr-clone-", 2048) {
        Ok(fs) => fs,
        Err(why) => {
            // CI's machine can mount one (scripts/install-test-tools installs xfsprogs, and
            // it runs as root): there a failure to mount is a failure. Elsewhere only the
            // reflink file system is optional; real_chains checks --clone's error on file
            // systems without reflinks.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "--clone needs a scratch XFS with reflinks in CI: {why}"
            );
            eprintln!("--clone on a reflink file system not tested here: {why}");
            return;
        }
    };
    let Some(c) = Cluster::start(major) else {
        return;
    };
    let root = fs.path();
    c.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 40000) g");
    c.sql("VACUUM (FREEZE) t");
    c.summarize();
    let b1 = root.join("b1");
    run(c
        .tool("pg_basebackup")
        .arg("-D")
        .arg(&b1)
        .args(["-c", "fast"]));
    c.sql("UPDATE t SET v = 'y' WHERE id % 97 = 0; DELETE FROM t WHERE id > 39000");
    c.summarize();
    let b2 = root.join("b2");
    run(c
        .tool("pg_basebackup")
        .arg("-D")
        .arg(&b2)
        .args(["-c", "fast", "-i"])
        .arg(b1.join("backup_manifest")));
    let expected = c.sql("SELECT count(*), sum(length(v)) FROM t");

    let reference = root.join("ref");
    run(c
        .tool("pg_combinebackup")
        .arg("-o")
        .arg(&reference)
        .arg(&b1)
        .arg(&b2));
    let out = root.join("out");
    let mut opts = CombineOptions::new(vec![b1.clone(), b2.clone()], out.clone());
    opts.copy_mode = CopyMode::Clone;
    let report = combine(&opts).unwrap();
    assert!(report.copied_whole > 0, "some files are taken whole");

    // Repaired visibility maps are written, never cloned: they must not share storage with
    // the input they were repaired from.
    let maps = assert_same_backup_except_vm(&reference, &out, &format!("{major} --clone"));
    assert_eq!(maps.len() as u64, report.vm_repair.maps_repaired);
    for m in &maps {
        assert!(!has_shared_extents(&out.join(m)), "{}", m.display());
    }
    assert_eq!(
        manifest_without(&reference, &maps),
        manifest_without(&out, &maps)
    );
    // A file taken whole from the full backup was cloned, not copied.
    let rel = c.sql("SELECT pg_relation_filepath('pg_class')");
    assert!(
        has_shared_extents(&out.join(&rel)),
        "{major}: {rel} does not share extents with its source"
    );
    run(c.tool("pg_verifybackup").arg(&out));

    give_to_server(&out);
    let restored = Cluster::start_on(major, &out).unwrap();
    assert_eq!(
        restored.sql("SELECT count(*), sum(length(v)) FROM t"),
        expected
    );
}

#[test]
fn clone_17() {
    check(Major::V17);
}

#[test]
fn clone_18() {
    check(Major::V18);
}
