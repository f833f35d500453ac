//! Tablespaces of the final backup (`scan_for_existing_tablespaces`).

use crate::archive::TarIndexExt as _;
use crate::archive::{parse_tablespace_map, Part, TarIndex};
use crate::error::{CombineError, Result};
use crate::options::{canonicalize_path, TablespaceMapping};
use pgincr_types::bounded::TABLESPACE_MAP_LIMIT;
use std::path::{Path, PathBuf};

/// One tablespace of the output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tablespace {
    pub oid: u32,
    /// A directory inside `pg_tblspc` rather than a symlink (a test-only server feature).
    pub in_place: bool,
    /// Where the final backup's files are.
    pub old_dir: PathBuf,
    /// Where the output goes: the `-T` target, or `OUT/pg_tblspc/<oid>` when in place.
    pub new_dir: PathBuf,
}

/// `parse_oid`: a decimal in 1..=u32::MAX.
pub use pgincr_types::tablespace_map::parse_oid;

/// Lists the tablespaces in `<last>/pg_tblspc`, in the order pg_combinebackup processes them
/// (it prepends to a list while reading the directory, so the reverse of `readdir` order),
/// which is the order their files appear in the output manifest.
/// Without `require_mapping` (tar output, where tablespaces become archives), an unmapped
/// tablespace keeps its location.
pub fn scan(
    last: &Path,
    mappings: &[TablespaceMapping],
    output: &Path,
    require_mapping: bool,
) -> Result<Vec<Tablespace>> {
    let dir = last.join("pg_tblspc");
    let entries =
        std::fs::read_dir(&dir).map_err(CombineError::io("could not open directory", &dir))?;
    let mut found: Vec<Tablespace> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(CombineError::io("could not read directory", &dir))?;
        let name = entry.file_name();
        let Some(oid) = name.to_str().and_then(parse_oid) else {
            continue;
        };
        let path = entry.path();
        let ftype = entry
            .file_type()
            .map_err(CombineError::io("could not stat file", &path))?;
        let ts = if ftype.is_symlink() {
            let target = std::fs::read_link(&path)
                .map_err(CombineError::io("could not read symbolic link", &path))?;
            if !target.is_absolute() {
                return Err(CombineError::Damaged(format!(
                    "target of symbolic link \"{}\" is relative",
                    path.display()
                )));
            }
            let target = canonicalize_path(&target);
            Tablespace {
                oid,
                in_place: false,
                new_dir: mapped(&target, mappings, require_mapping)?,
                old_dir: target,
            }
        } else if ftype.is_dir() {
            Tablespace {
                oid,
                in_place: true,
                old_dir: path.clone(),
                new_dir: output.join("pg_tblspc").join(&name),
            }
        } else {
            continue;
        };
        if let Some(other) = found.iter().find(|o| o.new_dir == ts.new_dir) {
            return Err(CombineError::Usage(format!(
                "tablespaces with OIDs {} and {} both point at directory \"{}\"",
                other.oid,
                ts.oid,
                ts.new_dir.display()
            )));
        }
        found.push(ts);
    }
    found.reverse();
    Ok(found)
}

/// The tablespaces of a tar-format final backup: one `<oid>.tar*` archive each, located by
/// `tablespace_map` in `base.tar`. Each location needs a `-T` mapping, as a symlink target
/// does, unless `require_mapping` is false. The server lists only symlinks in the map, so an
/// archive without a line is an in-place tablespace: it goes to `OUT/pg_tblspc/<oid>`.
pub fn from_archives(
    index: &TarIndex,
    mappings: &[TablespaceMapping],
    output: &Path,
    require_mapping: bool,
) -> Result<Vec<Tablespace>> {
    let map = match index.open(b"tablespace_map")? {
        Some(src) if src.len() > TABLESPACE_MAP_LIMIT => {
            return Err(CombineError::Damaged(format!(
                "tablespace_map \"{}\" is {} bytes, more than the {TABLESPACE_MAP_LIMIT} bytes such a file can be: it is damaged",
                src.path.display(),
                src.len()
            )))
        }
        Some(src) => parse_tablespace_map(&src.read_prefix(TABLESPACE_MAP_LIMIT)?)
            .map_err(|e| CombineError::Damaged(format!("{}: {e}", src.path.display())))?,
        None => Vec::new(),
    };
    let mut out: Vec<Tablespace> = Vec::new();
    for a in &index.archives {
        let Part::Tablespace(oid) = a.part else {
            continue;
        };
        let Some((_, location)) = map.iter().find(|(o, _)| *o == oid) else {
            out.push(Tablespace {
                oid,
                in_place: true,
                old_dir: PathBuf::from(format!("pg_tblspc/{oid}")),
                new_dir: output.join("pg_tblspc").join(oid.to_string()),
            });
            continue;
        };
        let location = canonicalize_path(location);
        let new_dir = mapped(&location, mappings, require_mapping)?;
        if let Some(other) = out.iter().find(|o| o.new_dir == new_dir) {
            return Err(CombineError::Usage(format!(
                "tablespaces with OIDs {} and {oid} both point at directory \"{}\"",
                other.oid,
                new_dir.display()
            )));
        }
        out.push(Tablespace {
            oid,
            in_place: false,
            old_dir: location,
            new_dir,
        });
    }
    Ok(out)
}

/// The `-T` target of tablespace location `old`.
fn mapped(old: &Path, mappings: &[TablespaceMapping], required: bool) -> Result<PathBuf> {
    match mappings.iter().find(|m| m.old_dir == old) {
        Some(m) => Ok(m.new_dir.clone()),
        None if !required => Ok(old.to_path_buf()),
        None => Err(CombineError::Usage(format!(
            "tablespace at \"{}\" has no tablespace mapping: give -T {}=NEWDIR",
            old.display(),
            old.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids() {
        assert_eq!(parse_oid("16385"), Some(16385));
        for bad in ["0", "", "x1", "4294967296", "-1", "1 "] {
            assert_eq!(parse_oid(bad), None, "{bad}");
        }
    }
}
