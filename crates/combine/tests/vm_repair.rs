//! Stale visibility-map bits in combined chains (PostgreSQL 17.0–17.10, 18.0–18.4), on real
//! servers: the reproduction of pgsql-hackers "Why clearing the VM doesn't require registering
//! vm buffer in WAL record".
//!
//! One chain per major version (a full backup and two incrementals over updates, deletes,
//! inserts into all-visible pages, tuple locks on frozen pages, and a VACUUM that puts a map
//! page into the incremental) is combined three ways: by upstream `pg_combinebackup`, by pgincr
//! with `vm_repair` off (must be byte-identical to upstream) and by pgincr by default (every
//! file but visibility maps byte-identical). PostgreSQL 17.10 writes the bug, 18.6 has the fix;
//! the test asserts which, so it notices when a server fix changes the picture.
//!
//! On every restore: `pg_check_visible`/`pg_check_frozen` for every table, index-only counts
//! against heap counts, `pg_amcheck`, and VACUUM's warning about a map bit without
//! `PD_ALL_VISIBLE`. The offline check of `pgincr-verify` must find every stale bit of
//! upstream's output and none in ours or in the full backup.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use pgincr_combine::{combine, CombineOptions, CopyMode, OutputFormat};
use pgincr_testkit::{backup_contents, is_visibility_map, run, scratch, Cluster, Major};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Tables and the index each one's index-only count goes through.
const TABLES: &[&str] = &["pgbench_accounts", "t_lock", "t_ins", "t_vac", "t_del"];

/// A full backup and two incrementals over a workload whose changes clear map bits.
fn build_chain(c: &Cluster, root: &Path) -> Vec<PathBuf> {
    // Only explicit VACUUMs set map bits, so what the chain carries is this test's doing.
    c.sql("ALTER SYSTEM SET autovacuum = off");
    c.sql("SELECT pg_reload_conf()");
    c.sql("CREATE EXTENSION pg_visibility");
    c.sql("CREATE EXTENSION amcheck");
    c.pgbench(&["-i", "-s", "3", "-q"]);
    for (t, fill) in [
        ("t_lock", 100),
        ("t_ins", 50),
        ("t_vac", 100),
        ("t_del", 100),
    ] {
        c.sql(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, v int, pad text) WITH (fillfactor = {fill})"
        ));
        c.sql(&format!(
            "INSERT INTO {t} SELECT g, g, repeat('x', 60) FROM generate_series(1, 40000) g"
        ));
        c.sql(&format!("VACUUM (FREEZE, ANALYZE) {t}"));
    }
    let mut dirs = Vec::new();
    let backup = |dirs: &mut Vec<PathBuf>| {
        let dir = root.join(format!("b{}", dirs.len()));
        let mut cmd = c.tool("pg_basebackup");
        cmd.arg("-D").arg(&dir).args(["-c", "fast"]);
        if let Some(prev) = dirs.last() {
            let prev: &PathBuf = prev;
            cmd.arg(format!(
                "--incremental={}",
                prev.join("backup_manifest").display()
            ));
        }
        c.run(&mut cmd);
        dirs.push(dir);
    };
    backup(&mut dirs);
    // Step 1: updates (pgbench), a tuple lock on frozen pages (clears all-frozen only),
    // inserts into all-visible pages, and a table vacuumed after its changes (its map page
    // is then in the incremental).
    c.pgbench(&["-t", "300", "-c", "2", "-n"]);
    c.sql("SELECT count(*) FROM (SELECT * FROM t_lock WHERE id % 97 = 0 FOR UPDATE) s");
    c.sql("INSERT INTO t_ins SELECT g, g, 'new' FROM generate_series(40001, 40400) g");
    c.sql("UPDATE t_vac SET v = v + 1 WHERE id % 10 = 0");
    c.sql("VACUUM t_vac");
    c.sql("DELETE FROM t_del WHERE id % 11 = 0");
    backup(&mut dirs);
    // Step 2: more of the same after the first incremental.
    c.pgbench(&["-t", "300", "-c", "2", "-n"]);
    c.sql("DELETE FROM t_vac WHERE id % 7 = 0");
    c.sql("UPDATE t_lock SET v = -v WHERE id % 501 = 0");
    c.sql("SELECT count(*) FROM (SELECT * FROM t_lock WHERE id % 89 = 0 FOR SHARE) s");
    backup(&mut dirs);
    dirs
}

/// Heap counts of every table, from the source after the last backup.
fn heap_counts(c: &Cluster) -> Vec<String> {
    TABLES
        .iter()
        .map(|t| {
            c.sql(&format!(
                "SET enable_indexscan = off; SET enable_indexonlyscan = off; \
                 SET enable_bitmapscan = off; SELECT count(*) FROM {t}"
            ))
        })
        .collect()
}

/// Counts through index-only scans, which trust the visibility map.
fn index_only_counts(c: &Cluster) -> Vec<String> {
    TABLES
        .iter()
        .map(|t| {
            // enable_indexscan covers index-only scans too: leave it on, and the planner
            // takes the index-only scan the map makes cheap.
            let set = "SET enable_seqscan = off; SET enable_bitmapscan = off;";
            let q = format!("{set} SELECT count(*) FROM {t}");
            let plan = c.sql(&format!("{set} EXPLAIN SELECT count(*) FROM {t}"));
            assert!(plan.contains("Index Only Scan"), "{t}: {plan}");
            c.sql(&q)
        })
        .collect()
}

/// Tuples `pg_check_visible` and `pg_check_frozen` report over all tables.
fn visibility_problems(c: &Cluster) -> (u64, u64) {
    let q = |f: &str| -> u64 {
        c.sql(&format!(
            "SELECT count(*) FROM pg_class r, LATERAL {f}(r.oid) \
             WHERE r.relkind IN ('r', 'm', 't')"
        ))
        .parse()
        .unwrap()
    };
    (q("pg_check_visible"), q("pg_check_frozen"))
}

/// Everything a restore must pass, and its visibility problems (to compare across restores).
fn check_restore(major: Major, dir: &Path, heap: &[String]) -> ((u64, u64), Vec<String>) {
    let mut c = Cluster::start_on(major, dir).unwrap();
    let problems = visibility_problems(&c);
    let index_only = index_only_counts(&c);
    assert_eq!(
        heap_counts(&c),
        heap,
        "{major}: heap counts of {}",
        dir.display()
    );
    if problems == (0, 0) {
        assert_eq!(index_only, heap, "{major}: index-only counts");
        let out = c.run(
            c.tool("pg_amcheck")
                .args(["--heapallindexed", "-d", "postgres"]),
        );
        assert!(out.trim().is_empty(), "{major}: pg_amcheck: {out}");
        c.sql("VACUUM");
        let log = c.log();
        assert!(
            !log.contains("visibility map bit is set"),
            "{major}: VACUUM found stale map bits:\n{log}"
        );
    }
    c.stop();
    (problems, index_only)
}

fn check_major(major: Major) {
    let Some(mut c) = Cluster::start(major) else {
        return;
    };
    let root = scratch("pgincr-vm-repair-");
    let root = root.path();
    let dirs = build_chain(&c, root);
    let heap = heap_counts(&c);
    c.stop();

    let reference = root.join("ref");
    run(c
        .pg
        .tool("pg_combinebackup")
        .arg("-o")
        .arg(&reference)
        .args(&dirs));
    let plain = root.join("norepair");
    let mut opts = CombineOptions::new(dirs.clone(), plain.clone());
    opts.vm_repair = false;
    let report = combine(&opts).unwrap();
    assert!(!report.vm_repair.enabled);
    assert_eq!(backup_contents(&reference), backup_contents(&plain));

    let out = root.join("out");
    let report = combine(&CombineOptions::new(dirs.clone(), out.clone())).unwrap();
    let vm = &report.vm_repair;
    eprintln!("{major}: {vm:?}");
    assert!(vm.enabled && vm.maps_checked > 0, "{vm:?}");
    let (want, ours) = (backup_contents(&reference), backup_contents(&out));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        ours.keys().collect::<Vec<_>>()
    );
    let mut vm_differ = Vec::new();
    for (p, bytes) in &want {
        if bytes != &ours[p] {
            assert!(
                is_visibility_map(p),
                "{major}: {} differs and is not a map",
                p.display()
            );
            vm_differ.push(p.clone());
        }
    }
    assert_eq!(vm_differ.len() as u64, vm.maps_repaired, "{vm_differ:?}");
    run(c.pg.tool("pg_verifybackup").arg(&out));

    // The offline check: every stale bit of upstream's output, none of ours or of the full.
    let ref_check = pgincr_verify::check_vm(&reference).unwrap();
    let our_check = pgincr_verify::check_vm(&out).unwrap();
    let full_check = pgincr_verify::check_vm(&dirs[0]).unwrap();
    eprintln!(
        "{major}: offline check: upstream {} stale, ours {}, full {} ({} in flux)",
        ref_check.stale.len(),
        our_check.stale.len(),
        full_check.stale.len(),
        our_check.in_flux
    );
    assert!(our_check.is_clean(), "{major}: {:?}", &our_check.stale[..]);
    assert!(
        full_check.is_clean(),
        "{major}: {:?}",
        &full_check.stale[..]
    );
    assert!(our_check.all_visible_bits > 1000, "{our_check:?}");

    let (ref_problems, ref_index_only) = check_restore(major, &reference, &heap);
    let (our_problems, _) = check_restore(major, &out, &heap);
    assert_eq!(our_problems, (0, 0), "{major}: pgincr's restore");
    match major {
        Major::V17 => {
            // 17.10 is affected: upstream's restore gives wrong answers; the repair found
            // what the offline check finds.
            assert!(
                ref_problems.0 > 0,
                "17: upstream restore has no stale bits now"
            );
            assert_ne!(
                ref_index_only, heap,
                "17: upstream index-only counts are right now"
            );
            assert!(!ref_check.is_clean());
            // The repair and the offline check agree bit for bit (pages the last backup saw
            // change are left to WAL replay by the check, not by the repair).
            let cleared = vm.all_visible_cleared + vm.all_frozen_cleared;
            let found = ref_check.stale.len() as u64;
            assert!(
                found <= cleared && cleared <= found + ref_check.in_flux,
                "17: repaired {cleared}, offline check found {found} (+{} in flux)",
                ref_check.in_flux
            );
            assert!(
                vm.all_visible_cleared > 0 && vm.all_frozen_cleared > 0,
                "{vm:?}"
            );
        }
        Major::V18 => {
            // 18.6 has the server fix: upstream is right, and pgincr changes nothing.
            assert_eq!(ref_problems, (0, 0), "18: upstream restore");
            assert!(ref_check.is_clean(), "{:?}", &ref_check.stale[..]);
            assert_eq!(vm.maps_repaired, 0, "{vm:?}");
        }
    }

    // Every other mode and the tar output repair the same way; a repaired map never shares
    // storage with an input (--link would otherwise hard-link a map taken whole).
    for (name, mode, format) in [
        ("link", CopyMode::Link, OutputFormat::Plain),
        ("cfr", CopyMode::CopyFileRange, OutputFormat::Plain),
        ("tar", CopyMode::Copy, OutputFormat::Tar),
    ] {
        let o = root.join(format!("out-{name}"));
        let mut opts = CombineOptions::new(dirs.clone(), o.clone());
        opts.copy_mode = mode;
        opts.format = format;
        let r = combine(&opts).unwrap();
        // The same repairs; only how many heap pages had to be read back differs (--link
        // never sees the data pass).
        let same = |mut r: pgincr_combine::VmRepairReport| {
            r.heap_pages_read = 0;
            r
        };
        assert_eq!(same(r.vm_repair), same(report.vm_repair.clone()), "{name}");
        if format == OutputFormat::Plain {
            assert_eq!(backup_contents(&o), ours, "{name}");
            for p in &vm_differ {
                assert_eq!(std::fs::metadata(o.join(p)).unwrap().nlink(), 1, "{name}");
            }
            run(c.pg.tool("pg_verifybackup").arg(&o));
        } else {
            let extracted = root.join("out-tar-x");
            std::fs::create_dir(&extracted).unwrap();
            run(std::process::Command::new("tar")
                .arg("-xf")
                .arg(o.join("base.tar"))
                .arg("-C")
                .arg(&extracted));
            for p in &vm_differ {
                assert_eq!(
                    std::fs::read(extracted.join(p)).unwrap(),
                    ours[p],
                    "{name}: {}",
                    p.display()
                );
            }
        }
        std::fs::remove_dir_all(&o).unwrap();
    }
}

#[test]
fn pg17_stale_vm_bits_repaired() {
    check_major(Major::V17);
}

#[test]
fn pg18_fixed_server_nothing_to_repair() {
    check_major(Major::V18);
}
