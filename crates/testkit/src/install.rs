//! Finding the test installs of PostgreSQL, and the account their servers run as.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use pgincr_server::{Error, Installation, Major, RunAs};

/// Account initdb and postgres run as when the tests run as root.
pub const SERVER_ACCOUNT: &str = "pgincr-pg";

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

    /// The same binaries as `pgincr-server` sees them, their version checked (once per
    /// process and directory: every cluster start asks).
    pub(crate) fn installation(&self) -> Installation {
        static CHECKED: Mutex<Vec<Installation>> = Mutex::new(Vec::new());
        let mut checked = CHECKED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = checked
            .iter()
            .find(|i| i.major() == self.major && i.bin_dir() == self.bin)
        {
            return i.clone();
        }
        let i = Installation::at(self.major, &self.bin).unwrap_or_else(|e| {
            panic!(
                "{e}\n(the bin directory comes from PGINCR_PG{}_BIN or .pg/env: run scripts/install-postgres)",
                self.major.number()
            )
        });
        checked.push(i.clone());
        i
    }
}

/// The tool set of `major`, or `None` (the test should return) when it is not installed and we
/// are not in CI. Under `CI=true` a missing install is a failure, never a skip.
pub fn require(major: Major) -> Option<PgInstall> {
    match bin_dir(major) {
        Some(bin) => {
            let pg = PgInstall { major, bin };
            // A bin directory holding another version (or nothing) fails here, not later.
            pg.installation();
            Some(pg)
        }
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{major} is not installed, and CI=true forbids skipping: run scripts/install-postgres")
        }
        None => {
            eprintln!("SKIP: {major} is not installed; run scripts/install-postgres");
            None
        }
    }
}

/// Who initdb and postgres run as: [`SERVER_ACCOUNT`] when we are root, else ourselves.
pub(crate) fn server_account() -> RunAs {
    let run_as = RunAs::unless_root(SERVER_ACCOUNT);
    match run_as.account() {
        Ok(_) => run_as,
        Err(Error::UnknownAccount(_)) => panic!(
            "running as root needs the account {SERVER_ACCOUNT}: run scripts/install-postgres as root"
        ),
        Err(e) => panic!("{e}"),
    }
}

/// Makes `path` (recursively) owned by the server account, when we are root.
pub fn give_to_server(path: &Path) {
    server_account()
        .give(path)
        .unwrap_or_else(|e| panic!("{e}"));
}
