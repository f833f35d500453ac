//! What `pgincr backup` can be asked to do; mirrors `pg_basebackup`'s flags.

use std::path::PathBuf;
use std::sync::Arc;

use pgincr_protocol::{Checkpoint, Config};

/// `-F p|t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Plain,
    Tar,
}

/// `-X stream|fetch|none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalMethod {
    Stream,
    Fetch,
    None,
}

/// `-Z` algorithm for tar output, compressed on the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Gzip,
    Lz4,
    Zstd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compression {
    pub algorithm: Algorithm,
    /// `None`: the codec's default (gzip 6, lz4 fast, zstd 3), as pg_basebackup uses.
    pub level: Option<i32>,
}

impl Compression {
    /// Parses `gzip`, `lz4`, `zstd`, optionally `:LEVEL` or `:level=LEVEL`, and `client-` prefixes.
    pub fn parse(s: &str) -> Result<Option<Compression>, String> {
        let s = s.strip_prefix("client-").unwrap_or(s);
        let (alg, level) = match s.split_once(':') {
            Some((a, l)) => (a, Some(l.strip_prefix("level=").unwrap_or(l))),
            None => (s, None),
        };
        let algorithm = match alg {
            "none" => return Ok(None),
            "gzip" => Algorithm::Gzip,
            "lz4" => Algorithm::Lz4,
            "zstd" => Algorithm::Zstd,
            // pg_basebackup accepts a bare level as gzip.
            n if n.parse::<i32>().is_ok() => {
                let l: i32 = n.parse().unwrap_or(0);
                return Ok((l != 0).then_some(Compression {
                    algorithm: Algorithm::Gzip,
                    level: Some(l),
                }));
            }
            other => {
                return Err(format!(
                    "unrecognized compression algorithm \"{other}\": use gzip, lz4 or zstd"
                ))
            }
        };
        let level = match level {
            None => None,
            Some(l) => {
                let v: i32 = l
                    .parse()
                    .map_err(|_| format!("invalid compression level \"{l}\""))?;
                let ok = match algorithm {
                    Algorithm::Gzip => (1..=9).contains(&v),
                    Algorithm::Lz4 => (1..=12).contains(&v),
                    Algorithm::Zstd => (1..=22).contains(&v),
                };
                if !ok {
                    return Err(format!("compression level {v} is out of range for {alg}"));
                }
                Some(v)
            }
        };
        Ok(Some(Compression { algorithm, level }))
    }

    /// File name suffix of a compressed archive.
    pub fn suffix(&self) -> &'static str {
        match self.algorithm {
            Algorithm::Gzip => ".gz",
            Algorithm::Lz4 => ".lz4",
            Algorithm::Zstd => ".zst",
        }
    }
}

/// Progress reports: bytes received so far and the server's estimate of the total (with `-P`).
pub type ProgressFn = Arc<dyn Fn(u64, Option<u64>) + Send + Sync>;

/// Everything one backup run needs.
#[derive(Clone)]
pub struct BackupOptions {
    pub conn: Config,
    /// `-D`: must not exist, or be an empty directory.
    pub target: PathBuf,
    pub format: Format,
    /// `-i`: the prior backup's `backup_manifest`.
    pub incremental: Option<PathBuf>,
    pub wal: WalMethod,
    pub checkpoint: Checkpoint,
    pub label: String,
    /// `-P`: ask the server for size estimates and report progress.
    pub progress: Option<ProgressFn>,
    /// `-T OLDDIR=NEWDIR`.
    pub tablespace_mapping: Vec<(PathBuf, PathBuf)>,
    /// `-r` in kB/s (server-side throttling).
    pub max_rate: Option<u32>,
    pub compression: Option<Compression>,
    /// Compression threads (`0`: one per CPU).
    pub threads: usize,
    pub manifest_checksums: Option<String>,
    /// `-S`: stream WAL through this slot.
    pub slot: Option<String>,
    /// `-C`: create the `-S` slot (permanent) first.
    pub create_slot: bool,
    /// `-N`: skip fsync.
    pub no_sync: bool,
    /// Write backup files with direct I/O (bypassing the page cache) where the file system
    /// allows; off, every write goes through the page cache as pg_basebackup's do.
    pub direct_io: bool,
}

impl BackupOptions {
    pub fn new(conn: Config, target: PathBuf) -> BackupOptions {
        BackupOptions {
            conn,
            target,
            format: Format::Plain,
            incremental: None,
            wal: WalMethod::Stream,
            checkpoint: Checkpoint::Spread,
            label: "pgincr base backup".into(),
            progress: None,
            tablespace_mapping: Vec::new(),
            max_rate: None,
            compression: None,
            threads: 0,
            manifest_checksums: None,
            slot: None,
            create_slot: false,
            no_sync: false,
            direct_io: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_specs() {
        let c = Compression::parse("zstd:5").unwrap().unwrap();
        assert_eq!((c.algorithm, c.level), (Algorithm::Zstd, Some(5)));
        assert_eq!(
            Compression::parse("client-gzip:level=9")
                .unwrap()
                .unwrap()
                .level,
            Some(9)
        );
        assert_eq!(Compression::parse("lz4").unwrap().unwrap().level, None);
        assert_eq!(Compression::parse("none").unwrap(), None);
        assert!(Compression::parse("gzip:10").is_err());
        assert!(Compression::parse("brotli").is_err());
    }
}
