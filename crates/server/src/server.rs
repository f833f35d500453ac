//! initdb, and the life of a running server: start, ready, recovery, promotion, stop.
//!
//! The postmaster is started directly rather than through `pg_ctl`: its arguments reach it as
//! an argument vector (pg_ctl passes `-o` through `/bin/sh`, so every `-c` value would need
//! shell quoting), and as our child its exit is seen the moment it happens, so a start that
//! fails reports the server's reason at once instead of after a timeout. Readiness is read
//! where pg_ctl reads it, the status line of `postmaster.pid`.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::account::RunAs;
use crate::command::{describe, run};
use crate::error::{Error, Result};
use crate::install::Installation;
use crate::log::{read_from, LogTail, TAIL_LINES};
use crate::port::free_port;
use crate::version::Major;

/// How often an automatically chosen port is replaced when postgres could not bind it.
const PORT_ATTEMPTS: u32 = 4;

/// How long a dropped [`Server`] is given to finish an immediate shutdown before it is killed.
const DROP_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of [`Installation::initdb`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitdbOptions {
    /// The bootstrap superuser (`-U`).
    pub superuser: String,
    /// The `--auth` method for local and TCP connections alike; `None` leaves initdb's
    /// default, which is `trust`.
    pub auth: Option<String>,
    /// Data checksums on or off. The flag is always passed, since the default differs between
    /// majors (off before 18, on from 18).
    pub data_checksums: bool,
    /// `-E`; `None` derives it from the locale, as initdb does.
    pub encoding: Option<String>,
    /// `--locale`; `None` takes the environment's, as initdb does.
    pub locale: Option<String>,
    /// `--no-sync`: faster, and fine for a cluster that is thrown away after a crash.
    pub no_sync: bool,
    /// More arguments, after the others.
    pub extra_args: Vec<OsString>,
    /// Variables added to initdb's environment. initdb writes what it finds there into
    /// `postgresql.conf` (`TZ` becomes `timezone`, `LC_*` the locale settings it is not given).
    pub env: Vec<(OsString, OsString)>,
}

impl Default for InitdbOptions {
    fn default() -> Self {
        InitdbOptions {
            superuser: "postgres".into(),
            auth: None,
            data_checksums: true,
            encoding: None,
            locale: None,
            no_sync: false,
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// Options of [`Installation::start`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartOptions {
    /// The TCP port; `None` takes a free one, and another one if postgres could not bind
    /// it (another program was quicker).
    pub port: Option<u16>,
    /// Where postgres puts its Unix socket (`-k`), and where [`Server::psql`] connects. A
    /// directory of the server's own keeps other users' clients and servers out.
    pub socket_dir: PathBuf,
    /// postgres's stdout and stderr are appended here.
    pub log_file: PathBuf,
    /// Settings given as `-c name=value`; they win over `postgresql.conf` and
    /// `postgresql.auto.conf`.
    pub settings: Vec<(String, String)>,
    /// Variables added to postgres's environment.
    pub env: Vec<(OsString, OsString)>,
    /// The role [`Server::psql`] and [`Server::client`] connect as.
    pub superuser: String,
    /// Whether [`Installation::start`] returns only once the server is up (see
    /// [`Server::wait_ready`]). A recovery that ends in a shutdown never gets there: start
    /// those without waiting and use [`Server::wait_recovery_end`].
    pub wait: bool,
    /// How long to wait for it.
    pub timeout: Duration,
    /// Puts the postmaster in a process group of its own. By default it shares the caller's,
    /// so that Ctrl-C on the caller's terminal reaches it too (a fast shutdown) and an
    /// interrupted run leaves no server behind; a server meant to outlive its starter (see
    /// [`Server::detach`]) wants its own.
    pub own_process_group: bool,
}

impl StartOptions {
    /// Defaults: a free port, superuser `postgres`, waiting up to 120 s for readiness.
    pub fn new(socket_dir: impl Into<PathBuf>, log_file: impl Into<PathBuf>) -> StartOptions {
        StartOptions {
            port: None,
            socket_dir: socket_dir.into(),
            log_file: log_file.into(),
            settings: Vec::new(),
            env: Vec::new(),
            superuser: "postgres".into(),
            wait: true,
            timeout: Duration::from_secs(120),
            own_process_group: false,
        }
    }

    /// Adds a `-c name=value` setting.
    pub fn setting(mut self, name: &str, value: &str) -> StartOptions {
        self.settings.push((name.to_string(), value.to_string()));
        self
    }
}

/// How to stop a server: the three shutdown modes of the postmaster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StopMode {
    /// SIGTERM: waits for clients to disconnect, then a shutdown checkpoint.
    Smart,
    /// SIGINT: disconnects clients, then a shutdown checkpoint.
    Fast,
    /// SIGQUIT: exits at once; the next start runs crash recovery.
    Immediate,
}

impl StopMode {
    fn signal(self) -> libc::c_int {
        match self {
            StopMode::Smart => libc::SIGTERM,
            StopMode::Fast => libc::SIGINT,
            StopMode::Immediate => libc::SIGQUIT,
        }
    }
}

/// How a recovery ended, as [`Server::wait_recovery_end`] saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecoveryEnd {
    /// `pg_is_in_recovery()` is false: the server runs as a primary (recovery reached its end
    /// or target and promoted, or it was promoted).
    InProduction,
    /// Replay is paused (`recovery_target_action = pause` at the target, or
    /// `pg_wal_replay_pause()`); the server is still in recovery.
    Paused,
    /// The server shut down cleanly (`recovery_target_action = shutdown` at the target).
    ShutDown,
}

/// The status line of `postmaster.pid`, as the postmaster writes it for pg_ctl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PmStatus {
    Starting,
    Stopping,
    /// Accepting connections as a primary.
    Ready,
    /// Accepting read-only connections in hot standby.
    Standby,
}

/// What `postmaster.pid` says: the postmaster's pid (line 1) and status (line 8, written once
/// the server reaches a state pg_ctl waits for; absent early in startup).
fn parse_pid_file(text: &str) -> Option<(u32, Option<PmStatus>)> {
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let status = match lines.nth(6).map(str::trim) {
        Some("starting") => Some(PmStatus::Starting),
        Some("stopping") => Some(PmStatus::Stopping),
        Some("ready") => Some(PmStatus::Ready),
        Some("standby") => Some(PmStatus::Standby),
        _ => None,
    };
    Some((pid, status))
}

impl Installation {
    /// Creates a cluster in `data` with initdb, run as `run_as`. `data` is created (mode 0700)
    /// if need be, and handed to the account (the directory itself: initdb wants it empty
    /// anyway), so its parent need not be writable to the account, only searchable.
    pub fn initdb(&self, data: &Path, opts: &InitdbOptions, run_as: &RunAs) -> Result<()> {
        if !data.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data)
                .map_err(|e| Error::io("create", data, e))?;
        }
        run_as.give_one(data)?;
        let mut cmd = self.command("initdb");
        run_as.apply(&mut cmd)?;
        cmd.arg("-D").arg(data).arg("-U").arg(&opts.superuser);
        if let Some(auth) = &opts.auth {
            cmd.arg(format!("--auth={auth}"));
        }
        match (opts.data_checksums, self.major()) {
            (true, _) => {
                cmd.arg("--data-checksums");
            }
            // Before 18 off is the default, and there is no flag to ask for it.
            (false, Major::V17) => {}
            (false, _) => {
                cmd.arg("--no-data-checksums");
            }
        }
        if let Some(e) = &opts.encoding {
            cmd.arg("-E").arg(e);
        }
        if let Some(l) = &opts.locale {
            cmd.arg(format!("--locale={l}"));
        }
        if opts.no_sync {
            cmd.arg("--no-sync");
        }
        cmd.args(&opts.extra_args)
            .envs(opts.env.iter().map(|(k, v)| (k, v)));
        let shown = describe(&cmd);
        run(&mut cmd, shown).map(drop)
    }

    /// Starts postgres on the cluster in `data` as `run_as` and, if `opts.wait`, waits until it
    /// accepts connections. The data directory must already belong to the account (see
    /// [`RunAs::give`]); the log file is created if need be and handed to it.
    ///
    /// A server that exits while starting is an [`Error::StartFailed`] with the tail of its
    /// log; one that is not ready in time is stopped (immediate) and an [`Error::Timeout`].
    pub fn start(&self, data: &Path, opts: &StartOptions, run_as: &RunAs) -> Result<Server> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&opts.log_file)
            .map_err(|e| Error::io("open the server log", &opts.log_file, e))?;
        run_as.give_one(&opts.log_file)?;
        let mut attempt = 1;
        loop {
            let port = match opts.port {
                Some(p) => p,
                None => free_port()?,
            };
            let log_start = log
                .metadata()
                .map_err(|e| Error::io("stat", &opts.log_file, e))?
                .len();
            let mut cmd = self.command("postgres");
            run_as.apply(&mut cmd)?;
            cmd.arg("-D")
                .arg(data)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(&opts.socket_dir);
            // Settings are named in errors but their values are not: a `primary_conninfo` may
            // hold a password.
            let mut shown = describe(&cmd);
            for (name, value) in &opts.settings {
                cmd.arg("-c").arg(format!("{name}={value}"));
                shown.push_str(&format!(" -c {name}=..."));
            }
            cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
            if opts.own_process_group {
                cmd.process_group(0);
            }
            let clone_log = || {
                log.try_clone()
                    .map_err(|e| Error::io("open the server log", &opts.log_file, e))
            };
            cmd.stdin(Stdio::null())
                .stdout(clone_log()?)
                .stderr(clone_log()?);
            let child = cmd.spawn().map_err(|source| Error::Spawn {
                command: shown,
                source,
            })?;
            let mut server = Server {
                install: self.clone(),
                data: data.to_path_buf(),
                port,
                socket_dir: opts.socket_dir.clone(),
                log_file: opts.log_file.clone(),
                superuser: opts.superuser.clone(),
                child: Some(child),
            };
            if !opts.wait {
                return Ok(server);
            }
            match server.wait_ready(opts.timeout) {
                Ok(()) => return Ok(server),
                Err(Error::StartFailed { .. })
                    if opts.port.is_none()
                        && attempt < PORT_ATTEMPTS
                        && port_was_taken(&read_from(&opts.log_file, log_start), port) =>
                {
                    attempt += 1;
                }
                // Dropping `server` stops one that is still starting.
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether a failed start failed because its port was in use. The log says so in English
/// ("could not bind ... Address already in use"); with translated messages, a port that is
/// still taken now tells the same.
fn port_was_taken(log: &str, port: u16) -> bool {
    log.contains("could not bind")
        || log.contains("could not create lock file")
        || std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
}

/// A running postmaster started by [`Installation::start`].
///
/// Dropping it stops the server in immediate mode (and kills it if that takes over 30 s): a
/// drill or test that fails half-way must not leave a server behind. [`Server::detach`] leaves
/// it running instead.
#[derive(Debug)]
pub struct Server {
    install: Installation,
    data: PathBuf,
    port: u16,
    socket_dir: PathBuf,
    log_file: PathBuf,
    superuser: String,
    /// `None` once the postmaster has exited and been reaped, or after `detach`.
    child: Option<Child>,
}

impl Server {
    pub fn installation(&self) -> &Installation {
        &self.install
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The postmaster's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines of the server log.
    pub fn log_tail(&self) -> LogTail {
        LogTail::read(&self.log_file, TAIL_LINES)
    }

    /// Whether the postmaster is still running; reaps it if it has exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.exit_status(), Ok(None))
    }

    /// `Some(status)` once the postmaster has exited (reaping it), `None` while it runs.
    fn exit_status(&mut self) -> Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Err(Error::NotRunning);
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Ok(Some(status))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Error::io("wait for postgres in", &self.data, e)),
        }
    }

    /// Waits until the server is up, as `pg_ctl -w` does: until `postmaster.pid` names our
    /// postmaster and says "ready" (accepting connections as a primary) or "standby"
    /// (recovery has reached a consistent state; connections are accepted read-only, or
    /// refused when `hot_standby = off`, in which case the postmaster says "standby" so that
    /// waiters do not wait forever).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let pid_file = self.data.join("postmaster.pid");
        let mut poll = Poll::new(timeout);
        loop {
            if let Some(status) = self.exit_status()? {
                return Err(Error::StartFailed {
                    status,
                    log: self.log_tail(),
                });
            }
            // A pid file left by an earlier, killed postmaster names another pid, and is
            // rewritten by ours early in its startup.
            let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if let Some((pid, Some(PmStatus::Ready | PmStatus::Standby))) = parse_pid_file(&text) {
                if Some(pid) == self.pid() {
                    return Ok(());
                }
            }
            if !poll.sleep() {
                return Err(Error::Timeout {
                    waiting_for: "waiting for the server to accept connections",
                    timeout,
                    last_error: String::new(),
                    log: self.log_tail(),
                });
            }
        }
    }

    /// Waits until recovery ends: `pg_is_in_recovery()` false, replay paused, or the server
    /// shut down cleanly, whichever comes first; polls with psql. Until the server accepts
    /// connections, psql's failures are part of waiting; the last one is in the
    /// [`Error::Timeout`]. A server that exits with a failure is an [`Error::Exited`].
    pub fn wait_recovery_end(&mut self, timeout: Duration) -> Result<RecoveryEnd> {
        self.wait_recovery(timeout, true)
    }

    fn wait_recovery(&mut self, timeout: Duration, pause_ends: bool) -> Result<RecoveryEnd> {
        const QUERY: &str = "SELECT CASE WHEN pg_is_in_recovery() \
                             THEN pg_get_wal_replay_pause_state() ELSE 'production' END";
        let mut poll = Poll::new(timeout);
        let mut last_error = String::new();
        loop {
            match self.exit_status()? {
                Some(status) if status.success() => return Ok(RecoveryEnd::ShutDown),
                Some(status) => {
                    return Err(Error::Exited {
                        status,
                        waiting_for: "waiting for the end of recovery",
                        log: self.log_tail(),
                    })
                }
                None => {}
            }
            match self.psql("postgres", QUERY).as_deref() {
                Ok("production") => return Ok(RecoveryEnd::InProduction),
                Ok("paused") if pause_ends => return Ok(RecoveryEnd::Paused),
                Ok("paused" | "pause requested" | "not paused") => {}
                Ok(other) => {
                    return Err(Error::Unexpected {
                        query: "pg_get_wal_replay_pause_state()",
                        answer: other.to_string(),
                    })
                }
                Err(e) => last_error = e.to_string(),
            }
            if !poll.sleep() {
                return Err(Error::Timeout {
                    waiting_for: "waiting for the end of recovery",
                    timeout,
                    last_error,
                    log: self.log_tail(),
                });
            }
        }
    }

    /// Promotes a standby (or a server in archive recovery, paused or not) and waits until it
    /// runs as a primary, as `pg_ctl promote -w` does: the `promote` signal file, then SIGUSR1
    /// to the postmaster. A server already running as a primary is left as it is (and this is
    /// no error); on a timeout the request is withdrawn.
    pub fn promote(&mut self, timeout: Duration) -> Result<()> {
        let pid = self.live_pid()?;
        let signal_file = self.data.join("promote");
        // The startup process removes the file, which needs only write access to the data
        // directory, so its owner (root, perhaps) does not matter.
        std::fs::write(&signal_file, b"").map_err(|e| Error::io("write", &signal_file, e))?;
        signal(pid, libc::SIGUSR1).map_err(|e| Error::io("signal postgres in", &self.data, e))?;
        let end = self.wait_recovery(timeout, false);
        // A server that was not in recovery ignores the request and leaves the file, which a
        // later start as a standby must not mistake for a new one.
        match std::fs::remove_file(&signal_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove", &signal_file, e))
            }
            _ => {}
        }
        match end? {
            RecoveryEnd::InProduction => Ok(()),
            RecoveryEnd::ShutDown => Err(Error::NotPromoted("shut down instead")),
            // wait_recovery(_, false) does not end on a pause.
            RecoveryEnd::Paused => Err(Error::NotPromoted("paused")),
        }
    }

    /// Stops the server and waits for the postmaster to exit. Smart and fast stops that end in
    /// a failure status (a failed shutdown checkpoint, say) are an [`Error::Exited`]; a stop
    /// that takes longer than `timeout` is an [`Error::Timeout`] and leaves the server to
    /// `Drop` or another `stop`. Stopping a server that is not running does nothing.
    pub fn stop(&mut self, mode: StopMode, timeout: Duration) -> Result<()> {
        let status = match self.exit_status() {
            Err(Error::NotRunning) => return Ok(()),
            Err(e) => return Err(e),
            Ok(Some(status)) => status,
            Ok(None) => {
                let pid = self.live_pid()?;
                signal(pid, mode.signal())
                    .map_err(|e| Error::io("signal postgres in", &self.data, e))?;
                let mut poll = Poll::new(timeout);
                loop {
                    if let Some(status) = self.exit_status()? {
                        break status;
                    }
                    if !poll.sleep() {
                        return Err(Error::Timeout {
                            waiting_for: "waiting for the server to stop",
                            timeout,
                            last_error: String::new(),
                            log: self.log_tail(),
                        });
                    }
                }
            }
        };
        // An immediate shutdown is an exit "with failure" by design.
        if status.success() || mode == StopMode::Immediate {
            Ok(())
        } else {
            Err(Error::Exited {
                status,
                waiting_for: "stopping",
                log: self.log_tail(),
            })
        }
    }

    /// Lets the server run on after this handle is gone; returns its pid. Nothing reaps the
    /// postmaster when it exits while this process lives on, which costs a zombie entry.
    pub fn detach(mut self) -> Option<u32> {
        self.child.take().map(|c| c.id())
    }

    /// Runs `sql` with psql in database `db` over the Unix socket, as the caller; returns the
    /// output unaligned and tuples-only, without its final newline. A failure is an
    /// [`Error::Command`] with psql's stderr; the SQL itself is not repeated in it, since it
    /// may hold a password.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let mut cmd = self.client(self.install.tool_path("psql"));
        // No CONTEXT lines: they quote the statements of functions, as QUERY: lines do.
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "SHOW_CONTEXT=never",
            "-d",
            db,
            "-c",
            sql,
        ]);
        let shown = format!(
            "{} -X -A -t -q -v ON_ERROR_STOP=1 -v SHOW_CONTEXT=never -d {db} -c <SQL>",
            self.install.tool_path("psql").display()
        );
        match run(&mut cmd, shown) {
            Ok(out) => Ok(out.trim_end_matches('\n').to_string()),
            Err(Error::Command {
                command,
                status,
                stderr,
            }) => Err(Error::Command {
                command,
                status,
                stderr: without_statement(&stderr),
            }),
            Err(e) => Err(e),
        }
    }

    /// A command for a client program (psql, pg_basebackup, pgincr, ...) that reaches this
    /// server over its Unix socket as the superuser: `PGHOST`, `PGPORT` and `PGUSER` set, and
    /// every other `PG*` variable of the caller's environment removed, so that a `PGSERVICE`,
    /// `PGOPTIONS` or `PGPASSWORD` meant for another server does not apply to this one. The
    /// connection attempt is bounded (`PGCONNECT_TIMEOUT=10`).
    pub fn client(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        for (name, _) in std::env::vars_os() {
            if name.as_encoded_bytes().starts_with(b"PG") {
                c.env_remove(name);
            }
        }
        c.env("PGHOST", &self.socket_dir)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.superuser)
            .env("PGCONNECT_TIMEOUT", "10");
        c
    }

    fn live_pid(&mut self) -> Result<libc::pid_t> {
        match self.exit_status()? {
            None => self
                .pid()
                .and_then(|p| libc::pid_t::try_from(p).ok())
                .ok_or(Error::NotRunning),
            Some(_) => Err(Error::NotRunning),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.is_running() {
            return;
        }
        if self.stop(StopMode::Immediate, DROP_STOP_TIMEOUT).is_err() {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// psql's stderr without its quotations of the statement: the `LINE n:` excerpt with the
/// caret line under it, and `QUERY:` lines. The server's own message, DETAIL and HINT stay.
fn without_statement(stderr: &str) -> String {
    let mut out = String::new();
    let mut lines = stderr.lines().peekable();
    while let Some(line) = lines.next() {
        let quoted_line = line
            .strip_prefix("LINE ")
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if quoted_line {
            if lines.peek().is_some_and(|l| l.trim() == "^") {
                lines.next();
            }
            continue;
        }
        if line.starts_with("QUERY:") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[allow(unsafe_code)] // kill(2)
fn signal(pid: libc::pid_t, sig: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions; pid is our own unreaped child, so it
    // cannot have been reused by another process.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sleeps between polls, briefly at first (a started server is often ready within 100 ms)
/// and up to 100 ms between polls later, until a deadline.
struct Poll {
    deadline: Instant,
    interval: Duration,
}

impl Poll {
    fn new(timeout: Duration) -> Poll {
        Poll {
            deadline: Instant::now() + timeout,
            interval: Duration::from_millis(5),
        }
    }

    /// Sleeps; `false` (without sleeping) once the deadline has passed.
    fn sleep(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.deadline {
            return false;
        }
        std::thread::sleep(self.interval.min(self.deadline - now));
        self.interval = (self.interval * 2).min(Duration::from_millis(100));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_status() {
        let ready = "4242\n/data\n1767225600\n5432\n/tmp\n127.0.0.1\n  1234567     12\nready   \n";
        assert_eq!(parse_pid_file(ready), Some((4242, Some(PmStatus::Ready))));
        let standby = ready.replace("ready   ", "standby ");
        assert_eq!(
            parse_pid_file(&standby),
            Some((4242, Some(PmStatus::Standby)))
        );
        let stopping = ready.replace("ready   ", "stopping");
        assert_eq!(
            parse_pid_file(&stopping),
            Some((4242, Some(PmStatus::Stopping)))
        );
        // Early in startup the status line is not there yet.
        assert_eq!(
            parse_pid_file("4242\n/data\n1767225600\n5432\n"),
            Some((4242, None))
        );
        assert_eq!(parse_pid_file(""), None);
        assert_eq!(parse_pid_file("garbage\n"), None);
    }

    #[test]
    fn psql_errors_lose_the_statement() {
        let stderr = "ERROR:  syntax error at or near \"PASSWORD\"\n\
                      LINE 1: ALTER ROLE x PASSWORD 'hunter2' WITH\n\
                      \x20                    ^\n\
                      QUERY:  SELECT 'hunter2'\n\
                      HINT:  Try again.\n";
        assert_eq!(
            without_statement(stderr),
            "ERROR:  syntax error at or near \"PASSWORD\"\nHINT:  Try again.\n"
        );
        assert_eq!(without_statement("LINE one\n"), "LINE one\n");
    }

    #[test]
    fn poll_ends_at_the_deadline() {
        let mut p = Poll::new(Duration::from_millis(30));
        let start = Instant::now();
        let mut n = 0;
        while p.sleep() {
            n += 1;
        }
        assert!(n >= 2, "{n}");
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn start_options_defaults() {
        let o = StartOptions::new("/s", "/l").setting("fsync", "off");
        assert_eq!(o.port, None);
        assert!(o.wait);
        assert_eq!(o.settings, [("fsync".to_string(), "off".to_string())]);
        assert!(InitdbOptions::default().data_checksums);
    }

    #[test]
    fn port_conflicts_are_recognised() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = l.local_addr().unwrap().port();
        assert!(port_was_taken("", taken));
        assert!(port_was_taken(
            "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use",
            1
        ));
        drop(l);
        let free = crate::port::free_port().unwrap();
        assert!(!port_was_taken("FATAL:  invalid value for parameter", free));
    }
}
