//! `INCREMENTAL.*` files: header parsing and validation (format reference 7.1, 7.2).
//!
//! The reader works on the whole file as a byte slice (normally a memory map), so it allocates
//! nothing but the block list, whose length it checks against the segment size and against the
//! file's actual length before allocating.

use crate::copy::Source;
use crate::geometry::Geometry;

/// `INCREMENTAL_MAGIC`.
pub const INCREMENTAL_MAGIC: u32 = 0xD3AE_1F0D;
/// Name prefix of incremental files.
pub const INCREMENTAL_PREFIX: &str = "INCREMENTAL.";

/// The header of one incremental file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncrementalHeader {
    /// Minimum length of the reconstructed segment, in blocks, after clamping (see
    /// [`IncrementalHeader::clamped_from`]).
    pub truncation_block_length: u32,
    /// Segment-relative block numbers, strictly ascending.
    pub blocks: Vec<u32>,
    /// Offset of the first block image: the header rounded up to a multiple of BLCKSZ when
    /// there are blocks.
    pub header_len: u64,
    /// The stored truncation length when it exceeded the segment size and was clamped. Servers
    /// 17.0-17.7 and 18.0-18.1 can write such values after truncating a multi-segment relation;
    /// fixed servers write the clamped value, so clamping reproduces their backups.
    pub clamped_from: Option<u32>,
}

/// Why an incremental file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncrementalError {
    #[error(
        "file is {len} bytes, shorter than the 12-byte incremental header: the file is truncated"
    )]
    TooShort { len: u64 },
    #[error("bad incremental magic number (0x{found:x} not 0x{INCREMENTAL_MAGIC:x}): this is not an INCREMENTAL file{hint}")]
    BadMagic { found: u32, hint: &'static str },
    #[error("block count {count} in excess of segment size {relseg_size}")]
    TooManyBlocks { count: u32, relseg_size: u32 },
    #[error("file is {found} bytes but its header ({count} blocks) implies {expected}: the file is truncated or corrupt")]
    WrongLength {
        count: u32,
        expected: u64,
        found: u64,
    },
    #[error("block numbers are not strictly ascending: entry {index} is {block} after {previous} (duplicate or out-of-order block)")]
    Unsorted {
        index: usize,
        previous: u32,
        block: u32,
    },
    #[error("block {block} (entry {index}) is beyond the truncation block length {truncation_block_length}")]
    BeyondTruncation {
        index: usize,
        block: u32,
        truncation_block_length: u32,
    },
}

impl IncrementalHeader {
    /// Parses and validates the incremental file `data` (its whole content).
    ///
    /// Beyond what pg_combinebackup checks (magic, block count, short reads) this also refuses
    /// files whose length is not exactly header + blocks, block lists that are not strictly
    /// ascending, and blocks at or past the truncation length: the server writes none of these,
    /// and each would otherwise silently change the reconstructed file.
    pub fn parse(data: &[u8], geom: Geometry) -> Result<IncrementalHeader, IncrementalError> {
        Self::parse_prefix(data, data.len() as u64, geom)
    }

    /// Reads the bytes [`IncrementalHeader::parse_prefix`] needs from `src`: the 12-byte
    /// header and, when its count is plausible, the block list.
    pub fn read_head(src: &Source, geom: Geometry) -> crate::error::Result<Vec<u8>> {
        let head = src.read_prefix(12)?;
        if head.len() < 12 {
            return Ok(head);
        }
        let count = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        // The count is checked against the segment size before it sizes any read.
        if count == 0 || count > geom.relseg_size {
            return Ok(head);
        }
        src.read_prefix(12 + 4 * u64::from(count))
    }

    /// Validates a header given its first bytes (`head`, at least the 12-byte header and the
    /// block list when the file is that long) and the file's length.
    pub fn parse_prefix(
        data: &[u8],
        file_len: u64,
        geom: Geometry,
    ) -> Result<IncrementalHeader, IncrementalError> {
        let len = file_len;
        if data.len() < 12 {
            return Err(IncrementalError::TooShort { len });
        }
        let word = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        let magic = word(0);
        if magic != INCREMENTAL_MAGIC {
            let hint = if magic.swap_bytes() == INCREMENTAL_MAGIC {
                " (it was written by a big-endian server, which pgincr does not support)"
            } else {
                ""
            };
            return Err(IncrementalError::BadMagic { found: magic, hint });
        }
        let count = word(4);
        if count > geom.relseg_size {
            return Err(IncrementalError::TooManyBlocks {
                count,
                relseg_size: geom.relseg_size,
            });
        }
        let stored_t = word(8);
        let (t, clamped_from) = if stored_t > geom.relseg_size {
            (geom.relseg_size, Some(stored_t))
        } else {
            (stored_t, None)
        };
        let header_len = header_len(count, geom.blcksz);
        let expected = header_len + u64::from(count) * u64::from(geom.blcksz);
        if len != expected {
            return Err(IncrementalError::WrongLength {
                count,
                expected,
                found: len,
            });
        }
        // count <= relseg_size and the length check passed, so the list is inside `data`.
        let list = data
            .get(12..12 + count as usize * 4)
            .ok_or(IncrementalError::WrongLength {
                count,
                expected,
                found: data.len() as u64,
            })?;
        let mut blocks = Vec::with_capacity(count as usize);
        for (index, chunk) in list.chunks_exact(4).enumerate() {
            let block = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            if let Some(&previous) = blocks.last() {
                if block <= previous {
                    return Err(IncrementalError::Unsorted {
                        index,
                        previous,
                        block,
                    });
                }
            }
            if block >= t {
                return Err(IncrementalError::BeyondTruncation {
                    index,
                    block,
                    truncation_block_length: t,
                });
            }
            blocks.push(block);
        }
        Ok(IncrementalHeader {
            truncation_block_length: t,
            blocks,
            header_len,
            clamped_from,
        })
    }

    /// Byte offset of the i-th stored block image.
    pub fn block_offset(&self, i: usize, blcksz: u32) -> u64 {
        self.header_len + i as u64 * u64::from(blcksz)
    }

    /// Length of the reconstructed segment in blocks (`find_reconstructed_block_length`).
    pub fn reconstructed_length(&self) -> u32 {
        let past_last = self.blocks.last().map_or(0, |&b| b + 1);
        self.truncation_block_length.max(past_last)
    }
}

/// `GetIncrementalHeaderSize`: 12 + 4n bytes, rounded up to a multiple of BLCKSZ when n > 0.
pub fn header_len(count: u32, blcksz: u32) -> u64 {
    let raw = 12 + 4 * u64::from(count);
    let b = u64::from(blcksz);
    if count > 0 && raw % b != 0 {
        raw + (b - raw % b)
    } else {
        raw
    }
}

/// Builds an incremental file (tests, fuzz seeds): header, padding and the given block images.
pub fn build(truncation_block_length: u32, blocks: &[(u32, Vec<u8>)], blcksz: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&INCREMENTAL_MAGIC.to_le_bytes());
    out.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
    out.extend_from_slice(&truncation_block_length.to_le_bytes());
    for (b, _) in blocks {
        out.extend_from_slice(&b.to_le_bytes());
    }
    out.resize(header_len(blocks.len() as u32, blcksz) as usize, 0);
    for (_, image) in blocks {
        out.extend_from_slice(image);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Geometry = Geometry {
        blcksz: 8192,
        relseg_size: 131_072,
    };

    fn page(fill: u8) -> Vec<u8> {
        vec![fill; 8192]
    }

    #[test]
    fn parses_server_examples() {
        // global/INCREMENTAL.1261 from the format reference: no blocks, t = 1.
        let empty = [0x0d, 0x1f, 0xae, 0xd3, 0, 0, 0, 0, 1, 0, 0, 0];
        let h = IncrementalHeader::parse(&empty, G).unwrap();
        assert_eq!((h.truncation_block_length, h.header_len), (1, 12));
        assert_eq!(h.reconstructed_length(), 1);
        let one = build(15, &[(14, page(7))], 8192);
        assert_eq!(one.len(), 16384);
        assert_eq!(
            &one[..16],
            &[0x0d, 0x1f, 0xae, 0xd3, 1, 0, 0, 0, 15, 0, 0, 0, 14, 0, 0, 0]
        );
        let h = IncrementalHeader::parse(&one, G).unwrap();
        assert_eq!(h.blocks, vec![14]);
        assert_eq!(h.block_offset(0, 8192), 8192);
        assert_eq!(header_len(2045, 8192), 8192);
        assert_eq!(header_len(2046, 8192), 16384);
    }

    #[test]
    fn refuses_bad_files() {
        let good = build(10, &[(1, page(1)), (5, page(2))], 8192);
        let e = |d: &[u8]| IncrementalHeader::parse(d, G).unwrap_err();
        assert!(matches!(e(&good[..8]), IncrementalError::TooShort { .. }));
        assert!(matches!(
            e(&good[..good.len() - 1]),
            IncrementalError::WrongLength { .. }
        ));
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(e(&long), IncrementalError::WrongLength { .. }));
        let mut swapped = good.clone();
        swapped[..4].copy_from_slice(&INCREMENTAL_MAGIC.to_be_bytes());
        assert!(e(&swapped).to_string().contains("big-endian"));
        let mut many = good.clone();
        many[4..8].copy_from_slice(&200_000u32.to_le_bytes());
        assert!(matches!(e(&many), IncrementalError::TooManyBlocks { .. }));
        let dup = build(10, &[(5, page(1)), (5, page(2))], 8192);
        assert!(matches!(e(&dup), IncrementalError::Unsorted { .. }));
        let beyond = build(3, &[(1, page(1)), (5, page(2))], 8192);
        assert!(matches!(
            e(&beyond),
            IncrementalError::BeyondTruncation { block: 5, .. }
        ));
        // A huge declared count in a short file is refused before allocating.
        let mut lie = build(10, &[], 8192);
        lie[4..8].copy_from_slice(&131_072u32.to_le_bytes());
        assert!(matches!(e(&lie), IncrementalError::WrongLength { .. }));
    }

    #[test]
    fn clamps_old_server_truncation_lengths() {
        let f = build(200_000, &[(3, page(1))], 8192);
        let h = IncrementalHeader::parse(&f, G).unwrap();
        assert_eq!(h.truncation_block_length, 131_072);
        assert_eq!(h.clamped_from, Some(200_000));
    }
}
