//! Chains of real backups taken with upstream `pg_basebackup` 17 and 18, combined by pgincr
//! and by `pg_combinebackup`: every output file is compared byte for byte, the manifests modulo
//! `Last-Modified`, `pg_verifybackup` checks pgincr's output, and a server started on it must
//! show the source's table contents as of the last backup. Every copy mode and `-j 1` must give
//! the same bytes. The same chain then serves the bad-input checks.
//!
//! One cluster per major version keeps this within the CI budget. Relations over 1 GB are
//! covered by `multi_segment.rs` (a real 1.14 GiB table, PostgreSQL 18) and, for edge cases,
//! by `synthetic_chains.rs`, whose chains use a 4-block segment size.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use pgincr_combine::{combine, CombineError, CombineOptions, CopyMode, TablespaceMapping};
use pgincr_testkit::{
    assert_same_backup, assert_same_backup_except_vm, manifest_without, manifest_without_mtimes,
    output, run, scratch, Cluster, Major,
};
use pgincr_types::manifest::Manifest;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Queries whose results must survive backup + combine + recovery.
const CHECKS: &[(&str, &str)] = &[
    (
        "postgres",
        "SELECT count(*), sum(abalance), sum(bid) FROM pgbench_accounts",
    ),
    (
        "postgres",
        "SELECT count(*), sum(delta) FROM pgbench_history",
    ),
    (
        "postgres",
        "SELECT count(*), md5(string_agg(pad, ',' ORDER BY id)) FROM big",
    ),
    ("postgres", "SELECT count(*), sum(id) FROM t_ts"),
    ("postgres", "SELECT count(*), sum(id) FROM moved_in"),
    ("postgres", "SELECT count(*) FROM shrunk"),
    ("newdb", "SELECT count(*), sum(v) FROM in_newdb"),
    (
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname = 'dropme'",
    ),
];

struct Chain {
    dirs: Vec<PathBuf>,
    /// Tablespace location in the source cluster, and its copy in each backup.
    ts_dirs: Vec<PathBuf>,
    expected: Vec<String>,
}

fn backup(
    c: &Cluster,
    root: &Path,
    i: usize,
    ts: &Path,
    prev: Option<&Path>,
) -> (PathBuf, PathBuf) {
    let dir = root.join(format!("b{i}"));
    let ts_copy = root.join(format!("b{i}-ts"));
    let mut cmd = c.tool("pg_basebackup");
    cmd.arg("-D").arg(&dir).args(["-c", "fast", "-T"]);
    cmd.arg(format!("{}={}", ts.display(), ts_copy.display()));
    if let Some(p) = prev {
        cmd.arg(format!(
            "--incremental={}",
            p.join("backup_manifest").display()
        ));
    }
    c.run(&mut cmd);
    (dir, ts_copy)
}

/// Seven backups (one full, six incremental) over a workload that creates and drops
/// databases, truncates, shrinks with VACUUM, rewrites with VACUUM FULL and moves relations
/// between tablespaces.
fn build_chain(c: &Cluster, root: &Path) -> Chain {
    let ts = c.create_tablespace("ts1");
    c.pgbench(&["-i", "-s", "1", "-q"]);
    c.sql("CREATE TABLE big (id int, pad text)");
    c.sql("INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 20000) g");
    c.sql("CREATE TABLE t_ts (id int) TABLESPACE ts1");
    c.sql("INSERT INTO t_ts SELECT generate_series(1, 5000)");
    c.sql("CREATE TABLE moved_in (id int)");
    c.sql("INSERT INTO moved_in SELECT generate_series(1, 3000)");
    c.sql("CREATE TABLE shrunk AS SELECT g AS id, repeat('s', 300) AS pad FROM generate_series(1, 8000) g");
    c.sql("CREATE UNLOGGED TABLE unlogged_t AS SELECT generate_series(1, 1000) AS g");
    c.sql("CREATE DATABASE dropme");
    c.sql_db(
        "dropme",
        "CREATE TABLE gone AS SELECT generate_series(1, 1000) AS g",
    );
    let mut dirs = Vec::new();
    let mut ts_dirs = Vec::new();
    let steps: &[&[&str]] = &[
        &[],
        &["DROP DATABASE dropme", "CREATE DATABASE newdb"],
        &[
            "DELETE FROM shrunk WHERE id > 2000",
            "VACUUM shrunk",
            "TRUNCATE pgbench_history",
        ],
        &[
            "VACUUM FULL pgbench_accounts",
            "UPDATE big SET pad = 'u' WHERE id % 50 = 0",
        ],
        &[
            "ALTER TABLE t_ts SET TABLESPACE pg_default",
            "ALTER TABLE moved_in SET TABLESPACE ts1",
        ],
        &[
            "INSERT INTO big SELECT g, 'late' FROM generate_series(20001, 23000) g",
            "DELETE FROM big WHERE id < 100",
        ],
        &[
            "ALTER TABLE t_ts SET TABLESPACE ts1",
            "UPDATE moved_in SET id = id + 1 WHERE id % 7 = 0",
        ],
    ];
    for (i, step) in steps.iter().enumerate() {
        for sql in *step {
            c.sql(sql);
        }
        if i == 1 {
            c.sql_db(
                "newdb",
                "CREATE TABLE in_newdb AS SELECT g AS v FROM generate_series(1, 500) g",
            );
        }
        if i > 0 {
            c.pgbench(&["-t", "50", "-c", "2"]);
        }
        let (d, t) = backup(c, root, i + 1, &ts, dirs.last().map(PathBuf::as_path));
        dirs.push(d);
        ts_dirs.push(t);
    }
    // Nothing writes after the last backup, so these are its contents.
    let expected = CHECKS.iter().map(|(db, q)| c.sql_db(db, q)).collect();
    Chain {
        dirs,
        ts_dirs,
        expected,
    }
}

fn options(chain: &Chain, out: &Path, ts_out: &Path) -> CombineOptions {
    let mut o = CombineOptions::new(chain.dirs.clone(), out.to_path_buf());
    o.tablespace_mappings = vec![TablespaceMapping {
        old_dir: chain.ts_dirs.last().unwrap().clone(),
        new_dir: ts_out.to_path_buf(),
    }];
    o
}

fn check_major(major: Major) {
    let Some(mut c) = Cluster::start(major) else {
        return;
    };
    let root = scratch("pgincr-combine-real-");
    let root = root.path();
    let chain = build_chain(&c, root);
    c.stop();

    // Manifests of real backups parse and are rewritten byte for byte.
    for d in &chain.dirs {
        let text = std::fs::read(d.join("backup_manifest")).unwrap();
        let m = Manifest::parse(&text[..]).unwrap();
        assert_eq!(
            m.write_to(Vec::new()).unwrap(),
            text,
            "{} round trip",
            d.display()
        );
    }

    // The reference: upstream pg_combinebackup.
    let reference = root.join("ref");
    let ref_ts = root.join("ref-ts");
    let mut cmd = c.pg.tool("pg_combinebackup");
    cmd.arg("-o").arg(&reference).arg("-T");
    cmd.arg(format!(
        "{}={}",
        chain.ts_dirs.last().unwrap().display(),
        ref_ts.display()
    ));
    cmd.args(&chain.dirs);
    run(&mut cmd);

    // pgincr, default options (copy mode, one thread per core, visibility-map repair):
    // every file but repaired maps byte-identical, and no stale map bit left.
    let out = root.join("out");
    let out_ts = root.join("out-ts");
    let report = combine(&options(&chain, &out, &out_ts)).unwrap();
    assert!(report.reconstructed > 0, "{report:?}");
    let maps = assert_same_backup_except_vm(&reference, &out, "copy mode");
    assert_eq!(
        maps.len() as u64,
        report.vm_repair.maps_repaired,
        "{maps:?}"
    );
    if major == Major::V18 {
        assert!(maps.is_empty(), "18.6 has the server fix: {maps:?}");
    }
    assert_same_backup_except_vm(&ref_ts, &out_ts, "copy mode tablespace");
    assert_eq!(
        manifest_without(&reference, &maps),
        manifest_without(&out, &maps),
        "manifests differ"
    );
    let check = pgincr_verify::check_vm(&out).unwrap();
    assert!(check.is_clean(), "{major}: {:?}", &check.stale[..]);
    assert_eq!(
        std::fs::read_link(
            out.join("pg_tblspc").join(
                std::fs::read_dir(out.join("pg_tblspc"))
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap()
                    .file_name()
            )
        )
        .unwrap(),
        out_ts
    );
    run(c.pg.tool("pg_verifybackup").arg(&out));

    // Every other mode gives the same bytes, with and without direct I/O; without the
    // visibility-map repair they are pg_combinebackup's, maps included.
    let modes: &[(&str, CopyMode, usize, bool)] = &[
        ("j1", CopyMode::Copy, 1, true),
        ("buffered", CopyMode::Copy, 0, false),
        ("cfr", CopyMode::CopyFileRange, 0, true),
        ("link", CopyMode::Link, 2, true),
        ("clone", CopyMode::Clone, 0, true),
    ];
    for (name, mode, jobs, direct) in modes {
        let o = root.join(format!("out-{name}"));
        let ots = root.join(format!("out-{name}-ts"));
        let mut opts = options(&chain, &o, &ots);
        opts.copy_mode = *mode;
        opts.jobs = *jobs;
        opts.direct_io = *direct;
        opts.vm_repair = false;
        match combine(&opts) {
            Err(CombineError::Output(msg))
                if *mode == CopyMode::Clone && msg.contains("reflinks") =>
            {
                eprintln!("--clone not supported on this file system, skipped: {msg}");
                assert!(!o.exists(), "a failed combine must leave no output");
                continue;
            }
            r => {
                r.unwrap();
            }
        }
        assert_same_backup(&reference, &o, name);
        assert_same_backup(&ref_ts, &ots, name);
        assert_eq!(
            manifest_without_mtimes(&reference),
            manifest_without_mtimes(&o),
            "{name}: manifests differ"
        );
        run(c.pg.tool("pg_verifybackup").arg(&o));
        std::fs::remove_dir_all(&o).unwrap();
        std::fs::remove_dir_all(&ots).unwrap();
    }

    // SHA-256 manifests and --no-manifest.
    let o = root.join("out-sha");
    let mut opts = options(&chain, &o, &root.join("out-sha-ts"));
    opts.manifest_checksums = pgincr_types::checksum::ChecksumType::Sha256;
    combine(&opts).unwrap();
    run(c.pg.tool("pg_verifybackup").arg(&o));
    let o = root.join("out-nomanifest");
    let mut opts = options(&chain, &o, &root.join("out-nomanifest-ts"));
    opts.no_manifest = true;
    combine(&opts).unwrap();
    assert!(!o.join("backup_manifest").exists());

    bad_inputs(&chain, root);

    // A server started on pgincr's output sees the data of the last backup.
    let restored = Cluster::start_on(major, &out).unwrap();
    for ((db, q), want) in CHECKS.iter().zip(&chain.expected) {
        assert_eq!(&restored.sql_db(db, q), want, "{major}: {q}");
    }
    assert_eq!(
        restored.sql("SELECT count(*) FROM unlogged_t"),
        "0",
        "unlogged tables come back empty"
    );
}

/// Copies a backup with hard links, so one file can be replaced without touching the original.
fn link_copy(src: &Path, dst: &Path) {
    run(Command::new("cp").arg("-al").arg(src).arg(dst));
}

fn expect_failure(chain_dirs: Vec<PathBuf>, ts_old: &Path, root: &Path, name: &str, needle: &str) {
    let out = root.join(format!("bad-{name}"));
    let mut o = CombineOptions::new(chain_dirs, out.clone());
    o.tablespace_mappings = vec![TablespaceMapping {
        old_dir: ts_old.to_path_buf(),
        new_dir: root.join(format!("bad-{name}-ts")),
    }];
    let err = combine(&o).expect_err(name).to_string();
    assert!(err.contains(needle), "{name}: {err:?} lacks {needle:?}");
    assert!(!out.exists(), "{name}: output left behind");
    assert!(
        !root
            .join(format!(".bad-{name}.pgincr-partial-{}", std::process::id()))
            .exists(),
        "{name}: staging left behind"
    );
}

fn bad_inputs(chain: &Chain, root: &Path) {
    let n = chain.dirs.len();
    let last = &chain.dirs[n - 1];
    let ts_old = chain.ts_dirs[n - 1].clone();
    let with_last = |d: PathBuf| {
        let mut v = chain.dirs[..n - 1].to_vec();
        v.push(d);
        v
    };
    // Find an incremental file with blocks in the final backup.
    let incr = std::fs::read_dir(last.join("base/5"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("INCREMENTAL.")
        })
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let rel = incr.strip_prefix(last).unwrap().to_path_buf();
    let corrupt = |name: &str, edit: &dyn Fn(&mut Vec<u8>)| {
        let d = root.join(format!("corrupt-{name}"));
        link_copy(last, &d);
        let mut bytes = std::fs::read(d.join(&rel)).unwrap();
        edit(&mut bytes);
        std::fs::remove_file(d.join(&rel)).unwrap();
        std::fs::write(d.join(&rel), bytes).unwrap();
        d
    };
    let file_name = rel.file_name().unwrap().to_str().unwrap().to_string();
    let d = corrupt("magic", &|b| b[0] ^= 0xff);
    expect_failure(
        with_last(d),
        &ts_old,
        root,
        "magic",
        "bad incremental magic number",
    );
    let d = corrupt("truncated", &|b| b.truncate(b.len() - 100));
    expect_failure(with_last(d), &ts_old, root, "truncated", &file_name);
    let d = corrupt("dup", &|b| {
        let n = u32::from_le_bytes(b[4..8].try_into().unwrap());
        if n >= 2 {
            let first: [u8; 4] = b[12..16].try_into().unwrap();
            b[16..20].copy_from_slice(&first);
        } else {
            b[8..12].copy_from_slice(&0u32.to_le_bytes());
        }
    });
    expect_failure(with_last(d), &ts_old, root, "dup", "backup \"");
    // Manifest checksum mismatch.
    let d = root.join("corrupt-manifest");
    link_copy(last, &d);
    let mut m = std::fs::read(d.join("backup_manifest")).unwrap();
    let pos = m.iter().position(|&b| b == b'S').unwrap();
    m[pos] = b's';
    std::fs::remove_file(d.join("backup_manifest")).unwrap();
    std::fs::write(d.join("backup_manifest"), m).unwrap();
    expect_failure(with_last(d), &ts_old, root, "manifest", "manifest");
    // A damaged page in the full backup, in a catalog no later backup carries again (so the
    // combine takes it from there): refused with backup, file and block; pg_combinebackup
    // would copy it into the output. --link never reads the data, so it cannot tell.
    let d = root.join("damaged-page");
    link_copy(&chain.dirs[0], &d);
    let rel = pg_am_path(&chain.dirs[0]);
    let mut bytes = std::fs::read(d.join(&rel)).unwrap();
    bytes[4000] ^= 0x5a;
    std::fs::remove_file(d.join(&rel)).unwrap();
    std::fs::write(d.join(&rel), &bytes).unwrap();
    // The manifest's checksum would catch the change first; give the file its new checksum
    // so that only the page checksum can notice (what a backup damaged before its manifest
    // was written looks like).
    rewrite_manifest_entry(&d, &rel, &bytes);
    let mut v = chain.dirs.clone();
    v[0] = d;
    expect_failure(v, &ts_old, root, "page", "fails its data checksum");
    // A file the manifest lists is missing.
    let d = root.join("missing-file");
    link_copy(last, &d);
    std::fs::remove_file(d.join("PG_VERSION").with_file_name("postgresql.conf")).unwrap();
    expect_failure(with_last(d), &ts_old, root, "missing", "postgresql.conf");
    // Out of order, and a gap in the chain.
    let mut swapped = chain.dirs.clone();
    swapped.swap(1, 2);
    expect_failure(swapped, &ts_old, root, "order", "starts at LSN");
    let mut gap = chain.dirs.clone();
    gap.remove(3);
    expect_failure(gap, &ts_old, root, "gap", "a backup in between is missing");
    // No mapping for the tablespace.
    let out = root.join("bad-nomap");
    let err = combine(&CombineOptions::new(chain.dirs.clone(), out.clone())).unwrap_err();
    assert!(
        err.to_string().contains("has no tablespace mapping"),
        "{err}"
    );
    // A non-empty output directory is refused and left alone.
    let busy = root.join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep"), b"x").unwrap();
    let mut o = CombineOptions::new(chain.dirs.clone(), busy.clone());
    o.tablespace_mappings = vec![TablespaceMapping {
        old_dir: ts_old.clone(),
        new_dir: root.join("busy-ts"),
    }];
    assert!(combine(&o).unwrap_err().to_string().contains("not empty"));
    assert_eq!(std::fs::read(busy.join("keep")).unwrap(), b"x");
    // A dry run checks everything and writes nothing.
    let dry = root.join("dry");
    let mut o = CombineOptions::new(chain.dirs.clone(), dry.clone());
    o.tablespace_mappings = vec![TablespaceMapping {
        old_dir: ts_old.clone(),
        new_dir: root.join("dry-ts"),
    }];
    o.dry_run = true;
    let r = combine(&o).unwrap();
    assert!(r.dry_run && r.files > 1000 && !dry.exists());
    // Backups of another cluster: the upstream tool and we both refuse; here a second chain
    // is faked by changing the system identifier of a copy's pg_control (CRC recomputed).
    let d = root.join("other-cluster");
    link_copy(&chain.dirs[0], &d);
    let ctl = d.join("global/pg_control");
    let mut b = std::fs::read(&ctl).unwrap();
    b[0] ^= 1;
    let crc_at = if u32::from_le_bytes(b[8..12].try_into().unwrap()) == 1700 {
        288
    } else {
        292
    };
    let crc = crc32c::crc32c(&b[..crc_at]);
    b[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    std::fs::remove_file(&ctl).unwrap();
    std::fs::write(&ctl, b).unwrap();
    let mut v = chain.dirs.clone();
    v[0] = d;
    expect_failure(v, &ts_old, root, "cluster", "another cluster");
    let _ = output;
}

/// The path of `pg_am`'s heap in a backup: base/5/2601, a catalog nothing in the workload
/// changes (checked: it is taken whole from the full backup).
fn pg_am_path(full: &Path) -> PathBuf {
    let rel = PathBuf::from("base/5/2601");
    assert!(
        full.join(&rel).exists(),
        "{} has no {}",
        full.display(),
        rel.display()
    );
    rel
}

/// Replaces the size and CRC-32C of `rel` in `dir`'s manifest with those of `bytes` and
/// rewrites the manifest's own checksum.
fn rewrite_manifest_entry(dir: &Path, rel: &Path, bytes: &[u8]) {
    let path = dir.join("backup_manifest");
    let text = std::fs::read(&path).unwrap();
    let mut m = Manifest::parse(&text[..]).unwrap();
    let key = rel.to_str().unwrap().as_bytes();
    let entry = m.files.get_mut(key).unwrap();
    let mut sum =
        pgincr_types::checksum::Checksummer::new(pgincr_types::checksum::ChecksumType::Crc32c);
    sum.update(bytes);
    entry.size = bytes.len() as u64;
    entry.checksum = sum.finish().unwrap().bytes;
    let out = m.write_to(Vec::new()).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, out).unwrap();
}

#[test]
fn pg17_chain_matches_pg_combinebackup() {
    check_major(Major::V17);
}

#[test]
fn pg18_chain_matches_pg_combinebackup() {
    check_major(Major::V18);
}
