//! `tablespace_map` (`pgincr_types::tablespace_map::parse`): never a panic; an accepted map
//! written back the way the server writes it (backslash before `\n`, `\r` and `\`) parses to
//! the same entries.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgincr_types::tablespace_map::{parse, parse_oid};
use std::os::unix::ffi::OsStrExt;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(oid) = parse_oid(s) {
            assert!(oid >= 1);
        }
    }
    let Ok(entries) = parse(data) else {
        return;
    };
    let mut text = Vec::new();
    for e in &entries {
        text.extend_from_slice(e.oid.to_string().as_bytes());
        text.push(b' ');
        for &b in e.path.as_os_str().as_bytes() {
            if matches!(b, b'\n' | b'\r' | b'\\') {
                text.push(b'\\');
            }
            text.push(b);
        }
        text.push(b'\n');
    }
    assert_eq!(parse(&text).expect("our own map parses"), entries);
});
