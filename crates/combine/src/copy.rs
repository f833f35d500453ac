//! Moving bytes: whole-file copies in each copy mode, and the shared read-checksum-write loop.
//!
//! Sources are read with positional reads (from the page cache where the data is cached,
//! with direct I/O where it is not: see [`ReadFile`]) into one aligned buffer per file being produced, so
//! the checksum of a file is computed from the very buffer being written (no second read), runs
//! of consecutive blocks are read with one call each (or copied with one `copy_file_range`),
//! and memory stays at one buffer per worker whatever the data size. Output goes through
//! [`SeqWriter`]: straight from that buffer to the device with direct I/O where the file
//! system allows, so the bytes are copied once (page cache to buffer), not three times.
//! (Memory maps were tried first: page faults from several threads contend on the process's
//! address-space lock and made copies slower, and mapped pages inflate the resident size.)

use crate::error::{CombineError, Result};
use crate::options::CopyMode;
use pgincr_io::{AlignedBuf, ReadFile, SeqWriter};
use pgincr_types::checksum::Checksummer;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Size of the copy buffer, and so of each direct write. Measured on a 7-backup chain with
/// a warm cache: 256 KiB 4.8 s, 1 MiB 3.7-4.2 s, 4 MiB 4.0-4.5 s (fewer, larger device
/// requests, until the buffer no longer stays in the CPU cache for the checksum).
pub const BUFFER: usize = 1024 * 1024;

/// A read-only source: a whole file, or a member of an uncompressed tar archive (a byte range
/// of the archive file).
pub struct Source {
    /// The file, or `archive:member`, for messages.
    pub path: PathBuf,
    file: Arc<ReadFile>,
    /// Byte range within `file`.
    start: u64,
    len: u64,
    /// A whole file of its own (so it can be cloned or hard-linked).
    whole: bool,
    /// The vetted descriptor the reader was reopened from through `/proc/self/fd`: it must
    /// stay open while the reader may reopen that path for direct I/O.
    _pin: Option<Arc<File>>,
}

impl Source {
    /// Opens the regular file `path` without following a symbolic link in its last component
    /// and without blocking on a FIFO: inputs are read only as regular files.
    pub fn open(path: &Path) -> std::io::Result<Source> {
        let checked = open_checked(None, path)?;
        Source::from_checked(path, checked)
    }

    /// Opens the file at manifest path `rel` inside the backup directory `root`, following no
    /// symbolic link on the way except a tablespace link `pg_tblspc/<oid>` (which the server
    /// writes and pg_combinebackup follows). Anything else that is a link, or a final
    /// component that is not a regular file, is refused with an error saying what it is: a
    /// link in an older backup must not smuggle the bytes of a file outside it into the
    /// output. A missing file is `NotFound`.
    pub fn open_in_backup(root: &Path, rel: &[u8]) -> std::io::Result<Source> {
        let path = root.join(std::ffi::OsStr::from_bytes(rel));
        let comps: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        if comps
            .iter()
            .any(|c| c.is_empty() || *c == b"." || *c == b"..")
        {
            return Err(invalid(format!(
                "\"{}\" is not a plain path inside the backup",
                String::from_utf8_lossy(rel)
            )));
        }
        let (last, dirs) = comps
            .split_last()
            .ok_or_else(|| invalid("empty path".into()))?;
        let mut dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(root)?;
        let mut walked = root.to_path_buf();
        for (i, c) in dirs.iter().enumerate() {
            walked.push(std::ffi::OsStr::from_bytes(c));
            let tablespace_link = i == 1
                && dirs.first().is_some_and(|d| *d == b"pg_tblspc")
                && std::str::from_utf8(c)
                    .ok()
                    .and_then(crate::tablespaces::parse_oid)
                    .is_some();
            let mut flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
            if !tablespace_link {
                flags |= libc::O_NOFOLLOW;
            }
            dir = openat(&dir, c, flags).map_err(|e| describe_open_error(e, &walked, true))?;
        }
        let checked = open_checked(Some((&dir, last)), &path)?;
        Source::from_checked(&path, checked)
    }

    /// Wraps a descriptor [`open_checked`] vetted. The positional reader is opened on the
    /// same file through `/proc/self/fd`, so no other file can be swapped in between; where
    /// /proc is missing it is opened by path and must be the same inode.
    fn from_checked(path: &Path, checked: File) -> std::io::Result<Source> {
        use std::os::unix::fs::MetadataExt;
        let meta = checked.metadata()?;
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", checked.as_raw_fd()));
        let (file, pin) = match ReadFile::open(&proc_path, true) {
            Ok(f) => (f, Some(checked)),
            Err(_) => (ReadFile::open(path, true)?, None),
        };
        let now = file.file().metadata()?;
        if (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the file was replaced while it was being opened",
            ));
        }
        Ok(Source {
            path: path.to_path_buf(),
            file: Arc::new(file),
            start: 0,
            len: meta.len(),
            whole: true,
            _pin: pin.map(Arc::new),
        })
    }

    /// A byte range of an archive file.
    pub fn slice(name: PathBuf, file: Arc<ReadFile>, start: u64, len: u64) -> Source {
        Source {
            path: name,
            file,
            start,
            len,
            whole: false,
            _pin: None,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Fills `buf` from offset `off`; a source shorter than that is an error naming it.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let end = off + buf.len() as u64;
        if end > self.len {
            return Err(CombineError::Input {
                backup: self.path.clone(),
                message: format!(
                    "file is too short: {} bytes needed at offset {off}, but it has {}",
                    buf.len(),
                    self.len
                ),
            });
        }
        self.file
            .read_exact_at(buf, self.start + off)
            .map_err(CombineError::io("could not read file", &self.path))
    }

    /// Reads the first `n` bytes (or all, if shorter).
    pub fn read_prefix(&self, n: u64) -> Result<Vec<u8>> {
        let mut v = vec![0; self.len.min(n) as usize];
        self.read_at(0, &mut v)?;
        Ok(v)
    }

    /// Calls `f` on consecutive chunks of `[off, off + len)`, read into `buf`.
    pub fn for_each_chunk(
        &self,
        off: u64,
        len: u64,
        buf: &mut AlignedBuf,
        mut f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            let chunk = buf.get_mut(..n).ok_or_else(|| {
                CombineError::Internal(format!("internal error: chunk of {n} bytes"))
            })?;
            self.read_at(off + done, chunk)?;
            f(chunk)?;
            done += n as u64;
        }
        Ok(())
    }
}

/// `openat(2)` relative to `dir`.
#[allow(unsafe_code)]
fn openat(dir: &File, name: &[u8], flags: libc::c_int) -> std::io::Result<File> {
    use std::os::fd::FromRawFd;
    let c = std::ffi::CString::new(name)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in file name"))?;
    // SAFETY: a valid directory descriptor and NUL-terminated name; the result is checked.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Opens an input file for reading with `O_NOFOLLOW | O_NONBLOCK` (relative to a directory
/// descriptor when `at` is given) and refuses it unless the descriptor is a regular file. On
/// a regular file `O_NONBLOCK` changes nothing; on a FIFO it keeps `open` from waiting for a
/// writer forever.
fn open_checked(at: Option<(&File, &[u8])>, path: &Path) -> std::io::Result<File> {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    let file = match at {
        Some((dir, name)) => openat(dir, name, flags),
        None => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path),
    }
    .map_err(|e| describe_open_error(e, path, false))?;
    let kind = pgincr_types::bounded::FileKind::of(file.metadata()?.file_type());
    if kind != pgincr_types::bounded::FileKind::Regular {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {kind}, not a regular file: only regular files of a backup are read"),
        ));
    }
    Ok(file)
}

/// `ELOOP` from `O_NOFOLLOW` means "a symbolic link" (for a directory opened with
/// `O_DIRECTORY | O_NOFOLLOW`, Linux says `ENOTDIR` instead); say so, and why it is refused.
fn describe_open_error(e: std::io::Error, path: &Path, directory: bool) -> std::io::Error {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let code = e.raw_os_error();
    let link = code == Some(libc::ELOOP)
        || (directory
            && code == Some(libc::ENOTDIR)
            && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()));
    if link {
        // For the file itself the caller names the path; a directory on the way is named.
        let what = if directory {
            format!("\"{}\" is", path.display())
        } else {
            "it is".to_string()
        };
        return invalid(format!(
            "{what} a symbolic link: inputs are read only as regular files inside their backup (tablespaces only through pg_tblspc/<oid>)"
        ));
    }
    if directory && code == Some(libc::ENOTDIR) {
        return invalid(format!("\"{}\" is not a directory", path.display()));
    }
    e
}

/// Creates an output file exclusively with the data directory's file mode, for direct I/O if
/// `direct` and the file is expected to be large enough to gain from it (`len`).
pub fn create_output(path: &Path, mode: u32, direct: bool, len: u64) -> Result<SeqWriter> {
    SeqWriter::create_sized(path, mode, direct, len)
        .map_err(CombineError::io("could not create file", path))
}

/// Flushes `out` and closes it.
pub fn finish_output(out: SeqWriter, path: &Path) -> Result<()> {
    out.finish()
        .map(drop)
        .map_err(CombineError::io("could not write file", path))
}

/// A buffer for copying a source of `len` bytes.
pub fn buffer_for(len: u64) -> AlignedBuf {
    AlignedBuf::new(BUFFER.min(len as usize))
}

/// Writes `data` to `out` and feeds it to the checksum.
pub fn write_and_sum(
    out: &mut SeqWriter,
    out_path: &Path,
    data: &[u8],
    sum: &mut Checksummer,
) -> Result<()> {
    sum.update(data);
    out.write_all(data)
        .map_err(CombineError::io("could not write file", out_path))
}

/// Copies `[off, off + len)` of `src` to the end of `out` through `buf`, checksumming it.
pub fn copy_buffered(
    src: &Source,
    off: u64,
    len: u64,
    out: &mut SeqWriter,
    out_path: &Path,
    sum: &mut Checksummer,
    buf: &mut AlignedBuf,
) -> Result<()> {
    src.for_each_chunk(off, len, buf, |chunk| {
        write_and_sum(out, out_path, chunk, sum)
    })
}

/// Copies `len` bytes at `offset` of `src` to the current end of `out` with copy_file_range.
pub fn copy_range(
    src: &Source,
    offset: u64,
    len: u64,
    out: &mut SeqWriter,
    out_path: &Path,
) -> Result<()> {
    let copied = out
        .copy_range(src.file.file(), src.start + offset, len)
        .map_err(|e| {
            let from = format!("from \"{}\": {e}", src.path.display());
            if crate::error::is_out_of_space(&e) {
                return CombineError::DiskFull {
                    message: format!(
                        "error while copying file range to \"{}\": {from}",
                        out_path.display()
                    ),
                    path: out_path.to_path_buf(),
                    source: e,
                };
            }
            CombineError::Io {
                context: "error while copying file range to",
                path: out_path.to_path_buf(),
                source: std::io::Error::new(e.kind(), from),
            }
        })?;
    if copied < len {
        return Err(CombineError::Input {
            backup: src.path.clone(),
            message: format!("file ended early: expected {len} bytes at offset {offset}"),
        });
    }
    Ok(())
}

/// Brings a whole source into the output with `mode`, checksumming it if `sum` asks. Clone
/// and link need a file of their own; for a member of a tar archive they fall back to
/// copy_file_range and a plain copy.
pub fn copy_whole(
    src: &Source,
    dst: &Path,
    mode: CopyMode,
    file_mode: u32,
    direct: bool,
    sum: &mut Checksummer,
) -> Result<()> {
    let mode = match mode {
        CopyMode::Clone if !src.whole => CopyMode::CopyFileRange,
        CopyMode::Link if !src.whole => CopyMode::Copy,
        m => m,
    };
    match mode {
        CopyMode::Copy => {
            let mut out = create_output(dst, file_mode, direct, src.len)?;
            let mut buf = buffer_for(src.len);
            copy_buffered(src, 0, src.len, &mut out, dst, sum, &mut buf)?;
            return finish_output(out, dst);
        }
        CopyMode::CopyFileRange => {
            let mut out = create_output(dst, file_mode, false, 0)?;
            copy_range(src, 0, src.len, &mut out, dst)?;
            finish_output(out, dst)?;
        }
        CopyMode::Clone => {
            let out = create_file(dst, file_mode)?;
            // SAFETY: FICLONE takes the source descriptor as its argument; both descriptors
            // are open for the duration of the call.
            #[allow(unsafe_code)]
            let rc = unsafe { libc::ioctl(out.as_raw_fd(), FICLONE, src.file.file().as_raw_fd()) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                drop(out);
                let _ = std::fs::remove_file(dst);
                let message = format!(
                    "error while cloning file \"{}\" to \"{}\": {e} (--clone needs a file system with reflinks, such as XFS or Btrfs, holding both)",
                    src.path.display(),
                    dst.display()
                );
                return Err(output_or_disk_full(e, dst, message));
            }
        }
        CopyMode::Link => {
            std::fs::hard_link(&src.path, dst).map_err(|e| {
                let message = format!(
                    "could not create link from \"{}\" to \"{}\": {e}",
                    src.path.display(),
                    dst.display()
                );
                output_or_disk_full(e, dst, message)
            })?;
        }
    }
    // Modes that do not pass the bytes through us read the source for the checksum.
    checksum_source(src, sum)
}

/// A clone or link that failed: the output cannot hold it ([`CombineError::Output`]), or,
/// for lack of space, [`CombineError::DiskFull`]; the message is the same.
fn output_or_disk_full(e: std::io::Error, dst: &Path, message: String) -> CombineError {
    if crate::error::is_out_of_space(&e) {
        CombineError::DiskFull {
            path: dst.to_path_buf(),
            message,
            source: e,
        }
    } else {
        CombineError::Output(message)
    }
}

/// Feeds a whole source to `sum` (nothing is read when no checksum is wanted).
pub fn checksum_source(src: &Source, sum: &mut Checksummer) -> Result<()> {
    if sum.kind() == pgincr_types::checksum::ChecksumType::None {
        return Ok(());
    }
    let mut buf = buffer_for(src.len);
    src.for_each_chunk(0, src.len, &mut buf, |chunk| {
        sum.update(chunk);
        Ok(())
    })
}

/// Creates an empty output file for an ioctl to fill.
fn create_file(path: &Path, mode: u32) -> Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(CombineError::io("could not create file", path))
}

/// `FICLONE` from linux/fs.h: `_IOW(0x94, 9, int)`.
const FICLONE: libc::c_ulong = 0x4004_9409;
