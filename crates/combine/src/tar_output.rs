//! `-F t`: the combined backup as `pg_basebackup -Ft` lays it out: `base.tar` (with
//! `backup_label` first, `tablespace_map` second and `global/pg_control` last), one `<oid>.tar`
//! per tablespace, `pg_wal.tar`, and `backup_manifest` beside them.
//!
//! The files are first produced as a plain tree in the staging directory (so reconstruction
//! stays parallel), then appended to the archives one by one and deleted as they go, so the
//! extra disk space needed is one file at a time, not a second copy of the backup.

use crate::error::{CombineError, Result};
use pgincr_archive::{compress, Compression, TarBuilder};
use pgincr_types::checksum::{Checksum, ChecksumType, Checksummer};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One file of the output as the manifest lists it.
pub struct Entry {
    pub manifest_path: Vec<u8>,
    pub size: u64,
    pub mtime: i64,
    pub checksum: Option<Checksum>,
}

/// A produced file waiting to be archived.
pub struct Produced {
    pub entry: Entry,
    /// Where the plain tree holds it.
    pub file: PathBuf,
}

/// A tablespace archived separately: its OID, the location written to `tablespace_map`, and
/// the plain directory holding its files.
pub struct TablespaceArchive {
    pub oid: u32,
    pub location: PathBuf,
    pub dir: PathBuf,
}

/// Archives a produced plain tree into `out`.
pub struct Packer<'a> {
    pub out: &'a Path,
    pub plain: &'a Path,
    pub dirs: &'a [PathBuf],
    pub tablespaces: &'a [TablespaceArchive],
    pub file_mode: u32,
    pub dir_mode: u32,
    pub checksum_type: ChecksumType,
    pub no_sync: bool,
    /// Write the archives with direct I/O where possible.
    pub direct: bool,
}

impl Packer<'_> {
    /// Archives `files` (in manifest order, `backup_label` first) from the plain tree `plain`
    /// and the tablespace directories. Returns the manifest entries, `tablespace_map`
    /// included. `dirs` are the directories of the plain tree, parents first.
    pub fn pack(&self, files: Vec<Produced>) -> Result<Vec<Entry>> {
        let wal_dir = self.plain.join("pg_wal");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut base = self.archive("base.tar")?;
        let mut entries = Vec::with_capacity(files.len() + 1);
        let mut files = files.into_iter();
        let mut deferred_control = None;
        let mut wal = Vec::new();
        let mut per_ts: Vec<Vec<Produced>> = self.tablespaces.iter().map(|_| Vec::new()).collect();
        if let Some(label) = files.next() {
            self.append_file(&mut base, &label, Path::new("backup_label"))?;
            entries.push(label.entry);
        }
        if !self.tablespaces.is_empty() {
            let map = tablespace_map(self.tablespaces);
            self.append_bytes(&mut base, "tablespace_map", &map, now)?;
            let mut sum = Checksummer::new(self.checksum_type);
            sum.update(&map);
            entries.push(Entry {
                manifest_path: b"tablespace_map".to_vec(),
                size: map.len() as u64,
                mtime: now,
                checksum: sum.finish(),
            });
        }
        for d in self.dirs {
            if let Ok(rel) = d.strip_prefix(self.plain) {
                if !rel.as_os_str().is_empty() {
                    self.append_dir(&mut base, rel)?;
                }
            }
        }
        let mut rest = Vec::new();
        for f in files {
            if let Some((_, files)) = self
                .tablespaces
                .iter()
                .zip(per_ts.iter_mut())
                .find(|(t, _)| f.file.starts_with(&t.dir))
            {
                files.push(f);
            } else if f.file.starts_with(&wal_dir) {
                wal.push(f);
            } else if f.entry.manifest_path == b"global/pg_control" {
                deferred_control = Some(f);
            } else {
                let rel = self.rel(&f.file, self.plain)?;
                self.append_file(&mut base, &f, &rel)?;
                rest.push(f.entry);
            }
        }
        if let Some(f) = deferred_control {
            self.append_file(&mut base, &f, Path::new("global/pg_control"))?;
            rest.push(f.entry);
        }
        self.finish(base, "base.tar")?;
        for (t, files) in self.tablespaces.iter().zip(per_ts) {
            let name = format!("{}.tar", t.oid);
            let mut ar = self.archive(&name)?;
            for d in self.dirs {
                if let Ok(rel) = d.strip_prefix(&t.dir) {
                    if !rel.as_os_str().is_empty() {
                        self.append_dir(&mut ar, rel)?;
                    }
                }
            }
            for f in files {
                let rel = self.rel(&f.file, &t.dir)?;
                self.append_file(&mut ar, &f, &rel)?;
                entries.push(f.entry);
            }
            self.finish(ar, &name)?;
        }
        entries.extend(rest);
        let mut ar = self.archive("pg_wal.tar")?;
        for d in self.dirs {
            if let Ok(rel) = d.strip_prefix(&wal_dir) {
                if !rel.as_os_str().is_empty() {
                    self.append_dir(&mut ar, rel)?;
                }
            }
        }
        for f in wal {
            let rel = self.rel(&f.file, &wal_dir)?;
            self.append_file(&mut ar, &f, &rel)?;
            entries.push(f.entry);
        }
        self.finish(ar, "pg_wal.tar")?;
        Ok(entries)
    }

    fn rel(&self, file: &Path, root: &Path) -> Result<PathBuf> {
        file.strip_prefix(root).map(Path::to_path_buf).map_err(|_| {
            CombineError::Internal(format!(
                "internal error: \"{}\" is outside \"{}\"",
                file.display(),
                root.display()
            ))
        })
    }

    fn archive(&self, name: &str) -> Result<TarBuilder> {
        let path = self.out.join(name);
        let f = crate::copy::create_output(&path, self.file_mode, self.direct, u64::MAX)?;
        let out = compress::open(f, Compression::None, 1)
            .map_err(CombineError::io("could not write file", &path))?;
        Ok(TarBuilder::new(out))
    }

    fn finish(&self, b: TarBuilder, name: &str) -> Result<()> {
        let path = self.out.join(name);
        let io = CombineError::io("could not write file", &path);
        let file = b.finish().map_err(io)?;
        if !self.no_sync {
            file.sync_all()
                .map_err(CombineError::io("could not fsync file", &path))?;
        }
        Ok(())
    }

    /// Appends a produced file, then deletes it from the plain tree.
    fn append_file(&self, b: &mut TarBuilder, f: &Produced, name: &Path) -> Result<()> {
        let mut src =
            File::open(&f.file).map_err(CombineError::io("could not open file", &f.file))?;
        b.append_file(
            name.as_os_str().as_bytes(),
            &mut src,
            f.entry.size,
            self.file_mode,
            f.entry.mtime.max(0) as u64,
        )
        .map_err(CombineError::io("could not archive file", &f.file))?;
        std::fs::remove_file(&f.file).map_err(CombineError::io("could not remove file", &f.file))
    }

    fn append_bytes(&self, b: &mut TarBuilder, name: &str, data: &[u8], mtime: i64) -> Result<()> {
        b.append_bytes(name.as_bytes(), data, self.file_mode, mtime.max(0) as u64)
            .map_err(CombineError::io(
                "could not archive file",
                self.out.join(name),
            ))
    }

    fn append_dir(&self, b: &mut TarBuilder, rel: &Path) -> Result<()> {
        b.append_dir(rel.as_os_str().as_bytes(), self.dir_mode, 0)
            .map_err(CombineError::io("could not archive directory", rel))
    }
}

/// `tablespace_map`: `<oid> <location>` per line, `\n`, `\r` and `\` escaped with `\`.
pub fn tablespace_map(ts: &[TablespaceArchive]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in ts {
        out.extend_from_slice(t.oid.to_string().as_bytes());
        out.push(b' ');
        for &b in t.location.as_os_str().as_bytes() {
            if matches!(b, b'\n' | b'\r' | b'\\') {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_round_trips_through_the_reader() {
        let ts = [TablespaceArchive {
            oid: 16385,
            location: PathBuf::from("/srv/odd\\name"),
            dir: PathBuf::new(),
        }];
        let text = tablespace_map(&ts);
        assert_eq!(text, b"16385 /srv/odd\\\\name\n");
        assert_eq!(
            crate::archive::parse_tablespace_map(&text).unwrap(),
            vec![(16385, PathBuf::from("/srv/odd\\name"))]
        );
    }
}
