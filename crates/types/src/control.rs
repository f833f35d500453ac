//! `global/pg_control`: the fields a backup tool checks.

use std::path::{Path, PathBuf};

/// Size of the `pg_control` file on disk.
pub const PG_CONTROL_FILE_SIZE: usize = 8192;

/// The subset of `ControlFileData` that backup tools need (x86-64 / little-endian layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlFile {
    pub system_identifier: u64,
    pub pg_control_version: u32,
    pub catalog_version_no: u32,
    pub checkpoint: u64,
    pub redo: u64,
    pub timeline: u32,
    pub blcksz: u32,
    pub relseg_size: u32,
    pub xlog_blcksz: u32,
    pub xlog_seg_size: u32,
    pub data_checksum_version: u32,
}

/// Why a `pg_control` file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ControlFileError {
    #[error("could not read control file \"{path}\": {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
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
}

impl ControlFile {
    /// Reads and validates `path` (normally `<datadir>/global/pg_control`).
    pub fn read(path: &Path) -> Result<ControlFile, ControlFileError> {
        let bytes = std::fs::read(path).map_err(|source| ControlFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes, path)
    }

    /// Validates and decodes the bytes of a control file; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<ControlFile, ControlFileError> {
        if bytes.len() < 296 {
            return Err(ControlFileError::TooShort {
                path: path.to_path_buf(),
                len: bytes.len(),
            });
        }
        let u32_at = |off: usize| {
            u32::from_le_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]])
        };
        let u64_at = |off: usize| u64::from(u32_at(off)) | (u64::from(u32_at(off + 4)) << 32);
        let version = u32_at(8);
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
        let computed = crc32c::crc32c(&bytes[..crc_offset]);
        let stored = u32_at(crc_offset);
        if computed != stored {
            return Err(ControlFileError::BadCrc {
                path: path.to_path_buf(),
                stored,
                computed,
            });
        }
        Ok(ControlFile {
            system_identifier: u64_at(0),
            pg_control_version: version,
            catalog_version_no: u32_at(12),
            checkpoint: u64_at(32),
            redo: u64_at(40),
            timeline: u32_at(48),
            blcksz: u32_at(216),
            relseg_size: u32_at(220),
            xlog_blcksz: u32_at(224),
            xlog_seg_size: u32_at(228),
            data_checksum_version: u32_at(252),
        })
    }

    /// The PostgreSQL major version this control file belongs to (17 or 18).
    pub fn major_version(&self) -> u32 {
        self.pg_control_version / 100
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
        let off = if version == 1700 { 288 } else { 292 };
        let crc = crc32c::crc32c(&b[..off]);
        b[off..off + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn reads_both_layouts() {
        for v in [1700, 1800] {
            let c = ControlFile::parse(&synthetic(v), Path::new("x")).unwrap();
            assert_eq!(c.system_identifier, 7_123_456_789);
            assert_eq!(c.major_version(), v / 100);
            assert_eq!((c.blcksz, c.relseg_size), (8192, 131072));
        }
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
