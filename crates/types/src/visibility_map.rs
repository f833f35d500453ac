//! The visibility map fork (`src/backend/access/heap/visibilitymap.c`): after the standard
//! page header, two bits per heap block, four heap blocks per byte, lowest bits first.
//!
//! Bit 0 of a pair is all-visible, bit 1 all-frozen; all-frozen is only valid together with
//! all-visible. Clearing bits is always safe (VACUUM sets them again); a bit set for a heap
//! page that has changed is not: index-only scans then skip the heap and return dead rows.

use crate::page::SIZE_OF_PAGE_HEADER;

pub const ALL_VISIBLE: u8 = 0x01;
pub const ALL_FROZEN: u8 = 0x02;
pub const VALID_BITS: u8 = ALL_VISIBLE | ALL_FROZEN;
const BITS_PER_HEAPBLOCK: u32 = 2;
const HEAPBLOCKS_PER_BYTE: u32 = 4;
/// The largest `BLCKSZ` PostgreSQL can be built with.
const MAX_BLCKSZ: u32 = 32_768;
/// Where the map starts: `MAXALIGN(SizeOfPageHeaderData)`, 24 on every 64-bit platform.
const MAP_OFFSET: usize = SIZE_OF_PAGE_HEADER;

/// Addressing within the visibility map of a cluster with block size `blcksz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmLayout {
    blcksz: u32,
}

impl VmLayout {
    /// `None` for a block size too small to hold a map, or larger than PostgreSQL's largest
    /// (32 KiB), which would overflow the per-page block count.
    pub fn new(blcksz: u32) -> Option<VmLayout> {
        (blcksz as usize > MAP_OFFSET && blcksz <= MAX_BLCKSZ).then_some(VmLayout { blcksz })
    }

    /// `MAPSIZE`: bytes of map on one page.
    fn map_size(self) -> u32 {
        self.blcksz - MAP_OFFSET as u32
    }

    /// `HEAPBLOCKS_PER_PAGE`: heap blocks one map page covers (32,672 with 8 kB pages).
    pub fn heap_blocks_per_page(self) -> u32 {
        self.map_size() * HEAPBLOCKS_PER_BYTE
    }

    /// `HEAPBLK_TO_MAPBLOCK`.
    pub fn map_block(self, heap_block: u32) -> u32 {
        heap_block / self.heap_blocks_per_page()
    }

    /// `visibilitymap_truncation_length`: how many map pages a heap of `heap_blocks` blocks
    /// has after `visibilitymap_prepare_truncate`, the size a map of that heap never exceeds.
    pub fn truncation_length(self, heap_blocks: u32) -> u32 {
        let per_page = self.heap_blocks_per_page();
        heap_blocks.div_ceil(per_page)
    }

    /// Byte offset within a map page and bit shift of `heap_block`'s pair of bits.
    fn position(self, heap_block: u32) -> (usize, u32) {
        let in_page = heap_block % self.heap_blocks_per_page();
        (
            MAP_OFFSET + (in_page / HEAPBLOCKS_PER_BYTE) as usize,
            (in_page % HEAPBLOCKS_PER_BYTE) * BITS_PER_HEAPBLOCK,
        )
    }

    /// The bits of `heap_block` on its map page `page` (0 if the page is too short).
    pub fn bits(self, page: &[u8], heap_block: u32) -> u8 {
        let (byte, shift) = self.position(heap_block);
        page.get(byte).map_or(0, |b| (b >> shift) & VALID_BITS)
    }

    /// Clears `mask` of `heap_block`'s bits on `page`; returns the bits that were set and are
    /// now clear.
    pub fn clear(self, page: &mut [u8], heap_block: u32, mask: u8) -> u8 {
        let (byte, shift) = self.position(heap_block);
        let Some(b) = page.get_mut(byte) else {
            return 0;
        };
        let cleared = (*b >> shift) & mask & VALID_BITS;
        *b &= !(cleared << shift);
        cleared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_8k_pages() {
        let vm = VmLayout::new(8192).unwrap();
        assert_eq!(vm.heap_blocks_per_page(), 32_672);
        assert_eq!(vm.map_block(32_671), 0);
        assert_eq!(vm.map_block(32_672), 1);
        assert_eq!(vm.truncation_length(0), 0);
        assert_eq!(vm.truncation_length(1), 1);
        assert_eq!(vm.truncation_length(32_672), 1);
        assert_eq!(vm.truncation_length(32_673), 2);
        // A 1.2 GB heap (the VM-size bug's example) needs 5 map pages, not 150,000.
        assert_eq!(vm.truncation_length(150_000), 5);
        assert!(VmLayout::new(16).is_none());
    }

    #[test]
    fn bits_and_clearing() {
        let vm = VmLayout::new(8192).unwrap();
        let mut page = vec![0u8; 8192];
        // The real map page of pg_class in testdata starts ff ff ff 0f: 14 blocks all-visible
        // and all-frozen.
        page[24..28].copy_from_slice(&[0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(vm.bits(&page, 0), ALL_VISIBLE | ALL_FROZEN);
        assert_eq!(vm.bits(&page, 13), ALL_VISIBLE | ALL_FROZEN);
        assert_eq!(vm.bits(&page, 14), 0);
        assert_eq!(vm.clear(&mut page, 5, ALL_FROZEN), ALL_FROZEN);
        assert_eq!(vm.bits(&page, 5), ALL_VISIBLE);
        assert_eq!(vm.clear(&mut page, 5, ALL_FROZEN), 0);
        assert_eq!(vm.clear(&mut page, 13, VALID_BITS), VALID_BITS);
        assert_eq!(page[24..28], [0xff, 0xf7, 0xff, 0x03]);
        // Block 32,672 + 1 lives on the next page: same position, other page.
        assert_eq!(vm.bits(&page, 32_673), VALID_BITS);
        assert_eq!(vm.clear(&mut page[..10], 0, VALID_BITS), 0);
    }

    /// Found writing the `pages` fuzz target: a block size above 1 GiB overflowed
    /// `heap_blocks_per_page` (a panic with overflow checks, a wrong layout without).
    #[test]
    fn refuses_impossible_block_sizes() {
        assert!(VmLayout::new(24).is_none());
        assert!(VmLayout::new(u32::MAX).is_none());
        assert!(VmLayout::new(32_769).is_none());
        let vm = VmLayout::new(32_768).unwrap();
        assert_eq!(vm.heap_blocks_per_page(), (32_768 - 24) * 4);
        assert_eq!(vm.map_block(u32::MAX), u32::MAX / vm.heap_blocks_per_page());
        assert_eq!(
            VmLayout::new(25).unwrap().truncation_length(u32::MAX),
            u32::MAX / 4 + 1
        );
    }
}
