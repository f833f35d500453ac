//! [`Storage`]: every access the rotation makes to the repository, so object storage can
//! replace [`LocalDir`] later. Paths are relative, `/`-separated, without `..`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("repository path \"{0}\" is not a plain relative path")]
    BadPath(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is {size} bytes, more than the {limit} bytes allowed for it")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
}

impl StorageError {
    /// The path does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// One name in a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
    /// File size; 0 for directories.
    pub size: u64,
}

pub trait Storage {
    /// Entries of `dir` (names that are not UTF-8 are skipped: nothing pgincr writes is).
    fn list(&self, dir: &str) -> Result<Vec<Entry>, StorageError>;
    /// A whole small file, refused if larger than `limit`.
    fn read_small(&self, path: &str, limit: u64) -> Result<Vec<u8>, StorageError>;
    /// Temporary name, fsync, rename over `path`, fsync of the directory; mode 0600.
    fn write_atomic(&self, path: &str, data: &[u8]) -> Result<(), StorageError>;
    fn remove_file(&self, path: &str) -> Result<(), StorageError>;
    fn remove_tree(&self, path: &str) -> Result<(), StorageError>;
    fn rename(&self, from: &str, to: &str) -> Result<(), StorageError>;
    /// Total bytes of the files under `path` (a file's own size for a file).
    fn size(&self, path: &str) -> Result<u64, StorageError>;
    fn exists(&self, path: &str) -> Result<bool, StorageError>;
    /// Where `path` is on the local file system, for the engines that read and write
    /// directories (backup, combine, verify). `None` for a remote store, where the rotation
    /// must stage locally and upload (not implemented yet).
    fn local_path(&self, path: &str) -> Option<PathBuf>;
}

/// A repository in a local directory.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    pub fn new(root: impl Into<PathBuf>) -> LocalDir {
        LocalDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn resolve(&self, rel: &str) -> Result<PathBuf, StorageError> {
        let p = Path::new(rel);
        if rel.is_empty() {
            return Ok(self.root.clone());
        }
        if !p.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(StorageError::BadPath(rel.to_string()));
        }
        Ok(self.root.join(p))
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Storage for LocalDir {
    fn list(&self, dir: &str) -> Result<Vec<Entry>, StorageError> {
        let p = self.resolve(dir)?;
        let mut out = Vec::new();
        for e in fs::read_dir(&p).map_err(io("list", &p))? {
            let e = e.map_err(io("list", &p))?;
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let md = e.metadata().map_err(io("stat", &e.path()))?;
            out.push(Entry {
                name,
                is_dir: md.is_dir(),
                size: if md.is_dir() { 0 } else { md.len() },
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read_small(&self, path: &str, limit: u64) -> Result<Vec<u8>, StorageError> {
        let p = self.resolve(path)?;
        let f = fs::File::open(&p).map_err(io("open", &p))?;
        let size = f.metadata().map_err(io("stat", &p))?.len();
        if size > limit {
            return Err(StorageError::TooLarge {
                path: p,
                size,
                limit,
            });
        }
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(f, limit + 1), &mut buf)
            .map_err(io("read", &p))?;
        if buf.len() as u64 > limit {
            return Err(StorageError::TooLarge {
                path: p,
                size: buf.len() as u64,
                limit,
            });
        }
        Ok(buf)
    }

    fn write_atomic(&self, path: &str, data: &[u8]) -> Result<(), StorageError> {
        let p = self.resolve(path)?;
        let dir = p
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io("mkdir", &dir))?;
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A name `pgincr_io::sweep_leftovers` recognises, so a killed run's temporary file is
        // removed by the next run.
        let tmp = dir.join(format!(".{name}.pgincr-tmp-{}", std::process::id()));
        let result = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("create", &tmp))?;
            f.write_all(data).map_err(io("write", &tmp))?;
            f.sync_all().map_err(io("fsync", &tmp))?;
            fs::rename(&tmp, &p).map_err(io("rename", &p))?;
            pgincr_io::fsync_dir(&dir).map_err(io("fsync", &dir))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn remove_file(&self, path: &str) -> Result<(), StorageError> {
        let p = self.resolve(path)?;
        fs::remove_file(&p).map_err(io("remove", &p))
    }

    fn remove_tree(&self, path: &str) -> Result<(), StorageError> {
        let p = self.resolve(path)?;
        if p == self.root {
            return Err(StorageError::BadPath(path.to_string()));
        }
        fs::remove_dir_all(&p).map_err(io("remove", &p))?;
        if let Some(parent) = p.parent() {
            pgincr_io::fsync_dir(parent).map_err(io("fsync", parent))?;
        }
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let (f, t) = (self.resolve(from)?, self.resolve(to)?);
        fs::rename(&f, &t).map_err(io("rename", &t))?;
        if let Some(parent) = t.parent() {
            pgincr_io::fsync_dir(parent).map_err(io("fsync", parent))?;
        }
        Ok(())
    }

    fn size(&self, path: &str) -> Result<u64, StorageError> {
        fn walk(p: &Path) -> Result<u64, StorageError> {
            let md = fs::symlink_metadata(p).map_err(io("stat", p))?;
            if !md.is_dir() {
                return Ok(md.len());
            }
            let mut total = 0u64;
            for e in fs::read_dir(p).map_err(io("list", p))? {
                total = total.saturating_add(walk(&e.map_err(io("list", p))?.path())?);
            }
            Ok(total)
        }
        walk(&self.resolve(path)?)
    }

    fn local_path(&self, path: &str) -> Option<PathBuf> {
        self.resolve(path).ok()
    }

    fn exists(&self, path: &str) -> Result<bool, StorageError> {
        let p = self.resolve(path)?;
        p.try_exists().map_err(io("stat", &p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn local_dir_operations() {
        let t = tempfile::tempdir().unwrap();
        let s = LocalDir::new(t.path());
        s.write_atomic("srv/catalog.json", b"{}").unwrap();
        s.write_atomic("srv/catalog.json", b"{\"a\":1}").unwrap();
        assert_eq!(s.read_small("srv/catalog.json", 100).unwrap(), b"{\"a\":1}");
        let mode = fs::metadata(t.path().join("srv/catalog.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // No temporary file left behind.
        let names: Vec<_> = s.list("srv").unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["catalog.json"]);
        assert!(matches!(
            s.read_small("srv/catalog.json", 3),
            Err(StorageError::TooLarge { .. })
        ));
        s.write_atomic("srv/b/x/f", b"12345").unwrap();
        assert_eq!(s.size("srv").unwrap(), 7 + 5);
        s.rename("srv/b", "srv/c").unwrap();
        assert!(s.exists("srv/c/x/f").unwrap());
        s.remove_tree("srv/c").unwrap();
        assert!(!s.exists("srv/c").unwrap());
        s.remove_file("srv/catalog.json").unwrap();
        assert!(s
            .read_small("srv/catalog.json", 10)
            .unwrap_err()
            .is_not_found());
        assert!(matches!(s.list("../etc"), Err(StorageError::BadPath(_))));
        assert!(matches!(s.remove_tree(""), Err(StorageError::BadPath(_))));
    }
}
