//! The failures a caller of the backup engine must act on differently, told apart by
//! `BackupError::failure()` rather than by message text, on a real PostgreSQL 17 server:
//! WAL summaries that no longer reach back to the prior backup (take a full backup instead),
//! a prior manifest from another cluster (never mix them), and a server that cannot be reached.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use pgincr_backup::{BackupOptions, Failure};
use pgincr_protocol::Config;
use pgincr_testkit::{scratch, Cluster, Major};
use pgincr_types::manifest::Manifest;
use std::path::Path;

fn options(c: &Cluster, target: &Path) -> BackupOptions {
    let conn = Config::parse(&format!(
        "host={} port={} user=postgres",
        c.socket_dir().display(),
        c.port()
    ))
    .unwrap();
    let mut o = BackupOptions::new(conn, target.to_path_buf());
    o.no_sync = true;
    o
}

async fn backup(opts: BackupOptions) -> Result<(), pgincr_backup::BackupError> {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    pgincr_backup::run(opts, rx).await.map(drop)
}

#[tokio::test]
async fn failures_are_told_apart() {
    let Some(c) = Cluster::start(Major::V17) else {
        return;
    };
    let dir = scratch("pgincr-backup-failures-");
    let root = dir.path();
    let full = root.join("full");
    backup(options(&c, &full)).await.unwrap();

    // Summaries gone (what wal_summary_keep_time does to old ones): a full backup is needed.
    c.sql("CREATE TABLE t AS SELECT generate_series(1, 1000) g");
    c.checkpoint();
    c.summarize();
    for e in std::fs::read_dir(c.summaries_dir()).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let mut o = options(&c, &root.join("incr"));
    o.incremental = Some(full.join("backup_manifest"));
    let err = backup(o).await.unwrap_err();
    assert_eq!(err.failure(), Failure::NeedsFullBackup, "{err}");
    assert!(!root.join("incr").exists());

    // A prior manifest from another cluster: refused as such, before the summaries are
    // looked at. (Test clusters share one initdb template and so one system identifier: the
    // other cluster's manifest is this one with another identifier, checksum recomputed.)
    let text = std::fs::read(full.join("backup_manifest")).unwrap();
    let mut m = Manifest::parse(&text[..]).unwrap();
    m.system_identifier = m.system_identifier.map(|id| id ^ 1);
    let foreign = root.join("foreign_manifest");
    std::fs::write(&foreign, m.write_to(Vec::new()).unwrap()).unwrap();
    let mut o = options(&c, &root.join("mixed"));
    o.incremental = Some(foreign);
    let err = backup(o).await.unwrap_err();
    assert_eq!(err.failure(), Failure::OtherCluster, "{err}");

    // Nobody listening: a connection failure, not a backup failure.
    let port = c.port();
    let mut o = options(&c, &root.join("nobody"));
    o.conn = Config::parse(&format!(
        "host=127.0.0.1 port={port} user=postgres connect_timeout=5"
    ))
    .unwrap();
    let mut dead = c;
    dead.stop();
    let err = backup(o).await.unwrap_err();
    assert_eq!(err.failure(), Failure::Connection, "{err}");
}
