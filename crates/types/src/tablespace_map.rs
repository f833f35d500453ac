//! `tablespace_map` (format reference 3.3): one `<oid> <path>` line per tablespace symlink,
//! parsed as the server parses it at recovery (`read_tablespace_map` in xlogrecovery.c).
//!
//! The writer (`do_pg_backup_start`) puts a backslash before every `\n`, `\r` and `\` of a
//! path, so the file is decoded byte by byte: a backslash takes the next byte literally
//! (including a newline), an unescaped `\n` or `\r` ends a line, and empty lines (the `\n` of
//! a `\r\n`) are skipped. Each line must be an OID, exactly one space, and a non-empty path.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::relfile::Oid;

/// One line of the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablespaceMapEntry {
    pub oid: Oid,
    /// The symlink's target, de-escaped.
    pub path: PathBuf,
}

/// Why a `tablespace_map` was refused. `line` counts lines of the decoded file from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TablespaceMapError {
    #[error("bad tablespace_map line {line} \"{text}\": expected a tablespace OID, one space and the tablespace's path")]
    BadLine { line: usize, text: String },
    #[error("tablespace_map line {line}: OID {oid} appears twice")]
    DuplicateOid { line: usize, oid: Oid },
    #[error("tablespace_map ends in the middle of line {line} \"{text}\": the file is truncated")]
    Unterminated { line: usize, text: String },
}

/// `parse_oid`: a decimal in 1..=u32::MAX, without sign or leading zeros' ambiguity
/// (pg_combinebackup's rule for `pg_tblspc` entry names).
pub fn parse_oid(name: &str) -> Option<Oid> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse::<u32>().ok().filter(|&v| v >= 1)
}

/// Parses the whole map.
pub fn parse(text: &[u8]) -> Result<Vec<TablespaceMapEntry>, TablespaceMapError> {
    let mut out: Vec<TablespaceMapEntry> = Vec::new();
    let mut line = Vec::new();
    let mut line_no = 0usize;
    let mut was_backslash = false;
    let show = |l: &[u8]| String::from_utf8_lossy(l).into_owned();
    for &b in text {
        if !was_backslash && (b == b'\n' || b == b'\r') {
            if line.is_empty() {
                continue; // the \n of \r\n, or a blank line
            }
            line_no += 1;
            let entry = parse_line(&line).ok_or_else(|| TablespaceMapError::BadLine {
                line: line_no,
                text: show(&line),
            })?;
            if out.iter().any(|e| e.oid == entry.oid) {
                return Err(TablespaceMapError::DuplicateOid {
                    line: line_no,
                    oid: entry.oid,
                });
            }
            out.push(entry);
            line.clear();
        } else if !was_backslash && b == b'\\' {
            was_backslash = true;
        } else {
            line.push(b);
            was_backslash = false;
        }
    }
    if was_backslash || !line.is_empty() {
        return Err(TablespaceMapError::Unterminated {
            line: line_no + 1,
            text: show(&line),
        });
    }
    Ok(out)
}

/// `<oid> <path>` with a non-empty path (which may itself start with spaces).
fn parse_line(line: &[u8]) -> Option<TablespaceMapEntry> {
    let mut fields = line.splitn(2, |&b| b == b' ');
    let oid = std::str::from_utf8(fields.next()?)
        .ok()
        .and_then(parse_oid)?;
    let path = fields.next()?;
    if path.is_empty() {
        return None;
    }
    Some(TablespaceMapEntry {
        oid,
        path: PathBuf::from(OsStr::from_bytes(path)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(oid: Oid, p: &[u8]) -> TablespaceMapEntry {
        TablespaceMapEntry {
            oid,
            path: PathBuf::from(OsStr::from_bytes(p)),
        }
    }

    #[test]
    fn parses_what_the_server_writes() {
        let m = parse(b"16385 /srv/ts one\n16386 /a\\\\b\n").unwrap();
        assert_eq!(m, vec![e(16385, b"/srv/ts one"), e(16386, b"/a\\b")]);
        // An escaped newline or carriage return belongs to the path.
        let m = parse(b"16385 /srv/odd\\\nname\\\r\n16386  /lead\r\n").unwrap();
        assert_eq!(m, vec![e(16385, b"/srv/odd\nname\r"), e(16386, b" /lead")]);
        assert_eq!(parse(b"").unwrap(), vec![]);
    }

    #[test]
    fn refuses_malformed_maps() {
        for bad in [
            &b"x /a\n"[..],
            b"0 /a\n",
            b"16385\n",
            b"16385 \n",
            b"-1 /a\n",
            b"4294967296 /a\n",
        ] {
            assert!(
                matches!(parse(bad), Err(TablespaceMapError::BadLine { line: 1, .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse(b"16385 /a\n16385 /b\n"),
            Err(TablespaceMapError::DuplicateOid {
                line: 2,
                oid: 16385
            })
        ));
        assert!(matches!(
            parse(b"16385 /a\n16386 /b"),
            Err(TablespaceMapError::Unterminated { line: 2, .. })
        ));
        assert!(matches!(
            parse(b"16385 /a\\"),
            Err(TablespaceMapError::Unterminated { .. })
        ));
    }
}
