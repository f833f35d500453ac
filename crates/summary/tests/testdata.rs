//! Fast checks against real summary files kept in `testdata/summaries` (written by
//! PostgreSQL 17.10 and 18.6, with `pg_walsummary`'s output next to each), and bad input.
//! No server needed.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

use pgincr_summary::{
    coverage, list_summaries, select_for_range, text, Chunk, SummaryError, SummaryFile,
    SummaryReader, BLOCKREFTABLE_MAGIC,
};
use pgincr_types::{Lsn, TimeLineId};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/summaries")
}

fn summaries() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for major in ["pg17", "pg18"] {
        for f in list_summaries(&testdata().join(major)).unwrap() {
            out.push(f.path);
        }
    }
    assert_eq!(out.len(), 8);
    out
}

/// `pg_walsummary -i` output derived from its range output.
fn expand_ranges(ranges: &str) -> String {
    let mut out = String::new();
    for line in ranges.lines() {
        let (prefix, what) = line.split_once(": ").unwrap();
        if let Some(r) = what.strip_prefix("blocks ") {
            let (a, b) = r.split_once("..").unwrap();
            for blk in a.parse::<u32>().unwrap()..=b.parse::<u32>().unwrap() {
                out.push_str(&format!("{prefix}: block {blk}\n"));
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn real_files_round_trip_and_print_like_pg_walsummary() {
    let (mut bitmaps, mut limits, mut empty) = (0, 0, 0);
    for path in summaries() {
        let bytes = std::fs::read(&path).unwrap();
        let file = SummaryFile::open(&path).unwrap();
        assert_eq!(file.to_bytes(), bytes, "{}", path.display());
        let expected = std::fs::read_to_string(path.with_extension("txt")).unwrap();
        let mut ours = String::new();
        let mut ours_i = String::new();
        for (k, e) in &file.entries {
            ours.push_str(&text::entry_text(k, e, false));
            ours_i.push_str(&text::entry_text(k, e, true));
            bitmaps += e
                .chunks()
                .iter()
                .filter(|c| matches!(c, Chunk::Bitmap(_)))
                .count();
            limits += usize::from(e.limit_block() != u32::MAX);
        }
        empty += usize::from(file.entries.is_empty());
        assert_eq!(ours, expected, "{}", path.display());
        assert_eq!(ours_i, expand_ranges(&expected), "{}", path.display());
        // What the server would write for the same table is the same file.
        assert_eq!(
            file.to_table().to_summary_file().to_bytes().len(),
            bytes.len()
        );
        assert!(file
            .to_table()
            .same_contents(&SummaryFile::parse(&bytes, "x").unwrap().to_table()));
    }
    assert!(
        bitmaps >= 2 && limits > 10 && empty == 2,
        "{bitmaps} {limits} {empty}"
    );
}

#[test]
fn lists_and_selects_testdata() {
    let dir = testdata().join("pg17");
    let files = list_summaries(&dir).unwrap();
    let cov = coverage(&files);
    assert_eq!(cov.len(), 1);
    // Only 4 of the cluster's files were kept: the rest are gaps.
    assert_eq!(cov[0].gaps.len(), 2, "{cov:?}");
    let err =
        select_for_range(&dir, &files, TimeLineId(1), files[0].start, files[3].end).unwrap_err();
    assert!(matches!(err, SummaryError::Incomplete { .. }), "{err}");
    let ok = select_for_range(&dir, &files, TimeLineId(1), files[2].start, files[3].end).unwrap();
    assert_eq!(ok.len(), 2);
    let union = pgincr_summary::merge_files(&ok).unwrap();
    assert!(union.len() > 100);
    let (used, t) = pgincr_summary::modified_blocks(
        &dir,
        TimeLineId(1),
        files[2].start,
        Lsn(files[3].end.0 - 1),
    )
    .unwrap();
    assert_eq!((used.len(), t), (2, union));
}

fn parse(bytes: &[u8]) -> Result<SummaryFile, SummaryError> {
    SummaryFile::parse(bytes, "t.summary")
}

/// A summary of raw parts with a correct CRC.
fn craft(body: &[u8]) -> Vec<u8> {
    let mut v = BLOCKREFTABLE_MAGIC.to_le_bytes().to_vec();
    v.extend_from_slice(body);
    v.extend_from_slice(&[0u8; 24]);
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

fn header(fork: i32, limit: u32, nchunks: u32) -> Vec<u8> {
    let mut h = Vec::new();
    for v in [1663u32, 5, 16384, fork as u32, limit, nchunks] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h
}

#[test]
fn every_truncation_of_a_real_file_is_a_clear_error() {
    for path in summaries() {
        let bytes = std::fs::read(&path).unwrap();
        // Every offset of the small files; the first and last KiB and a stride of the large
        // ones (every offset of those takes seconds in a debug build).
        let len = bytes.len();
        let cuts = (0..len).filter(|&n| len < 1024 || n < 1024 || n + 1024 > len || n % 97 == 0);
        for n in cuts {
            match parse(&bytes[..n]) {
                Err(SummaryError::Truncated { offset, file, .. }) => {
                    assert_eq!((offset, file.as_str()), (n as u64, "t.summary"))
                }
                other => panic!("{} cut at {n}: {other:?}", path.display()),
            }
        }
    }
}

#[test]
fn bad_input_is_refused_with_offset() {
    let e = parse(&[]).unwrap_err();
    assert!(e.to_string().contains("ends unexpectedly at byte 0"), "{e}");

    let mut bad_magic = craft(&[]);
    bad_magic[0] ^= 1;
    assert!(matches!(
        parse(&bad_magic),
        Err(SummaryError::BadMagic { .. })
    ));
    let swapped = [&BLOCKREFTABLE_MAGIC.to_be_bytes()[..], &[0u8; 28]].concat();
    assert!(parse(&swapped)
        .unwrap_err()
        .to_string()
        .contains("big-endian"));

    let good = craft(
        &[
            header(0, 7, 1),
            2u16.to_le_bytes().to_vec(),
            vec![3, 0, 1, 0],
        ]
        .concat(),
    );
    let f = parse(&good).unwrap();
    assert_eq!(f.entries[0].1.sorted_blocks(), vec![1, 3]);
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 32] ^= 0x40; // a block offset
    match parse(&bad_crc) {
        Err(SummaryError::BadChecksum { offset, .. }) => assert_eq!(offset, n as u64 - 4),
        other => panic!("{other:?}"),
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        parse(&trailing),
        Err(SummaryError::TrailingData { offset, .. }) if offset == good.len() as u64
    ));

    let usage = craft(&[header(0, 7, 2), vec![0, 0, 0x01, 0x10]].concat());
    match parse(&usage) {
        Err(SummaryError::BadChunkUsage { offset, usage, .. }) => {
            assert_eq!((offset, usage), (4 + 24 + 2, 4097))
        }
        other => panic!("{other:?}"),
    }
    let huge = craft(&header(0, 7, u32::MAX));
    match parse(&huge) {
        Err(SummaryError::TooManyChunks { offset, .. }) => assert_eq!(offset, 4 + 20),
        other => panic!("{other:?}"),
    }
    // 65536 chunks is the most a fork can have: accepted when present.
    let max = craft(&[header(0, 7, 65536), vec![0u8; 131072]].concat());
    assert_eq!(parse(&max).unwrap().entries[0].1.chunks().len(), 65536);
    assert_eq!(parse(&max).unwrap().to_bytes(), max);
    // ... and claimed but absent, it is a truncation, not a huge allocation.
    assert!(matches!(
        parse(&max[..200]),
        Err(SummaryError::Truncated { .. })
    ));
    let fork = craft(&header(9, 7, 0));
    assert!(matches!(
        parse(&fork),
        Err(SummaryError::BadFork {
            forknum: 9,
            offset: 16,
            ..
        })
    ));
    let neg = craft(&header(-1, 7, 0));
    assert!(matches!(
        parse(&neg),
        Err(SummaryError::BadFork { forknum: -1, .. })
    ));
    // Bitmap chunk: usage 4096 and 8192 bytes of bits.
    let mut bits = vec![0u8; 8192];
    bits[0] = 0b101;
    bits[8191] = 0x80;
    let bm = craft(&[header(2, u32::MAX, 1), 4096u16.to_le_bytes().to_vec(), bits].concat());
    let f = parse(&bm).unwrap();
    assert_eq!(f.entries[0].1.sorted_blocks(), vec![0, 2, 65535]);
    assert_eq!(f.to_bytes(), bm);
}

#[test]
fn streaming_reader_reports_progress() {
    let path = &summaries()[0];
    let mut r = SummaryReader::open(path).unwrap();
    let mut n = 0;
    while r.next_entry().unwrap().is_some() {
        n += 1;
    }
    assert!(n > 0);
    assert_eq!(r.offset(), std::fs::metadata(path).unwrap().len());
    assert!(r.next_entry().unwrap().is_none());
}
