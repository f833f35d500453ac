//! `-F t -X stream` writes the streamed WAL straight into `pg_wal.tar` (`pg_wal.tar.gz` with
//! gzip), as pg_basebackup does, on real PostgreSQL 17 and 18 servers: a segment completed
//! during the backup (a WAL switch while the base backup is being received) is followed by
//! its `.done` marker, the last segment is padded to full size without one, and the unpacked
//! backup passes pg_verifybackup with WAL parsing.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use pgincr_archive::{Compression, TarReader};
use pgincr_backup::{BackupOptions, Format, WalMethod};
use pgincr_protocol::Config;
use pgincr_testkit::{scratch, Cluster, Major};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Member names of an archive file, in order.
fn members(path: &Path, c: Compression) -> Vec<(String, u64)> {
    let r = pgincr_archive::decoder(std::fs::File::open(path).unwrap(), c).unwrap();
    let mut t = TarReader::new(r, path);
    let mut out = Vec::new();
    while let Some(h) = t.next_member().unwrap() {
        out.push((String::from_utf8(h.name).unwrap(), h.size));
    }
    out
}

async fn tar_backup(c: &Cluster, target: &Path, compression: Option<Compression>) {
    let conn = Config::parse(&format!(
        "host={} port={} user=postgres",
        c.socket_dir().display(),
        c.port()
    ))
    .unwrap();
    let mut o = BackupOptions::new(conn, target.to_path_buf());
    o.no_sync = true;
    o.format = Format::Tar;
    o.wal = WalMethod::Stream;
    o.compression = compression;
    // Once the base backup is under way, complete a segment: the streamer must finish that
    // member and write its marker while the backup is still being received.
    let psql = c.pg.bin.join("psql");
    let (socket, port) = (c.socket_dir(), c.port().to_string());
    let switched = Arc::new(AtomicBool::new(false));
    o.progress = Some(Arc::new(move |_, _| {
        if !switched.swap(true, Ordering::SeqCst) {
            let out = Command::new(&psql)
                .env("PGHOST", &socket)
                .env("PGPORT", &port)
                .args(["-U", "postgres", "-d", "postgres", "-X", "-q", "-c"])
                .arg(
                    "CREATE TABLE IF NOT EXISTS w (g int); INSERT INTO w SELECT generate_series(1, 10000); SELECT pg_switch_wal();",
                )
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
    }));
    let (_tx, rx) = tokio::sync::watch::channel(false);
    pgincr_backup::run(o, rx).await.unwrap();
}

async fn check(major: Major) {
    let Some(c) = Cluster::start(major) else {
        return;
    };
    let dir = scratch("pgincr-backup-tar-wal-");
    let seg_size: u64 = c
        .sql("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'")
        .parse()
        .unwrap();
    for (name, compression, wal_name) in [
        ("plain", None, "pg_wal.tar"),
        (
            "gzip",
            Compression::parse("gzip:1").unwrap(),
            "pg_wal.tar.gz",
        ),
        // zstd compresses base.tar only, as pg_basebackup does.
        ("zstd", Compression::parse("zstd").unwrap(), "pg_wal.tar"),
    ] {
        let target = dir.path().join(name);
        tar_backup(&c, &target, compression).await;
        let wal = target.join(wal_name);
        let wal_compression = if wal_name.ends_with(".gz") {
            compression.unwrap()
        } else {
            Compression::None
        };
        let m = members(&wal, wal_compression);
        let segs: Vec<_> = m
            .iter()
            .filter(|(n, _)| !n.starts_with("archive_status/"))
            .collect();
        assert!(segs.len() >= 2, "{major:?} {name}: {m:?}");
        assert!(
            segs.iter().all(|(_, size)| *size == seg_size),
            "{major:?} {name}: {m:?}"
        );
        // Each complete segment is followed by its marker; the last has none.
        for (i, (n, _)) in m.iter().enumerate() {
            if !n.starts_with("archive_status/") {
                let marker = format!("archive_status/{n}.done");
                let last = segs.last().is_some_and(|(l, _)| l == n);
                assert_eq!(
                    m.get(i + 1).map(|x| &x.0) == Some(&marker),
                    !last,
                    "{major:?} {name}: {m:?}"
                );
            }
        }
        assert!(!target.join(".pgincr-wal").exists());

        // Unpacked, it is a backup pg_verifybackup accepts, WAL included.
        let x = dir.path().join(format!("{name}-x"));
        let base = std::fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("base.tar")
            })
            .unwrap();
        pgincr_archive::unpack(&base, &x).unwrap();
        pgincr_archive::unpack(&wal, &x.join("pg_wal")).unwrap();
        std::fs::copy(target.join("backup_manifest"), x.join("backup_manifest")).unwrap();
        c.run(c.tool("pg_verifybackup").arg(&x));
    }
}

#[tokio::test]
async fn streams_wal_into_the_archive_17() {
    check(Major::V17).await;
}

#[tokio::test]
async fn streams_wal_into_the_archive_18() {
    check(Major::V18).await;
}
