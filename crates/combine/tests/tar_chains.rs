//! Tar-format chains (`pg_basebackup -Ft`, uncompressed and gzip, lz4 and zstd compressed,
//! mixed with plain backups). pg_combinebackup cannot read tar backups, so the reference is
//! pg_combinebackup run on plain extractions of the same backups: every file must be
//! byte-identical and the manifests must list the same entries (their order follows the
//! archives rather than a directory walk). pg_verifybackup checks the output and a server
//! started on it must see the data of the last backup.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use pgincr_combine::{combine, CombineOptions, TablespaceMapping};
use pgincr_testkit::{
    assert_same_backup, assert_same_backup_except_vm, manifest_without_mtimes, run, scratch,
    Cluster, Major,
};
use std::path::{Path, PathBuf};

const CHECK: &str = "SELECT count(*), sum(abalance) FROM pgbench_accounts";
const CHECK_TS: &str = "SELECT count(*), sum(id) FROM t_ts";

/// Unpacks a tar-format backup into a plain one, as a person would before pg_combinebackup.
fn extract(tar_backup: &Path, plain: &Path) {
    std::fs::create_dir_all(plain).unwrap();
    for e in std::fs::read_dir(tar_backup).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name == "backup_manifest" {
            std::fs::copy(&p, plain.join(&name)).unwrap();
            continue;
        }
        let stem = name.split('.').next().unwrap().to_string();
        let dest = match stem.as_str() {
            "base" => plain.to_path_buf(),
            "pg_wal" => plain.join("pg_wal"),
            oid => {
                let d = PathBuf::from(format!("{}-ts{oid}", plain.display()));
                std::fs::create_dir_all(plain.join("pg_tblspc")).unwrap();
                std::os::unix::fs::symlink(&d, plain.join("pg_tblspc").join(oid)).unwrap();
                d
            }
        };
        std::fs::create_dir_all(&dest).unwrap();
        pgincr_archive::unpack(&p, &dest).unwrap();
    }
    // pgincr turns tablespace_map into symlinks; so does this extraction.
    let _ = std::fs::remove_file(plain.join("tablespace_map"));
}

fn manifest_entries(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("backup_manifest")).unwrap();
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("{ \"Path\""))
        .map(|l| {
            let i = l.find(", \"Last-Modified\"").unwrap();
            format!("{}{}", &l[..i], l[i + 43..].trim_end_matches(','))
        })
        .collect();
    v.sort();
    v
}

fn check_major(major: Major) {
    let Some(mut c) = Cluster::start(major) else {
        return;
    };
    let dir = scratch("pgincr-combine-tar-");
    let root = dir.path();
    let ts = c.create_tablespace("tts");
    c.pgbench(&["-i", "-s", "1", "-q"]);
    c.sql("CREATE TABLE t_ts (id int) TABLESPACE tts");
    c.sql("INSERT INTO t_ts SELECT generate_series(1, 5000)");
    // Formats of the chain: gzip, lz4, uncompressed tar, zstd, then a plain backup last.
    let formats: &[&[&str]] = &[
        &["-Ft", "-z"],
        &["-Ft", "--compress=client-lz4"],
        &["-Ft"],
        &["-Ft", "--compress=client-zstd"],
        &["-Fp"],
    ];
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut expected = (String::new(), String::new());
    for (i, f) in formats.iter().enumerate() {
        if i > 0 {
            c.pgbench(&["-t", "100"]);
            c.sql(&format!(
                "UPDATE t_ts SET id = id + 1 WHERE id % {} = 0",
                i + 3
            ));
        }
        if i == 3 {
            expected = (c.sql(CHECK), c.sql(CHECK_TS));
        }
        let d = root.join(format!("b{}", i + 1));
        let mut cmd = c.tool("pg_basebackup");
        cmd.arg("-D").arg(&d).args(["-c", "fast"]).args(*f);
        if f.contains(&"-Fp") {
            cmd.arg("-T")
                .arg(format!("{}={}-ts", ts.display(), d.display()));
        }
        if let Some(p) = dirs.last() {
            cmd.arg(format!(
                "--incremental={}",
                p.join("backup_manifest").display()
            ));
        }
        let out = pgincr_testkit::output(&mut cmd);
        if !out.status.success() {
            // Builds without lz4 or zstd: take the archives uncompressed and compress them
            // here, which gives the reader the same input.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("does not support compression"), "{err}");
            let method = if f[1].contains("lz4") { "lz4" } else { "zstd" };
            let _ = std::fs::remove_dir_all(&d);
            let mut cmd = c.tool("pg_basebackup");
            cmd.arg("-D").arg(&d).args(["-c", "fast", "-Ft"]);
            if let Some(p) = dirs.last() {
                cmd.arg(format!(
                    "--incremental={}",
                    p.join("backup_manifest").display()
                ));
            }
            c.run(&mut cmd);
            compress_archives(&d, method);
        }
        dirs.push(d);
    }
    let final_expected = (c.sql(CHECK), c.sql(CHECK_TS));
    c.stop();
    let plain: Vec<PathBuf> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if i == 4 {
                return d.clone();
            }
            let p = root.join(format!("x{}", i + 1));
            extract(d, &p);
            p
        })
        .collect();

    // 1. An all-tar chain (final backup compressed with zstd).
    let reference = root.join("ref4");
    let mut cmd = c.pg.tool("pg_combinebackup");
    cmd.arg("-o").arg(&reference).arg("-T");
    cmd.arg(format!(
        "{}-ts{}={}-ts",
        plain[3].display(),
        tablespace_oid(&dirs[3]),
        reference.display()
    ));
    run(cmd.args(&plain[..4]));
    let out = root.join("out4");
    let mut opts = CombineOptions::new(dirs[..4].to_vec(), out.clone());
    opts.tablespace_mappings = vec![TablespaceMapping {
        old_dir: ts.clone(),
        new_dir: root.join("out4-ts"),
    }];
    let report = combine(&opts).unwrap();
    assert!(report.reconstructed > 0);
    // Default options repair visibility maps read from the archives: everything else is
    // byte-identical, and no stale map bit is left.
    let maps = assert_same_backup_except_vm(&reference, &out, "tar chain");
    assert_eq!(maps.len() as u64, report.vm_repair.maps_repaired);
    assert_same_backup_except_vm(
        &PathBuf::from(format!("{}-ts", reference.display())),
        &root.join("out4-ts"),
        "tar chain tablespace",
    );
    let not_map = |entries: Vec<String>| -> Vec<String> {
        entries
            .into_iter()
            .filter(|e| {
                !maps
                    .iter()
                    .any(|m| e.contains(&format!("\"{}\"", m.display())))
            })
            .collect()
    };
    assert_eq!(
        not_map(manifest_entries(&reference)),
        not_map(manifest_entries(&out))
    );
    assert!(pgincr_verify::check_vm(&out).unwrap().is_clean());
    assert!(
        !root.join(".out4.pgincr-spill").exists(),
        "spill directory left behind"
    );
    if major == Major::V18 {
        run(c.pg.tool("pg_verifybackup").arg(&out));
    }

    // 1b. The same chain written as tar (-F t): extracted, it holds the same files.
    let tout = root.join("tout4");
    let mut opts = CombineOptions::new(dirs[..4].to_vec(), tout.clone());
    opts.format = pgincr_combine::OutputFormat::Tar;
    opts.vm_repair = false;
    combine(&opts).unwrap();
    if major == Major::V18 {
        run(c.pg.tool("pg_verifybackup").arg("-n").arg(&tout));
    }
    let textracted = root.join("tout4-x");
    extract(&tout, &textracted);
    assert_same_backup(&reference, &textracted, "tar output");
    let oid = tablespace_oid(&tout);
    assert_same_backup(
        &PathBuf::from(format!("{}-ts", reference.display())),
        &PathBuf::from(format!("{}-ts{oid}", textracted.display())),
        "tar output tablespace",
    );
    let mut want = manifest_entries(&reference);
    want.push(
        manifest_entries(&tout)
            .into_iter()
            .find(|e| e.contains("\"tablespace_map\""))
            .unwrap(),
    );
    want.sort();
    assert_eq!(want, manifest_entries(&tout));

    // 2. The mixed chain: four tar backups, then a plain one.
    let reference = root.join("ref5");
    let mut cmd = c.pg.tool("pg_combinebackup");
    cmd.arg("-o").arg(&reference).arg("-T");
    cmd.arg(format!(
        "{}-ts={}-ts",
        dirs[4].display(),
        reference.display()
    ));
    run(cmd.args(&plain));
    let out = root.join("out5");
    let mut opts = CombineOptions::new(dirs.clone(), out.clone());
    opts.tablespace_mappings = vec![TablespaceMapping {
        old_dir: PathBuf::from(format!("{}-ts", dirs[4].display())),
        new_dir: root.join("out5-ts"),
    }];
    opts.jobs = 1;
    opts.vm_repair = false;
    combine(&opts).unwrap();
    assert_same_backup(&reference, &out, "mixed chain");
    assert_eq!(
        manifest_without_mtimes(&reference),
        manifest_without_mtimes(&out),
        "mixed chain manifests differ"
    );
    run(c.pg.tool("pg_verifybackup").arg(&out));

    // Servers on both outputs see the data as of their last backup.
    let s4 = Cluster::start_on(major, &root.join("out4")).unwrap();
    assert_eq!((s4.sql(CHECK), s4.sql(CHECK_TS)), expected);
    drop(s4);
    let s5 = Cluster::start_on(major, &out).unwrap();
    assert_eq!((s5.sql(CHECK), s5.sql(CHECK_TS)), final_expected);
}

/// Replaces every `*.tar` of a backup with a `.tar.lz4` or `.tar.zst` of it.
fn compress_archives(dir: &Path, method: &str) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) != Some("tar") {
            continue;
        }
        let data = std::fs::read(&p).unwrap();
        let target = PathBuf::from(format!(
            "{}.{}",
            p.display(),
            if method == "lz4" { "lz4" } else { "zst" }
        ));
        let bytes = if method == "lz4" {
            let mut w = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
            std::io::Write::write_all(&mut w, &data).unwrap();
            let (bytes, r) = w.finish();
            r.unwrap();
            bytes
        } else {
            zstd::stream::encode_all(&data[..], 3).unwrap()
        };
        std::fs::write(target, bytes).unwrap();
        std::fs::remove_file(&p).unwrap();
    }
}

fn tablespace_oid(tar_backup: &Path) -> String {
    std::fs::read_dir(tar_backup)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            let stem = n.split('.').next().unwrap().to_string();
            stem.parse::<u32>().ok().map(|o| o.to_string())
        })
        .next()
        .unwrap()
}

#[test]
fn pg17_tar_chain() {
    check_major(Major::V17);
}

#[test]
fn pg18_tar_chain() {
    check_major(Major::V18);
}
