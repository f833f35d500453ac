//! `global/pg_control`: the fields a backup tool checks, and the cluster geometry they
//! carry, validated once here so that no consumer can divide by a zero block size or size an
//! allocation from a crafted segment size.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::bounded::{read_bounded, BoundedReadError, PG_CONTROL_LIMIT};

/// Size of the `pg_control` file on disk.
pub const PG_CONTROL_FILE_SIZE: usize = 8192;

/// A geometry field of `pg_control` outside what any PostgreSQL build can have.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} is {value}, but PostgreSQL allows only {allowed}")]
pub struct GeometryError {
    /// The `ControlFileData` field name.
    pub field: &'static str,
    pub value: u32,
    pub allowed: &'static str,
}

macro_rules! geometry_newtype {
    ($(#[$doc:meta])* $name:ident, $field:literal, $allowed:literal, $default:expr, |$v:ident| $ok:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u32);

        impl $name {
            /// The value of a default build.
            pub const DEFAULT: $name = $name($default);

            /// Validates a value read from `pg_control` or given by a caller.
            pub const fn new($v: u32) -> Result<$name, GeometryError> {
                if $ok {
                    Ok($name($v))
                } else {
                    Err(GeometryError {
                        field: $field,
                        value: $v,
                        allowed: $allowed,
                    })
                }
            }

            pub const fn get(self) -> u32 {
                self.0
            }

            /// The value widened, for byte arithmetic.
            pub const fn as_u64(self) -> u64 {
                self.0 as u64
            }
        }

        impl TryFrom<u32> for $name {
            type Error = GeometryError;
            fn try_from(v: u32) -> Result<$name, GeometryError> {
                $name::new(v)
            }
        }

        impl From<$name> for u32 {
            fn from(v: $name) -> u32 {
                v.0
            }
        }

        impl From<$name> for u64 {
            fn from(v: $name) -> u64 {
                u64::from(v.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

geometry_newtype!(
    /// `BLCKSZ`: configure.ac and meson_options.txt accept 1, 2, 4, 8, 16 or 32 kB (the upper
    /// bound comes from the 15-bit `lp_off`/`lp_len` of `ItemIdData`).
    BlockSize,
    "blcksz",
    "1024, 2048, 4096, 8192, 16384 or 32768 bytes",
    8192,
    |v| v.is_power_of_two() && v >= 1024 && v <= 32768
);

geometry_newtype!(
    /// `RELSEG_SIZE`, in blocks: any positive value a build can choose (`--with-segsize` in GB,
    /// or `--with-segsize-blocks`, down to 1 for testing), and at most `INT_MAX` because the
    /// server exposes it as the integer GUC `segment_size`. It need not be a power of two.
    RelSegSize,
    "relseg_size",
    "1 to 2147483647 blocks",
    131_072,
    |v| v >= 1 && v <= i32::MAX as u32
);

geometry_newtype!(
    /// `XLOG_BLCKSZ`: configure.ac and meson_options.txt accept 1, 2, 4, 8, 16, 32 or 64 kB.
    WalBlockSize,
    "xlog_blcksz",
    "1024, 2048, 4096, 8192, 16384, 32768 or 65536 bytes",
    8192,
    |v| v.is_power_of_two() && v >= 1024 && v <= 65536
);

geometry_newtype!(
    /// `wal_segment_size`: `IsValidWalSegSize` (xlog_internal.h), a power of two from
    /// `WalSegMinSize` (1 MiB) to `WalSegMaxSize` (1 GiB).
    WalSegSize,
    "xlog_seg_size",
    "a power of two from 1 MiB to 1 GiB",
    16 * 1024 * 1024,
    |v| v.is_power_of_two() && v >= 1024 * 1024 && v <= 1024 * 1024 * 1024
);

/// `BLCKSZ` and `RELSEG_SIZE` of a cluster: what relation files, `INCREMENTAL.*` files and the
/// size rules of incremental backups depend on. Both are compile-time constants of the server,
/// so tools take them from `pg_control` rather than assume them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RelGeometry {
    pub blcksz: BlockSize,
    pub relseg_size: RelSegSize,
}

impl RelGeometry {
    /// A default build: 8 KiB blocks, 1 GiB segments.
    pub const DEFAULT: RelGeometry = RelGeometry {
        blcksz: BlockSize::DEFAULT,
        relseg_size: RelSegSize::DEFAULT,
    };

    pub const fn new(blcksz: BlockSize, relseg_size: RelSegSize) -> RelGeometry {
        RelGeometry {
            blcksz,
            relseg_size,
        }
    }

    /// Validates raw values (tests, callers with their own source of the values).
    pub fn from_raw(blcksz: u32, relseg_size: u32) -> Result<RelGeometry, GeometryError> {
        Ok(RelGeometry::new(
            BlockSize::new(blcksz)?,
            RelSegSize::new(relseg_size)?,
        ))
    }

    pub fn from_control(c: &ControlFile) -> RelGeometry {
        c.geometry()
    }

    /// `BLCKSZ` in bytes.
    pub const fn block_bytes(self) -> u64 {
        self.blcksz.as_u64()
    }

    /// Bytes in a full relation segment.
    pub const fn segment_bytes(self) -> u64 {
        self.blcksz.as_u64() * self.relseg_size.as_u64()
    }
}

/// The subset of `ControlFileData` that backup tools need (x86-64 / little-endian layout).
/// The geometry fields are validated when the file is parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlFile {
    pub system_identifier: u64,
    pub pg_control_version: u32,
    pub catalog_version_no: u32,
    pub checkpoint: u64,
    pub redo: u64,
    pub timeline: u32,
    pub blcksz: BlockSize,
    pub relseg_size: RelSegSize,
    pub xlog_blcksz: WalBlockSize,
    pub xlog_seg_size: WalSegSize,
    /// `PG_DATA_CHECKSUM_VERSION` (1) when data checksums are on, 0 when off; see
    /// [`ControlFile::data_checksums_enabled`].
    pub data_checksum_version: u32,
}

/// Why a `pg_control` file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ControlFileError {
    #[error(transparent)]
    Read(BoundedReadError),
    #[error("control file \"{path}\" is {len} bytes, too short to hold pg_control data")]
    TooShort { path: PathBuf, len: usize },
    #[error(
        "control file \"{path}\" has unsupported pg_control_version {version}: \
         pgincr reads PostgreSQL 17 (1700) and 18 (1800) clusters"
    )]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error(
        "control file \"{path}\" fails its CRC check (stored {stored:08x}, computed {computed:08x}): \
         the file is corrupt or was copied while the server was writing it"
    )]
    BadCrc {
        path: PathBuf,
        stored: u32,
        computed: u32,
    },
    #[error(
        "control file \"{path}\" has an impossible cluster geometry: {error}; \
         the file is damaged or was not written by PostgreSQL"
    )]
    BadGeometry { path: PathBuf, error: GeometryError },
}

impl ControlFile {
    /// Reads and validates `path` (normally `<datadir>/global/pg_control`).
    pub fn read(path: &Path) -> Result<ControlFile, ControlFileError> {
        let bytes =
            read_bounded(path, PG_CONTROL_LIMIT, "control file").map_err(ControlFileError::Read)?;
        Self::parse(&bytes, path)
    }

    /// Validates and decodes the bytes of a control file; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<ControlFile, ControlFileError> {
        let too_short = || ControlFileError::TooShort {
            path: path.to_path_buf(),
            len: bytes.len(),
        };
        if bytes.len() < 296 {
            return Err(too_short());
        }
        // Every offset below is inside the 296 bytes checked above.
        let u32_at = |off: usize| {
            bytes
                .get(off..)
                .and_then(<[u8]>::first_chunk)
                .map(|b| u32::from_le_bytes(*b))
                .ok_or_else(too_short)
        };
        let u64_at = |off: usize| {
            Ok::<_, ControlFileError>(u64::from(u32_at(off)?) | (u64::from(u32_at(off + 4)?) << 32))
        };
        let version = u32_at(8)?;
        // PG 18 added `default_char_signedness`, which moved the CRC by 4 bytes.
        let crc_offset = match version {
            1700 => 288,
            1800 => 292,
            _ => {
                return Err(ControlFileError::UnsupportedVersion {
                    path: path.to_path_buf(),
                    version,
                })
            }
        };
        let computed = crc32c::crc32c(bytes.get(..crc_offset).ok_or_else(too_short)?);
        let stored = u32_at(crc_offset)?;
        if computed != stored {
            return Err(ControlFileError::BadCrc {
                path: path.to_path_buf(),
                stored,
                computed,
            });
        }
        // Captures only a reference, so it is Copy and serves every field.
        let bad = |error| ControlFileError::BadGeometry {
            path: path.to_path_buf(),
            error,
        };
        Ok(ControlFile {
            system_identifier: u64_at(0)?,
            pg_control_version: version,
            catalog_version_no: u32_at(12)?,
            checkpoint: u64_at(32)?,
            redo: u64_at(40)?,
            timeline: u32_at(48)?,
            blcksz: BlockSize::new(u32_at(216)?).map_err(bad)?,
            relseg_size: RelSegSize::new(u32_at(220)?).map_err(bad)?,
            xlog_blcksz: WalBlockSize::new(u32_at(224)?).map_err(bad)?,
            xlog_seg_size: WalSegSize::new(u32_at(228)?).map_err(bad)?,
            data_checksum_version: u32_at(252)?,
        })
    }

    /// The PostgreSQL major version this control file belongs to (17 or 18).
    pub fn major_version(&self) -> u32 {
        self.pg_control_version / 100
    }

    /// Whether the cluster has data checksums (`data_checksum_version != 0`; PostgreSQL 17 and
    /// 18 know only version 1).
    pub fn data_checksums_enabled(&self) -> bool {
        self.data_checksum_version != 0
    }

    /// `BLCKSZ` and `RELSEG_SIZE`, validated.
    pub fn geometry(&self) -> RelGeometry {
        RelGeometry::new(self.blcksz, self.relseg_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic(version: u32) -> Vec<u8> {
        let mut b = vec![0u8; PG_CONTROL_FILE_SIZE];
        b[0..8].copy_from_slice(&7_123_456_789u64.to_le_bytes());
        b[8..12].copy_from_slice(&version.to_le_bytes());
        b[216..220].copy_from_slice(&8192u32.to_le_bytes());
        b[220..224].copy_from_slice(&131072u32.to_le_bytes());
        b[224..228].copy_from_slice(&8192u32.to_le_bytes());
        b[228..232].copy_from_slice(&(16u32 << 20).to_le_bytes());
        resign(&mut b, version);
        b
    }

    fn resign(b: &mut [u8], version: u32) {
        let off = if version == 1700 { 288 } else { 292 };
        let crc = crc32c::crc32c(&b[..off]);
        b[off..off + 4].copy_from_slice(&crc.to_le_bytes());
    }

    /// A control file with a valid CRC whose field at `off` is `value`.
    fn with_field(off: usize, value: u32) -> Vec<u8> {
        let mut b = synthetic(1800);
        b[off..off + 4].copy_from_slice(&value.to_le_bytes());
        resign(&mut b, 1800);
        b
    }

    #[test]
    fn reads_both_layouts() {
        for v in [1700, 1800] {
            let c = ControlFile::parse(&synthetic(v), Path::new("x")).unwrap();
            assert_eq!(c.system_identifier, 7_123_456_789);
            assert_eq!(c.major_version(), v / 100);
            assert_eq!((c.blcksz.get(), c.relseg_size.get()), (8192, 131072));
            assert_eq!(c.geometry(), RelGeometry::DEFAULT);
            assert_eq!(c.xlog_seg_size.get(), 16 << 20);
            assert!(!c.data_checksums_enabled());
        }
        let c = ControlFile::parse(&with_field(252, 1), Path::new("x")).unwrap();
        assert!(c.data_checksums_enabled());
    }

    #[test]
    fn refuses_impossible_geometry_with_a_valid_crc() {
        // Block size 0 made `summary estimate` divide by zero, and a segment size of
        // 0xFFFFFFFF let combine size a 32 GiB block map: both are refused here, naming the
        // file and the field.
        let cases: &[(usize, u32, &str)] = &[
            (216, 0, "blcksz"),
            (216, 512, "blcksz"),
            (216, 65536, "blcksz"),
            (216, 12288, "blcksz"),
            (220, 0, "relseg_size"),
            (220, u32::MAX, "relseg_size"),
            (220, 1 << 31, "relseg_size"),
            (224, 0, "xlog_blcksz"),
            (224, 131072, "xlog_blcksz"),
            (228, 0, "xlog_seg_size"),
            (228, 512 * 1024, "xlog_seg_size"),
            (228, 2 << 30, "xlog_seg_size"),
            (228, 3 << 20, "xlog_seg_size"),
        ];
        for &(off, value, field) in cases {
            let e = ControlFile::parse(&with_field(off, value), Path::new("/b/global/pg_control"))
                .unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e, ControlFileError::BadGeometry { .. })
                    && msg.contains("/b/global/pg_control")
                    && msg.contains(field),
                "{off} {value}: {msg}"
            );
        }
        // The extremes PostgreSQL builds allow are accepted.
        for (off, value) in [
            (216, 1024),
            (216, 32768),
            (220, 1),
            (220, 3),
            (220, i32::MAX as u32),
            (224, 65536),
            (228, 1 << 20),
            (228, 1 << 30),
        ] {
            ControlFile::parse(&with_field(off, value), Path::new("x")).unwrap();
        }
    }

    #[test]
    fn read_refuses_non_regular_and_oversized_files() {
        let e = ControlFile::read(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let dir = std::env::temp_dir().join(format!("pgincr-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("pg_control");
        let mut b = synthetic(1700);
        b.resize(PG_CONTROL_FILE_SIZE + 1, 0);
        std::fs::write(&big, &b).unwrap();
        let e = ControlFile::read(&big).unwrap_err();
        assert!(e.to_string().contains("8193 bytes"), "{e}");
        std::fs::write(&big, synthetic(1700)).unwrap();
        ControlFile::read(&big).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_corruption() {
        let mut b = synthetic(1800);
        b[0] ^= 1;
        assert!(matches!(
            ControlFile::parse(&b, Path::new("x")),
            Err(ControlFileError::BadCrc { .. })
        ));
        assert!(matches!(
            ControlFile::parse(&b[..10], Path::new("x")),
            Err(ControlFileError::TooShort { .. })
        ));
        assert!(matches!(
            ControlFile::parse(&synthetic(1600), Path::new("x")),
            Err(ControlFileError::UnsupportedVersion { .. })
        ));
    }
}
