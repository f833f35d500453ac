//! The operating-system account initdb and postgres run as.
//!
//! postgres and initdb refuse to run as root (a server compromised through SQL must not own
//! the machine), so a root caller names an unprivileged account and hands it the directories
//! the server writes.

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// Who runs initdb and postgres.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RunAs {
    /// The calling process's own account (which must not be root).
    Current,
    /// The named account: the caller must be root to switch to it.
    User(String),
}

/// A resolved account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Whether this process runs as root (effective uid 0).
#[allow(unsafe_code)] // geteuid(2)
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl RunAs {
    /// `User(name)` when running as root, else `Current`: what a program that may be started
    /// either way wants.
    pub fn unless_root(name: &str) -> RunAs {
        if running_as_root() {
            RunAs::User(name.to_string())
        } else {
            RunAs::Current
        }
    }

    /// The account to switch to, or `None` for [`RunAs::Current`].
    pub fn account(&self) -> Result<Option<Account>> {
        match self {
            RunAs::Current => Ok(None),
            RunAs::User(name) => lookup(name).map(Some),
        }
    }

    /// Makes `cmd` run as this account: uid, gid (supplementary groups are dropped by the
    /// standard library when root switches uid) and the account's `HOME`, `USER` and
    /// `LOGNAME`, since root's home is not readable to it.
    pub fn apply(&self, cmd: &mut Command) -> Result<()> {
        if let Some(a) = self.account()? {
            cmd.uid(a.uid).gid(a.gid);
            cmd.env("HOME", &a.home)
                .env("USER", &a.name)
                .env("LOGNAME", &a.name);
        }
        Ok(())
    }

    /// Makes `path` and everything below it owned by this account (nothing to do for
    /// [`RunAs::Current`]). Symbolic links are changed themselves, never followed, as
    /// `chown -R` does: a link inside a data directory may point anywhere.
    pub fn give(&self, path: &Path) -> Result<()> {
        match self.account()? {
            None => Ok(()),
            Some(a) => chown_tree(path, a.uid, a.gid),
        }
    }
}

impl RunAs {
    /// [`RunAs::give`] for `path` alone, for what this crate creates itself: handing over a
    /// whole tree is for the caller to ask for, never a side effect.
    pub(crate) fn give_one(&self, path: &Path) -> Result<()> {
        match self.account()? {
            None => Ok(()),
            Some(a) => std::os::unix::fs::lchown(path, Some(a.uid), Some(a.gid))
                .map_err(|e| Error::io("chown", path, e)),
        }
    }
}

fn chown_tree(root: &Path, uid: u32, gid: u32) -> Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).map_err(|e| Error::io("stat", &p, e))?;
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid))
            .map_err(|e| Error::io("chown", &p, e))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&p).map_err(|e| Error::io("read directory", &p, e))? {
                let entry = entry.map_err(|e| Error::io("read directory", &p, e))?;
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

/// The password-database entry of `name`, through NSS like `id(1)`.
#[allow(unsafe_code)] // getpwnam_r(3)
fn lookup(name: &str) -> Result<Account> {
    let unknown = || Error::UnknownAccount(name.to_string());
    let cname = CString::new(name).map_err(|_| unknown())?;
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: passwd is plain old data; getpwnam_r fills it in.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the duration of the call and buf.len() is the
        // size of buf; the strings pwd points to live in buf, read below while buf lives.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            let bigger = buf.len() * 2;
            buf.resize(bigger, 0);
            continue;
        }
        if rc != 0 {
            return Err(Error::io(
                "look up the account",
                PathBuf::from(name),
                std::io::Error::from_raw_os_error(rc),
            ));
        }
        if found.is_null() {
            return Err(unknown());
        }
        // SAFETY: on success pw_dir is a NUL-terminated string inside buf.
        let home = unsafe { CStr::from_ptr(pwd.pw_dir) };
        return Ok(Account {
            name: name.to_string(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home: PathBuf::from(OsStr::from_bytes(home.to_bytes())),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_always_known() {
        let a = lookup("root").unwrap();
        assert_eq!((a.uid, a.gid), (0, 0));
    }

    #[test]
    fn unknown_accounts_are_errors() {
        assert!(matches!(
            lookup("pgincr-no-such-account"),
            Err(Error::UnknownAccount(_))
        ));
        assert!(matches!(lookup("a\0b"), Err(Error::UnknownAccount(_))));
        assert!(RunAs::User("pgincr-no-such-account".into())
            .give(Path::new("/nonexistent"))
            .is_err());
    }

    #[test]
    fn current_changes_nothing() {
        let mut c = Command::new("true");
        RunAs::Current.apply(&mut c).unwrap();
        assert_eq!(c.get_envs().count(), 0);
        RunAs::Current.give(Path::new("/nonexistent")).unwrap();
    }

    #[test]
    #[allow(unsafe_code)] // getuid(2)
    fn give_walks_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let me = RunAs::User(
            // SAFETY: getuid has no preconditions.
            lookup_name(unsafe { libc::getuid() }),
        );
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/nonexistent/target", dir.path().join("link")).unwrap();
        // chown to our own account is allowed unprivileged, and a dangling link is no error
        // because it is not followed.
        me.give(dir.path()).unwrap();
    }

    fn lookup_name(uid: u32) -> String {
        let out = Command::new("id")
            .args(["-un", &uid.to_string()])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}
