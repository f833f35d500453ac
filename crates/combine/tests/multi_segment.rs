//! A relation over 1 GB (two 1 GB segment files) in real PostgreSQL 17 and 18 chains: one full
//! and two incremental backups taken with upstream `pg_basebackup`, with changes in both
//! segments and a VACUUM truncation of the second. pgincr's combine must give the same bytes
//! as `pg_combinebackup` (manifest modulo `Last-Modified`), except visibility maps it
//! repaired, pass `pg_verifybackup`, and a server started on it must show the table as of the
//! last backup, with a visibility map `pg_check_visible` finds nothing wrong with.
//!
//! Both majors: 17.10 clears map bits without WAL-logging them, so its chain exercises the
//! repair across heap segments; 18.6 has the fix, and the VACUUM truncation of a relation over
//! one segment is the case where summaries before 17.10/18.4 sized the map fork wrongly, so
//! there the map must come out exactly as upstream's (`vm_repair_synthetic.rs` covers the
//! wrong size itself).

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use pgincr_combine::{combine, CombineOptions};
use pgincr_testkit::{is_visibility_map, manifest_without, run, scratch, Cluster, Major};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Rows of `big`; 4 rows of 2016 bytes (1984 of pad) fit a page, so 600 000 rows take 150 000 pages
/// (1.14 GiB): segment 0 holds ids 1..=524 288, segment 1 the rest.
const ROWS: u32 = 600_000;

/// Survives backup + combine + recovery. `hashtext` keeps it cheap over 1 GB of text.
const CHECK: &str =
    "SELECT count(*), sum(id), sum(hashtext(pad)), min(length(pad)), max(length(pad)) FROM big";

fn backup(c: &Cluster, root: &Path, i: usize, prev: Option<&Path>) -> PathBuf {
    let dir = root.join(format!("b{i}"));
    let mut cmd = c.tool("pg_basebackup");
    cmd.arg("-D").arg(&dir).args(["-c", "fast", "-X", "stream"]);
    if let Some(p) = prev {
        cmd.arg(format!(
            "--incremental={}",
            p.join("backup_manifest").display()
        ));
    }
    c.run(&mut cmd);
    dir
}

/// Every regular file and symlink under `root`, by relative path, without `backup_manifest`.
fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if p != root.join("backup_manifest") {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Compares two files in 1 MB pieces (segments are too big to hold twice in memory).
fn same_file(a: &Path, b: &Path) -> bool {
    let (ma, mb) = (std::fs::metadata(a).unwrap(), std::fs::metadata(b).unwrap());
    if ma.len() != mb.len() {
        return false;
    }
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// Compares two trees file by file; returns the visibility maps that differ (only they may).
fn assert_same_tree_except_vm(reference: &Path, ours: &Path) -> Vec<PathBuf> {
    let names = files(reference);
    assert_eq!(names, files(ours), "file lists differ");
    let mut maps = Vec::new();
    for p in &names {
        if !same_file(&reference.join(p), &ours.join(p)) {
            assert!(is_visibility_map(p), "{} differs", p.display());
            maps.push(p.clone());
        }
    }
    maps
}

#[test]
fn pg17_relation_over_1gb_matches_pg_combinebackup() {
    check(Major::V17);
}

#[test]
fn pg18_relation_over_1gb_matches_pg_combinebackup() {
    check(Major::V18);
}

fn check(major: Major) {
    let Some(mut c) = Cluster::start(major) else {
        return;
    };
    let t0 = std::time::Instant::now();
    let phase = |what: &str| eprintln!("{:>6.1} s  {what}", t0.elapsed().as_secs_f64());
    // No checkpoint in the middle of the load, so the freeze below needs no full-page images.
    c.sql("ALTER SYSTEM SET max_wal_size = '8GB'");
    c.sql("SELECT pg_reload_conf()");
    c.sql("CREATE TABLE big (id int, pad text) WITH (autovacuum_enabled = off)");
    c.sql("ALTER TABLE big ALTER pad SET STORAGE PLAIN");
    c.sql(&format!(
        "INSERT INTO big SELECT g, repeat(md5(g::text), 62) FROM generate_series(1, {ROWS}) g"
    ));
    // Hint bits and freezing now, or the first read after the full backup would touch
    // (and put in the next incremental) every block.
    c.sql("VACUUM (FREEZE) big");
    phase("loaded and frozen");
    let rel = c.sql("SELECT pg_relation_filepath('big')");
    let pages: u64 = c
        .sql("SELECT pg_relation_size('big') / 8192")
        .parse()
        .unwrap();
    assert!(pages > 131_072, "big must span two segments: {pages} pages");

    let root = scratch("pgincr-combine-multiseg-");
    let root = root.path();
    let mut dirs = vec![backup(&c, root, 1, None)];
    phase("full backup");
    assert!(root.join("b1").join(format!("{rel}.1")).exists());

    // Changes in both segments; the tail goes, VACUUM truncates segment 1, then updates
    // append new row versions to it again.
    c.sql(&format!("DELETE FROM big WHERE id > {}", ROWS - 20_000));
    c.sql("VACUUM big");
    c.sql("UPDATE big SET pad = repeat(md5('u' || id), 62) WHERE id % 5000 = 7");
    c.sql("UPDATE big SET pad = repeat(md5('v' || id), 62) WHERE id BETWEEN 560000 AND 560040");
    dirs.push(backup(&c, root, 2, dirs.last().map(PathBuf::as_path)));
    c.sql("UPDATE big SET pad = repeat(md5('w' || id), 62) WHERE id IN (3, 300000, 530000)");
    c.sql("DELETE FROM big WHERE id BETWEEN 100 AND 120");
    dirs.push(backup(&c, root, 3, dirs.last().map(PathBuf::as_path)));
    // Nothing writes after the last backup, so this is its content.
    let expected = c.sql(CHECK);
    c.stop();
    phase("incremental backups");

    // Both segments came as incremental files in each incremental backup.
    let (dbdir, relfile) = rel.rsplit_once('/').unwrap();
    for d in &dirs[1..] {
        for seg in [relfile.to_string(), format!("{relfile}.1")] {
            let p = d.join(dbdir).join(format!("INCREMENTAL.{seg}"));
            assert!(p.exists(), "{} missing", p.display());
            // Only the changed blocks: the full-table freeze before the full backup worked.
            let len = std::fs::metadata(&p).unwrap().len();
            assert!(len < 64 << 20, "{} has {len} bytes", p.display());
        }
    }

    let pg = pgincr_testkit::require(major).unwrap();
    let reference = root.join("ref");
    run(pg
        .tool("pg_combinebackup")
        .arg("-o")
        .arg(&reference)
        .args(&dirs));
    phase("pg_combinebackup");

    let out = root.join("out");
    let report = combine(&CombineOptions::new(dirs.clone(), out.clone())).unwrap();
    assert!(report.reconstructed >= 2, "{report:?}");
    phase("pgincr combine");
    for d in &dirs {
        std::fs::remove_dir_all(d).unwrap();
    }
    assert!(out.join(format!("{rel}.1")).exists());
    let maps = assert_same_tree_except_vm(&reference, &out);
    let vm = &report.vm_repair;
    eprintln!("{major}: {vm:?}");
    assert_eq!(maps.len() as u64, vm.maps_repaired, "{maps:?}");
    assert_eq!(vm.maps_truncated, 0, "{vm:?}");
    if major == Major::V18 {
        assert!(maps.is_empty(), "18.6 has the server fix: {maps:?}");
    } else {
        let big_vm = PathBuf::from(format!("{rel}_vm"));
        assert!(maps.contains(&big_vm), "17: {maps:?}");
    }
    assert_eq!(
        manifest_without(&reference, &maps),
        manifest_without(&out, &maps),
        "manifests differ"
    );
    // The map of the truncated relation is as long as its heap needs: 150,000 blocks before
    // the truncation, under 150,000 after, so 5 map pages.
    let vm_len = std::fs::metadata(out.join(format!("{rel}_vm")))
        .unwrap()
        .len();
    assert_eq!(vm_len, 5 * 8192);
    let stale = pgincr_verify::check_vm(&out).unwrap();
    assert!(stale.is_clean(), "{major}: {:?}", &stale.stale[..]);
    std::fs::remove_dir_all(&reference).unwrap();
    phase("compared");
    run(pg.tool("pg_verifybackup").arg(&out));
    phase("pg_verifybackup");

    let restored = Cluster::start_on(major, &out).unwrap();
    assert_eq!(restored.sql(CHECK), expected);
    restored.sql("CREATE EXTENSION pg_visibility");
    assert_eq!(
        restored.sql("SELECT count(*) FROM pg_check_visible('big')"),
        "0",
        "{major}: stale visibility-map bits after restore"
    );
    let pages: u64 = restored
        .sql("SELECT pg_relation_size('big') / 8192")
        .parse()
        .unwrap();
    assert!(pages > 131_072, "{pages} pages after restore");
    phase("restored server checked");
}
