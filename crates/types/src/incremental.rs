//! `INCREMENTAL.*` files: the header, its validation and the size formula (format reference
//! 7.1-7.3), shared by the combiner (which reads them) and the size estimate (which predicts
//! them).
//!
//! The reader works on the file's first bytes and its length, so it allocates nothing but the
//! block list, whose length it checks against the segment size and against the file's actual
//! length before allocating.

use crate::control::{BlockSize, RelGeometry};

/// `INCREMENTAL_MAGIC`.
const INCREMENTAL_MAGIC: u32 = 0xD3AE_1F0D;
/// Name prefix of incremental files.
pub const INCREMENTAL_PREFIX: &str = "INCREMENTAL.";
/// `MaxBlockNumber`: the highest block number a relation fork can have (`InvalidBlockNumber`
/// minus one), so also the highest length a truncation can leave it at.
const MAX_BLOCK_NUMBER: u32 = 0xFFFF_FFFE;
/// Bytes before the block list: magic, block count, truncation block length.
const FIXED_HEADER_LEN: u64 = 12;

/// The header of one incremental file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncrementalHeader {
    /// Minimum length of the reconstructed segment, in blocks, after clamping (see
    /// [`IncrementalHeader::clamped_from`]). Never above the segment size.
    pub truncation_block_length: u32,
    /// Segment-relative block numbers, strictly ascending, all below
    /// `truncation_block_length`.
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
    /// Above the segment size and not what an unfixed server can write either: the stored
    /// value, taken as a relation length from the start of this segment, passes
    /// `MaxBlockNumber`.
    #[error("truncation block length {stored} in excess of segment size {relseg_size}, and larger than any relation of segment {segno} can be (segment start + length > MaxBlockNumber {MAX_BLOCK_NUMBER}): the file is corrupt")]
    TruncationTooLarge {
        stored: u32,
        relseg_size: u32,
        segno: u32,
    },
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

/// Where [`IncrementalHeader::read_head`] reads from: anything that knows its length and can
/// hand out its first bytes (a file, a member of a tar archive).
pub trait IncrementalSource {
    type Error;
    /// The file's length in bytes.
    fn source_len(&self) -> u64;
    /// The first `n` bytes, or all of them if the file is shorter.
    fn read_prefix(&self, n: u64) -> Result<Vec<u8>, Self::Error>;
}

impl IncrementalSource for [u8] {
    type Error = std::convert::Infallible;
    fn source_len(&self) -> u64 {
        self.len() as u64
    }
    fn read_prefix(&self, n: u64) -> Result<Vec<u8>, Self::Error> {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        Ok(self.iter().take(n).copied().collect())
    }
}

/// The words of the fixed header (magic, block count, truncation length), or `None` when
/// `data` is shorter than the header.
fn fixed_words(data: &[u8]) -> Option<[u32; 3]> {
    let &[m0, m1, m2, m3, c0, c1, c2, c3, t0, t1, t2, t3] = data.first_chunk::<12>()?;
    Some([
        u32::from_le_bytes([m0, m1, m2, m3]),
        u32::from_le_bytes([c0, c1, c2, c3]),
        u32::from_le_bytes([t0, t1, t2, t3]),
    ])
}

/// The truncation length a reader should use for a stored value `stored` of a file of segment
/// `segno`: the value itself when it is at most the segment size; clamped to the segment size
/// when it is what an unfixed server writes after truncating a relation of more than one
/// segment; otherwise refused.
///
/// Unfixed servers (`GetFileBackupMethod` before 17.8 / 18.2) stored
/// `max(size / BLCKSZ, limit_block - segno * RELSEG_SIZE)`, where `limit_block` is the length
/// the WAL summary recorded for the truncated relation: a valid `BlockNumber` (never
/// `InvalidBlockNumber`, which means "no limit"), so at most `MaxBlockNumber`, and above the
/// segment's first block. A stored value above the segment size therefore always satisfies
/// `segno * RELSEG_SIZE + stored <= MaxBlockNumber`; anything larger (0xFFFFFFFF, say) cannot
/// come from a server and is refused, as pg_combinebackup refuses every value above the
/// segment size.
fn clamp_truncation_length(
    stored: u32,
    geom: RelGeometry,
    segno: u32,
) -> Result<(u32, Option<u32>), IncrementalError> {
    let relseg_size = geom.relseg_size.get();
    if stored <= relseg_size {
        return Ok((stored, None));
    }
    let segment_start = u64::from(segno) * u64::from(relseg_size);
    if segment_start + u64::from(stored) > u64::from(MAX_BLOCK_NUMBER) {
        return Err(IncrementalError::TruncationTooLarge {
            stored,
            relseg_size,
            segno,
        });
    }
    Ok((relseg_size, Some(stored)))
}

impl IncrementalHeader {
    /// Parses and validates the incremental file `data` (its whole content).
    ///
    /// Beyond what pg_combinebackup checks (magic, block count, short reads) this also refuses
    /// files whose length is not exactly header + blocks, block lists that are not strictly
    /// ascending, and blocks at or past the truncation length: the server writes none of these,
    /// and each would otherwise silently change the reconstructed file.
    pub fn parse(
        data: &[u8],
        geom: impl Into<RelGeometry>,
    ) -> Result<IncrementalHeader, IncrementalError> {
        Self::parse_prefix(data, data.len() as u64, geom)
    }

    /// Reads the bytes [`IncrementalHeader::parse_prefix`] needs from `src`: the 12-byte
    /// header and, when its count is plausible and the file has the length the count implies,
    /// the block list. Never more than the file holds.
    pub fn read_head<S: IncrementalSource + ?Sized>(
        src: &S,
        geom: impl Into<RelGeometry>,
    ) -> Result<Vec<u8>, S::Error> {
        let geom = geom.into();
        let head = src.read_prefix(FIXED_HEADER_LEN)?;
        let Some([_, count, _]) = fixed_words(&head) else {
            return Ok(head);
        };
        // The count is checked against the segment size and the file's length before it sizes
        // any read; parse_prefix then reports what is wrong.
        if count == 0
            || count > geom.relseg_size.get()
            || src.source_len() != file_size(count, geom.blcksz)
        {
            return Ok(head);
        }
        src.read_prefix(FIXED_HEADER_LEN + 4 * u64::from(count))
    }

    /// Validates a header given its first bytes (`data`: at least the 12-byte header and the
    /// block list when the file is that long) and the file's length. The segment number is
    /// not known here, so a clamped truncation length is bounded as for segment 0; callers
    /// that know it use [`IncrementalHeader::parse_segment_prefix`].
    pub fn parse_prefix(
        data: &[u8],
        file_len: u64,
        geom: impl Into<RelGeometry>,
    ) -> Result<IncrementalHeader, IncrementalError> {
        Self::parse_segment_prefix(data, file_len, geom.into(), 0)
    }

    /// [`IncrementalHeader::parse_prefix`] for a file of segment `segno`.
    pub fn parse_segment_prefix(
        data: &[u8],
        file_len: u64,
        geom: RelGeometry,
        segno: u32,
    ) -> Result<IncrementalHeader, IncrementalError> {
        let len = file_len;
        let Some([magic, count, stored_truncation]) = fixed_words(data) else {
            return Err(IncrementalError::TooShort { len });
        };
        if magic != INCREMENTAL_MAGIC {
            let hint = if magic.swap_bytes() == INCREMENTAL_MAGIC {
                " (it was written by a big-endian server, which pgincr does not support)"
            } else {
                ""
            };
            return Err(IncrementalError::BadMagic { found: magic, hint });
        }
        let relseg_size = geom.relseg_size.get();
        if count > relseg_size {
            return Err(IncrementalError::TooManyBlocks { count, relseg_size });
        }
        let (t, clamped_from) = clamp_truncation_length(stored_truncation, geom, segno)?;
        let header_len = header_len(count, geom.blcksz);
        let expected = file_size(count, geom.blcksz);
        if len != expected {
            return Err(IncrementalError::WrongLength {
                count,
                expected,
                found: len,
            });
        }
        // count <= relseg_size and the length check passed, so the list is inside `data`
        // whenever the caller passed it.
        let list_end = FIXED_HEADER_LEN as usize + count as usize * 4;
        let list =
            data.get(FIXED_HEADER_LEN as usize..list_end)
                .ok_or(IncrementalError::WrongLength {
                    count,
                    expected,
                    found: data.len() as u64,
                })?;
        let mut blocks = Vec::with_capacity(count as usize);
        for (index, chunk) in list.as_chunks::<4>().0.iter().enumerate() {
            let block = u32::from_le_bytes(*chunk);
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
    pub fn block_offset(&self, i: usize, blcksz: impl Into<u64>) -> u64 {
        self.header_len + i as u64 * blcksz.into()
    }

    /// Length of the reconstructed segment in blocks (`find_reconstructed_block_length`).
    /// Every block is below the truncation length and that is at most the segment size, so
    /// this never exceeds the segment size.
    pub fn reconstructed_length(&self) -> u32 {
        let past_last = self.blocks.last().map_or(0, |&b| b + 1);
        self.truncation_block_length.max(past_last)
    }
}

/// `GetIncrementalHeaderSize`: 12 + 4n bytes, rounded up to a multiple of BLCKSZ when n > 0.
fn header_len(count: u32, blcksz: BlockSize) -> u64 {
    let raw = FIXED_HEADER_LEN + 4 * u64::from(count);
    let b = blcksz.as_u64();
    if count > 0 && !raw.is_multiple_of(b) {
        raw + (b - raw % b)
    } else {
        raw
    }
}

/// `GetIncrementalFileSize`: the header plus `count` block images.
pub fn file_size(count: u32, blcksz: BlockSize) -> u64 {
    header_len(count, blcksz) + u64::from(count) * blcksz.as_u64()
}

/// Builds an incremental file (tests, fuzz seeds): header, padding and the given block images.
/// A block size PostgreSQL cannot have is treated as 8192.
pub fn build(truncation_block_length: u32, blocks: &[(u32, Vec<u8>)], blcksz: u32) -> Vec<u8> {
    let bs = BlockSize::new(blcksz).unwrap_or(BlockSize::DEFAULT);
    let mut out = Vec::new();
    out.extend_from_slice(&INCREMENTAL_MAGIC.to_le_bytes());
    out.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
    out.extend_from_slice(&truncation_block_length.to_le_bytes());
    for (b, _) in blocks {
        out.extend_from_slice(&b.to_le_bytes());
    }
    out.resize(header_len(blocks.len() as u32, bs) as usize, 0);
    for (_, image) in blocks {
        out.extend_from_slice(image);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::RelSegSize;

    const G: RelGeometry = RelGeometry::DEFAULT;
    const B: BlockSize = BlockSize::DEFAULT;

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
        assert_eq!(h.block_offset(0, B), 8192);
        assert_eq!(header_len(2045, B), 8192);
        assert_eq!(header_len(2046, B), 16384);
        assert_eq!(file_size(0, B), 12);
        assert_eq!(file_size(1, B), 16384);
        assert_eq!(file_size(2046, B), 16384 + 2046 * 8192);
        // read_head reads the list only from a file of the right length.
        let head = IncrementalHeader::read_head(&one[..], G).unwrap();
        assert_eq!(head.len(), 16);
        let head = IncrementalHeader::read_head(&one[..100], G).unwrap();
        assert_eq!(head.len(), 12);
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
        // The largest relation length there is, from segment 0: still a server's value.
        let f = build(MAX_BLOCK_NUMBER, &[], 8192);
        let h = IncrementalHeader::parse(&f, G).unwrap();
        assert_eq!(h.reconstructed_length(), 131_072);
    }

    #[test]
    fn refuses_truncation_lengths_no_server_writes() {
        // 0xFFFFFFFF is InvalidBlockNumber, never a relation length: refused, not clamped,
        // whatever the segment size (it used to size a 32 GiB block map with a crafted
        // pg_control whose segment size was 0xFFFFFFFF).
        let f = build(u32::MAX, &[], 8192);
        for relseg in [4, 131_072, i32::MAX as u32] {
            let g = RelGeometry::new(B, RelSegSize::new(relseg).unwrap());
            let e = IncrementalHeader::parse(&f, g).unwrap_err();
            assert!(
                matches!(
                    e,
                    IncrementalError::TruncationTooLarge {
                        stored: u32::MAX,
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("in excess of segment size"));
        }
        // Segment 3 of a 131072-block relation starts at block 393216: a stored length that
        // would end past MaxBlockNumber from there cannot be a relation's.
        let start = 3 * 131_072u32;
        let ok = MAX_BLOCK_NUMBER - start;
        let f = build(ok, &[], 8192);
        let h = IncrementalHeader::parse_segment_prefix(&f, 12, G, 3).unwrap();
        assert_eq!(h.clamped_from, Some(ok));
        let f = build(ok + 1, &[], 8192);
        assert!(matches!(
            IncrementalHeader::parse_segment_prefix(&f, 12, G, 3),
            Err(IncrementalError::TruncationTooLarge { segno: 3, .. })
        ));
        assert_eq!(clamp_truncation_length(7, G, 9).unwrap(), (7, None));
    }
}
