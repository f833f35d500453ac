//! `pgincr_verify::verify_backup` on tar-format backups and page checksums, against real
//! PostgreSQL 17 and 18 (one cluster each, data checksums on, a table in a tablespace):
//! - tar backups by `pg_basebackup -Ft` (uncompressed with `pg_wal.tar`, gzip with the WAL
//!   inside `base.tar`) pass, their pages and the WAL inside the archives checked;
//!   PostgreSQL 18's `pg_verifybackup -n` passes them too (`pgincr backup -F t` archives,
//!   lz4 and zstd, are checked from the command line in crates/cli/tests/verify_tar.rs);
//! - damaged copies (a flipped byte in a member, a truncated archive, a missing member, an
//!   extra member, a manifest entry changed, a flipped byte in a tablespace member, the
//!   manifest of another backup) fail, on
//!   the same files as `pg_verifybackup` 18 blames;
//! - a flipped byte in the WAL inside `pg_wal.tar` fails (upstream cannot parse WAL in tar);
//! - a damaged page is found by the page checks with its block number, in a plain backup and
//!   in a tar one, with `-s` too (no file checksums: only the page check sees it).

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use pgincr_testkit::{output, run, scratch, Cluster, Major};
use pgincr_verify::{verify_backup, PageChecks, VerifyOptions};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `verify_backup` with `pgincr verify`'s flags: exit code (0 or 1) and the report as JSON.
fn verify(dir: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let mut o = VerifyOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "-s" => o.skip_checksums = true,
            "-n" => o.no_parse_wal = true,
            "-e" => o.exit_on_error = true,
            "-w" => o.wal_directory = Some(PathBuf::from(it.next().unwrap())),
            "--page-checksums" => o.page_checks = PageChecks::On,
            "--no-page-checksums" => o.page_checks = PageChecks::Off,
            a => panic!("unknown flag {a}"),
        }
    }
    let r = verify_backup(dir, &o).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    (i32::from(!r.is_ok()), serde_json::to_value(&r).unwrap())
}

fn problem_files(v: &serde_json::Value) -> BTreeSet<String> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["file"].as_str().map(str::to_string))
        .collect()
}

/// Quoted file names in pg_verifybackup's error lines.
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

fn copy_dir(src: &Path, dst: &Path) {
    run(Command::new("cp").arg("-a").arg(src).arg(dst));
}

/// Where each member's data starts in an uncompressed tar, and its size.
fn members(tar_path: &Path) -> Vec<(String, u64, u64)> {
    let mut a = tar::Archive::new(File::open(tar_path).unwrap());
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.raw_file_position(),
                e.size(),
            )
        })
        .collect()
}

fn member_offset(tar_path: &Path, name: &str) -> (u64, u64) {
    members(tar_path)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, off, size)| (off, size))
        .unwrap_or_else(|| panic!("{name} not in {}", tar_path.display()))
}

fn flip_byte(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x55;
    std::fs::write(path, b).unwrap();
}

/// Rewrites an uncompressed tar without `drop` and with `add` (name, contents) at the end.
fn rewrite_tar(path: &Path, drop: Option<&str>, add: Option<(&str, &[u8])>) {
    let out = path.with_extension("new");
    {
        let mut a = tar::Archive::new(File::open(path).unwrap());
        let mut b = tar::Builder::new(File::create(&out).unwrap());
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if Some(name.as_str()) == drop {
                continue;
            }
            let h = e.header().clone();
            b.append(&h, &mut e).unwrap();
        }
        if let Some((name, data)) = add {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_mtime(0);
            b.append_data(&mut h, name, data).unwrap();
        }
        b.into_inner().unwrap().flush().unwrap();
    }
    std::fs::rename(out, path).unwrap();
}

/// Changes one file's size in the manifest and recomputes the manifest's own checksum, so
/// that the manifest parses and the file is what is wrong.
fn change_manifest_size(dir: &Path, file: &str) {
    let p = dir.join("backup_manifest");
    let text = std::fs::read_to_string(&p).unwrap();
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        if line.contains(&format!("\"Path\": \"{file}\"")) {
            let i = line.find("\"Size\": ").unwrap() + 8;
            let j = i + line[i..].find(',').unwrap();
            let size: u64 = line[i..j].parse().unwrap();
            out.push_str(&line[..i]);
            out.push_str(&(size + 8192).to_string());
            out.push_str(&line[j..]);
        } else if line.starts_with("\"Manifest-Checksum\"") {
            break;
        } else {
            out.push_str(line);
        }
    }
    let mut sha = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    sha.stdin.take().unwrap().write_all(out.as_bytes()).unwrap();
    let o = sha.wait_with_output().unwrap();
    let hex = String::from_utf8(o.stdout).unwrap();
    let hex = hex.split_whitespace().next().unwrap();
    out.push_str(&format!("\"Manifest-Checksum\": \"{hex}\"}}\n"));
    std::fs::write(&p, out).unwrap();
}

fn upstream(c: &Cluster, dir: &Path, args: &[&str]) -> Output {
    output(c.pg.tool("pg_verifybackup").args(args).arg(dir))
}

/// The page problems of a report: (file, block).
fn page_problems(v: &serde_json::Value) -> BTreeSet<(String, u64)> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "page")
        .map(|p| {
            (
                p["file"].as_str().unwrap().to_string(),
                p["page"]["block"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn check(major: Major) {
    let Some(mut c) = Cluster::start(major) else {
        return;
    };
    let v18 = major == Major::V18;
    let ts = c.create_tablespace("ts");
    c.sql("CREATE TABLE t (a int, b text)");
    c.sql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    c.sql("CREATE TABLE u (a int, b text) TABLESPACE ts");
    c.sql("INSERT INTO u SELECT g, md5(g::text) FROM generate_series(1, 5000) g");
    // Hint bits set now, so that a later update changes a few blocks, not all of them.
    c.sql("VACUUM t");
    c.sql("VACUUM u");
    c.checkpoint();
    let t_path = c.sql("SELECT pg_relation_filepath('t')").trim().to_string();
    let u_path = c.sql("SELECT pg_relation_filepath('u')").trim().to_string();
    let oid = c
        .sql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts'")
        .trim()
        .to_string();
    let u_member = u_path
        .strip_prefix(&format!("pg_tblspc/{oid}/"))
        .unwrap()
        .to_string();

    let dir = scratch("pgincr-verify-tar-");
    let root = dir.path();
    let bb = |name: &str, args: &[&str]| -> PathBuf {
        let d = root.join(name);
        c.run(
            c.tool("pg_basebackup")
                .arg("-D")
                .arg(&d)
                .args(["-c", "fast"])
                .args(args),
        );
        d
    };
    let tar = bb("tar", &["-Ft", "-X", "stream"]);
    let tgz = bb("tgz", &["-Ft", "-z", "-X", "fetch"]);
    let map = format!("-T{}={}", ts.display(), root.join("plain-ts").display());
    let plain = bb("plain", &[&map]);
    // Incremental backups, plain and tar: the block images in INCREMENTAL.* files are
    // checked too.
    c.sql("UPDATE t SET b = 'changed' WHERE a <= 300");
    c.checkpoint();
    c.summarize();
    let inc_from = plain.join("backup_manifest");
    let inc_from = format!("--incremental={}", inc_from.display());
    let map = format!("-T{}={}", ts.display(), root.join("inc-ts").display());
    let inc = bb("inc", &[&map, &inc_from]);
    let inc_tar = bb("inc-tar", &["-Ft", &inc_from]);
    c.stop();

    // Every good backup passes, pages and WAL checked.
    for d in [&tar, &tgz] {
        let (code, v) = verify(d, &[]);
        assert_eq!(code, 0, "{}: {v:#}", d.display());
        assert_eq!(v["format"], "tar");
        assert_eq!(v["page_checks"], "on", "{v:#}");
        assert!(v["pages_checked"].as_u64().unwrap() > 100, "{v:#}");
        // Most pages predate the backup (and some are new): checked, not skipped.
        assert!(
            v["pages_skipped"].as_u64().unwrap() * 2 < v["pages_checked"].as_u64().unwrap(),
            "{v:#}"
        );
        assert!(v["wal_records"].as_u64().unwrap() > 0, "{v:#}");
        assert!(v["files_checksummed"].as_u64().unwrap() > 100, "{v:#}");
        // The tablespace's archive was read.
        assert!(std::fs::read_dir(d).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(&oid)));
    }
    let (code, v) = verify(&plain, &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["format"], "plain");
    assert_eq!(v["page_checks"], "on");
    assert!(v["pages_checked"].as_u64().unwrap() > 100);
    if v18 {
        for d in [&tar, &tgz] {
            let o = upstream(&c, d, &["-n"]);
            assert!(o.status.success(), "{o:?}");
        }
    }

    let inc_t = {
        let (dir, name) = t_path.rsplit_once('/').unwrap();
        format!("{dir}/INCREMENTAL.{name}")
    };
    assert!(inc.join(&inc_t).exists(), "{inc_t}");
    for d in [&inc, &inc_tar] {
        let (code, v) = verify(d, &[]);
        assert_eq!(code, 0, "{}: {v:#}", d.display());
        assert!(v["pages_checked"].as_u64().unwrap() > 10, "{v:#}");
    }
    if v18 {
        let o = upstream(&c, &inc_tar, &["-n"]);
        assert!(o.status.success(), "{o:?}");
    }
    // A flipped byte in the first block image of t's incremental file: reported with that
    // image's block number from the header.
    let d = root.join("inc-page");
    copy_dir(&inc, &d);
    let bytes = std::fs::read(d.join(&inc_t)).unwrap();
    let count = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as u64;
    assert!(count > 2, "{count} blocks in {inc_t}");
    let first = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as u64;
    let header_len = (12 + 4 * count).div_ceil(8192) * 8192;
    flip_byte(&d.join(&inc_t), header_len + 3000);
    let (code, v) = verify(&d, &["-s"]);
    assert_eq!(code, 0, "-s without --page-checksums reads nothing: {v:#}");
    let (code, v) = verify(&d, &["-s", "--page-checksums"]);
    assert_eq!(code, 1);
    assert_eq!(
        page_problems(&v),
        BTreeSet::from([(inc_t.clone(), first)]),
        "{v:#}"
    );

    // Damaged copies of the uncompressed tar backup.
    let t_member = t_path.clone();
    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Damage, &[&str])> = vec![
        (
            "flipped byte in a member",
            Box::new({
                let m = t_member.clone();
                move |d| {
                    let (off, _) = member_offset(&d.join("base.tar"), &m);
                    flip_byte(&d.join("base.tar"), off + 3 * 8192 + 1000);
                }
            }),
            &[],
        ),
        (
            "truncated archive",
            Box::new({
                let m = t_member.clone();
                move |d| {
                    let (off, _) = member_offset(&d.join("base.tar"), &m);
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(d.join("base.tar"))
                        .unwrap();
                    f.set_len(off + 5000).unwrap();
                }
            }),
            &[],
        ),
        (
            "missing member",
            Box::new(|d| rewrite_tar(&d.join("base.tar"), Some("PG_VERSION"), None)),
            &[],
        ),
        (
            "extra member",
            Box::new(|d| rewrite_tar(&d.join("base.tar"), None, Some(("base/1/999999", b"x")))),
            &[],
        ),
        (
            "manifest entry changed",
            Box::new({
                let m = t_member.clone();
                move |d| change_manifest_size(d, &m)
            }),
            &[],
        ),
        (
            "flipped byte in a tablespace member",
            Box::new({
                let m = u_member.clone();
                let oid = oid.clone();
                move |d| {
                    let p = d.join(format!("{oid}.tar"));
                    let (off, _) = member_offset(&p, &m);
                    flip_byte(&p, off + 8192 + 2000);
                }
            }),
            &[],
        ),
        (
            "manifest of another backup",
            Box::new({
                let other = tgz.join("backup_manifest");
                move |d| {
                    std::fs::copy(&other, d.join("backup_manifest")).unwrap();
                }
            }),
            &[],
        ),
        (
            "unexpected file",
            Box::new(|d| std::fs::write(d.join("notes.txt"), b"x").unwrap()),
            &[],
        ),
    ];
    for (name, damage, args) in &cases {
        let d = root.join(name.replace(' ', "-"));
        copy_dir(&tar, &d);
        damage(&d);
        let (code, v) = verify(&d, args);
        assert_eq!(code, 1, "{name}: {v:#}");
        let ours = problem_files(&v);
        assert!(!ours.is_empty(), "{name}: {v:#}");
        // -e: the first problem only.
        let (code, first) = verify(&d, &["-e"]);
        assert_eq!(code, 1, "{name}");
        assert_eq!(
            first["problems"].as_array().unwrap().len(),
            1,
            "{name}: {first:#}"
        );
        if v18 {
            let o = upstream(&c, &d, &["-n"]);
            assert_eq!(o.status.code(), Some(1), "{name}: {o:?}");
            let theirs = upstream_files(&String::from_utf8_lossy(&o.stderr));
            eprintln!(
                "{name}: ours {} file(s) {:?}, pg_verifybackup {theirs:?}: {}",
                ours.len(),
                ours.iter().take(3).collect::<Vec<_>>(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
            match *name {
                // Upstream stops at the end of the stream ("COPY stream ended before last
                // file was finished"), naming no file; ours names the archive, the cut file
                // and everything after it as missing.
                "truncated archive" => {
                    assert!(ours.contains("base.tar"), "{ours:?}");
                    assert!(ours.contains(t_member.as_str()), "{ours:?}");
                }
                // Upstream (-n) cannot see that the other backup's WAL is not in
                // pg_wal.tar; ours names the segment too, and agrees with -n.
                "manifest of another backup" => {
                    assert!(v["problems"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["kind"] == "wal"));
                    assert_eq!(problem_files(&verify(&d, &["-n"]).1), theirs, "{name}");
                }
                _ => assert_eq!(ours, theirs, "{name}"),
            }
        }
    }
    // The flipped byte in a member is also a damaged page, block 3.
    let d = root.join("flipped-byte-in-a-member");
    let (_, v) = verify(&d, &[]);
    assert_eq!(
        page_problems(&v),
        BTreeSet::from([(t_member.clone(), 3)]),
        "{v:#}"
    );
    let (code, v) = verify(&d, &["-s", "--page-checksums"]);
    assert_eq!(code, 1);
    assert_eq!(v["problems"].as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(page_problems(&v), BTreeSet::from([(t_member.clone(), 3)]));
    let (code, v) = verify(&d, &["--no-page-checksums"]);
    assert_eq!(code, 1);
    assert!(page_problems(&v).is_empty());
    let d = root.join("flipped-byte-in-a-tablespace-member");
    let (_, v) = verify(&d, &[]);
    assert_eq!(
        page_problems(&v),
        BTreeSet::from([(u_path.clone(), 1)]),
        "{v:#}"
    );

    // A flipped byte in the WAL the backup needs, inside pg_wal.tar: upstream 18 cannot
    // parse WAL in a tar backup; ours finds it, and -n skips it.
    let d = root.join("wal-damage");
    copy_dir(&tar, &d);
    let m = pgincr_types::manifest::Manifest::read(&d.join("backup_manifest")).unwrap();
    let range = &m.wal_ranges[0];
    let seg_size = 16u64 << 20;
    let seg_name = format!(
        "{:08X}{:08X}{:08X}",
        range.tli.0,
        range.start.0 / seg_size / 256,
        range.start.0 / seg_size % 256
    );
    let (off, _) = member_offset(&d.join("pg_wal.tar"), &seg_name);
    flip_byte(&d.join("pg_wal.tar"), off + range.start.0 % seg_size + 60);
    let (code, v) = verify(&d, &[]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["problems"][0]["kind"], "wal", "{v:#}");
    let (code, _) = verify(&d, &["-n"]);
    assert_eq!(code, 0);
    // -w: the WAL from a directory instead.
    let wal_dir = root.join("wal-dir");
    std::fs::create_dir(&wal_dir).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(tar.join("pg_wal.tar"))
        .arg("-C")
        .arg(&wal_dir));
    let (code, v) = verify(&d, &["-w", wal_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{v:#}");

    // A damaged page in a plain backup: block 5 of t.
    let d = root.join("plain-page");
    copy_dir(&plain, &d);
    flip_byte(&d.join(&t_path), 5 * 8192 + 3000);
    let (code, v) = verify(&d, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        page_problems(&v),
        BTreeSet::from([(t_path.clone(), 5)]),
        "{v:#}"
    );
    let page = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "page")
        .unwrap();
    assert_eq!(page["page"]["what"], "checksum");
    assert_ne!(page["page"]["calculated"], page["page"]["stored"]);
    let (code, v) = verify(&d, &["-s"]);
    assert_eq!(
        (code, page_problems(&v).len()),
        (0, 0),
        "-s alone skips pages: {v:#}"
    );
    let (code, v) = verify(&d, &["-s", "--page-checksums"]);
    assert_eq!(code, 1);
    assert_eq!(page_problems(&v), BTreeSet::from([(t_path.clone(), 5)]));
}

#[test]
fn pg17_tar_backups_and_pages() {
    check(Major::V17);
}

#[test]
fn pg18_tar_backups_and_pages() {
    check(Major::V18);
}
