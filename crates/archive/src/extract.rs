//! Streaming extraction of one archive into a directory: the plain format of a backup, fed
//! by `BASE_BACKUP` chunk by chunk, or an archive file ([`unpack`]).

use std::collections::HashSet;
use std::fs::DirBuilder;
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use pgincr_io::SeqWriter;

use crate::error::{ArchiveError, Result};
use crate::header::{self as tar, Kind, BLOCK};
use crate::Compression;

/// Creates a new file for sequential writing, mode 0600 (an existing file is an error), with
/// direct I/O if `direct`, the file system allows it and the file is expected to be large.
fn create_writer(path: &Path, direct: bool, expected_len: u64) -> Result<SeqWriter> {
    SeqWriter::create_sized(path, 0o600, direct, expected_len)
        .map_err(ArchiveError::io("could not create file", path))
}

fn mkdir_0700(path: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(ArchiveError::io("could not create directory", path))
}

enum State {
    Header,
    Body { remaining: u64, pad: u64 },
    Pad(u64),
    End,
}

/// A regular file's size and checksum as it went through an [`Extractor`] (see
/// [`Extractor::with_checksums`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSum {
    /// The member's name (normalised, relative to the archive's root).
    pub name: String,
    pub size: u64,
    pub checksum: Option<pgincr_types::checksum::Checksum>,
}

/// Extracts tar bytes fed in arbitrary chunks. Symlink targets (tablespaces) go through
/// `link_map` (`-T` mappings: exact old target to new target).
pub struct Extractor {
    root: PathBuf,
    archive: String,
    state: State,
    hdr: [u8; BLOCK],
    hdr_len: usize,
    offset: u64,
    file: Option<(SeqWriter, PathBuf)>,
    link_map: Vec<(String, String)>,
    /// Names of the symlinks extracted so far: nothing may be written through them.
    links: HashSet<String>,
    direct: bool,
    pub files: u64,
    pub bytes: u64,
    /// With [`Extractor::with_checksums`]: the kind, the file being read, and the finished.
    sum_kind: Option<pgincr_types::checksum::ChecksumType>,
    cur_sum: Option<(String, u64, pgincr_types::checksum::Checksummer)>,
    sums: Vec<FileSum>,
}

impl Extractor {
    pub fn new(
        root: PathBuf,
        archive: String,
        link_map: Vec<(String, String)>,
        direct: bool,
    ) -> Self {
        Extractor {
            root,
            archive,
            state: State::Header,
            hdr: [0; BLOCK],
            hdr_len: 0,
            offset: 0,
            file: None,
            link_map,
            links: HashSet::new(),
            direct,
            files: 0,
            bytes: 0,
            sum_kind: None,
            cur_sum: None,
            sums: Vec::new(),
        }
    }

    /// Also computes each regular file's checksum of `kind` as it is written, so a backup can
    /// be checked against its manifest without reading it back ([`Extractor::take_sums`]).
    pub fn with_checksums(mut self, kind: pgincr_types::checksum::ChecksumType) -> Self {
        self.sum_kind = Some(kind);
        self
    }

    /// The sizes and checksums of the files extracted so far (with checksums on).
    pub fn take_sums(&mut self) -> Vec<FileSum> {
        std::mem::take(&mut self.sums)
    }

    fn end_sum(&mut self) {
        if let Some((name, size, c)) = self.cur_sum.take() {
            self.sums.push(FileSum {
                name,
                size,
                checksum: c.finish(),
            });
        }
    }

    fn err(&self, msg: impl Into<String>) -> ArchiveError {
        ArchiveError::Malformed {
            archive: self.archive.clone(),
            offset: self.offset,
            msg: msg.into(),
        }
    }

    pub fn feed(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            match self.state {
                State::End => return Ok(()), // anything after the end blocks is ignored
                State::Header => {
                    let (head, rest) = split_prefix(data, BLOCK - self.hdr_len);
                    let n = head.len();
                    if let Some(dst) = self.hdr.get_mut(self.hdr_len..self.hdr_len + n) {
                        dst.copy_from_slice(head);
                    }
                    self.hdr_len += n;
                    self.offset += n as u64;
                    data = rest;
                    if self.hdr_len == BLOCK {
                        self.hdr_len = 0;
                        self.member()?;
                    }
                }
                State::Body { remaining, pad } => {
                    let n = remaining.min(data.len() as u64) as usize;
                    let (body, rest) = split_prefix(data, n);
                    if let Some((f, p)) = self.file.as_mut() {
                        f.write_all(body)
                            .map_err(ArchiveError::io("could not write file", p.as_path()))?;
                    }
                    if let Some((_, _, c)) = self.cur_sum.as_mut() {
                        c.update(body);
                    }
                    self.bytes += n as u64;
                    self.offset += n as u64;
                    data = rest;
                    let left = remaining - n as u64;
                    if left == 0 {
                        self.end_sum();
                        if let Some((f, p)) = self.file.take() {
                            let f = f
                                .finish()
                                .map_err(ArchiveError::io("could not write file", p.as_path()))?;
                            // Start writing it back now, so the final fsync finds it clean.
                            pgincr_io::start_writeback(&f);
                        }
                        self.state = if pad > 0 {
                            State::Pad(pad)
                        } else {
                            State::Header
                        };
                    } else {
                        self.state = State::Body {
                            remaining: left,
                            pad,
                        };
                    }
                }
                State::Pad(p) => {
                    let n = p.min(data.len() as u64);
                    self.offset += n;
                    data = split_prefix(data, n as usize).1;
                    self.state = if p == n {
                        State::Header
                    } else {
                        State::Pad(p - n)
                    };
                }
            }
        }
        Ok(())
    }

    fn member(&mut self) -> Result<()> {
        let h = match tar::parse(&self.hdr) {
            Ok(Some(h)) => h,
            // The first zero block ends the archive (a second one follows).
            Ok(None) => {
                self.state = State::End;
                return Ok(());
            }
            Err(m) => return Err(self.err(m)),
        };
        // A member at or below a symlink of this archive would be written wherever the link
        // points, outside the backup: the server never sends one.
        if let Some(link) = self.link_on_path(&h.name) {
            return Err(self.err(format!(
                "refusing member \"{}\": it lies at or below the symlink \"{link}\"",
                h.name
            )));
        }
        let path = if h.name.is_empty() {
            self.root.clone()
        } else {
            self.root.join(&h.name)
        };
        let mut body = 0;
        match h.kind {
            Kind::Dir => mkdir_0700(&path)?,
            Kind::File => {
                if let Some(parent) = path.parent() {
                    if !parent.exists() {
                        mkdir_0700(parent)?;
                    }
                }
                let f = create_writer(&path, self.direct, h.size)?;
                if let Some(kind) = self.sum_kind {
                    self.cur_sum = Some((
                        h.name.clone(),
                        h.size,
                        pgincr_types::checksum::Checksummer::new(kind),
                    ));
                    if h.size == 0 {
                        self.end_sum();
                    }
                }
                if h.size == 0 {
                    f.finish()
                        .map_err(ArchiveError::io("could not write file", &path))?;
                } else {
                    self.file = Some((f, path));
                }
                self.files += 1;
                body = h.size;
            }
            Kind::Symlink if h.name.is_empty() => {
                return Err(self.err("refusing a symlink as the archive's root directory"));
            }
            // The server sends symbolic links only for tablespaces, pg_tblspc/<oid> to the
            // tablespace's absolute location (relocated with -T). Any other link would let a
            // malicious server point a later write, or a restore, outside the backup
            // (CVE-2026-6475 in pg_basebackup before 17.10/18.4).
            Kind::Symlink if !is_tablespace_link(&h.name) || !h.link.starts_with('/') => {
                return Err(self.err(format!(
                    "refusing symlink \"{}\" -> \"{}\": the server sends symlinks only for tablespaces, as pg_tblspc/<oid> pointing to an absolute path",
                    h.name, h.link
                )));
            }
            Kind::Symlink => {
                let target = self
                    .link_map
                    .iter()
                    .find(|(old, _)| *old == h.link)
                    .map_or(h.link.clone(), |(_, new)| new.clone());
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(ArchiveError::io("could not create symbolic link", &path))?;
                self.links.insert(h.name.clone());
            }
            Kind::Other(t) => {
                tracing::warn!(
                    "{}: skipping member \"{}\" of unsupported type '{}'",
                    self.archive,
                    h.name,
                    char::from(t)
                );
                body = h.size;
            }
        }
        self.state = if body > 0 {
            State::Body {
                remaining: body,
                pad: tar::padding(body),
            }
        } else {
            State::Header
        };
        Ok(())
    }

    /// The symlink extracted earlier that `name` (normalised) is, or lies below.
    fn link_on_path(&self, name: &str) -> Option<&str> {
        if self.links.is_empty() {
            return None;
        }
        name.match_indices('/')
            .map(|(i, _)| &name[..i])
            .chain(std::iter::once(name))
            .find_map(|p| self.links.get(p).map(String::as_str))
    }

    /// Checks the archive ended where a member boundary is.
    pub fn finish(&mut self) -> Result<()> {
        match self.state {
            State::End => Ok(()),
            State::Header if self.hdr_len == 0 => {
                tracing::warn!(
                    "{}: archive ended without end-of-archive blocks",
                    self.archive
                );
                Ok(())
            }
            _ => Err(self.err("archive is truncated")),
        }
    }
}

/// Extracts the archive file `archive` (uncompressed, or compressed as its name says:
/// `.gz`, `.lz4`, `.zst`) into `dest`, with the [`Extractor`]'s checks; returns the number of
/// regular files written.
pub fn unpack(archive: &Path, dest: &Path) -> Result<u64> {
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let compression = Compression::split_archive_name(&name).map_or(Compression::None, |(_, c)| c);
    let read_err = |source| ArchiveError::Read {
        archive: archive.to_path_buf(),
        spill: None,
        source,
    };
    let (file, _) = pgincr_types::bounded::open_regular(archive, u64::MAX, "archive")
        .map_err(ArchiveError::Open)?;
    let mut r = crate::decoder(file, compression).map_err(read_err)?;
    let mut x = Extractor::new(dest.to_path_buf(), name, Vec::new(), false);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        x.feed(buf.get(..n).unwrap_or_default())?;
    }
    x.finish()?;
    Ok(x.files)
}

/// `data` split after `n` bytes (all of it when shorter).
fn split_prefix(data: &[u8], n: usize) -> (&[u8], &[u8]) {
    data.split_at_checked(n).unwrap_or((data, &[]))
}

/// `pg_tblspc/<oid>`: the one place the server puts a symbolic link.
fn is_tablespace_link(name: &str) -> bool {
    name.strip_prefix("pg_tblspc/").is_some_and(|oid| {
        !oid.is_empty() && oid.len() <= 10 && oid.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_in_odd_chunks() {
        let mut t = Vec::new();
        t.extend_from_slice(&tar::file_header("a", 700, 0).unwrap());
        t.extend_from_slice(&[7u8; 700]);
        t.resize(t.len() + tar::padding(700) as usize, 0);
        t.extend_from_slice(&tar::file_header("sub/b", 0, 0).unwrap());
        t.extend_from_slice(&[0u8; 1024]);
        let d = tempfile::tempdir().unwrap();
        let mut x = Extractor::new(d.path().to_path_buf(), "t.tar".into(), Vec::new(), true);
        for c in t.chunks(37) {
            x.feed(c).unwrap();
        }
        x.finish().unwrap();
        assert_eq!(std::fs::read(d.path().join("a")).unwrap(), vec![7u8; 700]);
        assert_eq!(std::fs::metadata(d.path().join("sub/b")).unwrap().len(), 0);
        assert_eq!(x.files, 2);

        let mut y = Extractor::new(d.path().join("other"), "t.tar".into(), Vec::new(), false);
        y.feed(&t[..600]).unwrap();
        assert!(y.finish().is_err());
    }

    #[test]
    fn unpacks_archive_files() {
        let d = tempfile::tempdir().unwrap();
        let mut t = Vec::new();
        t.extend_from_slice(&tar::header(b"global", Kind::Dir, 0, 0o700, 0).unwrap());
        t.extend_from_slice(&tar::file_header("global/pg_control", 3, 0).unwrap());
        t.extend_from_slice(b"abc");
        t.resize(t.len() + tar::padding(3) as usize, 0);
        t.extend_from_slice(&[0u8; 1024]);
        std::fs::write(d.path().join("base.tar"), &t).unwrap();
        std::fs::write(
            d.path().join("pg_wal.tar.zst"),
            zstd::stream::encode_all(&t[..], 1).unwrap(),
        )
        .unwrap();
        for n in ["base.tar", "pg_wal.tar.zst"] {
            let out = d.path().join(format!("out-{n}"));
            assert_eq!(unpack(&d.path().join(n), &out).unwrap(), 1);
            assert_eq!(
                std::fs::read(out.join("global/pg_control")).unwrap(),
                b"abc"
            );
        }
        std::fs::write(d.path().join("short.tar"), &t[..700]).unwrap();
        assert!(unpack(&d.path().join("short.tar"), &d.path().join("x")).is_err());
    }

    /// A header of type `kind` ('2' symlink, '5' directory) with link target `link`.
    fn header(name: &str, kind: u8, link: &str) -> [u8; BLOCK] {
        let mut h = tar::file_header(name, 0, 0).unwrap();
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    /// Found while writing the `tar_extract` fuzz target: a symlink member followed by a
    /// member below it wrote through the link, outside the extraction directory.
    #[test]
    fn refuses_members_through_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let root = d.path().join("root");
        for (second, kind) in [("l/f", b'0'), ("l/sub/f", b'0'), ("l/d", b'5'), ("l", b'5')] {
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir(&root).unwrap();
            let mut t = Vec::new();
            t.extend_from_slice(&header("l", b'2', outside.to_str().unwrap()));
            t.extend_from_slice(&header(second, kind, ""));
            t.extend_from_slice(&[0u8; 1024]);
            let mut x = Extractor::new(root.clone(), "t.tar".into(), Vec::new(), false);
            let err = x.feed(&t).unwrap_err().to_string();
            assert!(err.contains("symlink"), "{second}: {err}");
            assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "{second}");
        }
        // A symlink standing for the root itself.
        let mut t = header("./", b'2', outside.to_str().unwrap()).to_vec();
        t.extend_from_slice(&tar::file_header("f", 0, 0).unwrap());
        let mut x = Extractor::new(d.path().join("new"), "t.tar".into(), Vec::new(), false);
        assert!(x.feed(&t).is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // Symlinks beside other members are still extracted.
        let mut t = header("pg_tblspc", b'5', "").to_vec();
        t.extend_from_slice(&header("pg_tblspc/16384", b'2', "/ts"));
        t.extend_from_slice(&tar::file_header("pg_tblspc/16384x", 0, 0).unwrap());
        t.extend_from_slice(&[0u8; 1024]);
        let mut x = Extractor::new(d.path().join("ok"), "t.tar".into(), Vec::new(), false);
        x.feed(&t).unwrap();
        x.finish().unwrap();
        let link = std::fs::read_link(d.path().join("ok/pg_tblspc/16384")).unwrap();
        assert_eq!(link, std::path::Path::new("/ts"));
    }

    /// Symbolic links the server never sends are refused before anything is created: a link
    /// elsewhere than pg_tblspc/<oid>, or a tablespace link to a relative path.
    #[test]
    fn refuses_links_that_are_not_tablespaces() {
        let d = tempfile::tempdir().unwrap();
        for (i, (name, target)) in [
            ("pg_wal", "/etc"),
            ("base/5/16384", "/etc/passwd"),
            ("pg_tblspc/16384", "../../outside"),
            ("pg_tblspc/abc", "/ts"),
        ]
        .into_iter()
        .enumerate()
        {
            let root = d.path().join(format!("r{i}"));
            let mut t = header(name, b'2', target).to_vec();
            t.extend_from_slice(&[0u8; 1024]);
            let mut x = Extractor::new(root.clone(), "base.tar".into(), Vec::new(), false);
            let err = x.feed(&t).unwrap_err().to_string();
            assert!(err.contains("only for tablespaces"), "{name}: {err}");
            assert!(
                std::fs::symlink_metadata(root.join(name)).is_err(),
                "{name}"
            );
        }
        assert!(is_tablespace_link("pg_tblspc/16384") && !is_tablespace_link("pg_tblspc/"));
    }
}
