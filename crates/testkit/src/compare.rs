//! Comparing backup trees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `dir/backup_manifest` without what legitimately differs between two combines of the same
/// chain: each file's `Last-Modified` (the output files' own mtimes) and, following from it,
/// the `Manifest-Checksum` line. Comparing two of these compares everything else byte for byte.
pub fn manifest_without_mtimes(dir: &Path) -> String {
    let path = dir.join("backup_manifest");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
    const KEY: &str = ", \"Last-Modified\": \"";
    // The value is always "YYYY-MM-DD HH:MM:SS GMT" plus its closing quote.
    const VALUE_LEN: usize = "2026-01-01 00:00:00 GMT\"".len();
    text.lines()
        .filter(|l| !l.starts_with("\"Manifest-Checksum\""))
        .map(|l| match l.find(KEY) {
            Some(i) => format!("{}{}", &l[..i], &l[i + KEY.len() + VALUE_LEN..]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every regular file of a backup directory by relative path, with its bytes; symlinks as
/// `->` (their targets differ between runs); `backup_manifest` left out (its mtimes differ:
/// compare it with [`manifest_without_mtimes`]).
pub fn backup_contents(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {d:?}: {e}")) {
            let e = e.expect("directory entry");
            let p = e.path();
            let rel = p.strip_prefix(root).expect("inside root").to_path_buf();
            let t = e.file_type().expect("file type");
            if t.is_dir() {
                stack.push(p);
            } else if t.is_symlink() {
                out.insert(rel, b"->".to_vec());
            } else if rel != Path::new("backup_manifest") {
                let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("read {p:?}: {e}"));
                out.insert(rel, bytes);
            }
        }
    }
    out
}

/// Asserts two backup directories hold the same files with the same bytes (see
/// [`backup_contents`]); `what` names the comparison in the failure.
pub fn assert_same_backup(reference: &Path, ours: &Path, what: &str) {
    if let Some(p) = differing_files(reference, ours, what).first() {
        panic!("{what}: {} differs", p.display());
    }
}

/// The files whose bytes differ between two backups that must hold the same file list.
fn differing_files(reference: &Path, ours: &Path, what: &str) -> Vec<PathBuf> {
    let (a, b) = (backup_contents(reference), backup_contents(ours));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: file lists differ"
    );
    a.iter()
        .filter(|(p, bytes)| b.get(*p) != Some(*bytes))
        .map(|(p, _)| p.clone())
        .collect()
}

/// Whether `path` is a visibility map fork (`<relfilenode>_vm`, any segment).
pub fn is_visibility_map(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.split('.').next().is_some_and(|f| f.ends_with("_vm")))
}

/// Like [`assert_same_backup`], but visibility maps may differ (pgincr repairs stale bits
/// where `pg_combinebackup` copies them). Returns the maps that differ.
pub fn assert_same_backup_except_vm(reference: &Path, ours: &Path, what: &str) -> Vec<PathBuf> {
    let maps = differing_files(reference, ours, what);
    for p in &maps {
        assert!(
            is_visibility_map(p),
            "{what}: {} differs (only visibility maps may)",
            p.display()
        );
    }
    maps
}

/// [`manifest_without_mtimes`] without the entries of `paths` (relative to the backup).
pub fn manifest_without(dir: &Path, paths: &[PathBuf]) -> String {
    let keys: Vec<String> = paths
        .iter()
        .map(|p| format!("{{ \"Path\": \"{}\",", p.display()))
        .collect();
    manifest_without_mtimes(dir)
        .lines()
        .filter(|l| !keys.iter().any(|k| l.starts_with(k.as_str())))
        .collect::<Vec<_>>()
        .join("\n")
}
