//! Heap pages as far as visibility is concerned: line pointers (`src/include/storage/itemid.h`)
//! and the freezing state of tuple headers (`src/include/access/htup_details.h`), enough to
//! decide whether a page may carry the visibility map's all-frozen bit.

use crate::page::{self, SIZE_OF_PAGE_HEADER};

/// `lp_flags` of a line pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinePointerKind {
    Unused,
    Normal,
    Redirect,
    Dead,
}

/// One `ItemIdData`: 15 bits of offset, 2 of flags, 15 of length, in a little-endian `uint32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinePointer {
    pub offset: u16,
    pub kind: LinePointerKind,
    pub length: u16,
}

const HEAP_XMIN_COMMITTED: u16 = 0x0100;
const HEAP_XMIN_INVALID: u16 = 0x0200;
/// Both xmin hint bits together mean "xmin frozen" (`HEAP_XMIN_FROZEN`).
const HEAP_XMIN_FROZEN: u16 = HEAP_XMIN_COMMITTED | HEAP_XMIN_INVALID;
const HEAP_XMAX_IS_MULTI: u16 = 0x1000;
const HEAP_MOVED_OFF: u16 = 0x4000;
const HEAP_MOVED_IN: u16 = 0x8000;
const HEAP_MOVED: u16 = HEAP_MOVED_OFF | HEAP_MOVED_IN;
/// `FirstNormalTransactionId`: 0 is invalid, 1 bootstrap, 2 frozen.
const FIRST_NORMAL_XID: u32 = 3;
/// Bytes of `HeapTupleHeaderData` up to `t_hoff` inclusive (`SizeofHeapTupleHeader` is 23).
const SIZEOF_HEAP_TUPLE_HEADER: usize = 23;

/// Why a page could not be read as a heap page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MalformedPage {
    Header,
    LinePointer { offnum: u16 },
}

/// The number of line pointers (`PageGetMaxOffsetNumber`), or `None` for a page whose
/// header is not sane.
pub fn line_pointer_count(page: &[u8]) -> Option<u16> {
    if !page::header_is_sane(page) {
        return None;
    }
    let lower = usize::from(page::lower(page)?);
    u16::try_from((lower - SIZE_OF_PAGE_HEADER) / 4).ok()
}

/// Line pointer `offnum` (1-based, as `OffsetNumber`).
pub fn line_pointer(page: &[u8], offnum: u16) -> Option<LinePointer> {
    let at = SIZE_OF_PAGE_HEADER + 4 * usize::from(offnum.checked_sub(1)?);
    let v = u32::from_le_bytes(*page.get(at..)?.first_chunk()?);
    let kind = match (v >> 15) & 3 {
        0 => LinePointerKind::Unused,
        1 => LinePointerKind::Normal,
        2 => LinePointerKind::Redirect,
        _ => LinePointerKind::Dead,
    };
    Some(LinePointer {
        offset: (v & 0x7FFF) as u16,
        kind,
        length: (v >> 17) as u16,
    })
}

/// `heap_tuple_needs_eventual_freeze` (heapam.c) on the tuple header bytes `tup`: a normal
/// xmin that is not frozen, a valid xmax (or multixact), or a normal xvac of an old-style
/// VACUUM FULL all mean the tuple is not frozen.
fn tuple_needs_freeze(tup: &[u8]) -> Option<bool> {
    let u32_at = |off: usize| -> Option<u32> {
        tup.get(off..)?
            .first_chunk()
            .copied()
            .map(u32::from_le_bytes)
    };
    let infomask = u16::from_le_bytes(*tup.get(20..)?.first_chunk()?);
    let xmin = u32_at(0)?;
    let xmax = u32_at(4)?;
    let field3 = u32_at(8)?;
    let xmin_frozen = infomask & HEAP_XMIN_FROZEN == HEAP_XMIN_FROZEN;
    if !xmin_frozen && xmin >= FIRST_NORMAL_XID {
        return Some(true);
    }
    if infomask & HEAP_XMAX_IS_MULTI != 0 {
        if xmax != 0 {
            return Some(true);
        }
    } else if xmax >= FIRST_NORMAL_XID {
        return Some(true);
    }
    Some(infomask & HEAP_MOVED != 0 && field3 >= FIRST_NORMAL_XID)
}

/// Whether the visibility map may call this heap page all-frozen: what `pg_check_frozen`
/// (contrib/pg_visibility) accepts, judged from the page alone. Unused and redirect line
/// pointers do not matter; a dead one, or a normal tuple that still needs freezing, means
/// the page is not frozen. `Ok(false)` also for a page that is not all-visible.
pub fn may_be_all_frozen(page: &[u8]) -> Result<bool, MalformedPage> {
    let count = line_pointer_count(page).ok_or(MalformedPage::Header)?;
    if !page::is_all_visible(page) {
        return Ok(false);
    }
    for offnum in 1..=count {
        let lp = line_pointer(page, offnum).ok_or(MalformedPage::LinePointer { offnum })?;
        match lp.kind {
            LinePointerKind::Unused | LinePointerKind::Redirect => {}
            LinePointerKind::Dead => return Ok(false),
            LinePointerKind::Normal => {
                let start = usize::from(lp.offset);
                let end = start + usize::from(lp.length);
                let tup = page
                    .get(start..end)
                    .filter(|t| t.len() >= SIZEOF_HEAP_TUPLE_HEADER)
                    .ok_or(MalformedPage::LinePointer { offnum })?;
                if tuple_needs_freeze(tup).ok_or(MalformedPage::LinePointer { offnum })? {
                    return Ok(false);
                }
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::page::PD_ALL_VISIBLE;

    /// A heap page with one tuple per `(xmin, xmax, infomask)`, flags `pd_flags`.
    pub(crate) fn heap_page(tuples: &[(u32, u32, u16)], pd_flags: u16) -> Vec<u8> {
        let mut p = vec![0u8; 8192];
        let lower = 24 + 4 * tuples.len();
        let mut upper = 8192usize;
        for (i, &(xmin, xmax, infomask)) in tuples.iter().enumerate() {
            let len = 32usize;
            upper -= len;
            let t = &mut p[upper..upper + len];
            t[0..4].copy_from_slice(&xmin.to_le_bytes());
            t[4..8].copy_from_slice(&xmax.to_le_bytes());
            t[20..22].copy_from_slice(&infomask.to_le_bytes());
            t[22] = 24;
            let lp = (upper as u32) | (1 << 15) | ((len as u32) << 17);
            p[24 + 4 * i..28 + 4 * i].copy_from_slice(&lp.to_le_bytes());
        }
        p[10..12].copy_from_slice(&pd_flags.to_le_bytes());
        p[12..14].copy_from_slice(&(lower as u16).to_le_bytes());
        p[14..16].copy_from_slice(&(upper as u16).to_le_bytes());
        p[16..18].copy_from_slice(&8192u16.to_le_bytes());
        p[18..20].copy_from_slice(&(0x2000u16 | 4).to_le_bytes());
        p
    }

    const FROZEN_XMIN_INVALID_XMAX: u16 = HEAP_XMIN_FROZEN | 0x0800;

    #[test]
    fn frozen_pages() {
        let frozen = heap_page(
            &[(100, 0, FROZEN_XMIN_INVALID_XMAX), (2, 0, 0x0800)],
            PD_ALL_VISIBLE,
        );
        assert_eq!(may_be_all_frozen(&frozen), Ok(true));
        // The same tuples on a page that is not all-visible.
        let not_visible = heap_page(&[(100, 0, FROZEN_XMIN_INVALID_XMAX)], 0);
        assert_eq!(may_be_all_frozen(&not_visible), Ok(false));
        // A normal, unfrozen xmin.
        let young = heap_page(&[(100, 0, HEAP_XMIN_COMMITTED)], PD_ALL_VISIBLE);
        assert_eq!(may_be_all_frozen(&young), Ok(false));
        // A tuple lock: frozen xmin, but xmax is a locker's xid (what SELECT FOR UPDATE does).
        let locked = heap_page(&[(100, 5000, HEAP_XMIN_FROZEN | 0x0080)], PD_ALL_VISIBLE);
        assert_eq!(may_be_all_frozen(&locked), Ok(false));
        // A multixact xmax.
        let multi = heap_page(
            &[(100, 7, HEAP_XMIN_FROZEN | HEAP_XMAX_IS_MULTI)],
            PD_ALL_VISIBLE,
        );
        assert_eq!(may_be_all_frozen(&multi), Ok(false));
    }

    #[test]
    fn malformed_pages_are_errors_not_panics() {
        let mut p = heap_page(&[(100, 0, FROZEN_XMIN_INVALID_XMAX)], PD_ALL_VISIBLE);
        // Point the line pointer past the end of the page.
        let lp = 8190u32 | (1 << 15) | (32 << 17);
        p[24..28].copy_from_slice(&lp.to_le_bytes());
        assert_eq!(
            may_be_all_frozen(&p),
            Err(MalformedPage::LinePointer { offnum: 1 })
        );
        assert_eq!(may_be_all_frozen(&[0u8; 8192]), Err(MalformedPage::Header));
        assert_eq!(may_be_all_frozen(&[1u8; 10]), Err(MalformedPage::Header));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        /// An 8 kB page: a random header over random bytes, or a sane header with random line
        /// pointers and tuples, so both the refusals and the tuple checks are reached.
        fn page() -> impl Strategy<Value = Vec<u8>> {
            (
                proptest::collection::vec(any::<u8>(), 8192),
                any::<bool>(),
                0u16..200,
            )
                .prop_map(|(mut p, sane, nlp)| {
                    if sane {
                        let lower = 24 + 4 * nlp;
                        let flags = u16::from(p[10] & 7);
                        p[10..12].copy_from_slice(&flags.to_le_bytes());
                        p[12..14].copy_from_slice(&lower.to_le_bytes());
                        p[14..16].copy_from_slice(&lower.max(4096).to_le_bytes());
                        p[16..18].copy_from_slice(&8192u16.to_le_bytes());
                        p[18..20].copy_from_slice(&(0x2000u16 | 4).to_le_bytes());
                    }
                    p
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]
            #[test]
            fn any_page_never_panics(p in page(), blkno: u32) {
                let sane = page::header_is_sane(&p);
                prop_assert_eq!(line_pointer_count(&p).is_some(), sane);
                let frozen = may_be_all_frozen(&p);
                if !sane {
                    prop_assert_eq!(frozen, Err(MalformedPage::Header));
                }
                let mut q = p.clone();
                prop_assert!(page::set_checksum(&mut q, blkno));
                prop_assert!(page::checksum_is_valid(&q, blkno));
                prop_assert_eq!(page::header_is_sane(&q), sane);
                for len in [0, 1, 23, 24, 100, 8191] {
                    let _ = may_be_all_frozen(&p[..len]);
                    let _ = page::pg_checksum_page(&p[..len], blkno);
                }
            }
        }
    }
}
