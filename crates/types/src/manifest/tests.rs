//! The reader and the writer together: exact layout, round trips, what PostgreSQL refuses.

use sha2::{Digest, Sha256};

use super::*;
use crate::checksum::{hex_lower, Checksummer};

fn sample() -> Vec<u8> {
    let mut w = ManifestWriter::new(Vec::new(), 7_312_345_678_901_234_567).unwrap();
    let mut crc = Checksummer::new(ChecksumType::Crc32c);
    crc.update(b"hello");
    let crc = crc.finish().unwrap();
    w.add_file(b"backup_label", 227, 1_763_000_000, Some(&crc))
        .unwrap();
    w.add_file(b"base/5/INCREMENTAL.16384", 16384, 0, None)
        .unwrap();
    w.add_file(b"odd\"name\\\x01\n", 0, -1, None).unwrap();
    w.add_file(b"bad\xffutf8", 3, 86_400, Some(&crc)).unwrap();
    w.finish(&[WalRange {
        tli: TimeLineId(1),
        start: Lsn(0x2000028),
        end: Lsn(0x2000120),
    }])
    .unwrap()
}

#[test]
fn writes_the_exact_layout() {
    let text = String::from_utf8(sample()).unwrap();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    assert_eq!(lines[0], "{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n");
    assert_eq!(lines[1], "\"System-Identifier\": 7312345678901234567,\n");
    assert_eq!(lines[2], "\"Files\": [\n");
    assert_eq!(
            lines[3],
            "{ \"Path\": \"backup_label\", \"Size\": 227, \"Last-Modified\": \"2025-11-13 02:13:20 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"4cbb719a\" },\n"
        );
    assert_eq!(
            lines[4],
            "{ \"Path\": \"base/5/INCREMENTAL.16384\", \"Size\": 16384, \"Last-Modified\": \"1970-01-01 00:00:00 GMT\" },\n"
        );
    assert_eq!(
            lines[5],
            "{ \"Path\": \"odd\\\"name\\\\\\u0001\\n\", \"Size\": 0, \"Last-Modified\": \"1969-12-31 23:59:59 GMT\" },\n"
        );
    assert!(lines[6].starts_with("{ \"Encoded-Path\": \"626164ff75746638\", \"Size\": 3,"));
    assert_eq!(lines[7], "],\n");
    assert_eq!(lines[8], "\"WAL-Ranges\": [\n");
    assert_eq!(
        lines[9],
        "{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000120\" }\n"
    );
    assert_eq!(lines[10], "],\n");
    let digest = hex_lower(&Sha256::digest(
        &text.as_bytes()[..text.len() - lines[11].len()],
    ));
    assert_eq!(
        lines[11],
        format!("\"Manifest-Checksum\": \"{digest}\"}}\n")
    );
}

#[test]
fn round_trips() {
    let text = sample();
    let m = Manifest::parse(&text[..]).unwrap();
    assert_eq!(m.version, 2);
    assert_eq!(m.system_identifier, Some(7_312_345_678_901_234_567));
    assert_eq!(m.files.len(), 4);
    let f = m.file(b"bad\xffutf8").unwrap();
    assert_eq!((f.size, f.checksum_type), (3, ChecksumType::Crc32c));
    assert_eq!(
        m.file(b"odd\"name\\\x01\n").unwrap().last_modified,
        Some(-1)
    );
    assert_eq!(m.wal_ranges.len(), 1);
    assert_eq!(m.write_to(Vec::new()).unwrap(), text);
}

/// Feeds the parser one byte at a time, so every buffer boundary is exercised.
struct Trickle<'a>(&'a [u8]);
impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.0[0];
        self.0 = &self.0[1..];
        Ok(1)
    }
}

#[test]
fn streams_across_reads() {
    let text = sample();
    assert_eq!(
        Manifest::parse(Trickle(&text)).unwrap(),
        Manifest::parse(&text[..]).unwrap()
    );
}

fn err(text: &[u8]) -> String {
    Manifest::parse(text).unwrap_err().kind.to_string()
}

/// Re-signs edited manifest text so that only the edit is under test.
fn resign(body: &str) -> Vec<u8> {
    let digest = hex_lower(&Sha256::digest(body.as_bytes()));
    format!("{body}\"Manifest-Checksum\": \"{digest}\"}}\n").into_bytes()
}

fn body() -> String {
    let text = String::from_utf8(sample()).unwrap();
    let last = text.trim_end_matches('\n').rfind('\n').unwrap();
    text[..=last].to_string()
}

#[test]
fn refuses_what_postgres_refuses() {
    let text = sample();
    // Any flipped byte before the last line breaks the checksum.
    let mut t = text.clone();
    t[60] ^= 0x20;
    assert!(Manifest::parse(&t[..]).is_err());
    let mut t = text.clone();
    let pos = t.len() - 10;
    t[pos] = if t[pos] == b'a' { b'b' } else { b'a' };
    assert!(err(&t).contains("checksum mismatch"), "{}", err(&t));
    assert!(
        err(&text[..text.len() - 1]).contains("ended unexpectedly")
            || err(&text[..text.len() - 1]).contains("newline")
    );
    let b = body();
    let dup = b.replacen(
        "{ \"Path\": \"base/5/INCREMENTAL.16384\"",
        "{ \"Path\": \"backup_label\"",
        1,
    );
    assert!(err(&resign(&dup)).contains("duplicate path name"));
    let unknown = b.replacen("\"Size\": 16384", "\"Size\": 16384, \"Owner\": 1", 1);
    assert!(err(&resign(&unknown)).contains("unexpected file field"));
    let first = b.replacen(
        "{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\"System-Identifier\": 7312345678901234567,",
        "{ \"System-Identifier\": 7312345678901234567, \"PostgreSQL-Backup-Manifest-Version\": 2,",
        1,
    );
    assert!(err(&resign(&first)).contains("expected version indicator"));
    let v3 = b.replacen("Version\": 2", "Version\": 3", 1);
    assert!(err(&resign(&v3)).contains("unexpected manifest version"));
    let nosize = b.replacen("\"Size\": 16384, ", "", 1);
    assert!(err(&resign(&nosize)).contains("missing size"));
    let sumonly = b.replacen("\"Checksum-Algorithm\": \"CRC32C\", ", "", 1);
    assert!(err(&resign(&sumonly)).contains("checksum without algorithm"));
    let badalg = b.replacen("\"CRC32C\"", "\"MD5\"", 1);
    assert!(err(&resign(&badalg)).contains("unrecognized checksum algorithm"));
    let top = b.replacen("\"WAL-Ranges\"", "\"Ranges\"", 1);
    assert!(err(&resign(&top)).contains("unrecognized top-level field"));
    let nolsn = b.replacen(", \"End-LSN\": \"0/2000120\"", "", 1);
    assert!(err(&resign(&nolsn)).contains("missing end LSN"));
    // Something after the checksum field.
    let mut after = resign(&b);
    after.truncate(after.len() - 2);
    after.extend_from_slice(b", \"X\": 1}\n");
    assert!(err(&after).contains("unexpected object field"));
    assert!(err(b"{}\n\n").contains("unexpected object end"));
    assert!(err(b"[1]\n\n").contains("unexpected array start"));
    assert!(err(b"").contains("unexpected"));
    assert!(err(b"{\"PostgreSQL-Backup-Manifest-Version\": 01}\n\n").contains("invalid number"));
    let big = format!("{{\"{}\": 1}}\n\n", "x".repeat(MAX_TOKEN_LEN + 10));
    assert!(err(big.as_bytes()).contains("longer than"));
}

#[test]
fn accepts_free_key_order_and_escapes() {
    let b = body().replacen(
        "{ \"Path\": \"backup_label\", \"Size\": 227,",
        "{ \"Size\": 227, \"Path\": \"back\\u0075p_\\/label\",",
        1,
    );
    let m = Manifest::parse(&resign(&b)[..]).unwrap();
    assert!(m.file(b"backup_/label").is_some());
}
