//! The INCREMENTAL file reader must refuse bad input with an error, never panic, and never
//! allocate more than the file can hold.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgincr_combine::incremental::IncrementalHeader;
use pgincr_combine::Geometry;

fuzz_target!(|data: &[u8]| {
    for geom in [
        Geometry {
            blcksz: 8192,
            relseg_size: 131_072,
        },
        Geometry {
            blcksz: 512,
            relseg_size: 4,
        },
    ] {
        if let Ok(h) = IncrementalHeader::parse(data, geom) {
            assert!(h.truncation_block_length <= geom.relseg_size);
            assert!(h.blocks.windows(2).all(|w| w[0] < w[1]));
            assert!(h.blocks.iter().all(|&b| b < h.truncation_block_length));
            let end = h.block_offset(h.blocks.len(), geom.blcksz);
            assert_eq!(end, data.len() as u64);
            assert_eq!(h.reconstructed_length(), h.truncation_block_length);
        }
    }
});
