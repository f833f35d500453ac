//! Control of PostgreSQL 17/18 servers, for restore drills and tests.
//!
//! This crate owns everything pgincr does with a PostgreSQL installation rather than over a
//! connection:
//!
//! - **Finding the binaries** of a major version ([`Installation::locate`]): an explicit bin
//!   directory, else `PATH`, else `pg_config --bindir`, each checked with `postgres --version`.
//! - **initdb** ([`Installation::initdb`], [`InitdbOptions`]): checksums, authentication, extra
//!   arguments.
//! - **Running a server** ([`Installation::start`] → [`Server`]): a given or free port, a
//!   Unix-socket directory, `-c` settings, a log file; waiting until it accepts connections,
//!   for the end of recovery ([`Server::wait_recovery_end`]), promotion, and smart, fast or
//!   immediate stops, each bounded by a timeout. A dropped [`Server`] is stopped.
//! - **The account it runs as** ([`RunAs`]): postgres refuses to run as root, so a root caller
//!   names an unprivileged account and hands it the directories the server writes.
//!
//! Nothing here panics on a failure of the outside world: every operation returns a
//! [`Result`] whose [`Error`] names the command run (never its environment, so no password),
//! its exit status and stderr, and, where a server failed, the tail of the server log, which
//! is where PostgreSQL says why.
//!
//! ```no_run
//! use pgincr_server::{Installation, InitdbOptions, Major, RunAs, StartOptions, StopMode};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), pgincr_server::Error> {
//! let pg = Installation::locate(Major::V18, None)?;
//! let run_as = RunAs::unless_root("postgres");
//! let data = std::path::Path::new("/srv/drill/data");
//! pg.initdb(data, &InitdbOptions::default(), &run_as)?;
//! let opts = StartOptions::new("/srv/drill/sock", "/srv/drill/server.log")
//!     .setting("listen_addresses", "127.0.0.1");
//! let mut server = pg.start(data, &opts, &run_as)?;
//! println!("{}", server.psql("postgres", "SELECT version()")?);
//! server.stop(StopMode::Fast, Duration::from_secs(60))?;
//! # Ok(()) }
//! ```

mod account;
mod command;
mod error;
mod install;
mod log;
mod port;
mod server;
mod version;

pub use account::{running_as_root, Account, RunAs};
pub use error::{Error, Result};
pub use install::Installation;
pub use log::{tail, LogTail};
pub use server::{InitdbOptions, RecoveryEnd, Server, StartOptions, StopMode};
pub use version::{Major, Version};
