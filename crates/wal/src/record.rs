//! Record headers (`XLogRecord`) and the fragment headers that follow them
//! (`XLogRecordBlockHeader` and friends in `xlogrecord.h`), parsed as `DecodeXLogRecord` does.

use std::borrow::Cow;
use std::ops::Range;

use crate::page::WalMagic;
use crate::{le_u16, le_u32, le_u64, rmgr, BLCKSZ, SIZE_OF_XLOG_RECORD};
use pgincr_types::{BlockNumber, ForkNumber, Lsn, RelFileLocator};

/// `XLR_INFO_MASK`: the generic info bits.
pub const XLR_INFO_MASK: u8 = 0x0F;
/// `XLR_MAX_BLOCK_ID`.
pub const XLR_MAX_BLOCK_ID: u8 = 32;
pub const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
pub const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
pub const XLR_BLOCK_ID_ORIGIN: u8 = 253;
pub const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;

pub const BKPBLOCK_FORK_MASK: u8 = 0x0F;
pub const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
pub const BKPBLOCK_HAS_DATA: u8 = 0x20;
pub const BKPBLOCK_WILL_INIT: u8 = 0x40;
pub const BKPBLOCK_SAME_REL: u8 = 0x80;

pub const BKPIMAGE_HAS_HOLE: u8 = 0x01;
pub const BKPIMAGE_APPLY: u8 = 0x02;
pub const BKPIMAGE_COMPRESS_PGLZ: u8 = 0x04;
pub const BKPIMAGE_COMPRESS_LZ4: u8 = 0x08;
pub const BKPIMAGE_COMPRESS_ZSTD: u8 = 0x10;
const BKPIMAGE_COMPRESSED: u8 =
    BKPIMAGE_COMPRESS_PGLZ | BKPIMAGE_COMPRESS_LZ4 | BKPIMAGE_COMPRESS_ZSTD;

/// A full-page image attached to a block reference (`XLogRecordBlockImageHeader`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockImage {
    /// Stored bytes (`length`).
    pub len: u16,
    pub hole_offset: u16,
    pub hole_length: u16,
    /// `bimg_info` bits.
    pub info: u8,
    /// Where the stored bytes are in [`Record::bytes`].
    pub data: Range<usize>,
}

impl BlockImage {
    /// `BKPIMAGE_APPLY`: redo restores the page from the image.
    pub fn apply(&self) -> bool {
        self.info & BKPIMAGE_APPLY != 0
    }
    pub fn is_compressed(&self) -> bool {
        self.info & BKPIMAGE_COMPRESSED != 0
    }
}

/// A block reference: which relation fork block the record touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRef {
    /// The block ID (0..=32).
    pub id: u8,
    pub locator: RelFileLocator,
    /// The fork number as stored (low four bits of `fork_flags`).
    pub fork: u8,
    pub block: BlockNumber,
    /// `fork_flags` as stored.
    pub flags: u8,
    pub image: Option<BlockImage>,
    /// Where the block's data are in [`Record::bytes`] (empty without `HAS_DATA`).
    pub data: Range<usize>,
}

impl BlockRef {
    pub fn fork_number(&self) -> Option<ForkNumber> {
        ForkNumber::from_i32(i32::from(self.fork))
    }
    pub fn has_image(&self) -> bool {
        self.image.is_some()
    }
    pub fn will_init(&self) -> bool {
        self.flags & BKPBLOCK_WILL_INIT != 0
    }
}

/// One validated WAL record.
#[derive(Clone, Debug)]
pub struct Record {
    /// Start of the record (`ReadRecPtr`).
    pub lsn: Lsn,
    /// Where the next record starts (`EndRecPtr`): past the MAXALIGN padding, past a page header
    /// when the next record starts a page, and at the next segment after `XLOG_SWITCH`.
    pub end_lsn: Lsn,
    /// `xl_tot_len`.
    pub total_len: u32,
    /// `xl_xid`.
    pub xid: u32,
    /// `xl_prev`.
    pub prev: Lsn,
    /// `xl_info` (generic low bits included).
    pub info: u8,
    /// `xl_rmid`.
    pub rmid: u8,
    /// `xl_crc`, verified.
    pub crc: u32,
    /// The WAL format of the page the record starts on.
    pub magic: WalMagic,
    pub blocks: Vec<BlockRef>,
    /// `XLR_BLOCK_ID_ORIGIN`.
    pub origin: Option<u16>,
    /// `XLR_BLOCK_ID_TOPLEVEL_XID`.
    pub toplevel_xid: Option<u32>,
    /// The main data's place in [`Record::bytes`].
    pub main_data: Range<usize>,
    /// The whole record, header included, page headers removed.
    pub bytes: Vec<u8>,
}

impl Record {
    pub fn rmgr_name(&self) -> Cow<'static, str> {
        rmgr::name(self.rmid)
    }
    /// `xl_info & ~XLR_INFO_MASK`: the resource manager's own info bits.
    pub fn rmgr_info(&self) -> u8 {
        self.info & !XLR_INFO_MASK
    }
    pub fn main_data(&self) -> &[u8] {
        self.bytes.get(self.main_data.clone()).unwrap_or(&[])
    }
    /// Bytes of full-page images (`pg_waldump`'s `tot - rec`).
    pub fn fpi_len(&self) -> u32 {
        self.blocks
            .iter()
            .filter_map(|b| b.image.as_ref())
            .map(|i| u32::from(i.len))
            .sum()
    }
    /// `pg_waldump`'s `rec` length: the total minus full-page images.
    pub fn rec_len(&self) -> u32 {
        self.total_len.saturating_sub(self.fpi_len())
    }
    /// Decodes the main data of the record kinds backup and recovery need.
    pub fn decode(&self) -> Result<crate::decode::RecordBody, crate::decode::DecodeError> {
        crate::decode::decode(self)
    }
}

/// The fixed header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub tot_len: u32,
    pub xid: u32,
    pub prev: Lsn,
    pub info: u8,
    pub rmid: u8,
    pub crc: u32,
}

impl RecordHeader {
    pub fn parse(b: &[u8]) -> Option<RecordHeader> {
        Some(RecordHeader {
            tot_len: le_u32(b, 0)?,
            xid: le_u32(b, 4)?,
            prev: Lsn(le_u64(b, 8)?),
            info: *b.get(16)?,
            rmid: *b.get(17)?,
            crc: le_u32(b, 20)?,
        })
    }
}

/// `ValidXLogRecord`'s CRC: the data after the header, then the header up to `xl_crc`.
pub fn record_crc(bytes: &[u8]) -> u32 {
    let body = bytes.get(SIZE_OF_XLOG_RECORD..).unwrap_or(&[]);
    let head = bytes.get(..20).unwrap_or(bytes);
    let c = crc32c::crc32c(body);
    crc32c::crc32c_append(c, head)
}

/// What `DecodeXLogRecord` extracts besides the header.
#[derive(Debug)]
pub(crate) struct Fragments {
    pub blocks: Vec<BlockRef>,
    pub origin: Option<u16>,
    pub toplevel_xid: Option<u32>,
    pub main_data: Range<usize>,
}

/// Parses the fragment headers of a whole record (`bytes.len() == xl_tot_len`), with every
/// cross-check of `DecodeXLogRecord`; the message on failure is xlogreader's.
pub(crate) fn parse_fragments(bytes: &[u8]) -> Result<Fragments, String> {
    let short = || "record with invalid length".to_string();
    let mut pos = SIZE_OF_XLOG_RECORD;
    let remaining_total = bytes
        .len()
        .checked_sub(SIZE_OF_XLOG_RECORD)
        .ok_or_else(short)?;
    let mut datatotal: usize = 0;
    let mut main_len: usize = 0;
    let mut blocks: Vec<BlockRef> = Vec::new();
    let mut origin = None;
    let mut toplevel_xid = None;
    let mut last_locator: Option<RelFileLocator> = None;
    let mut max_block_id: i32 = -1;
    // Per block: (image len, data len), for laying out the payloads afterwards.
    let take = |pos: &mut usize, n: usize| -> Result<Range<usize>, String> {
        let end = pos.checked_add(n).ok_or_else(short)?;
        if end > bytes.len() {
            return Err(short());
        }
        let r = *pos..end;
        *pos = end;
        Ok(r)
    };
    let u8_at = |r: Range<usize>| bytes.get(r.start).copied().ok_or_else(short);
    let u16_at = |r: Range<usize>| le_u16(bytes, r.start).ok_or_else(short);
    let u32_at = |r: Range<usize>| le_u32(bytes, r.start).ok_or_else(short);
    while remaining_total - (pos - SIZE_OF_XLOG_RECORD) > datatotal {
        let block_id = u8_at(take(&mut pos, 1)?)?;
        match block_id {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_len = usize::from(u8_at(take(&mut pos, 1)?)?);
                datatotal += main_len;
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                main_len = u32_at(take(&mut pos, 4)?)? as usize;
                datatotal = datatotal.saturating_add(main_len);
                break;
            }
            XLR_BLOCK_ID_ORIGIN => origin = Some(u16_at(take(&mut pos, 2)?)?),
            XLR_BLOCK_ID_TOPLEVEL_XID => toplevel_xid = Some(u32_at(take(&mut pos, 4)?)?),
            id if id <= XLR_MAX_BLOCK_ID => {
                if i32::from(id) <= max_block_id {
                    return Err(format!("out-of-order block_id {id}"));
                }
                max_block_id = i32::from(id);
                let fork_flags = u8_at(take(&mut pos, 1)?)?;
                let data_len = u16_at(take(&mut pos, 2)?)?;
                let has_data = fork_flags & BKPBLOCK_HAS_DATA != 0;
                if has_data && data_len == 0 {
                    return Err("BKPBLOCK_HAS_DATA set, but no data included".into());
                }
                if !has_data && data_len != 0 {
                    return Err(format!(
                        "BKPBLOCK_HAS_DATA not set, but data length is {data_len}"
                    ));
                }
                datatotal += usize::from(data_len);
                let mut image = None;
                if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    let len = u16_at(take(&mut pos, 2)?)?;
                    let hole_offset = u16_at(take(&mut pos, 2)?)?;
                    let info = u8_at(take(&mut pos, 1)?)?;
                    let compressed = info & BKPIMAGE_COMPRESSED != 0;
                    let hole_length = if compressed {
                        if info & BKPIMAGE_HAS_HOLE != 0 {
                            u16_at(take(&mut pos, 2)?)?
                        } else {
                            0
                        }
                    } else {
                        BLCKSZ.wrapping_sub(len)
                    };
                    datatotal += usize::from(len);
                    let has_hole = info & BKPIMAGE_HAS_HOLE != 0;
                    if has_hole && (hole_offset == 0 || hole_length == 0 || len == BLCKSZ) {
                        return Err(format!("BKPIMAGE_HAS_HOLE set, but hole offset {hole_offset} length {hole_length} block image length {len}"));
                    }
                    if !has_hole && (hole_offset != 0 || hole_length != 0) {
                        return Err(format!(
                            "BKPIMAGE_HAS_HOLE not set, but hole offset {hole_offset} length {hole_length}"
                        ));
                    }
                    if compressed && len == BLCKSZ {
                        return Err(format!(
                            "BKPIMAGE_COMPRESSED set, but block image length {len}"
                        ));
                    }
                    if !has_hole && !compressed && len != BLCKSZ {
                        return Err(format!("neither BKPIMAGE_HAS_HOLE nor BKPIMAGE_COMPRESSED set, but block image length is {len}"));
                    }
                    image = Some(BlockImage {
                        len,
                        hole_offset,
                        hole_length,
                        info,
                        data: 0..0,
                    });
                }
                let locator = if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    let r = take(&mut pos, 12)?;
                    let l = RelFileLocator {
                        spc_oid: u32_at(r.start..r.start + 4)?,
                        db_oid: u32_at(r.start + 4..r.start + 8)?,
                        rel_number: u32_at(r.start + 8..r.end)?,
                    };
                    last_locator = Some(l);
                    l
                } else {
                    last_locator
                        .ok_or_else(|| "BKPBLOCK_SAME_REL set but no previous rel".to_string())?
                };
                let block = u32_at(take(&mut pos, 4)?)?;
                blocks.push(BlockRef {
                    id,
                    locator,
                    fork: fork_flags & BKPBLOCK_FORK_MASK,
                    block: BlockNumber(block),
                    flags: fork_flags,
                    image,
                    data: 0..usize::from(data_len),
                });
            }
            id => return Err(format!("invalid block_id {id}")),
        }
    }
    if remaining_total - (pos - SIZE_OF_XLOG_RECORD) != datatotal {
        return Err(short());
    }
    // Payloads: per block its image then its data, then the main data.
    for b in &mut blocks {
        if let Some(img) = b.image.as_mut() {
            img.data = take(&mut pos, usize::from(img.len))?;
        }
        let n = b.data.end;
        b.data = take(&mut pos, n)?;
    }
    let main_data = take(&mut pos, main_len)?;
    Ok(Fragments {
        blocks,
        origin,
        toplevel_xid,
        main_data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(tot: u32) -> Vec<u8> {
        let mut v = vec![0u8; 24];
        v[0..4].copy_from_slice(&tot.to_le_bytes());
        v
    }

    #[test]
    fn block_refs_and_main_data() {
        // block 0: HAS_DATA fork main, 3 bytes; block 1: SAME_REL, HAS_IMAGE (full 8192? use hole)
        let mut r = header(0);
        r.push(0);
        r.push(BKPBLOCK_HAS_DATA);
        r.extend_from_slice(&3u16.to_le_bytes());
        for v in [1663u32, 5, 16384, 7] {
            r.extend_from_slice(&v.to_le_bytes());
        }
        r.push(1);
        r.push(BKPBLOCK_HAS_IMAGE | BKPBLOCK_SAME_REL | 2);
        r.extend_from_slice(&0u16.to_le_bytes());
        r.extend_from_slice(&100u16.to_le_bytes()); // len
        r.extend_from_slice(&50u16.to_le_bytes()); // hole offset
        r.push(BKPIMAGE_HAS_HOLE | BKPIMAGE_APPLY);
        r.extend_from_slice(&9u32.to_le_bytes());
        r.push(XLR_BLOCK_ID_DATA_SHORT);
        r.push(2);
        r.extend_from_slice(&[0xAA; 3]);
        r.extend_from_slice(&[0xBB; 100]);
        r.extend_from_slice(&[0xCC; 2]);
        let n = r.len() as u32;
        r[0..4].copy_from_slice(&n.to_le_bytes());
        let f = parse_fragments(&r).unwrap();
        assert_eq!(f.blocks.len(), 2);
        assert_eq!(f.blocks[1].locator.rel_number, 16384);
        assert_eq!(f.blocks[1].block, BlockNumber(9));
        assert_eq!(f.blocks[1].fork_number(), Some(ForkNumber::VisibilityMap));
        assert_eq!(f.blocks[1].image.as_ref().unwrap().hole_length, 8092);
        assert_eq!(&r[f.blocks[0].data.clone()], &[0xAA; 3]);
        assert_eq!(&r[f.main_data.clone()], &[0xCC; 2]);
        // Lengths must add up exactly.
        let mut longer = r.clone();
        longer.push(0);
        assert!(parse_fragments(&longer).is_err());
        // Out of order.
        let mut bad = r.clone();
        bad[24 + 1 + 2 + 1 + 16] = 0;
        assert!(parse_fragments(&bad).unwrap_err().contains("out-of-order"));
    }

    #[test]
    fn crc_is_data_then_header() {
        let mut r = header(26);
        r.extend_from_slice(&[XLR_BLOCK_ID_DATA_SHORT, 0]);
        let c = record_crc(&r);
        let mut manual = crc32c::crc32c(&r[24..]);
        manual = crc32c::crc32c_append(manual, &r[..20]);
        assert_eq!(c, manual);
    }
}
