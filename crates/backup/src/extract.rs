//! Streaming extraction of one server archive into a directory (plain format).

use std::path::PathBuf;

use pgincr_io::SeqWriter;

use crate::error::{BackupError, Result};
use crate::staging::{create_writer, mkdir_0700};
use crate::tar::{self, Kind, BLOCK};

enum State {
    Header,
    Body { remaining: u64, pad: u64 },
    Pad(u64),
    End,
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
    direct: bool,
    pub files: u64,
    pub bytes: u64,
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
            direct,
            files: 0,
            bytes: 0,
        }
    }

    fn err(&self, msg: impl Into<String>) -> BackupError {
        BackupError::Archive {
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
                    let n = (BLOCK - self.hdr_len).min(data.len());
                    self.hdr[self.hdr_len..self.hdr_len + n].copy_from_slice(&data[..n]);
                    self.hdr_len += n;
                    self.offset += n as u64;
                    data = &data[n..];
                    if self.hdr_len == BLOCK {
                        self.hdr_len = 0;
                        self.member()?;
                    }
                }
                State::Body { remaining, pad } => {
                    let n = remaining.min(data.len() as u64) as usize;
                    if let Some((f, p)) = self.file.as_mut() {
                        f.write_all(&data[..n])
                            .map_err(|e| BackupError::io(p.as_path(), e))?;
                    }
                    self.bytes += n as u64;
                    self.offset += n as u64;
                    data = &data[n..];
                    let left = remaining - n as u64;
                    if left == 0 {
                        if let Some((f, p)) = self.file.take() {
                            let f = f.finish().map_err(|e| BackupError::io(p.as_path(), e))?;
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
                    data = &data[n as usize..];
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
                if h.size == 0 {
                    f.finish().map_err(|e| BackupError::io(&path, e))?;
                } else {
                    self.file = Some((f, path));
                }
                self.files += 1;
                body = h.size;
            }
            Kind::Symlink => {
                let target = self
                    .link_map
                    .iter()
                    .find(|(old, _)| *old == h.link)
                    .map_or(h.link.clone(), |(_, new)| new.clone());
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(|e| BackupError::io(&path, e))?;
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
}
