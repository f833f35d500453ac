//! The compression of one archive: what `-Z` asks for when writing, what the file name says
//! when reading.

/// An archive's compression, with the level asked for (`None`: the codec's default, gzip 6,
/// lz4 fast, zstd 3, as pg_basebackup uses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    None,
    Gzip(Option<i32>),
    Lz4(Option<i32>),
    Zstd(Option<i32>),
}

impl Compression {
    /// Every compression an archive can have, with its file name suffix after `.tar`.
    const SUFFIXES: [(Compression, &'static str); 4] = [
        (Compression::None, ""),
        (Compression::Gzip(None), ".gz"),
        (Compression::Lz4(None), ".lz4"),
        (Compression::Zstd(None), ".zst"),
    ];

    /// Parses a `-Z` spec: `gzip`, `lz4`, `zstd`, optionally `:LEVEL` or `:level=LEVEL`, and
    /// `client-` prefixes; a bare level is gzip, as pg_basebackup takes it. `Ok(None)`: the
    /// spec asks for no compression (`none`, `0`), which is how `Option<Compression>` options
    /// hold it.
    pub fn parse(s: &str) -> Result<Option<Compression>, String> {
        let s = s.strip_prefix("client-").unwrap_or(s);
        let (alg, level) = match s.split_once(':') {
            Some((a, l)) => (a, Some(l.strip_prefix("level=").unwrap_or(l))),
            None => (s, None),
        };
        let (make, range): (fn(Option<i32>) -> Compression, _) = match alg {
            "none" => return Ok(None),
            "gzip" => (Compression::Gzip, 1..=9),
            "lz4" => (Compression::Lz4, 1..=12),
            "zstd" => (Compression::Zstd, 1..=22),
            // pg_basebackup accepts a bare level as gzip.
            n if n.parse::<i32>().is_ok() => {
                let l: i32 = n.parse().unwrap_or(0);
                return Ok((l != 0).then_some(Compression::Gzip(Some(l))));
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
                if !range.contains(&v) {
                    return Err(format!("compression level {v} is out of range for {alg}"));
                }
                Some(v)
            }
        };
        Ok(Some(make(level)))
    }

    /// The level asked for; `None` for the codec's default (or no compression).
    pub fn level(self) -> Option<i32> {
        match self {
            Compression::None => None,
            Compression::Gzip(l) | Compression::Lz4(l) | Compression::Zstd(l) => l,
        }
    }

    pub fn is_none(self) -> bool {
        self == Compression::None
    }

    /// File name suffix after `.tar` (`""`, `.gz`, `.lz4`, `.zst`).
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip(_) => ".gz",
            Compression::Lz4(_) => ".lz4",
            Compression::Zstd(_) => ".zst",
        }
    }

    /// Splits an archive's file name (`base.tar.gz`) into its stem (`base`) and compression;
    /// `None` if it is not a `.tar` name.
    pub fn split_archive_name(name: &str) -> Option<(&str, Compression)> {
        Self::SUFFIXES.iter().find_map(|&(c, suffix)| {
            name.strip_suffix(suffix)
                .and_then(|n| n.strip_suffix(".tar"))
                .map(|stem| (stem, c))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_specs() {
        assert_eq!(
            Compression::parse("zstd:5").unwrap(),
            Some(Compression::Zstd(Some(5)))
        );
        assert_eq!(
            Compression::parse("client-gzip:level=9")
                .unwrap()
                .unwrap()
                .level(),
            Some(9)
        );
        assert_eq!(Compression::parse("lz4").unwrap().unwrap().level(), None);
        assert_eq!(Compression::parse("none").unwrap(), None);
        assert_eq!(Compression::parse("0").unwrap(), None);
        assert_eq!(
            Compression::parse("5").unwrap(),
            Some(Compression::Gzip(Some(5)))
        );
        assert!(Compression::parse("gzip:10").is_err());
        assert!(Compression::parse("brotli").is_err());
    }

    #[test]
    fn archive_names() {
        assert_eq!(
            Compression::split_archive_name("base.tar"),
            Some(("base", Compression::None))
        );
        assert_eq!(
            Compression::split_archive_name("16385.tar.zst"),
            Some(("16385", Compression::Zstd(None)))
        );
        assert_eq!(
            Compression::split_archive_name("pg_wal.tar.gz"),
            Some(("pg_wal", Compression::Gzip(None)))
        );
        assert_eq!(Compression::split_archive_name("base.tar.bz2"), None);
        assert_eq!(Compression::split_archive_name("backup_manifest"), None);
        for (c, _) in Compression::SUFFIXES {
            let name = format!("x.tar{}", c.suffix());
            assert_eq!(Compression::split_archive_name(&name), Some(("x", c)));
        }
    }
}
