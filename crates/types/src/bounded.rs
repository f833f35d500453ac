//! Opening the small metadata files of a backup or data directory safely.
//!
//! Every reader of a `backup_manifest`, `backup_label`, `tablespace_map`, `pg_control` or WAL
//! summary goes through [`open_regular`] or [`read_bounded`]: a path that names a FIFO would
//! otherwise block `open(2)` forever, `/dev/zero` would be read until memory runs out, and a
//! directory would fail later with a confusing "missing" or "is a directory" at read time.
//! The file is opened with `O_NONBLOCK` (so opening a FIFO returns at once; on a regular file
//! the flag changes nothing), its type and size are taken from the opened descriptor
//! (`fstat`, so nothing can be swapped in between), and anything but a regular file, or a file
//! over the caller's limit, is refused with a message naming the path, what it was supposed to
//! be, and what it is.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `pg_control` is always exactly this long (`PG_CONTROL_FILE_SIZE`); allow nothing larger.
pub const PG_CONTROL_LIMIT: u64 = 8192;
/// `backup_label`: the server writes well under 1 KiB plus the label text (at most
/// MAXPGPATH); pg_combinebackup reads at most 10 000 + 1024 bytes. 64 KiB is generous.
pub const BACKUP_LABEL_LIMIT: u64 = 64 * 1024;
/// `tablespace_map`: one line per tablespace, each at most an OID and MAXPGPATH.
pub const TABLESPACE_MAP_LIMIT: u64 = 1024 * 1024;
/// `backup_manifest`: about 150 bytes per file, so a cluster with millions of relation
/// segments has a manifest of hundreds of megabytes. 1 GiB leaves room for the largest while
/// still refusing a device or a runaway file.
pub const MANIFEST_LIMIT: u64 = 1024 * 1024 * 1024;

/// What a path turned out to be, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Other,
}

impl FileKind {
    pub fn of(t: std::fs::FileType) -> FileKind {
        if t.is_file() {
            FileKind::Regular
        } else if t.is_dir() {
            FileKind::Directory
        } else if t.is_symlink() {
            FileKind::Symlink
        } else if t.is_fifo() {
            FileKind::Fifo
        } else if t.is_socket() {
            FileKind::Socket
        } else if t.is_char_device() {
            FileKind::CharDevice
        } else if t.is_block_device() {
            FileKind::BlockDevice
        } else {
            FileKind::Other
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Regular => "a regular file",
            FileKind::Directory => "a directory",
            FileKind::Symlink => "a symbolic link",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Other => "a special file",
        })
    }
}

/// Why a bounded read was refused. The I/O error text is part of the message (and not a
/// `source`), so printing the error chain does not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum BoundedReadError {
    #[error("could not open {what} \"{path}\": {error}")]
    Open {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("could not read {what} \"{path}\": {error}")]
    Read {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{what} \"{path}\" is {kind}, not a regular file: give the path of the file itself")]
    NotRegular {
        what: &'static str,
        path: PathBuf,
        kind: FileKind,
    },
    #[error("{what} \"{path}\" is {len} bytes, more than the {limit} bytes such a file can be: it is not a {what}, or it is damaged")]
    TooLarge {
        what: &'static str,
        path: PathBuf,
        len: u64,
        limit: u64,
    },
}

impl BoundedReadError {
    /// The underlying I/O error kind, if any (`NotFound` for a missing file).
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            BoundedReadError::Open { error, .. } | BoundedReadError::Read { error, .. } => {
                Some(error.kind())
            }
            _ => None,
        }
    }
}

/// Opens `path` for reading if it is a regular file of at most `limit` bytes; returns the file
/// and its length. `what` names the file in errors ("backup manifest", "pg_control", ...).
/// A symbolic link is followed (users pass such paths deliberately); what it points at must
/// be a regular file.
pub fn open_regular(
    path: &Path,
    limit: u64,
    what: &'static str,
) -> Result<(File, u64), BoundedReadError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|error| BoundedReadError::Open {
            what,
            path: path.to_path_buf(),
            error,
        })?;
    let meta = file.metadata().map_err(|error| BoundedReadError::Read {
        what,
        path: path.to_path_buf(),
        error,
    })?;
    let kind = FileKind::of(meta.file_type());
    if kind != FileKind::Regular {
        return Err(BoundedReadError::NotRegular {
            what,
            path: path.to_path_buf(),
            kind,
        });
    }
    if meta.len() > limit {
        return Err(BoundedReadError::TooLarge {
            what,
            path: path.to_path_buf(),
            len: meta.len(),
            limit,
        });
    }
    Ok((file, meta.len()))
}

/// Reads the whole regular file `path` if it is at most `limit` bytes (see [`open_regular`]).
/// A file that grows past `limit` while being read is refused too.
pub fn read_bounded(
    path: &Path,
    limit: u64,
    what: &'static str,
) -> Result<Vec<u8>, BoundedReadError> {
    let (file, len) = open_regular(path, limit, what)?;
    // `len <= limit`; the capacity is only a hint, so a huge limit costs nothing.
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|error| BoundedReadError::Read {
            what,
            path: path.to_path_buf(),
            error,
        })?;
    if buf.len() as u64 > limit {
        return Err(BoundedReadError::TooLarge {
            what,
            path: path.to_path_buf(),
            len: buf.len() as u64,
            limit,
        });
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "pgincr-types-bounded-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_small_regular_files() {
        let d = scratch("ok");
        let p = d.join("f");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read_bounded(&p, 5, "test file").unwrap(), b"hello");
        let e = read_bounded(&p, 4, "test file").unwrap_err();
        assert!(
            matches!(e, BoundedReadError::TooLarge { len: 5, .. }),
            "{e}"
        );
        assert!(e.to_string().contains(&p.display().to_string()));
        let e = read_bounded(&d.join("nope"), 4, "test file").unwrap_err();
        assert_eq!(e.io_kind(), Some(std::io::ErrorKind::NotFound));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    #[allow(unsafe_code)] // mkfifo(3)
    fn refuses_fifos_devices_and_directories_without_blocking() {
        let d = scratch("special");
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Without O_NONBLOCK this open would wait for a writer forever.
        let e = read_bounded(&fifo, 1 << 20, "backup manifest").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("FIFO") && msg.contains("fifo"), "{msg}");
        let e = read_bounded(Path::new("/dev/zero"), 1 << 20, "backup manifest").unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let e = read_bounded(&d, 1 << 20, "pg_control").unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
