//! Property tests: random tables built with the server's operations survive write → read
//! unchanged, written bytes re-read and rewrite identically, and arbitrary bytes never panic.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use pgincr_summary::{BlockRefKey, BlockRefTable, SummaryFile};
use pgincr_types::ForkNumber;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Mark(u8, u32),
    Limit(u8, u32),
}

fn key(k: u8) -> BlockRefKey {
    let fork = [
        ForkNumber::Main,
        ForkNumber::VisibilityMap,
        ForkNumber::Init,
    ][usize::from(k % 3)];
    BlockRefKey::new(1663 + u32::from(k % 2), 5, 16384 + u32::from(k / 3), fork)
}

/// Blocks clustered so that chunks fill up (bitmaps) and span several chunks.
fn block() -> impl Strategy<Value = u32> {
    prop_oneof![
        8 => 0u32..5000,
        4 => 65_536u32..65_536 + 300,
        1 => any::<u32>(),
        2 => (0u32..4).prop_map(|c| c * 65_536 + 65_535),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..12, block()).prop_map(|(k, b)| Op::Mark(k, b)),
        1 => (0u8..12, block()).prop_map(|(k, b)| Op::Limit(k, b)),
    ]
}

fn build(ops: &[Op], dense: &[(u8, u32, u32)]) -> BlockRefTable {
    let mut t = BlockRefTable::new();
    for &(k, start, n) in dense {
        for b in start..start.saturating_add(n) {
            t.mark_block_modified(key(k), b);
        }
    }
    for op in ops {
        match *op {
            Op::Mark(k, b) => t.mark_block_modified(key(k), b),
            Op::Limit(k, l) => t.set_limit_block(key(k), l),
        }
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn tables_round_trip(
        ops in prop::collection::vec(op(), 0..400),
        dense in prop::collection::vec((0u8..12, 0u32..70_000, 0u32..4300), 0..2),
    ) {
        let table = build(&ops, &dense);
        let file = table.to_summary_file();
        let bytes = file.to_bytes();
        let read = SummaryFile::parse(&bytes, "p").unwrap();
        prop_assert_eq!(&read, &file);
        prop_assert_eq!(read.to_bytes(), bytes.clone());
        prop_assert!(read.to_table().same_contents(&table));
        // Merging the written file into an empty table and writing again gives the same
        // logical contents (representations may differ: a thin bitmap becomes an array).
        let again = read.to_table().to_summary_file().to_bytes();
        prop_assert!(SummaryFile::parse(&again, "q").unwrap().to_table().same_contents(&table));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = SummaryFile::parse(&bytes, "junk");
    }

    #[test]
    fn corrupted_real_structure_never_panics(
        ops in prop::collection::vec(op(), 0..50),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = build(&ops, &[]).to_summary_file().to_bytes();
        for (i, x) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= x | 1;
        }
        // Whatever the damage, a result or an error; accepted bytes must re-serialize exactly.
        if let Ok(f) = SummaryFile::parse(&bytes, "flipped") {
            prop_assert_eq!(f.to_bytes(), bytes);
        }
    }
}
