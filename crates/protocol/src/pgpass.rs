//! `~/.pgpass` (or `PGPASSFILE`) look-ups, as libpq does them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::conninfo::Secret;

/// The password of the first line matching `host:port:database:user`, if any.
///
/// Like libpq, a file readable by group or others is ignored with a warning, and so is a file
/// that is not a regular file. `host` is `localhost` for Unix-socket connections.
pub fn lookup(path: &Path, host: &str, port: u16, dbname: &str, user: &str) -> Option<Secret> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        tracing::warn!("password file \"{}\" is not a plain file", path.display());
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
            path.display()
        );
        return None;
    }
    // A password file is small; cap what we read so a wrong PGPASSFILE cannot exhaust memory.
    let text = std::fs::read(path).ok()?;
    if text.len() > 16 << 20 {
        tracing::warn!(
            "password file \"{}\" is larger than 16 MB; ignored",
            path.display()
        );
        return None;
    }
    find(&String::from_utf8_lossy(&text), host, port, dbname, user)
}

pub(crate) fn find(text: &str, host: &str, port: u16, dbname: &str, user: &str) -> Option<Secret> {
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_fields(line);
        let [h, p, d, u, password @ ..] = fields.as_slice() else {
            continue;
        };
        if password.is_empty() {
            continue;
        }
        let ok = |pat: &str, val: &str| pat == "*" || pat == val;
        if ok(h, host) && ok(p, &port) && ok(d, dbname) && ok(u, user) {
            return Some(Secret::new(password.join(":")));
        }
    }
    None
}

/// Splits on unescaped `:`; `\:` and `\\` stand for themselves.
fn split_fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if let Some(s) = out.last_mut() {
                        s.push(n);
                    }
                }
            }
            ':' if out.len() < 5 => out.push(String::new()),
            c => {
                if let Some(s) = out.last_mut() {
                    s.push(c)
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let t = "# comment\nother:*:*:*:no\nlocalhost:5432:replication:bob:s3cr\\:et\n*:*:*:*:any:thing\n";
        assert_eq!(
            find(t, "localhost", 5432, "replication", "bob")
                .unwrap()
                .expose(),
            "s3cr:et"
        );
        assert_eq!(find(t, "h", 1, "d", "u").unwrap().expose(), "any:thing");
        assert!(find("a:b:c\n", "a", 1, "c", "u").is_none());
    }

    #[test]
    fn refuses_open_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pgpass");
        std::fs::write(&p, "*:*:*:*:pw\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(lookup(&p, "h", 1, "d", "u").is_none());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup(&p, "h", 1, "d", "u").unwrap().expose(), "pw");
    }
}
