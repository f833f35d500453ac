//! Data pages as they are read from relation files: the page header accessors and checks, the
//! data checksum, heap line pointers and `may_be_all_frozen`, and visibility-map addressing.
//! None of it may panic, on an 8 kB page made of the input (zero-padded or truncated) or on
//! the input bytes as they are; a checksum written with `set_checksum` verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgincr_types::heap_page::{line_pointer, line_pointer_count, may_be_all_frozen};
use pgincr_types::page;
use pgincr_types::visibility_map::VmLayout;

fn exercise(p: &[u8], blkno: u32) {
    let _ = (page::lsn(p), page::checksum(p), page::flags(p));
    let _ = (page::lower(p), page::upper(p), page::special(p));
    let _ = (page::is_all_visible(p), page::is_new(p), page::is_zero(p));
    let sane = page::header_is_sane(p);
    let sum = page::pg_checksum_page(p, blkno);
    let _ = page::checksum_is_valid(p, blkno);
    let mut q = p.to_vec();
    if page::set_checksum(&mut q, blkno) {
        assert!(page::checksum_is_valid(&q, blkno));
        assert_eq!(
            page::pg_checksum_page(&q, blkno),
            sum,
            "pd_checksum is not summed"
        );
        assert_eq!(page::header_is_sane(&q), sane);
    }
    match line_pointer_count(p) {
        Some(n) => {
            assert!(sane);
            for off in [1, n / 2, n, n.saturating_add(1)] {
                let _ = line_pointer(p, off);
            }
        }
        None => assert!(!sane),
    }
    let _ = line_pointer(p, 0);
    let _ = line_pointer(p, u16::MAX);
    let frozen = may_be_all_frozen(p);
    if !sane {
        assert!(frozen.is_err());
    }
}

fuzz_target!(|data: &[u8]| {
    let blkno = data
        .get(..4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let mut p = data.to_vec();
    p.resize(8192, 0);
    exercise(&p, blkno);
    exercise(data, blkno);

    // Visibility-map addressing for any block size and heap block.
    for blcksz in [8192, 1024, blkno] {
        if let Some(vm) = VmLayout::new(blcksz) {
            let heap_block = blkno.rotate_left(7);
            let _ = vm.map_block(heap_block);
            let _ = vm.truncation_length(heap_block);
            let bits = vm.bits(&p, heap_block);
            let mut q = p.clone();
            let cleared = vm.clear(&mut q, heap_block, 0xff);
            assert_eq!(cleared, bits);
            assert_eq!(vm.bits(&q, heap_block), 0);
        }
    }
});
