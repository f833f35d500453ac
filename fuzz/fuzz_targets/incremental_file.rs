//! The INCREMENTAL file reader must refuse bad input with an error, never panic, and never
//! allocate more than the file can hold. What it accepts, rebuilt from its header and block
//! images, parses to the same header.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgincr_types::incremental::{build, IncrementalHeader};
use pgincr_types::RelGeometry;

fuzz_target!(|data: &[u8]| {
    for (blcksz, relseg_size) in [(8192u32, 131_072u32), (1024, 4)] {
        let geom = RelGeometry::from_raw(blcksz, relseg_size).expect("valid geometry");
        if let Ok(h) = IncrementalHeader::parse(data, geom) {
            assert!(h.truncation_block_length <= relseg_size);
            assert!(h.blocks.windows(2).all(|w| w[0] < w[1]));
            assert!(h.blocks.iter().all(|&b| b < h.truncation_block_length));
            let end = h.block_offset(h.blocks.len(), blcksz);
            assert_eq!(end, data.len() as u64);
            assert_eq!(h.reconstructed_length(), h.truncation_block_length);
            if h.clamped_from.is_none() {
                let images: Vec<(u32, Vec<u8>)> = h
                    .blocks
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| {
                        let at = h.block_offset(i, blcksz) as usize;
                        (b, data[at..at + blcksz as usize].to_vec())
                    })
                    .collect();
                let again = build(h.truncation_block_length, &images, blcksz);
                assert_eq!(again.len(), data.len());
                assert_eq!(IncrementalHeader::parse(&again, geom).expect("rebuilt"), h);
            }
        }
    }
});
