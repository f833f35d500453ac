//! Where archive chunks go: extracted into directories (plain) or written to tar files,
//! possibly compressed on worker threads (tar).
//!
//! Chunks are handled on the receiving thread as they arrive, as pg_basebackup does: the
//! receive buffer is then free again before the next read, so it is reused while still in
//! cache. (Handing chunks to a writer thread measured about twice the kernel copy cost.)

use std::io::Write;
use std::path::PathBuf;

use pgincr_archive::compress::{self, ArchiveOut};
use pgincr_archive::Extractor;

use crate::error::{BackupError, Result};
use crate::options::{Compression, Format};
use crate::staging::{create_0600, create_writer};

pub(crate) struct SinkSetup {
    pub format: Format,
    pub dir: PathBuf,
    pub link_map: Vec<(String, String)>,
    pub compression: Option<Compression>,
    pub threads: usize,
    /// Write with direct I/O where possible.
    pub direct: bool,
    /// Plain format: compute each file's checksum of this kind as it is extracted.
    pub checksums: Option<pgincr_types::checksum::ChecksumType>,
}

#[derive(Default, Debug)]
pub(crate) struct SinkStats {
    pub files: u64,
    /// With `checksums`: every file received, named as the manifest names it.
    pub sums: Vec<pgincr_archive::FileSum>,
}

enum Current {
    None,
    /// The extractor and the manifest path prefix of its archive's files.
    Extract(Box<Extractor>, String),
    Tar(Box<dyn ArchiveOut>, PathBuf),
}

pub(crate) struct Sink {
    setup: SinkSetup,
    cur: Current,
    manifest: Option<(std::fs::File, PathBuf)>,
    stats: SinkStats,
}

impl Sink {
    pub fn new(setup: SinkSetup) -> Sink {
        Sink {
            setup,
            cur: Current::None,
            manifest: None,
            stats: SinkStats::default(),
        }
    }

    /// A new archive; `root` is where a plain-format archive is extracted (default: the
    /// backup directory).
    pub fn archive(&mut self, name: String, root: Option<PathBuf>) -> Result<()> {
        self.end_archive()?;
        self.cur = match self.setup.format {
            Format::Plain => {
                let root = root.unwrap_or_else(|| self.setup.dir.clone());
                // The manifest names a tablespace's files pg_tblspc/<oid>/...
                let prefix = match name.strip_suffix(".tar") {
                    Some(oid) if !oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit()) => {
                        format!("pg_tblspc/{oid}/")
                    }
                    _ => String::new(),
                };
                let mut x =
                    Extractor::new(root, name, self.setup.link_map.clone(), self.setup.direct);
                if let Some(kind) = self.setup.checksums {
                    x = x.with_checksums(kind);
                }
                Current::Extract(Box::new(x), prefix)
            }
            Format::Tar => {
                let compression = self.setup.compression.unwrap_or_default();
                let path = self
                    .setup
                    .dir
                    .join(format!("{name}{}", compression.suffix()));
                let f = create_writer(&path, self.setup.direct, u64::MAX)?;
                let out = compress::open(f, compression, self.setup.threads)
                    .map_err(|e| BackupError::io(&path, e))?;
                Current::Tar(out, path)
            }
        };
        Ok(())
    }

    pub fn data(&mut self, b: &[u8]) -> Result<()> {
        match &mut self.cur {
            Current::Extract(x, _) => Ok(x.feed(b)?),
            Current::Tar(out, path) => out.write(b).map_err(|e| BackupError::io(path.as_path(), e)),
            Current::None => Err(BackupError::Other("archive data before any archive".into())),
        }
    }

    /// Manifest bytes go to `backup_manifest.tmp`, renamed when the backup is complete.
    pub fn manifest(&mut self, b: &[u8]) -> Result<()> {
        if self.manifest.is_none() {
            self.end_archive()?;
            let p = self.setup.dir.join("backup_manifest.tmp");
            self.manifest = Some((create_0600(&p)?, p));
        }
        if let Some((f, p)) = self.manifest.as_mut() {
            f.write_all(b)
                .map_err(|e| BackupError::io(p.as_path(), e))?;
        }
        Ok(())
    }

    fn end_archive(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.cur, Current::None) {
            Current::None => Ok(()),
            Current::Extract(mut x, prefix) => {
                x.finish()?;
                self.stats.files += x.files;
                self.stats
                    .sums
                    .extend(x.take_sums().into_iter().map(|mut s| {
                        s.name.insert_str(0, &prefix);
                        s
                    }));
                Ok(())
            }
            Current::Tar(out, path) => {
                self.stats.files += 1;
                out.finish().map(drop).map_err(|e| BackupError::io(path, e))
            }
        }
    }

    pub fn finish(mut self) -> Result<SinkStats> {
        self.end_archive()?;
        Ok(self.stats)
    }
}
