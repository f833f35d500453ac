//! In-place tablespaces (`allow_in_place_tablespaces`, `LOCATION ''`): `pg_tblspc/<oid>` is a
//! real directory, which the server sends as its own archive with the relative location
//! `pg_tblspc/<oid>`. Against PostgreSQL 17 and 18: a full and an incremental `pgincr backup`
//! (plain) pass pg_verifybackup and list the same files as `pg_basebackup`'s; the chain combined
//! by `pg_combinebackup` and by `pgincr combine` is byte for byte the same, and a server started
//! on it has the table as it was at the last backup; a tar backup has the same archives and
//! members as `pg_basebackup -F t`, and passes pg_verifybackup where it reads tar (18).

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use pgincr_testkit::{manifest_without_mtimes, Cluster, Major};

fn pgincr(c: &Cluster) -> Command {
    let mut cmd = c.client(env!("CARGO_BIN_EXE_pgincr"));
    cmd.arg("backup");
    cmd
}

const DIGEST: &str =
    "SELECT count(*) || '/' || md5(string_agg(a::text || ':' || b, ',' ORDER BY a)) FROM t_ip";

/// Every entry under `root` as `path` (file), `path/` (directory) or `path -> target`
/// (symlink), relative to `root`. Files in `pg_wal` (segments, `.done` markers) are left out:
/// two backups taken one after the other stream different segments.
fn tree(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                out.insert(format!(
                    "{rel} -> {}",
                    std::fs::read_link(&p).unwrap().display()
                ));
            } else if t.is_dir() {
                out.insert(format!("{rel}/"));
                walk(root, &p, out);
            } else if !rel.starts_with("pg_wal/") {
                out.insert(rel);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// `tree` with the `INCREMENTAL.` prefix taken off file names: which relation files an
/// incremental backup holds, whether the server sent each in full or as blocks.
fn relation_set(root: &Path) -> BTreeSet<String> {
    tree(root)
        .into_iter()
        .map(|p| match p.rsplit_once('/') {
            Some((d, f)) => format!("{d}/{}", f.strip_prefix("INCREMENTAL.").unwrap_or(f)),
            None => p,
        })
        .collect()
}

/// Regular files of two directories compared byte for byte (`backup_manifest` without the
/// output files' mtimes).
fn same_files(a: &Path, b: &Path) {
    let ta = tree(a);
    assert_eq!(ta, tree(b), "{a:?} and {b:?} hold different files");
    for rel in ta
        .iter()
        .filter(|p| !p.ends_with('/') && !p.contains(" -> "))
    {
        if rel == "backup_manifest" {
            assert_eq!(manifest_without_mtimes(a), manifest_without_mtimes(b));
        } else {
            let (x, y) = (std::fs::read(a.join(rel)), std::fs::read(b.join(rel)));
            assert!(
                x.unwrap() == y.unwrap(),
                "{rel} differs between {a:?} and {b:?}"
            );
        }
    }
}

/// Archive file names in a tar-format backup, and the members of each archive but `pg_wal.tar`.
fn tar_listing(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        out.insert(name.clone());
        if name.ends_with(".tar") && name != "pg_wal.tar" {
            let f = std::fs::File::open(dir.join(&name)).unwrap();
            for m in tar::Archive::new(f).entries().unwrap() {
                let m = m.unwrap();
                let kind = if m.header().entry_type().is_dir() {
                    "/"
                } else {
                    ""
                };
                out.insert(format!(
                    "{name}: {}{kind}",
                    m.path()
                        .unwrap()
                        .display()
                        .to_string()
                        .trim_end_matches('/')
                ));
            }
        }
    }
    out
}

fn in_place(major: Major) {
    let Some(c) = Cluster::start(major) else {
        return;
    };
    let scratch = pgincr_testkit::scratch("pgincr-backup-inplace-");
    let s = scratch.path();
    c.sql("ALTER SYSTEM SET allow_in_place_tablespaces = on");
    c.sql("SELECT pg_reload_conf()");
    for _ in 0..100 {
        if c.sql("SHOW allow_in_place_tablespaces") == "on" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    c.sql("CREATE TABLESPACE ipts LOCATION ''");
    let oid = c.sql("SELECT oid FROM pg_tablespace WHERE spcname = 'ipts'");
    let ts_dir = c.data_dir().join("pg_tblspc").join(&oid);
    assert!(
        std::fs::symlink_metadata(&ts_dir).unwrap().is_dir(),
        "{ts_dir:?} is not an in-place directory"
    );
    c.sql(
        "CREATE TABLE t_ip (a int, b text) WITH (autovacuum_enabled = off) TABLESPACE ipts; \
         INSERT INTO t_ip SELECT g, md5(g::text) FROM generate_series(1, 20000) g; \
         CREATE INDEX t_ip_a ON t_ip (a) TABLESPACE ipts",
    );
    // Frozen and all-visible now, so a later vacuum does not touch every page and the heap
    // goes into the incremental backup as changed blocks.
    c.sql("VACUUM (FREEZE) t_ip");
    c.checkpoint();

    // Full backups, pgincr's and pg_basebackup's, one after the other.
    let full = s.join("full");
    c.run(pgincr(&c).args(["-c", "fast", "-D"]).arg(&full));
    let bb_full = s.join("bb-full");
    c.run(
        c.tool("pg_basebackup")
            .args(["-c", "fast", "-D"])
            .arg(&bb_full),
    );
    let ts_rel = format!("pg_tblspc/{oid}/");
    let files = tree(&full);
    assert!(
        files.contains(&ts_rel),
        "{ts_rel} not a directory in {files:?}"
    );
    assert!(
        files.iter().filter(|p| p.starts_with(&ts_rel)).count() > 4,
        "no table files under {ts_rel}: {files:?}"
    );
    assert_eq!(files, tree(&bb_full), "pgincr vs pg_basebackup full backup");
    c.run(c.pg.tool("pg_verifybackup").arg(&full));

    // Changes, then incrementals on top of each full backup.
    c.sql(
        "UPDATE t_ip SET b = 'changed' WHERE a % 1000 = 0; \
         INSERT INTO t_ip SELECT g, md5(g::text) FROM generate_series(20001, 21000) g; \
         DELETE FROM t_ip WHERE a BETWEEN 100 AND 200",
    );
    c.summarize();
    let expected = c.sql(DIGEST);
    let incr = s.join("incr");
    c.run(
        pgincr(&c)
            .args(["-c", "fast", "-i"])
            .arg(full.join("backup_manifest"))
            .arg("-D")
            .arg(&incr),
    );
    let bb_incr = s.join("bb-incr");
    c.run(
        c.tool("pg_basebackup")
            .args(["-c", "fast", "-i"])
            .arg(bb_full.join("backup_manifest"))
            .arg("-D")
            .arg(&bb_incr),
    );
    // The table's heap is sent as changed blocks: the server found its summaries under the
    // in-place tablespace's OID.
    let heap = c.sql("SELECT pg_relation_filepath('t_ip')");
    let (dir, file) = heap.rsplit_once('/').unwrap();
    let incr_files = tree(&incr);
    assert!(
        incr_files.contains(&format!("{dir}/INCREMENTAL.{file}")),
        "{heap} not incremental: {incr_files:?}"
    );
    assert_eq!(relation_set(&incr), relation_set(&bb_incr));
    c.run(c.pg.tool("pg_verifybackup").arg(&incr));

    // The chain combined both ways: identical (with the visibility-map repair off, which
    // 17.10's chains would otherwise get), in-place tablespace a directory again.
    let upstream = s.join("combined-upstream");
    c.run(
        c.pg.tool("pg_combinebackup")
            .arg(&full)
            .arg(&incr)
            .arg("-o")
            .arg(&upstream),
    );
    let ours = s.join("combined-pgincr");
    c.run(
        Command::new(env!("CARGO_BIN_EXE_pgincr"))
            .args(["combine", "--no-vm-repair", "-o"])
            .arg(&ours)
            .arg(&full)
            .arg(&incr),
    );
    same_files(&upstream, &ours);
    assert!(tree(&ours).contains(&ts_rel));
    c.run(c.pg.tool("pg_verifybackup").arg(&ours));
    let r = Cluster::start_on(major, &ours).expect("installed");
    assert_eq!(
        r.sql(DIGEST),
        expected,
        "restored table differs from the source"
    );
    assert_eq!(
        r.sql("SELECT count(*) FROM t_ip WHERE a BETWEEN 100 AND 200"),
        "0"
    );
    drop(r);

    // Tar: the in-place tablespace is its own <oid>.tar, as pg_basebackup -F t writes it.
    let tar = s.join("tar");
    c.run(pgincr(&c).args(["-c", "fast", "-F", "t", "-D"]).arg(&tar));
    let bb_tar = s.join("bb-tar");
    c.run(
        c.tool("pg_basebackup")
            .args(["-c", "fast", "-F", "t", "-D"])
            .arg(&bb_tar),
    );
    let listing = tar_listing(&tar);
    assert!(listing.contains(&format!("{oid}.tar")), "{listing:?}");
    assert_eq!(
        listing,
        tar_listing(&bb_tar),
        "pgincr vs pg_basebackup -F t"
    );
    c.sql("UPDATE t_ip SET b = 'tar' WHERE a % 500 = 0");
    c.summarize();
    let tar_incr = s.join("tar-incr");
    c.run(
        pgincr(&c)
            .args(["-c", "fast", "-F", "t", "-i"])
            .arg(tar.join("backup_manifest"))
            .arg("-D")
            .arg(&tar_incr),
    );
    let help = c.run(c.pg.tool("pg_verifybackup").arg("--help"));
    if help.contains("--format") {
        // pg_waldump reads no tar files: -n.
        for d in [&tar, &tar_incr] {
            c.run(c.pg.tool("pg_verifybackup").arg("-n").arg(d));
        }
    } else {
        eprintln!("{major}: pg_verifybackup reads no tar backups; tar checked by listing only");
    }

    // `pgincr combine` reads the tar chain, <oid>.tar with no tablespace_map line included;
    // the reference is pg_combinebackup on plain extractions of the same backups.
    let tar_combined = s.join("tar-combined");
    c.run(
        Command::new(env!("CARGO_BIN_EXE_pgincr"))
            .args(["combine", "--no-vm-repair", "-o"])
            .arg(&tar_combined)
            .arg(&tar)
            .arg(&tar_incr),
    );
    let (x_full, x_incr) = (s.join("x-full"), s.join("x-incr"));
    extract(&tar, &x_full);
    extract(&tar_incr, &x_incr);
    let reference = s.join("tar-reference");
    c.run(
        c.pg.tool("pg_combinebackup")
            .arg(&x_full)
            .arg(&x_incr)
            .arg("-o")
            .arg(&reference),
    );
    assert!(tree(&tar_combined).contains(&ts_rel));
    same_files_any_order(&reference, &tar_combined);
    if help.contains("--format") {
        let tar_out = s.join("tar-combined-t");
        c.run(
            Command::new(env!("CARGO_BIN_EXE_pgincr"))
                .args(["combine", "--no-vm-repair", "-F", "t", "-o"])
                .arg(&tar_out)
                .arg(&tar)
                .arg(&tar_incr),
        );
        c.run(c.pg.tool("pg_verifybackup").arg("-n").arg(&tar_out));
    }
}

/// Unpacks a tar-format backup into a plain one: `<oid>.tar` into `pg_tblspc/<oid>`, a
/// directory, since the tablespace is in place.
fn extract(tar_backup: &Path, plain: &Path) {
    std::fs::create_dir(plain).unwrap();
    for e in std::fs::read_dir(tar_backup).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name == "backup_manifest" {
            std::fs::copy(&p, plain.join(&name)).unwrap();
            continue;
        }
        let dest = match name.strip_suffix(".tar").unwrap() {
            "base" => plain.to_path_buf(),
            "pg_wal" => plain.join("pg_wal"),
            oid => plain.join("pg_tblspc").join(oid),
        };
        std::fs::create_dir_all(&dest).unwrap();
        pgincr_archive::unpack(&p, &dest).unwrap();
    }
    // The server sends an empty tablespace_map (in-place tablespaces get no line); a plain
    // backup has none, and pgincr combine leaves it out.
    std::fs::remove_file(plain.join("tablespace_map")).unwrap();
}

/// Like `same_files`, but the manifests need only list the same entries: for tar inputs their
/// order follows the archives, not a directory walk.
fn same_files_any_order(reference: &Path, ours: &Path) {
    let tr = tree(reference);
    assert_eq!(
        tr,
        tree(ours),
        "{reference:?} and {ours:?} hold different files"
    );
    for rel in tr
        .iter()
        .filter(|p| !p.ends_with('/') && !p.contains(" -> "))
    {
        if rel == "backup_manifest" {
            let lines = |d: &Path| {
                let mut v: Vec<String> = manifest_without_mtimes(d)
                    .lines()
                    .map(|l| l.trim_end_matches(',').to_string())
                    .collect();
                v.sort();
                v
            };
            assert_eq!(lines(reference), lines(ours), "manifest entries differ");
        } else {
            let (x, y) = (
                std::fs::read(reference.join(rel)),
                std::fs::read(ours.join(rel)),
            );
            assert!(x.unwrap() == y.unwrap(), "{rel} differs");
        }
    }
}

#[test]
fn in_place_tablespace_17() {
    in_place(Major::V17);
}

#[test]
fn in_place_tablespace_18() {
    in_place(Major::V18);
}
