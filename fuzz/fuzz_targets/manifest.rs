//! The backup_manifest parser must refuse bad input with an error, never panic; whatever it
//! accepts must survive a write + parse round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgincr_types::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        let text = m.write_to(Vec::new()).expect("writing to memory");
        let again = Manifest::parse(&text[..]).expect("our own output parses");
        assert_eq!(again.files.len(), m.files.len());
        assert_eq!(again.wal_ranges, m.wal_ranges);
    }
});
