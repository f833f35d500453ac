//! The in-memory block reference table, with PostgreSQL's exact update semantics.
//!
//! Mirrors `src/common/blkreftable.c`: per relation fork a *limit block* and the set of modified
//! blocks, split into chunks of 2^16 blocks, each either an array of 16-bit offsets (in the
//! order they were first marked) or a 4096-word bitmap. The representation is kept exactly as
//! the server keeps it, so that [`BlockRefTable::to_summary_file`] produces the bytes the server
//! would write after the same sequence of calls.

use std::collections::BTreeMap;

use pgincr_types::{ForkNumber, RelFileLocator, INVALID_BLOCK_NUMBER};

use crate::file::SummaryFile;

/// Blocks covered by one chunk (`BLOCKS_PER_CHUNK`).
const BLOCKS_PER_CHUNK: u32 = 1 << 16;
/// Chunk usage value that marks a bitmap chunk (`MAX_ENTRIES_PER_CHUNK`), also its word count.
pub(crate) const MAX_ENTRIES_PER_CHUNK: u16 = 4096;
/// Chunks a fork can have: block numbers are 32-bit, so chunk numbers are 16-bit.
pub(crate) const MAX_CHUNKS: u32 = 1 << 16;
/// Bitmap words of a bitmap chunk.
const BITMAP_WORDS: usize = MAX_ENTRIES_PER_CHUNK as usize;

/// Sets bit `o` of a bitmap chunk. `o / 16 < BITMAP_WORDS` for every `u16`, so the word always
/// exists (and the compiler drops the check).
fn set_bit(words: &mut [u16; BITMAP_WORDS], o: u16) {
    if let Some(w) = words.get_mut(usize::from(o / 16)) {
        *w |= 1 << (o % 16);
    }
}

/// A relation fork: the key of a block reference table. `Ord` is the on-disk entry order
/// (tablespace, database, relfilenumber, fork).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockRefKey {
    pub rlocator: RelFileLocator,
    pub fork: ForkNumber,
}

impl BlockRefKey {
    pub fn new(spc_oid: u32, db_oid: u32, rel_number: u32, fork: ForkNumber) -> Self {
        BlockRefKey {
            rlocator: RelFileLocator {
                spc_oid,
                db_oid,
                rel_number,
            },
            fork,
        }
    }
}

/// One chunk of 2^16 blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Offsets in first-marked order, unique, fewer than 4096 of them. Empty means unused.
    Array(Vec<u16>),
    /// Bit `i % 16` of word `i / 16` is offset `i`.
    Bitmap(Box<[u16; BITMAP_WORDS]>),
}

impl Chunk {
    /// An all-clear bitmap chunk.
    pub fn empty_bitmap() -> Chunk {
        Chunk::Bitmap(Box::new([0; BITMAP_WORDS]))
    }

    /// The `chunk_usage` value stored on disk: the array length, or 4096 for a bitmap.
    pub fn usage(&self) -> u16 {
        match self {
            // Arrays hold at most 4095 entries by construction (and 4096 when read from a file
            // would have been a bitmap), so this never truncates.
            Chunk::Array(v) => v.len() as u16,
            Chunk::Bitmap(_) => MAX_ENTRIES_PER_CHUNK,
        }
    }

    /// Calls `f` with every offset, in stored order (ascending for a bitmap).
    fn for_each_offset(&self, mut f: impl FnMut(u16)) {
        match self {
            Chunk::Array(v) => v.iter().for_each(|&o| f(o)),
            Chunk::Bitmap(words) => {
                for (w, &word) in words.iter().enumerate() {
                    let mut bits = word;
                    while bits != 0 {
                        let b = bits.trailing_zeros() as u16;
                        f((w as u16) * 16 + b);
                        bits &= bits - 1;
                    }
                }
            }
        }
    }

    /// Appends this chunk's offsets, ascending, to `out` as absolute block numbers.
    fn push_sorted_blocks(&self, chunkno: u32, out: &mut Vec<u32>) {
        let base = chunkno * BLOCKS_PER_CHUNK;
        let from = out.len();
        self.for_each_offset(|o| out.push(base + u32::from(o)));
        if matches!(self, Chunk::Array(_)) {
            if let Some(pushed) = out.get_mut(from..) {
                pushed.sort_unstable();
            }
        }
    }
}

/// The state of one relation fork (`BlockRefTableEntry`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRefEntry {
    limit_block: u32,
    /// Index = chunk number. May end in unused chunks; writers trim those as the server does.
    chunks: Vec<Chunk>,
}

impl Default for BlockRefEntry {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockRefEntry {
    /// No limit (`InvalidBlockNumber`), no blocks (`CreateBlockRefTableEntry`).
    pub fn new() -> Self {
        Self::with_limit(INVALID_BLOCK_NUMBER)
    }

    /// The given limit, no blocks.
    pub fn with_limit(limit_block: u32) -> Self {
        BlockRefEntry {
            limit_block,
            chunks: Vec::new(),
        }
    }

    /// An entry exactly as stored in a file: `chunks.len()` is the file's `nchunks`.
    /// Callers guarantee at most [`MAX_CHUNKS`] chunks and arrays of at most 4095 offsets.
    pub(crate) fn from_raw(limit_block: u32, chunks: Vec<Chunk>) -> Self {
        BlockRefEntry {
            limit_block,
            chunks,
        }
    }

    /// The limit block; `INVALID_BLOCK_NUMBER` means none.
    pub fn limit_block(&self) -> u32 {
        self.limit_block
    }

    /// The chunks, index = chunk number.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// `nchunks` as the server writes it: trailing unused chunks trimmed.
    pub(crate) fn trimmed_nchunks(&self) -> usize {
        self.chunks
            .iter()
            .rposition(|c| c.usage() != 0)
            .map_or(0, |i| i + 1)
    }

    /// `BlockRefTableEntrySetLimitBlock`: lower the limit (never raise it) and forget the
    /// recorded blocks at or above the new limit. A bitmap chunk stays a bitmap.
    pub fn set_limit_block(&mut self, limit_block: u32) {
        if limit_block >= self.limit_block {
            return;
        }
        self.limit_block = limit_block;
        let chunkno = (limit_block / BLOCKS_PER_CHUNK) as usize;
        let offset = limit_block % BLOCKS_PER_CHUNK;
        let Some((chunk, later)) = self
            .chunks
            .get_mut(chunkno..)
            .and_then(<[Chunk]>::split_first_mut)
        else {
            return;
        };
        for c in later {
            *c = Chunk::Array(Vec::new());
        }
        match chunk {
            Chunk::Bitmap(words) => {
                // Keep the bits below `offset`: the low bits of its word, the words before it.
                let (word, bit) = ((offset / 16) as usize, offset % 16);
                if let Some((partial, above)) =
                    words.get_mut(word..).and_then(<[u16]>::split_first_mut)
                {
                    *partial &= (1u16 << bit) - 1;
                    above.fill(0);
                }
            }
            Chunk::Array(v) => v.retain(|&o| u32::from(o) < offset),
        }
    }

    /// `BlockRefTableEntryMarkBlockModified`: record `block`. The 4096th distinct offset of a
    /// chunk turns it into a bitmap.
    pub fn mark_block_modified(&mut self, block: u32) {
        let chunkno = (block / BLOCKS_PER_CHUNK) as usize;
        let offset = (block % BLOCKS_PER_CHUNK) as u16;
        if chunkno >= self.chunks.len() {
            self.chunks
                .resize_with(chunkno + 1, || Chunk::Array(Vec::new()));
        }
        // Present: the chunks were extended to `chunkno` just above.
        let Some(chunk) = self.chunks.get_mut(chunkno) else {
            return;
        };
        match chunk {
            Chunk::Bitmap(words) => set_bit(words, offset),
            Chunk::Array(v) => {
                if v.contains(&offset) {
                    return;
                }
                if v.len() == usize::from(MAX_ENTRIES_PER_CHUNK) - 1 {
                    let mut words = Box::new([0u16; BITMAP_WORDS]);
                    for &o in v.iter().chain(std::iter::once(&offset)) {
                        set_bit(&mut words, o);
                    }
                    *chunk = Chunk::Bitmap(words);
                } else {
                    v.push(offset);
                }
            }
        }
    }

    /// Calls `f` with every recorded block in stored order (per chunk: array order, or
    /// ascending for a bitmap), the order the server's reader returns them in.
    pub fn for_each_block(&self, mut f: impl FnMut(u32)) {
        for (chunkno, chunk) in self.chunks.iter().enumerate() {
            let base = chunkno as u32 * BLOCKS_PER_CHUNK;
            chunk.for_each_offset(|o| f(base + u32::from(o)));
        }
    }

    /// All recorded blocks, ascending (duplicates, impossible in server-written files, kept).
    pub fn sorted_blocks(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for (chunkno, chunk) in self.chunks.iter().enumerate() {
            chunk.push_sorted_blocks(chunkno as u32, &mut out);
        }
        out
    }

    /// Recorded blocks in `[start, stop)`, ascending (`BlockRefTableEntryGetBlocks` + sort).
    pub(crate) fn blocks_in(&self, start: u32, stop: u32) -> Vec<u32> {
        let mut out = Vec::new();
        if start >= stop {
            return out;
        }
        let first = (start / BLOCKS_PER_CHUNK) as usize;
        let last = ((stop - 1) / BLOCKS_PER_CHUNK) as usize;
        for (chunkno, chunk) in self.chunks.iter().enumerate().take(last + 1).skip(first) {
            chunk.push_sorted_blocks(chunkno as u32, &mut out);
        }
        out.retain(|&b| b >= start && b < stop);
        out
    }

    /// Number of recorded blocks.
    pub fn block_count(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| match c {
                Chunk::Array(v) => v.len() as u64,
                Chunk::Bitmap(w) => w.iter().map(|x| u64::from(x.count_ones())).sum(),
            })
            .sum()
    }
}

/// A block reference table: every relation fork touched in some LSN range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockRefTable {
    entries: BTreeMap<BlockRefKey, BlockRefEntry>,
}

impl BlockRefTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// `BlockRefTableSetLimitBlock`: a new fork takes `limit_block` as given (even "no limit");
    /// an existing one only ever lowers its limit.
    pub fn set_limit_block(&mut self, key: BlockRefKey, limit_block: u32) {
        match self.entries.get_mut(&key) {
            Some(e) => e.set_limit_block(limit_block),
            None => {
                self.entries
                    .insert(key, BlockRefEntry::with_limit(limit_block));
            }
        }
    }

    /// `BlockRefTableMarkBlockModified`: a new fork starts with no limit.
    pub fn mark_block_modified(&mut self, key: BlockRefKey, block: u32) {
        self.entries
            .entry(key)
            .or_default()
            .mark_block_modified(block);
    }

    /// Merges one summary entry as the server does when preparing an incremental backup: set
    /// the limit, then mark each block in stored order.
    pub(crate) fn merge_entry(&mut self, key: BlockRefKey, entry: &BlockRefEntry) {
        self.set_limit_block(key, entry.limit_block());
        let e = self.entries.get_mut(&key);
        if let Some(e) = e {
            entry.for_each_block(|b| e.mark_block_modified(b));
        }
    }

    /// Merges every entry of a summary file, in file order.
    pub(crate) fn merge_file(&mut self, file: &SummaryFile) {
        for (key, entry) in &file.entries {
            self.merge_entry(*key, entry);
        }
    }

    pub fn get(&self, key: &BlockRefKey) -> Option<&BlockRefEntry> {
        self.entries.get(key)
    }

    /// Entries in on-disk order.
    pub fn iter(&self) -> impl Iterator<Item = (&BlockRefKey, &BlockRefEntry)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The file the server would write for this table (`WriteBlockRefTable`): entries sorted,
    /// trailing unused chunks trimmed.
    pub fn to_summary_file(&self) -> SummaryFile {
        SummaryFile {
            entries: self
                .entries
                .iter()
                .map(|(k, e)| {
                    let mut e = e.clone();
                    e.chunks.truncate(e.trimmed_nchunks());
                    (*k, e)
                })
                .collect(),
        }
    }

    /// Same blocks and limits per fork, whatever the chunk representation.
    pub fn same_contents(&self, other: &BlockRefTable) -> bool {
        self.entries.len() == other.entries.len()
            && self.entries.iter().zip(other.entries.iter()).all(|(a, b)| {
                a.0 == b.0
                    && a.1.limit_block == b.1.limit_block
                    && a.1.sorted_blocks() == b.1.sorted_blocks()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rel: u32) -> BlockRefKey {
        BlockRefKey::new(1663, 5, rel, ForkNumber::Main)
    }

    #[test]
    fn limit_forgets_blocks_at_or_above_it() {
        let mut e = BlockRefEntry::new();
        for b in [7, 3, 9, 70_000, 1] {
            e.mark_block_modified(b);
        }
        e.set_limit_block(8);
        assert_eq!(e.limit_block(), 8);
        assert_eq!(e.chunks()[0], Chunk::Array(vec![7, 3, 1]));
        assert_eq!(e.chunks()[1], Chunk::Array(vec![]));
        assert_eq!(e.trimmed_nchunks(), 1);
        // A higher limit is ignored; later blocks above the limit mean re-extension.
        e.set_limit_block(100);
        e.mark_block_modified(50);
        assert_eq!(e.limit_block(), 8);
        assert_eq!(e.sorted_blocks(), vec![1, 3, 7, 50]);
    }

    #[test]
    fn new_key_takes_limit_as_given() {
        let mut t = BlockRefTable::new();
        t.set_limit_block(key(1), INVALID_BLOCK_NUMBER);
        t.set_limit_block(key(2), 10);
        t.set_limit_block(key(2), 20);
        t.mark_block_modified(key(3), 4);
        assert_eq!(t.get(&key(1)).unwrap().limit_block(), INVALID_BLOCK_NUMBER);
        assert_eq!(t.get(&key(2)).unwrap().limit_block(), 10);
        assert_eq!(t.get(&key(3)).unwrap().limit_block(), INVALID_BLOCK_NUMBER);
    }

    #[test]
    fn array_becomes_bitmap_at_4096_and_bitmap_survives_truncation() {
        let mut e = BlockRefEntry::new();
        for b in (0..4095).rev() {
            e.mark_block_modified(b);
        }
        assert_eq!(e.chunks()[0].usage(), 4095);
        e.mark_block_modified(3); // duplicate: no change
        assert_eq!(e.chunks()[0].usage(), 4095);
        e.mark_block_modified(60_000);
        assert_eq!(e.chunks()[0].usage(), MAX_ENTRIES_PER_CHUNK);
        assert_eq!(e.block_count(), 4096);
        e.set_limit_block(0);
        // Like the server: still a bitmap, now with no bits set.
        assert_eq!(e.chunks()[0], Chunk::empty_bitmap());
        assert_eq!(e.trimmed_nchunks(), 1);
        assert!(e.sorted_blocks().is_empty());
    }

    #[test]
    fn blocks_in_range() {
        let mut e = BlockRefEntry::new();
        for b in [131_072 + 5, 3, 131_071, 131_072, 200_000] {
            e.mark_block_modified(b);
        }
        assert_eq!(
            e.blocks_in(131_072, 262_144),
            vec![131_072, 131_077, 200_000]
        );
        assert_eq!(e.blocks_in(0, 131_072), vec![3, 131_071]);
        assert_eq!(e.blocks_in(4, 4), Vec::<u32>::new());
        assert_eq!(e.blocks_in(0, u32::MAX).len(), 5);
    }

    #[test]
    fn merge_order_matters() {
        let mut a = BlockRefEntry::new();
        a.mark_block_modified(10);
        let b = BlockRefEntry::with_limit(5);
        let mut t = BlockRefTable::new();
        t.merge_entry(key(1), &a);
        t.merge_entry(key(1), &b);
        assert!(t.get(&key(1)).unwrap().sorted_blocks().is_empty());
        let mut t = BlockRefTable::new();
        t.merge_entry(key(1), &b);
        t.merge_entry(key(1), &a);
        assert_eq!(t.get(&key(1)).unwrap().sorted_blocks(), vec![10]);
        assert_eq!(t.get(&key(1)).unwrap().limit_block(), 5);
    }
}
