//! `pg_control` (`ControlFile::parse`): never a panic; an accepted file has a supported
//! version and a valid geometry, and parses the same from its first 296 bytes (the CRC and
//! what it covers; the rest of the 8 kB file is padding). Each input is also tried with the
//! CRC it would need, so the version and geometry checks are fuzzed too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgincr_types::control::ControlFile;
use std::path::Path;

/// Stores the CRC a version 1700 or 1800 file needs, so the checks behind it are reached.
fn with_crc(data: &[u8]) -> Option<Vec<u8>> {
    let mut d = data.to_vec();
    d.resize(d.len().max(296), 0);
    let at = match u32::from_le_bytes([d[8], d[9], d[10], d[11]]) {
        1700 => 288,
        1800 => 292,
        _ => return None,
    };
    let crc = crc32c::crc32c(&d[..at]);
    d[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    Some(d)
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(d) = with_crc(data) {
        check(&d);
    }
});

fn check(data: &[u8]) {
    let path = Path::new("global/pg_control");
    let Ok(c) = ControlFile::parse(data, path) else {
        return;
    };
    assert!(matches!(c.major_version(), 17 | 18));
    let g = c.geometry();
    assert!(g.segment_bytes() > 0);
    let _ = c.data_checksums_enabled();
    let again = ControlFile::parse(&data[..296], path).expect("the CRC-covered prefix parses");
    assert_eq!(again, c);
}
