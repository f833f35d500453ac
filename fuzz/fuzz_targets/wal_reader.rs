//! Any bytes after a valid long page header: the WAL reader returns records, the end of WAL or
//! an error naming segment and offset, never panics, and never allocates more than the bytes
//! that arrived (record lengths up to 1020 MB are refused or read as the bytes come).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgincr_types::{Lsn, TimeLineId};
use pgincr_wal::{MemorySource, ReaderOptions, WalReader};

const SEG: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Segment 1 starts with a valid long header; the fuzzer writes everything after it and
    // may spill into segment 2.
    let mut seg = vec![0u8; 40];
    seg[0..2].copy_from_slice(&0xD118u16.to_le_bytes());
    seg[2..4].copy_from_slice(&2u16.to_le_bytes());
    seg[4..8].copy_from_slice(&1u32.to_le_bytes());
    seg[8..16].copy_from_slice(&SEG.to_le_bytes());
    seg[24..32].copy_from_slice(&1u64.to_le_bytes());
    seg[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
    seg[36..40].copy_from_slice(&8192u32.to_le_bytes());
    seg.extend_from_slice(rest);
    let spill = if seg.len() > SEG as usize {
        seg.split_off(SEG as usize)
    } else {
        Vec::new()
    };
    if mode & 1 == 0 {
        seg.resize(SEG as usize, 0);
    }
    let mut src = MemorySource::new();
    src.insert("000000010000000000000001", seg);
    if !spill.is_empty() {
        src.insert("000000010000000000000002", spill);
    }
    let mut opts = ReaderOptions::new(TimeLineId(1), Lsn(SEG + u64::from(mode >> 4) * 8));
    opts.segment_size = if mode & 2 == 0 { Some(SEG) } else { None };
    opts.strict = mode & 4 == 0;
    if mode & 8 != 0 {
        opts.end = Some(Lsn(3 * SEG));
    }
    let Ok(mut reader) = WalReader::new(src, opts) else {
        return;
    };
    for _ in 0..10_000 {
        match reader.next_record() {
            Ok(Some(rec)) => {
                assert!(rec.end_lsn > rec.lsn);
                assert_eq!(rec.bytes.len(), rec.total_len as usize);
                let _ = rec.decode();
            }
            Ok(None) => {
                assert!(reader.end_of_wal().is_some());
                break;
            }
            Err(e) => {
                assert!(!e.segment.is_empty());
                break;
            }
        }
    }
});
