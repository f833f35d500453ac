//! Writing a manifest in the exact layout of the server and `pg_combinebackup`.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

use super::gmt::format_gmt;
use super::WalRange;
use crate::checksum::{hex_lower, Checksum};

/// Streams a manifest in the exact layout of `write_manifest.c` / `backup_manifest.c`.
pub struct ManifestWriter<W: Write> {
    out: W,
    hasher: Sha256,
    first_file: bool,
    buf: Vec<u8>,
}

const FLUSH_AT: usize = 128 * 1024;

impl<W: Write> ManifestWriter<W> {
    pub fn new(out: W, system_identifier: u64) -> io::Result<ManifestWriter<W>> {
        let mut buf = Vec::with_capacity(FLUSH_AT + 4096);
        write!(
            buf,
            "{{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\"System-Identifier\": {system_identifier},\n\"Files\": ["
        )?;
        Ok(ManifestWriter {
            out,
            hasher: Sha256::new(),
            first_file: true,
            buf,
        })
    }

    /// Adds one file. `path` is written as `Path` when it is valid UTF-8, else as hex
    /// `Encoded-Path`; the checksum members are left out when `checksum` is `None`.
    pub fn add_file(
        &mut self,
        path: &[u8],
        size: u64,
        mtime: i64,
        checksum: Option<&Checksum>,
    ) -> io::Result<()> {
        self.buf
            .extend_from_slice(if self.first_file { b"\n" } else { b",\n" });
        self.first_file = false;
        match std::str::from_utf8(path) {
            Ok(p) => {
                self.buf.extend_from_slice(b"{ \"Path\": ");
                escape_json(&mut self.buf, p);
                self.buf.extend_from_slice(b", ");
            }
            Err(_) => {
                self.buf.extend_from_slice(b"{ \"Encoded-Path\": \"");
                self.buf.extend_from_slice(hex_lower(path).as_bytes());
                self.buf.extend_from_slice(b"\", ");
            }
        }
        write!(
            self.buf,
            "\"Size\": {size}, \"Last-Modified\": \"{}\"",
            format_gmt(mtime)
        )?;
        if let Some(c) = checksum.filter(|c| !c.bytes.is_empty()) {
            write!(
                self.buf,
                ", \"Checksum-Algorithm\": \"{}\", \"Checksum\": \"{}\"",
                c.kind.name(),
                c.hex()
            )?;
        }
        self.buf.extend_from_slice(b" }");
        if self.buf.len() > FLUSH_AT {
            self.flush_buf()?;
        }
        Ok(())
    }

    /// Writes the WAL ranges and the manifest checksum; returns the inner writer (flushed).
    pub fn finish(mut self, wal_ranges: &[WalRange]) -> io::Result<W> {
        self.buf.extend_from_slice(b"\n],\n\"WAL-Ranges\": [\n");
        for (i, r) in wal_ranges.iter().enumerate() {
            write!(
                self.buf,
                "{}{{ \"Timeline\": {}, \"Start-LSN\": \"{}\", \"End-LSN\": \"{}\" }}",
                if i == 0 { "" } else { ",\n" },
                r.tli,
                r.start,
                r.end
            )?;
        }
        self.buf.extend_from_slice(b"\n],\n");
        self.flush_buf()?;
        let digest = self.hasher.clone().finalize();
        writeln!(
            self.out,
            "\"Manifest-Checksum\": \"{}\"}}",
            hex_lower(&digest)
        )?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        self.hasher.update(&self.buf);
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
}

/// `escape_json`: the short escapes, `\u00xx` for other control bytes, everything else as is.
fn escape_json(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    for &b in s.as_bytes() {
        match b {
            0x08 => buf.extend_from_slice(b"\\b"),
            0x0c => buf.extend_from_slice(b"\\f"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            c if c < 0x20 => buf.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
            c => buf.push(c),
        }
    }
    buf.push(b'"');
}
