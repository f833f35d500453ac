//! `pgincr_verify::verify_backup` against `pg_verifybackup` of the same major version, WAL
//! parsing included, on a real backup and damaged copies of it: both must give the same
//! verdict and blame the same files (for WAL damage that upstream reports without naming the
//! segment, ours must name it).

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use pgincr_testkit::{output, run, scratch, Cluster, Major};
use pgincr_verify::{verify_backup, ProblemKind, VerifyOptions};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Copies a backup with hard links; `replace` then swaps one file without touching the
/// original.
fn link_copy(src: &Path, dst: &Path) {
    run(Command::new("cp").arg("-al").arg(src).arg(dst));
}

fn replace(dir: &Path, rel: &str, edit: impl FnOnce(&mut Vec<u8>)) {
    let p = dir.join(rel);
    let mut bytes = std::fs::read(&p).unwrap();
    edit(&mut bytes);
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, bytes).unwrap();
}

/// Quoted file names in pg_verifybackup's error lines, relative to the backup.
fn upstream_files(stderr: &str) -> BTreeSet<String> {
    stderr
        .lines()
        .filter(|l| l.contains("error:"))
        .filter_map(|l| {
            let start = l.find('"')? + 1;
            let end = start + l[start..].find('"')?;
            Some(l[start..end].to_string())
        })
        .collect()
}

fn check(major: Major) {
    let Some(mut c) = Cluster::start(major) else {
        return;
    };
    c.pgbench(&["-i", "-s", "1", "-q"]);
    let dir = scratch("pgincr-verify-");
    let root = dir.path();
    let good = root.join("good");
    c.run(
        c.tool("pg_basebackup")
            .arg("-D")
            .arg(&good)
            .args(["-c", "fast"]),
    );
    let other = root.join("other");
    c.sql("CREATE TABLE later AS SELECT generate_series(1, 1000) g");
    c.run(
        c.tool("pg_basebackup")
            .arg("-D")
            .arg(&other)
            .args(["-c", "fast"]),
    );
    c.stop();
    let segment = {
        // The WAL segment holding the backup's start (streamed into pg_wal).
        let mut names: Vec<String> = std::fs::read_dir(good.join("pg_wal"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.len() == 24)
            .collect();
        names.sort();
        names[0].clone()
    };
    let start_offset = {
        let m = pgincr_types::manifest::Manifest::read(&good.join("backup_manifest")).unwrap();
        m.wal_ranges[0].start.0 % (16 << 20)
    };
    let accounts = {
        // The biggest relation file: pgbench_accounts' heap.
        let mut files: Vec<_> = std::fs::read_dir(good.join("base/5"))
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.metadata().unwrap().len(),
                    e.file_name().into_string().unwrap(),
                )
            })
            .collect();
        files.sort();
        format!("base/5/{}", files.last().unwrap().1)
    };

    type Damage = Box<dyn Fn(&Path)>;
    let acc = accounts.clone();
    let acc2 = accounts.clone();
    let cases: Vec<(&str, Damage)> = vec![
        ("good", Box::new(|_| {})),
        (
            "changed byte",
            Box::new(move |d| replace(d, &acc, |b| b[100_000] ^= 1)),
        ),
        (
            "missing file",
            Box::new(|d| std::fs::remove_file(d.join("PG_VERSION")).unwrap()),
        ),
        (
            "extra file",
            Box::new(|d| std::fs::write(d.join("base/5/stray"), b"x").unwrap()),
        ),
        (
            "truncated file",
            Box::new(move |d| replace(d, &acc2, |b| b.truncate(b.len() / 2))),
        ),
        (
            "damaged manifest",
            Box::new(|d| {
                replace(d, "backup_manifest", |b| {
                    let i = b.len() / 2;
                    b[i] ^= 0x20;
                })
            }),
        ),
        (
            "missing WAL segment",
            Box::new({
                let seg = segment.clone();
                move |d| std::fs::remove_file(d.join("pg_wal").join(&seg)).unwrap()
            }),
        ),
        (
            "truncated WAL segment",
            Box::new({
                let seg = segment.clone();
                move |d| {
                    replace(d, &format!("pg_wal/{seg}"), |b| {
                        b.truncate(start_offset as usize + 100)
                    })
                }
            }),
        ),
        (
            "flipped byte in a WAL record",
            Box::new({
                let seg = segment.clone();
                move |d| {
                    replace(d, &format!("pg_wal/{seg}"), |b| {
                        b[start_offset as usize + 40] ^= 0x10
                    })
                }
            }),
        ),
        (
            "manifest of another backup",
            Box::new({
                let other = other.clone();
                move |d| {
                    std::fs::remove_file(d.join("backup_manifest")).unwrap();
                    std::fs::copy(other.join("backup_manifest"), d.join("backup_manifest"))
                        .unwrap();
                }
            }),
        ),
    ];
    for (name, damage) in cases {
        let d = root.join(format!("case-{}", name.replace(' ', "-")));
        link_copy(&good, &d);
        damage(&d);
        let up = output(c.pg.tool("pg_verifybackup").arg(&d));
        let up_ok = up.status.success();
        let up_err = String::from_utf8_lossy(&up.stderr).into_owned();
        if std::env::var("PGINCR_SHOW_UPSTREAM").is_ok() {
            eprintln!(
                "{major} {name}: {}",
                up_err.lines().take(5).collect::<Vec<_>>().join("\n")
            );
        }
        let up_files = upstream_files(&up_err);
        match verify_backup(&d, &VerifyOptions::default()) {
            Ok(ours) => {
                assert_eq!(
                    ours.is_ok(),
                    up_ok,
                    "{major} {name}: {:?} vs {up:?}",
                    ours.problems
                );
                let our_files: BTreeSet<String> = ours
                    .problems
                    .iter()
                    .filter_map(|p| p.file.clone())
                    .collect();
                if name.contains("WAL") {
                    // Ours names the segment; pg_waldump's message may or may not quote it.
                    assert!(
                        ours.problems.iter().any(|p| p.kind == ProblemKind::Wal
                            && p.file.as_deref() == Some(segment.as_str())),
                        "{major} {name}: {:?}",
                        ours.problems
                    );
                    assert!(
                        up_files.is_subset(&our_files),
                        "{major} {name}: {up_files:?}"
                    );
                    continue;
                }
                if major == Major::V18 && name == "missing file" {
                    // pg_verifybackup 18 tells plain from tar by PG_VERSION: without it, a
                    // plain backup is checked as a tar one and every entry is reported.
                    assert!(!up_ok);
                    assert_eq!(our_files, BTreeSet::from(["PG_VERSION".to_string()]));
                    continue;
                }
                assert_eq!(our_files, up_files, "{major} {name}: {:?}", ours.problems);
                if name == "changed byte" {
                    assert_eq!(ours.problems[0].kind, ProblemKind::Checksum);
                }
                if name == "good" {
                    assert!(ours.files_checksummed > 900, "{ours:?}");
                    assert!(ours.wal_records > 0, "{ours:?}");
                }
            }
            // A manifest that does not parse: upstream fails too, before looking at files.
            Err(e) => {
                assert!(
                    !up_ok,
                    "{major} {name}: we refused ({e}), upstream accepted"
                );
                assert!(e.to_string().contains("backup_manifest"), "{e}");
            }
        }
    }
}

#[test]
fn pg17_agrees_with_pg_verifybackup() {
    check(Major::V17);
}

#[test]
fn pg18_agrees_with_pg_verifybackup() {
    check(Major::V18);
}
