//! The text `pg_walsummary` prints for a relation fork, byte for byte.

use std::io::Write;

use pgincr_types::INVALID_BLOCK_NUMBER;

use crate::block_ref_table::{BlockRefEntry, BlockRefKey};

/// Appends the `pg_walsummary` lines of one fork to `out`: the limit line if there is a
/// limit, then the sorted blocks as maximal runs (`blocks a..b`), or one line per block with
/// `individual` (`-i`). `blocks` is a scratch buffer reused across calls.
pub fn push_entry_lines(
    out: &mut Vec<u8>,
    key: &BlockRefKey,
    entry: &BlockRefEntry,
    individual: bool,
    blocks: &mut Vec<u32>,
) {
    let mut prefix = Vec::with_capacity(64);
    prefix.extend_from_slice(b"TS ");
    push_u32(&mut prefix, key.rlocator.spc_oid);
    prefix.extend_from_slice(b", DB ");
    push_u32(&mut prefix, key.rlocator.db_oid);
    prefix.extend_from_slice(b", REL ");
    push_u32(&mut prefix, key.rlocator.rel_number);
    prefix.extend_from_slice(b", FORK ");
    prefix.extend_from_slice(key.fork.name().as_bytes());
    prefix.extend_from_slice(b": ");

    if entry.limit_block() != INVALID_BLOCK_NUMBER {
        out.extend_from_slice(&prefix);
        out.extend_from_slice(b"limit ");
        push_u32(out, entry.limit_block());
        out.push(b'\n');
    }
    blocks.clear();
    blocks.extend(entry.sorted_blocks());
    let mut runs = blocks.iter().copied().peekable();
    while let Some(start) = runs.next() {
        let mut end = start;
        if !individual {
            // wrapping_add as in C: u32::MAX + 1 == 0 can never follow in a sorted list.
            while let Some(next) = runs.next_if_eq(&end.wrapping_add(1)) {
                end = next;
            }
        }
        out.extend_from_slice(&prefix);
        if start == end {
            out.extend_from_slice(b"block ");
            push_u32(out, start);
        } else {
            out.extend_from_slice(b"blocks ");
            push_u32(out, start);
            out.extend_from_slice(b"..");
            push_u32(out, end);
        }
        out.push(b'\n');
    }
}

/// The `pg_walsummary` text of one fork as a string.
pub fn entry_text(key: &BlockRefKey, entry: &BlockRefEntry, individual: bool) -> String {
    let mut out = Vec::new();
    push_entry_lines(&mut out, key, entry, individual, &mut Vec::new());
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes the text of a fork to `w` (convenience over [`push_entry_lines`]).
pub fn write_entry_lines<W: Write>(
    w: &mut W,
    key: &BlockRefKey,
    entry: &BlockRefEntry,
    individual: bool,
) -> std::io::Result<()> {
    let mut out = Vec::new();
    push_entry_lines(&mut out, key, entry, individual, &mut Vec::new());
    w.write_all(&out)
}

/// Decimal `%u`, without going through `fmt`.
fn push_u32(out: &mut Vec<u8>, mut v: u32) {
    // u32::MAX has 10 digits, so the loop always ends on `v == 0`.
    let mut digits = [0u8; 10];
    let mut n = digits.len();
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
        n -= 1;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(n..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgincr_types::ForkNumber;

    #[test]
    fn formats_like_pg_walsummary() {
        let key = BlockRefKey::new(1663, 5, 16384, ForkNumber::VisibilityMap);
        let mut e = BlockRefEntry::new();
        for b in [3, 1, 2, 7, 0, 4_294_967_295, 9, 10] {
            e.mark_block_modified(b);
        }
        e.set_limit_block(4_294_967_294);
        assert_eq!(
            entry_text(&key, &e, false),
            "TS 1663, DB 5, REL 16384, FORK vm: limit 4294967294\n\
             TS 1663, DB 5, REL 16384, FORK vm: blocks 0..3\n\
             TS 1663, DB 5, REL 16384, FORK vm: block 7\n\
             TS 1663, DB 5, REL 16384, FORK vm: blocks 9..10\n"
        );
        let i = entry_text(&key, &e, true);
        assert_eq!(i.lines().count(), 8); // limit + 7 blocks
        assert!(i.ends_with("FORK vm: block 10\n"));
        let mut v = Vec::new();
        push_u32(&mut v, 0);
        push_u32(&mut v, u32::MAX);
        assert_eq!(v, b"04294967295");
    }
}
