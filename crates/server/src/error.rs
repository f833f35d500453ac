//! The one error type of the crate.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::log::LogTail;
use crate::version::Major;

/// Why an operation on a PostgreSQL installation or server failed.
///
/// Errors name the command that was run by its program and arguments only: environment
/// variables (where a `PGPASSWORD` would be) are never shown, nor is SQL text given to psql.
/// Failures of a server carry the tail of its log, which is where PostgreSQL says why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No directory holding the binaries of `major` was found.
    #[error("{major} not found; tried: {}", Tried(.tried))]
    NotFound {
        major: Major,
        /// Each place looked at, with why it was not taken.
        tried: Vec<(PathBuf, String)>,
    },

    /// The `postgres` binary in a directory given explicitly is of another version.
    #[error("{postgres} is {found}, not {wanted}")]
    WrongVersion {
        postgres: PathBuf,
        wanted: Major,
        found: String,
    },

    /// A program could not be started at all.
    #[error("could not run {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },

    /// A program ran and failed.
    #[error("{command} failed ({status}){}", Stderr(.stderr))]
    Command {
        command: String,
        status: ExitStatus,
        stderr: String,
    },

    /// A file system operation failed.
    #[error("could not {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// The account to run the server as does not exist.
    #[error("there is no account {0:?} to run the server as")]
    UnknownAccount(String),

    /// postgres exited before it was ready (a bad setting, a port in use, a damaged data
    /// directory, ...).
    #[error("postgres exited while starting ({status})\n{log}")]
    StartFailed { status: ExitStatus, log: LogTail },

    /// postgres exited with a failure status while we were waiting on it for something else.
    #[error("postgres exited ({status}) while {waiting_for}\n{log}")]
    Exited {
        status: ExitStatus,
        waiting_for: &'static str,
        log: LogTail,
    },

    /// Something did not happen in time. `last_error` is the last failure seen while polling,
    /// such as psql's "the database system is starting up".
    #[error("timed out after {timeout:?} {waiting_for}{}\n{log}", Stderr(.last_error))]
    Timeout {
        waiting_for: &'static str,
        timeout: Duration,
        last_error: String,
        log: LogTail,
    },

    /// The server is not running (stopped, detached or exited) but the operation needs it.
    #[error("the server is not running")]
    NotRunning,

    /// The server answered something we cannot read.
    #[error("unexpected answer from the server to {query}: {answer:?}")]
    Unexpected { query: &'static str, answer: String },

    /// Promotion did not end recovery (the server was not a standby, or paused or shut down).
    #[error("promotion did not end recovery: the server {0}")]
    NotPromoted(&'static str),

    /// No port in the range was free.
    #[error("no free TCP port on 127.0.0.1 in {first}..={last}")]
    NoFreePort { first: u16, last: u16 },
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Error {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// The server log tail this error carries, if any.
    pub fn log_tail(&self) -> Option<&LogTail> {
        match self {
            Error::StartFailed { log, .. }
            | Error::Exited { log, .. }
            | Error::Timeout { log, .. } => Some(log),
            _ => None,
        }
    }
}

/// Shows a non-empty stderr on lines of its own after the message.
struct Stderr<'a>(&'a str);

impl fmt::Display for Stderr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.trim_end() {
            "" => Ok(()),
            s => write!(f, ":\n{s}"),
        }
    }
}

struct Tried<'a>(&'a [(PathBuf, String)]);

impl fmt::Display for Tried<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("nothing (no bin directory given, no PATH)");
        }
        for (i, (path, why)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{} ({why})", path.display())?;
        }
        Ok(())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
