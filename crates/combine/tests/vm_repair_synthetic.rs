//! Visibility-map repair on hand-built chains, for what no installed server writes: the map
//! size of summaries from before 17.10/18.4 (the map fork given the heap's truncation limit),
//! bits past the end of a truncated heap, and each verdict a heap page can give, with data
//! checksums on (the repaired page's checksum must be PostgreSQL's).

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{control_with, make_backup, BLCKSZ};
use pgincr_combine::{combine, CombineOptions};
use pgincr_types::incremental::build;
use pgincr_types::page;
use pgincr_types::visibility_map::{VmLayout, ALL_FROZEN, ALL_VISIBLE};

const PD_ALL_VISIBLE: u16 = 0x0004;
const XMIN_FROZEN_XMAX_INVALID: u16 = 0x0300 | 0x0800;
const XMIN_COMMITTED_XMAX_INVALID: u16 = 0x0100 | 0x0800;

/// A heap page with one 32-byte tuple per `(xmin, infomask)`, `pd_flags` and LSN `lsn`,
/// its checksum set for block `blkno`.
fn heap_page(tuples: &[(u32, u16)], pd_flags: u16, lsn: u64, blkno: u32) -> Vec<u8> {
    let mut p = vec![0u8; BLCKSZ];
    p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
    p[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
    let mut upper = BLCKSZ;
    for (i, &(xmin, infomask)) in tuples.iter().enumerate() {
        upper -= 32;
        p[upper..upper + 4].copy_from_slice(&xmin.to_le_bytes());
        p[upper + 20..upper + 22].copy_from_slice(&infomask.to_le_bytes());
        p[upper + 22] = 24;
        let lp = (upper as u32) | (1 << 15) | (32 << 17);
        p[24 + 4 * i..28 + 4 * i].copy_from_slice(&lp.to_le_bytes());
    }
    p[10..12].copy_from_slice(&pd_flags.to_le_bytes());
    p[12..14].copy_from_slice(&((24 + 4 * tuples.len()) as u16).to_le_bytes());
    p[14..16].copy_from_slice(&(upper as u16).to_le_bytes());
    p[16..18].copy_from_slice(&(BLCKSZ as u16).to_le_bytes());
    p[18..20].copy_from_slice(&(0x2000u16 | 4).to_le_bytes());
    assert!(page::set_checksum(&mut p, blkno));
    p
}

fn frozen(blkno: u32) -> Vec<u8> {
    heap_page(
        &[(500, XMIN_FROZEN_XMAX_INVALID)],
        PD_ALL_VISIBLE,
        0x1000000,
        blkno,
    )
}

/// A map page with `bits` for heap blocks 0.., checksummed as block 0.
fn vm_page(bits: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; BLCKSZ];
    p[12..14].copy_from_slice(&24u16.to_le_bytes());
    p[14..16].copy_from_slice(&(BLCKSZ as u16).to_le_bytes());
    p[16..18].copy_from_slice(&(BLCKSZ as u16).to_le_bytes());
    p[18..20].copy_from_slice(&(0x2000u16 | 4).to_le_bytes());
    for (h, &b) in bits.iter().enumerate() {
        p[24 + h / 4] |= b << ((h % 4) * 2);
    }
    assert!(page::set_checksum(&mut p, 0));
    p
}

#[test]
fn repairs_bits_and_map_size() {
    let root = tempfile::tempdir().unwrap();
    let control = control_with(BLCKSZ as u32, 4, true);
    let dirs: Vec<_> = (1..=2).map(|i| root.path().join(format!("b{i}"))).collect();
    let both = ALL_VISIBLE | ALL_FROZEN;
    // b1: relation 16400 has 6 heap blocks over two 4-block segments, all frozen, and a map
    // saying so.
    make_backup(
        &dirs[0],
        0x1000028,
        None,
        &control,
        &[
            ("base/5/16400", (0..4).flat_map(frozen).collect()),
            ("base/5/16400.1", (4..6).flat_map(frozen).collect()),
            ("base/5/16400_vm", vm_page(&[both; 6])),
        ],
    );
    // b2: block 1 was updated (PD_ALL_VISIBLE cleared, as every map-clearing change does),
    // block 2 locked (all-visible still, a tuple not frozen), block 3 rewritten by a hint-bit
    // full-page image (all-visible and frozen); VACUUM truncated the heap to 5 blocks, and
    // the summary of an unfixed server gave the map fork the heap's limit (5), so the map's
    // incremental file says 5 blocks and carries none.
    let updated = heap_page(
        &[
            (500, XMIN_FROZEN_XMAX_INVALID),
            (900, XMIN_COMMITTED_XMAX_INVALID),
        ],
        0,
        0x1800000,
        1,
    );
    let locked = {
        let mut p = heap_page(
            &[(500, XMIN_FROZEN_XMAX_INVALID)],
            PD_ALL_VISIBLE,
            0x1800000,
            2,
        );
        // xmax = the locker's xid, HEAP_XMAX_LOCK_ONLY, not HEAP_XMAX_INVALID.
        let t = BLCKSZ - 32;
        p[t + 4..t + 8].copy_from_slice(&901u32.to_le_bytes());
        p[t + 20..t + 22].copy_from_slice(&(0x0300u16 | 0x0080).to_le_bytes());
        assert!(page::set_checksum(&mut p, 2));
        p
    };
    let hinted = frozen(3);
    make_backup(
        &dirs[1],
        0x2000028,
        Some(0x1000028),
        &control,
        &[
            (
                "base/5/INCREMENTAL.16400",
                build(
                    4,
                    &[
                        (1, updated.clone()),
                        (2, locked.clone()),
                        (3, hinted.clone()),
                    ],
                    BLCKSZ as u32,
                ),
            ),
            ("base/5/INCREMENTAL.16400.1", build(1, &[], BLCKSZ as u32)),
            ("base/5/INCREMENTAL.16400_vm", build(5, &[], BLCKSZ as u32)),
        ],
    );

    // What pg_combinebackup writes: the old map, zero-extended to the heap's length (5
    // blocks, clamped to this chain's 4-block segment size).
    let upstream = root.path().join("upstream");
    let mut opts = CombineOptions::new(dirs.clone(), upstream.clone());
    opts.vm_repair = false;
    combine(&opts).unwrap();
    let stale = std::fs::read(upstream.join("base/5/16400_vm")).unwrap();
    assert_eq!(stale.len(), 4 * BLCKSZ);
    assert_eq!(stale[..BLCKSZ], vm_page(&[both; 6])[..]);

    let out = root.path().join("out");
    let report = combine(&CombineOptions::new(dirs.clone(), out.clone())).unwrap();
    let vm = &report.vm_repair;
    assert_eq!(
        (
            vm.maps_checked,
            vm.maps_repaired,
            vm.pages_repaired,
            vm.maps_truncated
        ),
        (1, 1, 1, 1),
        "{vm:?}"
    );
    // Block 1 (not all-visible) and block 5 (past the end) lose both bits; block 2 (a tuple
    // lock) keeps all-visible only.
    assert_eq!(
        (vm.all_visible_cleared, vm.all_frozen_cleared),
        (2, 1),
        "{vm:?}"
    );
    assert_eq!(vm.files[0].truncated_from_blocks, Some(4));
    let map = std::fs::read(out.join("base/5/16400_vm")).unwrap();
    assert_eq!(
        map.len(),
        BLCKSZ,
        "cut to visibilitymap_truncation_length(5) = 1"
    );
    let layout = VmLayout::new(BLCKSZ as u32).unwrap();
    let bits: Vec<u8> = (0..6).map(|h| layout.bits(&map, h)).collect();
    assert_eq!(bits, [both, 0, ALL_VISIBLE, both, both, 0]);
    assert!(page::checksum_is_valid(&map, 0), "checksum recomputed");
    // Every other file as pg_combinebackup writes it; the manifest describes the new map.
    for f in ["base/5/16400", "base/5/16400.1"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(upstream.join(f)).unwrap()
        );
    }
    let m = pgincr_types::manifest::Manifest::read(&out.join("backup_manifest")).unwrap();
    assert_eq!(m.file(b"base/5/16400_vm").unwrap().size, BLCKSZ as u64);

    // The offline check sees the stale bits in upstream's output and none in ours.
    let found = pgincr_verify::check_vm(&upstream).unwrap();
    let kinds: Vec<_> = found.stale.iter().map(|s| (s.heap_block, s.kind)).collect();
    use pgincr_verify::StaleKind::*;
    assert_eq!(
        kinds,
        [
            (1, AllVisibleNotOnPage),
            (2, AllFrozenNotFrozen),
            (5, PastEndOfHeap)
        ]
    );
    assert!(pgincr_verify::check_vm(&out).unwrap().is_clean());

    // --link must not share the rewritten map with b1's (it is a whole-file copy candidate).
    let linked = root.path().join("linked");
    let mut opts = CombineOptions::new(dirs.clone(), linked.clone());
    opts.copy_mode = pgincr_combine::CopyMode::Link;
    combine(&opts).unwrap();
    assert_eq!(std::fs::read(linked.join("base/5/16400_vm")).unwrap(), map);
    assert_eq!(
        std::fs::read(dirs[0].join("base/5/16400_vm")).unwrap(),
        vm_page(&[both; 6]),
        "input map untouched"
    );
}
