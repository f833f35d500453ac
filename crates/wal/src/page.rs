//! WAL page headers (`XLogPageHeaderData`, `XLogLongPageHeaderData` in `xlog_internal.h`).

use crate::{le_u16, le_u32, le_u64};
use pgincr_types::{Lsn, TimeLineId};

/// `XLP_FIRST_IS_CONTRECORD`.
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// `XLP_LONG_HEADER`.
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// `XLP_BKP_REMOVABLE`.
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
/// `XLP_FIRST_IS_OVERWRITE_CONTRECORD`.
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// `XLP_ALL_FLAGS`.
pub const XLP_ALL_FLAGS: u16 = 0x000F;
/// `SizeOfXLogShortPHD` (MAXALIGNed).
pub const SHORT_HEADER_SIZE: usize = 24;
/// `SizeOfXLogLongPHD` (MAXALIGNed).
pub const LONG_HEADER_SIZE: usize = 40;

/// `XLOG_PAGE_MAGIC` per major version: the WAL format version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WalMagic {
    /// PostgreSQL 17: 0xD116.
    V17,
    /// PostgreSQL 18: 0xD118.
    V18,
}

impl WalMagic {
    pub fn value(self) -> u16 {
        match self {
            WalMagic::V17 => 0xD116,
            WalMagic::V18 => 0xD118,
        }
    }
    pub fn from_value(v: u16) -> Option<WalMagic> {
        match v {
            0xD116 => Some(WalMagic::V17),
            0xD118 => Some(WalMagic::V18),
            _ => None,
        }
    }
    pub fn for_major(major: u32) -> Option<WalMagic> {
        match major {
            17 => Some(WalMagic::V17),
            18 => Some(WalMagic::V18),
            _ => None,
        }
    }
    pub fn major(self) -> u32 {
        match self {
            WalMagic::V17 => 17,
            WalMagic::V18 => 18,
        }
    }
}

/// A page header as stored; `long` is set when `XLP_LONG_HEADER` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageHeader {
    pub magic: u16,
    pub info: u16,
    pub tli: TimeLineId,
    pub pageaddr: Lsn,
    pub rem_len: u32,
    pub long: Option<LongHeader>,
}

/// The fields only the first page of a segment carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongHeader {
    pub sysid: u64,
    pub seg_size: u32,
    pub xlog_blcksz: u32,
}

impl PageHeader {
    /// Parses the header at the start of `page`; `None` when too few bytes are present.
    pub fn parse(page: &[u8]) -> Option<PageHeader> {
        let info = le_u16(page, 2)?;
        let long = if info & XLP_LONG_HEADER != 0 {
            Some(LongHeader {
                sysid: le_u64(page, 24)?,
                seg_size: le_u32(page, 32)?,
                xlog_blcksz: le_u32(page, 36)?,
            })
        } else {
            None
        };
        Some(PageHeader {
            magic: le_u16(page, 0)?,
            info,
            tli: TimeLineId(le_u32(page, 4)?),
            pageaddr: Lsn(le_u64(page, 8)?),
            rem_len: le_u32(page, 16)?,
            long,
        })
    }

    /// `XLogPageHeaderSize`.
    pub fn size(&self) -> usize {
        if self.info & XLP_LONG_HEADER != 0 {
            LONG_HEADER_SIZE
        } else {
            SHORT_HEADER_SIZE
        }
    }

    pub fn is_contrecord(&self) -> bool {
        self.info & XLP_FIRST_IS_CONTRECORD != 0
    }

    pub fn is_overwrite_contrecord(&self) -> bool {
        self.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_long_and_short() {
        let mut p = vec![0u8; 64];
        p[0..2].copy_from_slice(&0xD118u16.to_le_bytes());
        p[2..4].copy_from_slice(&(XLP_LONG_HEADER | XLP_BKP_REMOVABLE).to_le_bytes());
        p[4..8].copy_from_slice(&1u32.to_le_bytes());
        p[8..16].copy_from_slice(&0x3000000u64.to_le_bytes());
        p[24..32].copy_from_slice(&42u64.to_le_bytes());
        p[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        p[36..40].copy_from_slice(&8192u32.to_le_bytes());
        let h = PageHeader::parse(&p).unwrap();
        assert_eq!(h.size(), 40);
        assert_eq!(WalMagic::from_value(h.magic), Some(WalMagic::V18));
        assert_eq!(h.long.unwrap().sysid, 42);
        assert_eq!(PageHeader::parse(&p[..30]), None);
        p[2] = 0;
        assert_eq!(PageHeader::parse(&p[..24]).unwrap().size(), 24);
    }
}
