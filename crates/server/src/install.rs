//! Finding the binaries of a major version.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::{describe, run};
use crate::error::{Error, Result};
use crate::version::{parse_version, Major, Version};

/// The binaries of one installed major version (`postgres`, `initdb`, `psql`, ...), all in one
/// directory, with the version `postgres --version` reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installation {
    major: Major,
    bin_dir: PathBuf,
    version: Version,
}

impl Installation {
    /// The binaries in `bin_dir`, which must hold a `postgres` of `major`.
    pub fn at(major: Major, bin_dir: &Path) -> Result<Installation> {
        match probe(bin_dir) {
            Ok(version) if version.major == major.number() => Ok(Installation {
                major,
                bin_dir: bin_dir.to_path_buf(),
                version,
            }),
            Ok(version) => Err(Error::WrongVersion {
                postgres: bin_dir.join("postgres"),
                wanted: major,
                found: format!("PostgreSQL {version}"),
            }),
            Err(why) => Err(Error::NotFound {
                major,
                tried: vec![(bin_dir.to_path_buf(), why)],
            }),
        }
    }

    /// Finds the binaries of `major`. A `bin_dir` given (from configuration or a flag) is the
    /// only place looked at: a wrong explicit choice is an error, not something to work around.
    /// Without one, the directories of `PATH` that hold a `postgres`, then the `--bindir` of
    /// each `pg_config` on `PATH` (Debian's wrapper in `/usr/bin` points into
    /// `/usr/lib/postgresql/N/bin`, which is not on `PATH`); the first whose `postgres` is of
    /// `major` wins.
    pub fn locate(major: Major, bin_dir: Option<&Path>) -> Result<Installation> {
        match bin_dir {
            Some(dir) => Installation::at(major, dir),
            None => locate_on(major, std::env::var_os("PATH").as_deref()),
        }
    }

    pub fn major(&self) -> Major {
        self.major
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The exact version, such as 17.10.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// The path of one of the programs, such as `pg_basebackup`.
    pub fn tool_path(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// A command for one of the programs, run as the caller. `PGDATA` is removed from its
    /// environment: every data directory this crate works on is named with `-D`, and a stray
    /// `PGDATA` must not stand in for a forgotten one.
    pub fn command(&self, name: &str) -> Command {
        let mut c = Command::new(self.tool_path(name));
        c.env_remove("PGDATA");
        c
    }
}

fn locate_on(major: Major, path_var: Option<&OsStr>) -> Result<Installation> {
    let mut tried: Vec<(PathBuf, String)> = Vec::new();
    let path: Vec<PathBuf> = path_var
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    let consider = |dir: PathBuf, tried: &mut Vec<(PathBuf, String)>| -> Option<Installation> {
        if tried.iter().any(|(d, _)| *d == dir) {
            return None;
        }
        match probe(&dir) {
            Ok(v) if v.major == major.number() => Some(Installation {
                major,
                bin_dir: dir,
                version: v,
            }),
            Ok(v) => {
                tried.push((dir, format!("PostgreSQL {v}")));
                None
            }
            Err(why) => {
                tried.push((dir, why));
                None
            }
        }
    };
    for dir in path.iter().filter(|d| d.join("postgres").is_file()) {
        if let Some(found) = consider(dir.clone(), &mut tried) {
            return Ok(found);
        }
    }
    for pg_config in path
        .iter()
        .map(|d| d.join("pg_config"))
        .filter(|p| p.is_file())
    {
        let mut cmd = Command::new(&pg_config);
        cmd.arg("--bindir");
        let shown = describe(&cmd);
        match run(&mut cmd, shown) {
            Ok(out) => {
                let dir = PathBuf::from(out.trim_end_matches('\n'));
                if let Some(found) = consider(dir, &mut tried) {
                    return Ok(found);
                }
            }
            Err(e) => tried.push((pg_config, e.to_string())),
        }
    }
    Err(Error::NotFound { major, tried })
}

/// The version of `dir/postgres`, or why there is none. `--version` is answered before
/// postgres's check for root, so this works as any user.
fn probe(dir: &Path) -> std::result::Result<Version, String> {
    let postgres = dir.join("postgres");
    if !postgres.is_file() {
        return Err("no postgres there".into());
    }
    let mut cmd = Command::new(&postgres);
    cmd.arg("--version");
    let shown = describe(&cmd);
    let out = run(&mut cmd, shown).map_err(|e| e.to_string())?;
    parse_version(&out).ok_or_else(|| format!("postgres --version said {:?}", out.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory whose `postgres` (a shell script) claims to be `version`.
    fn fake_install(root: &Path, name: &str, version: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        script(
            &dir.join("postgres"),
            &format!("echo 'postgres (PostgreSQL) {version}'"),
        );
        dir
    }

    /// Writes an executable shell script. The file is written by a child process, never
    /// opened for writing in ours: a descriptor open here could be inherited by another test
    /// thread's fork (until its exec closes it), and executing the script then fails with
    /// ETXTBSY ("Text file busy"), which made this test flaky.
    fn script(path: &Path, body: &str) {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"printf '#!/bin/sh\n%s\n' "$2" > "$1" && chmod 755 "$1""#)
            .arg("sh")
            .arg(path)
            .arg(body)
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn explicit_bin_dir_is_checked_not_replaced() {
        let root = tempfile::tempdir().unwrap();
        let v17 = fake_install(root.path(), "17", "17.10");
        let i = Installation::locate(Major::V17, Some(&v17)).unwrap();
        assert_eq!(i.version().text, "17.10");
        assert_eq!(i.tool_path("psql"), v17.join("psql"));
        let e = Installation::locate(Major::V18, Some(&v17)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::WrongVersion {
                    wanted: Major::V18,
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("is PostgreSQL 17.10, not PostgreSQL 18"),
            "{e}"
        );
        let e = Installation::at(Major::V17, &root.path().join("none")).unwrap_err();
        assert!(e.to_string().contains("no postgres there"), "{e}");
    }

    #[test]
    fn path_then_pg_config() {
        let root = tempfile::tempdir().unwrap();
        let v17 = fake_install(root.path(), "17", "17.10");
        let v18 = fake_install(root.path(), "lib/18/bin", "18.6");
        let wrapper = root.path().join("wrapper");
        std::fs::create_dir(&wrapper).unwrap();
        script(
            &wrapper.join("pg_config"),
            &format!("echo '{}'", v18.display()),
        );
        let path = std::env::join_paths([&v17, &wrapper]).unwrap();
        let i = locate_on(Major::V17, Some(&path)).unwrap();
        assert_eq!(i.bin_dir(), v17);
        let i = locate_on(Major::V18, Some(&path)).unwrap();
        assert_eq!(i.bin_dir(), v18);
        assert_eq!(i.version().minor, Some(6));

        // Nothing fits: every place looked at is named with the reason.
        let path = std::env::join_paths([&v17]).unwrap();
        let e = locate_on(Major::V18, Some(&path)).unwrap_err().to_string();
        assert!(e.contains("PostgreSQL 18 not found"), "{e}");
        assert!(
            e.contains(&format!("{} (PostgreSQL 17.10)", v17.display())),
            "{e}"
        );
        let e = locate_on(Major::V18, None).unwrap_err().to_string();
        assert!(e.contains("tried: nothing"), "{e}");
    }

    #[test]
    fn broken_postgres_is_a_reason_not_a_panic() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("bad");
        std::fs::create_dir(&dir).unwrap();
        script(&dir.join("postgres"), "echo 'not a version'");
        let e = Installation::at(Major::V17, &dir).unwrap_err().to_string();
        assert!(
            e.contains("postgres --version said \"not a version\""),
            "{e}"
        );
        script(&dir.join("postgres"), "exit 1");
        let e = Installation::at(Major::V17, &dir).unwrap_err().to_string();
        assert!(e.contains("failed"), "{e}");
    }
}
