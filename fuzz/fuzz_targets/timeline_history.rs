//! Timeline history files (`pgincr_wal::gap::parse_history`) and archive listings
//! (`scan_names`, `reachable_end`): never a panic; an accepted history written back the way
//! the server writes it parses to the same entries, and its spans chain; the scan's runs are
//! sorted, disjoint and non-adjacent.
//!
//! Input: 4 bytes of timeline (little-endian), then the history file. Its lines are also used
//! as an archive listing (16 MiB segments).
#![no_main]
use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use pgincr_types::{Lsn, TimeLineId};
use pgincr_wal::gap::{parse_history, reachable_end, scan_names, TargetTimeline};

fuzz_target!(|data: &[u8]| {
    let Some((tli, text)) = data.split_first_chunk::<4>() else {
        return;
    };
    let tli = TimeLineId(u32::from_le_bytes(*tli));
    let parsed = parse_history(tli, text);
    let names: Vec<String> = String::from_utf8_lossy(text)
        .lines()
        .map(str::to_string)
        .collect();
    let scan = scan_names(&names, 16 << 20);
    for runs in scan.timelines.values() {
        for w in runs.windows(2) {
            assert!(w[0].first <= w[0].last && w[0].last + 1 < w[1].first);
        }
    }
    let mut histories = BTreeMap::new();
    if let Ok(h) = parsed {
        let again = parse_history(tli, h.to_text().as_bytes()).expect("our own history parses");
        assert_eq!(again, h);
        let spans = h.spans();
        assert_eq!(spans.len(), h.entries.len() + 1);
        assert_eq!(spans.last().map(|s| (s.tli, s.end)), Some((tli, None)));
        for w in spans.windows(2) {
            assert!(w[0].tli < w[1].tli);
            assert_eq!(w[0].end, Some(w[1].begin));
        }
        histories.insert(tli, h);
    }
    for start in [Lsn(0), Lsn(0x3000028), Lsn(u64::MAX)] {
        for target in [
            TargetTimeline::Latest,
            TargetTimeline::Current,
            TargetTimeline::Timeline(tli),
        ] {
            if let Ok(r) = reachable_end(&scan, &histories, TimeLineId(1), start, target) {
                assert!(r.end_lsn >= start);
            }
        }
    }
});
