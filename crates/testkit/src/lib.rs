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

use std::fmt;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Account initdb and postgres run as when the tests run as root.
pub const SERVER_ACCOUNT: &str = "pgincr-pg";

/// A PostgreSQL major version under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Major {
    V17,
    V18,
}

impl Major {
    pub const ALL: [Major; 2] = [Major::V17, Major::V18];

    pub fn number(self) -> u32 {
        match self {
            Major::V17 => 17,
            Major::V18 => 18,
        }
    }
}

impl fmt::Display for Major {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgreSQL {}", self.number())
    }
}

/// Root of the pgincr workspace (where `.pg/` and `target/` live).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The bin directory of an installed major version, if any.
pub fn bin_dir(major: Major) -> Option<PathBuf> {
    let var = format!("PGINCR_PG{}_BIN", major.number());
    if let Some(v) = std::env::var_os(&var) {
        return Some(PathBuf::from(v));
    }
    let env = std::fs::read_to_string(workspace_root().join(".pg/env")).ok()?;
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{var}=")))
        .map(PathBuf::from)
        .filter(|p| p.join("postgres").exists())
}

/// An installed PostgreSQL tool set.
#[derive(Clone, Debug)]
pub struct PgInstall {
    pub major: Major,
    pub bin: PathBuf,
}

impl PgInstall {
    /// A command for one of the tools (`pg_basebackup`, `pg_combinebackup`, ...), run as the caller.
    pub fn tool(&self, name: &str) -> Command {
        let mut c = Command::new(self.bin.join(name));
        c.env_remove("PGDATA").env("LC_ALL", "C").env("TZ", "UTC");
        c
    }
}

/// The tool set of `major`, or `None` (the test should return) when it is not installed and we
/// are not in CI. Under `CI=true` a missing install is a failure, never a skip.
pub fn require(major: Major) -> Option<PgInstall> {
    match bin_dir(major) {
        Some(bin) => Some(PgInstall { major, bin }),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{major} is not installed, and CI=true forbids skipping: run scripts/install-postgres")
        }
        None => {
            eprintln!("SKIP: {major} is not installed; run scripts/install-postgres");
            None
        }
    }
}

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

/// uid/gid to run the server as, when we are root.
fn server_ids() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = output(Command::new("id").args([flag, SERVER_ACCOUNT]));
        assert!(
            out.status.success(),
            "running as root needs the account {SERVER_ACCOUNT}: run scripts/install-postgres as root"
        );
        lossy(&out.stdout).trim().parse().expect("numeric id")
    };
    Some((id("-u"), id("-g")))
}

/// Makes `path` (recursively) owned by the server account, when we are root.
pub fn give_to_server(path: &Path) {
    if server_ids().is_some() {
        run(Command::new("chown")
            .arg("-R")
            .arg(format!("{SERVER_ACCOUNT}:{SERVER_ACCOUNT}"))
            .arg(path));
    }
}

fn as_server(mut cmd: Command) -> Command {
    if let Some((uid, gid)) = server_ids() {
        cmd.uid(uid).gid(gid);
        cmd.env("HOME", "/tmp");
    }
    cmd
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Creates (once per target dir) a freshly initdb'ed data directory to copy clusters from.
fn template(pg: &PgInstall) -> PathBuf {
    let cache = workspace_root().join("target/testkit");
    std::fs::create_dir_all(&cache).expect("create target/testkit");
    let ready = cache.join(format!("template-{}", pg.major.number()));
    if ready.join("PG_VERSION").exists() {
        return ready;
    }
    let staging = tempfile::Builder::new()
        .prefix("template-staging-")
        .tempdir_in(&cache)
        .expect("staging dir");
    std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let data = staging.path().join("data");
    give_to_server(staging.path());
    let mut initdb = as_server(pg.tool("initdb"));
    initdb.arg("-D").arg(&data).args([
        "-U",
        "postgres",
        "--auth=trust",
        "--data-checksums",
        "--no-sync",
        "-E",
        "UTF8",
        "--locale=C",
    ]);
    run(&mut initdb);
    // Another process may have won the race; theirs is as good as ours.
    let _ = std::fs::rename(&data, &ready);
    ready
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A running throwaway cluster. Stopped (immediate mode) and removed on drop.
pub struct Cluster {
    pub pg: PgInstall,
    dir: Option<tempfile::TempDir>,
    data: PathBuf,
    port: u16,
    running: bool,
}

impl Cluster {
    /// Starts a new cluster of `major`, or returns `None` when that major is not installed
    /// outside CI (see [`require`]).
    pub fn start(major: Major) -> Option<Cluster> {
        let pg = require(major)?;
        let template = template(&pg);
        let dir = Self::new_dir(major);
        let data = dir.path().join("data");
        run(Command::new("cp").arg("-a").arg(&template).arg(&data));
        let archive = dir.path().join("archive");
        std::fs::create_dir(&archive).expect("archive dir");
        let conf = format!(
            "\n# pgincr test kit\n\
             listen_addresses = '127.0.0.1'\n\
             wal_level = replica\n\
             summarize_wal = on\n\
             max_wal_senders = 10\n\
             max_replication_slots = 10\n\
             archive_mode = on\n\
             archive_command = 'cp %p {archive}/%f'\n\
             fsync = off\n\
             shared_buffers = 64MB\n\
             max_wal_size = 1GB\n\
             log_min_messages = warning\n",
            archive = archive.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        give_to_server(dir.path());
        let mut c = Cluster {
            pg,
            dir: Some(dir),
            data,
            port: 0,
            running: false,
        };
        c.start_server();
        Some(c)
    }

    /// Starts a server of `major` on an existing data directory, such as a restored or combined
    /// backup. The directory is handed to the server account and its mode set to 0700. Archiving
    /// is turned off. The directory is left in place on drop.
    pub fn start_on(major: Major, data: &Path) -> Option<Cluster> {
        let pg = require(major)?;
        let dir = Self::new_dir(major);
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700)).expect("chmod data");
        give_to_server(data);
        // Tablespace targets live outside the data directory.
        if let Ok(entries) = std::fs::read_dir(data.join("pg_tblspc")) {
            for e in entries.flatten() {
                if let Ok(target) = std::fs::read_link(e.path()) {
                    give_to_server(&target);
                }
            }
        }
        append(&data.join("postgresql.auto.conf"), "archive_mode = off\n");
        give_to_server(dir.path());
        let mut c = Cluster {
            pg,
            dir: Some(dir),
            data: data.to_path_buf(),
            port: 0,
            running: false,
        };
        c.start_server();
        Some(c)
    }

    fn new_dir(major: Major) -> tempfile::TempDir {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = tempfile::Builder::new()
            .prefix(&format!("pgincr-pg{}-{n}-", major.number()))
            .tempdir()
            .expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::create_dir(dir.path().join("sock")).expect("socket dir");
        dir
    }

    fn start_server(&mut self) {
        for attempt in 0.. {
            self.port = free_port();
            let opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                self.socket_dir().display()
            );
            let mut cmd = as_server(self.pg.tool("pg_ctl"));
            cmd.arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(self.log_path())
                .args(["-w", "-t", "120", "-o", &opts, "start"]);
            let out = output(&mut cmd);
            if out.status.success() {
                self.running = true;
                return;
            }
            // Another process may have taken the port between our probe and the bind.
            if attempt < 3 && self.log().contains("could not bind") {
                continue;
            }
            panic!(
                "pg_ctl start failed: {}\n{}",
                lossy(&out.stderr),
                self.log_tail()
            );
        }
    }

    pub fn major(&self) -> Major {
        self.pg.major
    }
    pub fn data_dir(&self) -> &Path {
        &self.data
    }
    /// The cluster's private temporary directory (holds `sock/`, `archive/`, `server.log`).
    pub fn base_dir(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }
    pub fn socket_dir(&self) -> PathBuf {
        self.base_dir().join("sock")
    }
    pub fn archive_dir(&self) -> PathBuf {
        self.base_dir().join("archive")
    }
    pub fn summaries_dir(&self) -> PathBuf {
        self.data.join("pg_wal/summaries")
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// A libpq connection string over TCP as the superuser `postgres`.
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }
    fn log_path(&self) -> PathBuf {
        self.base_dir().join("server.log")
    }
    /// The whole server log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- server log (tail) ---\n{}",
            lines[lines.len().saturating_sub(60)..].join("\n")
        )
    }

    /// A PostgreSQL client tool command preset to reach this server (see [`Cluster::client`]).
    pub fn tool(&self, name: &str) -> Command {
        let mut c = self.pg.tool(name);
        self.connect_env(&mut c);
        c
    }

    /// A command for any client program (such as the `pgincr` binary) preset to reach this
    /// server over its Unix socket as `postgres`: PGHOST/PGPORT/PGUSER set, PGPASSWORD and
    /// PGDATABASE cleared.
    pub fn client(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        self.connect_env(&mut c);
        c
    }

    fn connect_env(&self, c: &mut Command) {
        c.env("PGHOST", self.socket_dir())
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres");
        c.env_remove("PGPASSWORD").env_remove("PGDATABASE");
    }

    /// Runs `cmd`; on failure panics with its output and the server log.
    pub fn run(&self, cmd: &mut Command) -> String {
        let out = output(cmd);
        if !out.status.success() {
            panic!(
                "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}\n{}",
                out.status,
                lossy(&out.stdout),
                lossy(&out.stderr),
                self.log_tail()
            );
        }
        lossy(&out.stdout)
    }

    /// Runs SQL in database `postgres`; returns unaligned, tuples-only output, trimmed.
    pub fn sql(&self, sql: &str) -> String {
        self.sql_db("postgres", sql)
    }

    /// Runs SQL in database `db`; returns unaligned, tuples-only output, trimmed.
    pub fn sql_db(&self, db: &str, sql: &str) -> String {
        let mut c = self.tool("psql");
        c.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
        ]);
        self.run(&mut c).trim_end().to_string()
    }

    /// Runs pgbench with `args` against database `postgres`.
    pub fn pgbench(&self, args: &[&str]) -> String {
        let mut c = self.tool("pgbench");
        c.args(args).arg("postgres");
        self.run(&mut c)
    }

    pub fn checkpoint(&self) {
        self.sql("CHECKPOINT");
    }

    /// Forces a WAL segment switch; returns the switch LSN as text.
    pub fn switch_wal(&self) -> String {
        self.sql("SELECT pg_switch_wal()")
    }

    /// Current WAL insert position, as text (`X/X`).
    pub fn current_lsn(&self) -> String {
        self.sql("SELECT pg_current_wal_insert_lsn()")
    }

    /// Checkpoints and waits until the WAL summarizer has written summaries up to that
    /// checkpoint's redo point, so everything done before this call is in `pg_wal/summaries`.
    pub fn summarize(&self) {
        self.checkpoint();
        let redo = self.sql("SELECT redo_lsn FROM pg_control_checkpoint()");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let done = self.sql(&format!(
                "SELECT summarized_lsn >= '{redo}'::pg_lsn FROM pg_get_wal_summarizer_state()"
            ));
            if done == "t" {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "WAL summarizer did not reach {redo} in 120 s\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates a tablespace `name` in a fresh directory under this cluster's base dir (or under
    /// `parent` if given); returns the location.
    pub fn create_tablespace(&self, name: &str) -> PathBuf {
        let loc = self.base_dir().join(format!("ts-{name}"));
        std::fs::create_dir(&loc).expect("tablespace dir");
        give_to_server(&loc);
        self.sql(&format!(
            "CREATE TABLESPACE {name} LOCATION '{}'",
            loc.display()
        ));
        loc
    }

    /// Stops the server (fast mode) and keeps the data directory.
    pub fn stop(&mut self) {
        if self.running {
            let mut cmd = as_server(self.pg.tool("pg_ctl"));
            cmd.arg("-D")
                .arg(&self.data)
                .args(["-w", "-m", "fast", "stop"]);
            self.run(&mut cmd);
            self.running = false;
        }
    }

    /// Leaves the temporary directory on disk (for debugging a failing test).
    pub fn keep(&mut self) -> PathBuf {
        self.dir.take().map(|d| d.keep()).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let mut cmd = as_server(self.pg.tool("pg_ctl"));
            cmd.arg("-D")
                .arg(&self.data)
                .args(["-w", "-m", "immediate", "stop"]);
            let _ = output(&mut cmd);
        }
        if std::env::var_os("PGINCR_KEEP_TEST_DIRS").is_some() {
            if let Some(d) = self.dir.take() {
                eprintln!("kept test cluster dir {}", d.keep().display());
            }
        }
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {path:?}: {e}"));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {path:?}: {e}"));
}

/// `dir/backup_manifest` without what legitimately differs between two combines of the same
/// chain: each file's `Last-Modified` (the output files' own mtimes) and, following from it,
/// the `Manifest-Checksum` line. Comparing two of these compares everything else byte for byte.
pub fn manifest_without_mtimes(dir: &Path) -> String {
    let path = dir.join("backup_manifest");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
    const KEY: &str = ", \"Last-Modified\": \"";
    // The value is always "YYYY-MM-DD HH:MM:SS GMT" plus its closing quote.
    const VALUE_LEN: usize = "2026-01-01 00:00:00 GMT\"".len();
    text.lines()
        .filter(|l| !l.starts_with("\"Manifest-Checksum\""))
        .map(|l| match l.find(KEY) {
            Some(i) => format!("{}{}", &l[..i], &l[i + KEY.len() + VALUE_LEN..]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
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

/// Every regular file of a backup directory by relative path, with its bytes; symlinks as
/// `->` (their targets differ between runs); `backup_manifest` left out (its mtimes differ:
/// compare it with [`manifest_without_mtimes`]).
pub fn backup_contents(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {d:?}: {e}")) {
            let e = e.expect("directory entry");
            let p = e.path();
            let rel = p.strip_prefix(root).expect("inside root").to_path_buf();
            let t = e.file_type().expect("file type");
            if t.is_dir() {
                stack.push(p);
            } else if t.is_symlink() {
                out.insert(rel, b"->".to_vec());
            } else if rel != Path::new("backup_manifest") {
                let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("read {p:?}: {e}"));
                out.insert(rel, bytes);
            }
        }
    }
    out
}

/// Asserts two backup directories hold the same files with the same bytes (see
/// [`backup_contents`]); `what` names the comparison in the failure.
pub fn assert_same_backup(reference: &Path, ours: &Path, what: &str) {
    let (a, b) = (backup_contents(reference), backup_contents(ours));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: file lists differ"
    );
    for (p, bytes) in &a {
        assert!(bytes == &b[p], "{what}: {} differs", p.display());
    }
}

/// A scratch XFS file system with reflinks, on a loop device, for testing `--clone`: the
/// machine's own file systems (ext4 here) cannot clone. Needs root, loop devices and
/// `mkfs.xfs` (`scripts/install-test-tools` installs xfsprogs). Unmounted and removed on drop.
pub struct ReflinkScratch {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl ReflinkScratch {
    /// Mounts a fresh file system of `size_mb` MB; `Err` says why this machine cannot.
    pub fn mount(prefix: &str, size_mb: u64) -> Result<ReflinkScratch, String> {
        if server_ids().is_none() {
            return Err("not running as root (mounting needs it)".into());
        }
        let dir = scratch(prefix);
        let image = dir.path().join("xfs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| format!("mkdir: {e}"))?;
        let file = std::fs::File::create(&image).map_err(|e| format!("image: {e}"))?;
        file.set_len(size_mb << 20)
            .map_err(|e| format!("image: {e}"))?;
        let try_run = |cmd: &mut Command| -> Result<(), String> {
            let o = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if o.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
        };
        try_run(
            Command::new("mkfs.xfs")
                .args(["-q", "-m", "reflink=1"])
                .arg(&image),
        )?;
        try_run(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&mount),
        )?;
        std::fs::set_permissions(&mount, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod: {e}"))?;
        Ok(ReflinkScratch { mount, _dir: dir })
    }

    pub fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for ReflinkScratch {
    fn drop(&mut self) {
        // Lazy, so a file still open somewhere cannot leave the mount behind.
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_start_and_summarize() {
        for major in Major::ALL {
            let Some(c) = Cluster::start(major) else {
                return;
            };
            assert_eq!(
                c.sql("SHOW server_version_num")[..2],
                major.number().to_string()
            );
            assert_eq!(c.sql("SHOW summarize_wal"), "on");
            assert_eq!(c.sql("SHOW data_checksums"), "on");
            c.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
            c.summarize();
            let n = std::fs::read_dir(c.summaries_dir()).unwrap().count();
            assert!(n > 0, "no summaries in {:?}", c.summaries_dir());
        }
    }
}
