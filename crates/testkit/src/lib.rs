//! Throwaway PostgreSQL 17/18 clusters for pgincr's integration tests.
//!
//! `Cluster::start(Major::V17)` gives a running server with data checksums, `wal_level=replica`,
//! `summarize_wal=on`, a WAL archive, replication allowed (trust) on a Unix socket in its own
//! temporary directory and on a free TCP port of 127.0.0.1. It stops on drop, also when a test
//! panics. initdb runs once per major version per `target/` and later clusters copy that
//! template, so a cluster starts in well under a second.
//!
//! postgres refuses to run as root: as root, initdb and postgres run as the unprivileged account
//! `pgincr-pg` that `scripts/install-postgres` creates. Client tools (psql, pg_basebackup, ...)
//! run as the caller.
//!
//! Binaries come from `PGINCR_PG17_BIN` / `PGINCR_PG18_BIN`, else from `.pg/env` written by
//! `scripts/install-postgres`. When they are missing, [`require`] skips the test with a message,
//! except under `CI=true`, where it fails.
//!
//! Everything done to a server (checking the binaries' version, initdb, start, stop, the
//! account) is `pgincr-server`'s; this crate finds the test installs, sets clusters up the way
//! the tests want them, and turns every error into a panic with the server log.

// A test-only crate: failing loudly (a panic naming what went wrong, with the server log) is
// its job, so the workspace's no-panic lints do not apply to it. unsafe_code stays denied.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod cluster;
mod compare;
mod install;
mod reflink;

pub use cluster::Cluster;
pub use compare::{
    assert_same_backup, assert_same_backup_except_vm, backup_contents, is_visibility_map,
    manifest_without, manifest_without_mtimes,
};
pub use install::{bin_dir, give_to_server, require, workspace_root, PgInstall, SERVER_ACCOUNT};
pub use pgincr_server::Major;
pub use reflink::ReflinkScratch;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

/// Runs `cmd`, panicking with its stdout and stderr when it fails. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            lossy(&out.stdout),
            lossy(&out.stderr)
        );
    }
    lossy(&out.stdout)
}

/// Runs `cmd` and returns its output whatever its exit status.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A scratch directory (for backups and outputs), removed on drop.
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("scratch dir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}
