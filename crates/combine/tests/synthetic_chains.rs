//! Hand-built chains with a 4-block segment size, so that multi-segment relations, truncation
//! across segments, clamped truncation lengths, zero-filled gaps and whole-file copies from
//! older backups are exercised in milliseconds. Expected contents are written out by hand.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use pgincr_combine::{combine, CombineOptions};
use pgincr_types::checksum::{ChecksumType, Checksummer};
use pgincr_types::incremental::build;
use pgincr_types::manifest::{Manifest, ManifestWriter};
use std::path::{Path, PathBuf};

mod common;

use common::{BLCKSZ, SYSID};

/// A page whose bytes say which backup (`tag`) and block it came from.
fn page(tag: u8, block: u32) -> Vec<u8> {
    let mut p = vec![tag; BLCKSZ];
    p[..4].copy_from_slice(&block.to_le_bytes());
    p
}

fn pages(tag: u8, blocks: std::ops::Range<u32>) -> Vec<u8> {
    blocks.flat_map(|b| page(tag, b)).collect()
}

fn control() -> Vec<u8> {
    control_with(BLCKSZ as u32, 4)
}

/// A pg_control with a valid CRC and the given block and segment sizes, data checksums off.
fn control_with(blcksz: u32, relseg_size: u32) -> Vec<u8> {
    common::control_with(blcksz, relseg_size, false)
}

/// Writes a backup with the given files, a label chaining it to `from`, and a manifest.
fn make_backup(dir: &Path, start: u64, from: Option<u64>, files: &[(&str, Vec<u8>)]) {
    common::make_backup(dir, start, from, &control(), files)
}

fn chain(root: &Path) -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = (1..=3).map(|i| root.join(format!("b{i}"))).collect();
    // b1: relation 16384 has 10 blocks in three segments; 16385 and 16386 are small.
    make_backup(
        &dirs[0],
        0x1000028,
        None,
        &[
            ("base/5/16384", pages(b'A', 0..4)),
            ("base/5/16384.1", pages(b'A', 4..8)),
            ("base/5/16384.2", pages(b'A', 8..10)),
            ("base/5/16385", pages(b'A', 0..4)),
            ("base/5/16386", pages(b'A', 0..1)),
            ("INCREMENTAL.config", b"not a relation".to_vec()),
        ],
    );
    // b2: blocks 1 and 9 change; 16385 is sent whole; 16386 gets a new full copy.
    make_backup(
        &dirs[1],
        0x2000028,
        Some(0x1000028),
        &[
            (
                "base/5/INCREMENTAL.16384",
                build(4, &[(1, page(b'B', 1))], BLCKSZ as u32),
            ),
            ("base/5/INCREMENTAL.16384.1", build(4, &[], BLCKSZ as u32)),
            (
                "base/5/INCREMENTAL.16384.2",
                build(2, &[(1, page(b'B', 9))], BLCKSZ as u32),
            ),
            ("base/5/16385", pages(b'B', 0..4)),
            ("base/5/16386", pages(b'B', 0..1)),
            ("INCREMENTAL.config", b"not a relation".to_vec()),
        ],
    );
    // b3: 16384 truncated to 5 blocks then extended to 6 (block 5 new), segment 2 gone;
    // 16385 unchanged but with a truncation length from an unfixed server (clamped to 4);
    // 16386 grew to 3 blocks with only block 2 written (block 1 never seen: zeros).
    make_backup(
        &dirs[2],
        0x3000028,
        Some(0x2000028),
        &[
            ("base/5/INCREMENTAL.16384", build(4, &[], BLCKSZ as u32)),
            (
                "base/5/INCREMENTAL.16384.1",
                build(2, &[(1, page(b'C', 5))], BLCKSZ as u32),
            ),
            (
                "base/5/INCREMENTAL.16385",
                build(200_000, &[], BLCKSZ as u32),
            ),
            (
                "base/5/INCREMENTAL.16386",
                build(3, &[(2, page(b'C', 2))], BLCKSZ as u32),
            ),
            ("INCREMENTAL.config", b"not a relation".to_vec()),
        ],
    );
    dirs
}

#[test]
fn reconstructs_multi_segment_relations() {
    let root = tempfile::tempdir().unwrap();
    let dirs = chain(root.path());
    let out = root.path().join("out");
    let report = combine(&CombineOptions::new(dirs.clone(), out.clone())).unwrap();
    let read = |p: &str| std::fs::read(out.join(p)).unwrap();
    let cat = |parts: &[Vec<u8>]| parts.concat();
    assert_eq!(
        read("base/5/16384"),
        cat(&[page(b'A', 0), page(b'B', 1), page(b'A', 2), page(b'A', 3)])
    );
    assert_eq!(read("base/5/16384.1"), cat(&[page(b'A', 4), page(b'C', 5)]));
    assert!(
        !out.join("base/5/16384.2").exists(),
        "segment dropped by the truncation"
    );
    assert_eq!(read("base/5/16385"), pages(b'B', 0..4));
    assert_eq!(
        read("base/5/16386"),
        cat(&[page(b'B', 0), vec![0; BLCKSZ], page(b'C', 2)])
    );
    assert_eq!(read("INCREMENTAL.config"), b"not a relation");
    assert_eq!(report.zero_blocks, 1);
    assert!(!out.join("INCREMENTAL.16384").exists());

    // The output manifest lists every file with the right size and checksum.
    let m = Manifest::read(&out.join("backup_manifest")).unwrap();
    for (path, f) in &m.files {
        let p = out.join(String::from_utf8_lossy(path).as_ref());
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(f.size, bytes.len() as u64);
        let mut sum = Checksummer::new(ChecksumType::Crc32c);
        sum.update(&bytes);
        assert_eq!(f.checksum, sum.finish().unwrap().bytes, "{}", p.display());
    }
    assert_eq!(m.files.get_index(0).unwrap().0.as_ref(), b"backup_label");
    let label = String::from_utf8(read("backup_label")).unwrap();
    assert!(label.ends_with("START TIMELINE: 1\n") && !label.contains("INCREMENTAL"));
    if let Some(pg) = pgincr_testkit::require(pgincr_testkit::Major::V18) {
        pgincr_testkit::run(pg.tool("pg_verifybackup").arg("-n").arg(&out));
    }

    // Every mode and thread count give the same bytes.
    for (i, mode) in [
        pgincr_combine::CopyMode::CopyFileRange,
        pgincr_combine::CopyMode::Link,
    ]
    .into_iter()
    .enumerate()
    {
        let o = root.path().join(format!("out{i}"));
        let mut opts = CombineOptions::new(dirs.clone(), o.clone());
        opts.copy_mode = mode;
        opts.jobs = 1;
        combine(&opts).unwrap();
        for p in [
            "base/5/16384",
            "base/5/16384.1",
            "base/5/16385",
            "base/5/16386",
        ] {
            assert_eq!(std::fs::read(o.join(p)).unwrap(), read(p), "{mode:?} {p}");
        }
    }
}

#[test]
fn refuses_a_broken_chain() {
    let root = tempfile::tempdir().unwrap();
    let dirs = chain(root.path());
    // The full backup lacks a segment that the incrementals need.
    std::fs::remove_file(dirs[0].join("base/5/16384.1")).unwrap();
    let out = root.path().join("out");
    let err = combine(&CombineOptions::new(dirs.clone(), out.clone()))
        .unwrap_err()
        .to_string();
    // b1's manifest still lists the file, so the missing-file check or the source lookup fires.
    assert!(err.contains("16384.1"), "{err}");
    assert!(!out.exists());
    // Reversed chains are refused before anything is written.
    let mut rev = dirs.clone();
    rev.reverse();
    let err = combine(&CombineOptions::new(rev, out.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is a full backup, but only the first backup should be a full backup"),
        "{err}"
    );
}

/// Rewrites `rel` in backup `dir` and its manifest entry (size and CRC-32C), re-signing the
/// manifest, so that only the file's content is wrong.
fn replace_file(dir: &Path, rel: &str, content: &[u8]) {
    std::fs::write(dir.join(rel), content).unwrap();
    let m = Manifest::read(&dir.join("backup_manifest")).unwrap();
    let mut w = ManifestWriter::new(Vec::new(), SYSID).unwrap();
    for (p, f) in &m.files {
        if p.as_ref() == rel.as_bytes() {
            let mut sum = Checksummer::new(ChecksumType::Crc32c);
            sum.update(content);
            w.add_file(p, content.len() as u64, 0, sum.finish().as_ref())
                .unwrap();
        } else {
            let sum = f.checksum_of(ChecksumType::Crc32c);
            w.add_file(p, f.size, 0, sum.as_ref()).unwrap();
        }
    }
    std::fs::write(
        dir.join("backup_manifest"),
        w.finish(&m.wal_ranges).unwrap(),
    )
    .unwrap();
}

#[test]
fn refuses_impossible_geometry_in_pg_control() {
    // Valid CRCs, impossible sizes: block size 0 (a division by zero in the estimate) and a
    // segment size of 0xFFFFFFFF, which with a truncation length of 0xFFFFFFFF made combine
    // try to allocate a 32 GiB block map and abort.
    for (blcksz, relseg, field) in [(0, 4, "blcksz"), (BLCKSZ as u32, u32::MAX, "relseg_size")] {
        let root = tempfile::tempdir().unwrap();
        let dirs = chain(root.path());
        for d in &dirs {
            replace_file(d, "global/pg_control", &control_with(blcksz, relseg));
        }
        replace_file(
            &dirs[2],
            "base/5/INCREMENTAL.16385",
            &build(u32::MAX, &[], BLCKSZ as u32),
        );
        let out = root.path().join("out");
        let err = combine(&CombineOptions::new(dirs.clone(), out.clone()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("global/pg_control") && err.contains(field) && err.contains("geometry"),
            "{err}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn refuses_truncation_lengths_no_server_writes() {
    // 0xFFFFFFFF cannot be a relation length (it is InvalidBlockNumber): refused, while the
    // 200000 of an unfixed server is clamped (see reconstructs_multi_segment_relations).
    let root = tempfile::tempdir().unwrap();
    let dirs = chain(root.path());
    replace_file(
        &dirs[2],
        "base/5/INCREMENTAL.16385",
        &build(u32::MAX, &[], BLCKSZ as u32),
    );
    let out = root.path().join("out");
    let err = combine(&CombineOptions::new(dirs, out.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("INCREMENTAL.16385")
            && err.contains("truncation block length 4294967295 in excess of segment size 4"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn never_follows_symlinks_in_older_backups() {
    // A file outside the chain whose bytes must never reach the output.
    let root = tempfile::tempdir().unwrap();
    let secret = root.path().join("secret");
    std::fs::write(&secret, pages(b'S', 0..4)).unwrap();
    let dirs = chain(root.path());
    // b2's full copy of 16385 is what b3's INCREMENTAL.16385 takes its blocks from. Replace
    // it by a link to the secret: same size, so the manifest check does not catch it.
    let victim = dirs[1].join("base/5/16385");
    std::fs::remove_file(&victim).unwrap();
    std::os::unix::fs::symlink(&secret, &victim).unwrap();
    let out = root.path().join("out");
    let err = combine(&CombineOptions::new(dirs.clone(), out.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&victim.display().to_string()) && err.contains("symbolic link"),
        "{err}"
    );
    assert!(!out.exists());

    // A directory on the way that is a link is refused as well, naming it.
    let root = tempfile::tempdir().unwrap();
    let dirs = chain(root.path());
    let elsewhere = root.path().join("elsewhere");
    std::fs::rename(dirs[1].join("base/5"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dirs[1].join("base/5")).unwrap();
    let err = combine(&CombineOptions::new(dirs.clone(), out.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&dirs[1].join("base/5").display().to_string())
            && err.contains("symbolic link"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn refuses_special_files_in_older_backups() {
    // A FIFO where b2's full file should be: refused at once instead of blocking forever.
    let root = tempfile::tempdir().unwrap();
    let dirs = chain(root.path());
    let victim = dirs[1].join("base/5/16385");
    std::fs::remove_file(&victim).unwrap();
    let c = std::ffi::CString::new(victim.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    #[allow(unsafe_code)]
    let made = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(made, 0);
    let out = root.path().join("out");
    let err = combine(&CombineOptions::new(dirs.clone(), out.clone()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("16385") && err.contains("FIFO"), "{err}");

    // A directory there is reported as a directory, not as a missing file.
    std::fs::remove_file(&victim).unwrap();
    std::fs::create_dir(&victim).unwrap();
    let err = combine(&CombineOptions::new(dirs, out.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("16385") && err.contains("is a directory") && !err.contains("exists"),
        "{err}"
    );
    assert!(!out.exists());

    // In the final backup, a directory under a name its manifest lists as a file is reported
    // as a directory, not as missing.
    let root = tempfile::tempdir().unwrap();
    let dirs = chain(root.path());
    let victim = dirs[2].join("INCREMENTAL.config");
    std::fs::remove_file(&victim).unwrap();
    std::fs::create_dir(&victim).unwrap();
    let err = combine(&CombineOptions::new(dirs, out.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("INCREMENTAL.config")
            && err.contains("is a directory")
            && !err.contains("missing from"),
        "{err}"
    );
    assert!(!out.exists());
}

/// A chain across which data checksums were turned on is refused before anything is written
/// (pg_combinebackup only warns, and the restored cluster then fails on every older page);
/// turned off, the older pages carry checksums nobody verifies, which is harmless.
#[test]
fn refuses_a_chain_across_which_checksums_were_turned_on() {
    let root = tempfile::tempdir().unwrap();
    let (on, off) = (
        common::control_with(BLCKSZ as u32, 4, true),
        common::control_with(BLCKSZ as u32, 4, false),
    );
    for (name, first, second, ok) in [("on", &off, &on, false), ("off", &on, &off, true)] {
        let (b1, b2) = (
            root.path().join(format!("{name}1")),
            root.path().join(format!("{name}2")),
        );
        common::make_backup(
            &b1,
            0x1000028,
            None,
            first,
            &[("base/5/16384", pages(b'A', 0..2))],
        );
        common::make_backup(
            &b2,
            0x2000028,
            Some(0x1000028),
            second,
            &[("base/5/INCREMENTAL.16384", build(2, &[], BLCKSZ as u32))],
        );
        let out = root.path().join(format!("out-{name}"));
        let result = combine(&CombineOptions::new(vec![b1.clone(), b2], out.clone()));
        if ok {
            result.unwrap();
        } else {
            let err = result.unwrap_err().to_string();
            assert!(err.contains("data checksums were switched"), "{err}");
            assert!(err.contains(&b1.display().to_string()), "{err}");
            assert!(!out.exists());
        }
    }
}
