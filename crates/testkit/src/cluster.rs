//! Throwaway clusters.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use pgincr_server::{InitdbOptions, Major, Server, StartOptions, StopMode};

use crate::install::{give_to_server, require, server_account, workspace_root, PgInstall};
use crate::{lossy, output, run};

/// How long a server may take to accept connections (a restored backup replays WAL first).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a fast stop may take: pg_ctl's default.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The environment the servers and initdb run in, as the client tools do (see
/// [`PgInstall::tool`]): initdb records `TZ` as the cluster's `timezone`, and C messages keep
/// the log readable to the tests that search it.
fn server_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    vec![("LC_ALL".into(), "C".into()), ("TZ".into(), "UTC".into())]
}

/// Creates (once per target dir) a freshly initdb'ed data directory to copy clusters from.
fn template(pg: &PgInstall) -> PathBuf {
    template_in(pg, &workspace_root().join("target/testkit"))
}

fn template_in(pg: &PgInstall, cache: &Path) -> PathBuf {
    std::fs::create_dir_all(cache).expect("create target/testkit");
    let ready = cache.join(format!("template-{}", pg.major.number()));
    if ready.join("PG_VERSION").exists() {
        return ready;
    }
    let staging = tempfile::Builder::new()
        .prefix("template-staging-")
        .tempdir_in(cache)
        .expect("staging dir");
    std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let data = staging.path().join("data");
    give_to_server(staging.path());
    let opts = InitdbOptions {
        superuser: "postgres".into(),
        auth: Some("trust".into()),
        data_checksums: true,
        encoding: Some("UTF8".into()),
        locale: Some("C".into()),
        no_sync: true,
        extra_args: Vec::new(),
        env: server_env(),
    };
    pg.installation()
        .initdb(&data, &opts, &server_account())
        .unwrap_or_else(|e| panic!("initdb for {}: {e}", pg.major));
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
    /// `None` once stopped.
    server: Option<Server>,
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
            server: None,
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
            server: None,
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

    /// Starts postgres on a free port (another one if that port is taken before postgres binds
    /// it), and waits until it accepts connections.
    fn start_server(&mut self) {
        let mut opts = StartOptions::new(self.socket_dir(), self.log_path())
            .setting("listen_addresses", "127.0.0.1");
        opts.env = server_env();
        opts.timeout = START_TIMEOUT;
        let server = self
            .pg
            .installation()
            .start(&self.data, &opts, &server_account())
            .unwrap_or_else(|e| {
                panic!("starting {} on {}: {e}", self.pg.major, self.data.display())
            });
        self.port = server.port();
        self.server = Some(server);
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
        format!(
            "--- server log (tail) ---\n{}",
            pgincr_server::tail(&self.log(), 60)
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
        // psql -c as before, not Server::psql: its errors drop the statement (a library must
        // not leak what the SQL holds), and a failing test wants to see it.
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
        if let Some(mut server) = self.server.take() {
            if let Err(e) = server.stop(StopMode::Fast, STOP_TIMEOUT) {
                // Put it back, so that Drop still stops what is left of it.
                self.server = Some(server);
                panic!("stopping {}: {e}", self.pg.major);
            }
        }
    }

    /// Leaves the temporary directory on disk (for debugging a failing test).
    pub fn keep(&mut self) -> PathBuf {
        self.dir.take().map(|d| d.keep()).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Before the directory goes: dropping the server stops it in immediate mode.
        drop(self.server.take());
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

    #[test]
    fn templates_are_initdb_as_the_tests_want() {
        for major in Major::ALL {
            let Some(pg) = require(major) else {
                return;
            };
            let cache = crate::scratch("pgincr-testkit-template-");
            let t = template_in(&pg, cache.path());
            assert_eq!(
                std::fs::read_to_string(t.join("PG_VERSION"))
                    .unwrap()
                    .trim(),
                major.number().to_string()
            );
            let conf = std::fs::read_to_string(t.join("postgresql.conf")).unwrap();
            assert!(conf.contains("\ntimezone = UTC"), "{conf}");
            assert!(conf.contains("\nlc_messages = C"), "{conf}");
            // A second call finds it ready.
            assert_eq!(template_in(&pg, cache.path()), t);
        }
    }

    #[test]
    fn stop_keeps_the_data_and_start_on_restarts_it() {
        let Some(mut c) = Cluster::start(Major::V18) else {
            return;
        };
        c.sql("CREATE TABLE kept AS SELECT 42 AS answer");
        c.stop();
        assert!(!c.data_dir().join("postmaster.pid").exists());
        c.stop();
        let copy = crate::scratch("pgincr-testkit-start-on-");
        let data = copy.path().join("data");
        run(Command::new("cp").arg("-a").arg(c.data_dir()).arg(&data));
        let d = Cluster::start_on(Major::V18, &data).expect("installed");
        assert_eq!(d.sql("SELECT answer FROM kept"), "42");
        assert_eq!(d.sql("SHOW archive_mode"), "off");
        assert_ne!(d.port(), 0);
    }
}
