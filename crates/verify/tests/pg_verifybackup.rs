//! `pgincr_verify::verify_backup` against `pg_verifybackup -n` of the same major version, on
//! a real backup and damaged copies of it: both must give the same verdict and blame the same
//! files. (WAL parsing is not compared: pgincr does not parse WAL yet.)

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
        let up = output(c.pg.tool("pg_verifybackup").arg("-n").arg(&d));
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
                if major == Major::V18 && name == "missing file" {
                    // pg_verifybackup 18 tells plain from tar by PG_VERSION: without it, a
                    // plain backup is checked as a tar one and every entry is reported.
                    assert!(up_files.contains("PG_VERSION") && up_files.len() > 100);
                    assert_eq!(our_files, BTreeSet::from(["PG_VERSION".to_string()]));
                    continue;
                }
                assert_eq!(our_files, up_files, "{major} {name}: {:?}", ours.problems);
                if name == "changed byte" {
                    assert_eq!(ours.problems[0].kind, ProblemKind::Checksum);
                }
                if name == "good" {
                    assert!(ours.files_checksummed > 900, "{ours:?}");
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
