//! Where archive chunks go: extracted into directories (plain) or written to tar files,
//! possibly compressed on worker threads (tar).
//!
//! Chunks are handled on the receiving thread as they arrive, as pg_basebackup does: the
//! receive buffer is then free again before the next read, so it is reused while still in
//! cache. (Handing chunks to a writer thread measured about twice the kernel copy cost.)

use std::io::Write;
use std::path::PathBuf;

use crate::compress::{self, ArchiveOut};
use crate::error::{BackupError, Result};
use crate::extract::Extractor;
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
}

#[derive(Default, Debug)]
pub(crate) struct SinkStats {
    pub files: u64,
}

enum Current {
    None,
    Extract(Box<Extractor>),
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
                Current::Extract(Box::new(Extractor::new(
                    root,
                    name,
                    self.setup.link_map.clone(),
                    self.setup.direct,
                )))
            }
            Format::Tar => {
                let file_name = match self.setup.compression {
                    Some(c) => format!("{name}{}", c.suffix()),
                    None => name,
                };
                let path = self.setup.dir.join(file_name);
                let f = create_writer(&path, self.setup.direct, u64::MAX)?;
                let out = compress::open(f, self.setup.compression, self.setup.threads)
                    .map_err(|e| BackupError::io(&path, e))?;
                Current::Tar(out, path)
            }
        };
        Ok(())
    }

    pub fn data(&mut self, b: &[u8]) -> Result<()> {
        match &mut self.cur {
            Current::Extract(x) => x.feed(b),
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
            Current::Extract(mut x) => {
                x.finish()?;
                self.stats.files += x.files;
                Ok(())
            }
            Current::Tar(out, path) => {
                self.stats.files += 1;
                out.finish().map_err(|e| BackupError::io(path, e))
            }
        }
    }

    pub fn finish(mut self) -> Result<SinkStats> {
        self.end_archive()?;
        Ok(self.stats)
    }
}
