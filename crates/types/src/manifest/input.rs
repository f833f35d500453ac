//! Reader input: buffered, hashing every byte, with the hash states at the last two newlines.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use super::error::parse_err;
use super::ManifestErrorKind;

/// Buffered input that hashes every byte read and remembers the SHA-256 state at the last two
/// newlines, so the checksum over "everything up to the penultimate newline" is available at
/// the end without keeping the text.
pub(super) struct Input<R> {
    reader: R,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    consumed: u64,
    eof: bool,
    /// State after the penultimate newline seen so far.
    at_penultimate: Sha256,
    /// State after the last newline seen so far.
    at_last: Sha256,
    /// State after every byte read so far.
    running: Sha256,
    newlines: u64,
    last_byte: Option<u8>,
}

impl<R: Read> Input<R> {
    pub(super) fn new(reader: R) -> Self {
        Input {
            reader,
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            pos: 0,
            len: 0,
            consumed: 0,
            eof: false,
            at_penultimate: Sha256::new(),
            at_last: Sha256::new(),
            running: Sha256::new(),
            newlines: 0,
            last_byte: None,
        }
    }

    pub(super) fn offset(&self) -> u64 {
        self.consumed - (self.len - self.pos) as u64
    }

    fn fill(&mut self) -> Result<bool, ManifestErrorKind> {
        if self.pos < self.len {
            return Ok(true);
        }
        if self.eof {
            return Ok(false);
        }
        let n = loop {
            match self.reader.read(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        let filled = self
            .buf
            .get(..n)
            .ok_or_else(|| io::Error::other("a read reported more bytes than its buffer holds"))?;
        self.pos = 0;
        self.len = n;
        self.consumed += n as u64;
        self.last_byte = filled.last().copied();
        for piece in filled.split_inclusive(|&b| b == b'\n') {
            self.running.update(piece);
            if piece.ends_with(b"\n") {
                self.at_penultimate = std::mem::replace(&mut self.at_last, self.running.clone());
                self.newlines += 1;
            }
        }
        Ok(true)
    }

    pub(super) fn peek(&mut self) -> Result<Option<u8>, ManifestErrorKind> {
        Ok(if self.fill()? {
            self.buf.get(self.pos).copied()
        } else {
            None
        })
    }

    pub(super) fn next(&mut self) -> Result<Option<u8>, ManifestErrorKind> {
        let b = self.peek()?;
        if b.is_some() {
            self.pos += 1;
        }
        Ok(b)
    }

    /// Reads to the end; then checks the layout rule and returns the expected hash.
    pub(super) fn finish(&mut self) -> Result<[u8; 32], ManifestErrorKind> {
        while self.fill()? {
            self.pos = self.len;
        }
        if self.newlines < 2 {
            return parse_err("expected at least 2 lines");
        }
        if self.last_byte != Some(b'\n') {
            return parse_err("last line not newline-terminated");
        }
        Ok(self.at_penultimate.clone().finalize().into())
    }
}
