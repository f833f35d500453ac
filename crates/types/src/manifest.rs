//! `backup_manifest`: parsed as `src/common/parse_manifest.c` parses it, written byte for byte
//! as the server and `pg_combinebackup` write it.
//!
//! The reader streams: it never holds the manifest text, only the parsed entries, and every
//! token it buffers is capped at [`MAX_TOKEN_LEN`]. The manifest checksum is verified the way
//! PostgreSQL does it, by position rather than by key: SHA-256 over every byte up to and
//! including the penultimate newline of the file (format reference 9.3). The streaming hash keeps
//! the states at the last two newlines so that no text needs to be kept.

use crate::bounded::{open_regular, BoundedReadError, MANIFEST_LIMIT};
use crate::checksum::{hex_decode, hex_lower, Checksum, ChecksumType};
use crate::lsn::{Lsn, TimeLineId};
use indexmap::IndexMap;
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Longest string or scalar token the reader buffers. Manifest paths are bounded by MAXPGPATH
/// (1024 bytes, 2048 hex-encoded), so this leaves ample room while bounding memory.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// One `Files` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestFile {
    pub size: u64,
    /// `Last-Modified` as seconds since the Unix epoch. PostgreSQL ignores the field when
    /// reading; it is kept only so a parsed manifest can be written back.
    pub last_modified: Option<i64>,
    pub checksum_type: ChecksumType,
    /// The checksum payload; empty when the entry has none.
    pub checksum: Box<[u8]>,
}

impl ManifestFile {
    /// The checksum, if the entry carries one of type `kind`.
    pub fn checksum_of(&self, kind: ChecksumType) -> Option<Checksum> {
        (kind != ChecksumType::None && self.checksum_type == kind && !self.checksum.is_empty())
            .then(|| Checksum {
                kind,
                bytes: self.checksum.clone(),
            })
    }
}

/// One `WAL-Ranges` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalRange {
    pub tli: TimeLineId,
    pub start: Lsn,
    pub end: Lsn,
}

/// A parsed `backup_manifest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub version: u32,
    /// Present in every version 2 manifest.
    pub system_identifier: Option<u64>,
    /// Files keyed by raw path bytes (`Encoded-Path` is decoded), in manifest order.
    pub files: IndexMap<Box<[u8]>, ManifestFile>,
    pub wal_ranges: Vec<WalRange>,
}

impl Manifest {
    /// Reads and verifies `path`, which must be a regular file of at most
    /// [`MANIFEST_LIMIT`] bytes (a FIFO or device is refused before anything is read).
    pub fn read(path: &Path) -> Result<Manifest, ManifestError> {
        let (file, _) =
            open_regular(path, MANIFEST_LIMIT, "backup manifest").map_err(|e| ManifestError {
                path: Some(path.to_path_buf()),
                offset: None,
                kind: ManifestErrorKind::File(e),
            })?;
        // A file that grows past the limit while being read is cut there, and then fails its
        // checksum.
        let reader = file.take(MANIFEST_LIMIT);
        Self::parse(reader).map_err(|mut e| {
            e.path = Some(path.to_path_buf());
            e
        })
    }

    /// Parses and verifies a manifest from any reader.
    pub fn parse<R: Read>(reader: R) -> Result<Manifest, ManifestError> {
        let mut p = Parser {
            input: Input::new(reader),
            sem: Semantic::default(),
        };
        let result = p.run();
        let offset = p.input.offset();
        result.map_err(|kind| ManifestError {
            path: None,
            offset: Some(offset),
            kind,
        })?;
        Ok(p.sem.manifest)
    }

    /// Looks a file up by its manifest path.
    pub fn file(&self, path: &[u8]) -> Option<&ManifestFile> {
        self.files.get(path)
    }

    /// Writes this manifest in PostgreSQL's layout. Entries without `last_modified` get the
    /// epoch.
    pub fn write_to<W: Write>(&self, out: W) -> io::Result<W> {
        let mut w = ManifestWriter::new(out, self.system_identifier.unwrap_or(0))?;
        for (path, f) in &self.files {
            let sum = (!f.checksum.is_empty()).then(|| Checksum {
                kind: f.checksum_type,
                bytes: f.checksum.clone(),
            });
            w.add_file(path, f.size, f.last_modified.unwrap_or(0), sum.as_ref())?;
        }
        w.finish(&self.wal_ranges)
    }
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub struct ManifestError {
    pub path: Option<PathBuf>,
    /// Byte offset the reader had reached.
    pub offset: Option<u64>,
    pub kind: ManifestErrorKind,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let ManifestErrorKind::File(e) = &self.kind {
            // Names the path and what it is already.
            return write!(f, "{e}");
        }
        match &self.path {
            Some(p) => write!(f, "backup manifest \"{}\": {}", p.display(), self.kind)?,
            None => write!(f, "backup manifest: {}", self.kind)?,
        }
        if let (Some(off), false) = (
            self.offset,
            matches!(
                self.kind,
                ManifestErrorKind::Io(_) | ManifestErrorKind::File(_)
            ),
        ) {
            write!(f, " (near byte {off})")?;
        }
        Ok(())
    }
}

/// The kinds of manifest failure; messages follow parse_manifest.c and load_manifest.c.
#[derive(Debug, thiserror::Error)]
pub enum ManifestErrorKind {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The path is not a regular file of plausible size, or cannot be opened.
    #[error("{0}")]
    File(BoundedReadError),
    /// JSON syntax errors and the structural checks of parse_manifest.c.
    #[error("could not parse backup manifest: {0}")]
    Parse(String),
    #[error("unrecognized checksum algorithm: \"{0}\"")]
    UnknownAlgorithm(String),
    #[error("invalid checksum for file \"{path}\": \"{checksum}\"")]
    BadFileChecksum { path: String, checksum: String },
    #[error("manifest has no checksum")]
    NoChecksum,
    #[error("invalid manifest checksum: \"{0}\"")]
    BadChecksumText(String),
    #[error("manifest checksum mismatch: the file is corrupt or was edited")]
    ChecksumMismatch,
    #[error("duplicate path name in backup manifest: \"{0}\"")]
    DuplicatePath(String),
    #[error("a token is longer than {MAX_TOKEN_LEN} bytes")]
    TokenTooLong,
}

fn parse_err<T>(msg: impl Into<String>) -> Result<T, ManifestErrorKind> {
    Err(ManifestErrorKind::Parse(msg.into()))
}

// ---------------------------------------------------------------------------------------------
// Writer

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
pub fn escape_json(buf: &mut Vec<u8>, s: &str) {
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

/// `strftime("%Y-%m-%d %H:%M:%S %Z", gmtime(t))` as glibc prints it.
pub fn format_gmt(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Parses what [`format_gmt`] writes; `None` for anything else.
pub fn parse_gmt(text: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(text).ok()?.strip_suffix(" GMT")?;
    let (date, time) = s.split_once(' ')?;
    let mut dp = date.splitn(3, '-');
    let y: i64 = dp.next()?.parse().ok()?;
    let m: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    let mut tp = time.splitn(3, ':');
    let hh: i64 = tp.next()?.parse().ok()?;
    let mm: i64 = tp.next()?.parse().ok()?;
    let ss: i64 = tp.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

// Howard Hinnant's calendar algorithms (public domain).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// ---------------------------------------------------------------------------------------------
// Reader: input with newline-positioned hashing

/// Buffered input that hashes every byte read and remembers the SHA-256 state at the last two
/// newlines, so the checksum over "everything up to the penultimate newline" is available at
/// the end without keeping the text.
struct Input<R> {
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
    fn new(reader: R) -> Self {
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

    fn offset(&self) -> u64 {
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
        let filled = self.buf.get(..n).ok_or_else(|| {
            io::Error::other("a read reported more bytes than its buffer holds")
        })?;
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

    fn peek(&mut self) -> Result<Option<u8>, ManifestErrorKind> {
        Ok(if self.fill()? {
            self.buf.get(self.pos).copied()
        } else {
            None
        })
    }

    fn next(&mut self) -> Result<Option<u8>, ManifestErrorKind> {
        let b = self.peek()?;
        if b.is_some() {
            self.pos += 1;
        }
        Ok(b)
    }

    /// Reads to the end; then checks the layout rule and returns the expected hash.
    fn finish(&mut self) -> Result<[u8; 32], ManifestErrorKind> {
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

// ---------------------------------------------------------------------------------------------
// Reader: JSON lexer and syntax

#[derive(Debug, PartialEq)]
enum Token {
    ObjectStart,
    ObjectEnd,
    ArrayStart,
    ArrayEnd,
    Colon,
    Comma,
    /// A string, escapes resolved.
    Str(Vec<u8>),
    /// A number, `true`, `false` or `null`: the raw text, as PostgreSQL hands scalars over.
    Scalar(Vec<u8>),
    End,
}

struct Parser<R> {
    input: Input<R>,
    sem: Semantic,
}

impl<R: Read> Parser<R> {
    fn run(&mut self) -> Result<(), ManifestErrorKind> {
        let tok = self.lex()?;
        self.value(tok)?;
        if self.lex()? != Token::End {
            return parse_err("expected end of input");
        }
        if self.sem.state != State::Eof {
            return parse_err("manifest ended unexpectedly");
        }
        let actual = self.input.finish()?;
        self.sem.verify_checksum(&actual)
    }

    /// Parses one JSON value starting with `tok`, reporting events to the semantic layer. The
    /// semantic layer refuses any nesting the manifest does not have before we recurse, so the
    /// recursion depth is bounded by the manifest's shape (three levels).
    fn value(&mut self, tok: Token) -> Result<(), ManifestErrorKind> {
        match tok {
            Token::ObjectStart => {
                self.sem.object_start()?;
                let mut tok = self.lex()?;
                if tok != Token::ObjectEnd {
                    loop {
                        let Token::Str(name) = tok else {
                            return parse_err("expected a string as object key");
                        };
                        if self.lex()? != Token::Colon {
                            return parse_err("expected \":\" after object key");
                        }
                        self.sem.field(&name)?;
                        let v = self.lex()?;
                        self.value(v)?;
                        match self.lex()? {
                            Token::Comma => tok = self.lex()?,
                            Token::ObjectEnd => break,
                            _ => return parse_err("expected \",\" or \"}\""),
                        }
                    }
                }
                self.sem.object_end()
            }
            Token::ArrayStart => {
                self.sem.array_start()?;
                let mut tok = self.lex()?;
                if tok != Token::ArrayEnd {
                    loop {
                        self.value(tok)?;
                        match self.lex()? {
                            Token::Comma => tok = self.lex()?,
                            Token::ArrayEnd => break,
                            _ => return parse_err("expected \",\" or \"]\""),
                        }
                    }
                }
                self.sem.array_end()
            }
            Token::Str(s) | Token::Scalar(s) => self.sem.scalar(s),
            Token::End => parse_err("the input ends unexpectedly"),
            _ => parse_err("expected a JSON value"),
        }
    }

    fn lex(&mut self) -> Result<Token, ManifestErrorKind> {
        let b = loop {
            match self.input.next()? {
                None => return Ok(Token::End),
                Some(b' ' | b'\t' | b'\n' | b'\r') => continue,
                Some(b) => break b,
            }
        };
        Ok(match b {
            b'{' => Token::ObjectStart,
            b'}' => Token::ObjectEnd,
            b'[' => Token::ArrayStart,
            b']' => Token::ArrayEnd,
            b':' => Token::Colon,
            b',' => Token::Comma,
            b'"' => Token::Str(self.string()?),
            b'-' | b'0'..=b'9' => Token::Scalar(self.number(b)?),
            b't' | b'f' | b'n' => Token::Scalar(self.literal(b)?),
            _ => return parse_err(format!("unexpected character 0x{b:02x}")),
        })
    }

    fn string(&mut self) -> Result<Vec<u8>, ManifestErrorKind> {
        let mut out = Vec::new();
        loop {
            if out.len() > MAX_TOKEN_LEN {
                return Err(ManifestErrorKind::TokenTooLong);
            }
            let Some(b) = self.input.next()? else {
                return parse_err("the input ends inside a string");
            };
            match b {
                b'"' => break,
                b'\\' => self.escape(&mut out)?,
                c if c < 0x20 => {
                    return parse_err("a control character must be escaped inside a string")
                }
                c => out.push(c),
            }
        }
        if std::str::from_utf8(&out).is_err() {
            return parse_err("a string is not valid UTF-8");
        }
        Ok(out)
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), ManifestErrorKind> {
        let c = match self.input.next()? {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                let mut cp = self.hex4()?;
                if (0xD800..0xDC00).contains(&cp) {
                    if self.input.next()? != Some(b'\\') || self.input.next()? != Some(b'u') {
                        return parse_err("a high Unicode surrogate must be followed by a low one");
                    }
                    let lo = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return parse_err("a high Unicode surrogate must be followed by a low one");
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (0xDC00..0xE000).contains(&cp) {
                    return parse_err("a low Unicode surrogate must follow a high one");
                }
                if cp == 0 {
                    return parse_err("\\u0000 cannot be converted to text");
                }
                let ch = char::from_u32(cp).ok_or_else(|| {
                    ManifestErrorKind::Parse("invalid Unicode escape".to_string())
                })?;
                let mut tmp = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
                return Ok(());
            }
            _ => return parse_err("invalid escape sequence in a string"),
        };
        out.push(c);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, ManifestErrorKind> {
        let mut v = 0;
        for _ in 0..4 {
            let d = self
                .input
                .next()?
                .and_then(|b| (b as char).to_digit(16))
                .ok_or_else(|| {
                    ManifestErrorKind::Parse("\\u must be followed by four hex digits".into())
                })?;
            v = v * 16 + d;
        }
        Ok(v)
    }

    /// JSON number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self, first: u8) -> Result<Vec<u8>, ManifestErrorKind> {
        let mut out = vec![first];
        let bad = || parse_err("invalid number");
        let lead = if first == b'-' {
            match self.input.peek()? {
                Some(d @ b'0'..=b'9') => {
                    self.push(&mut out, d)?;
                    d
                }
                _ => return bad(),
            }
        } else {
            first
        };
        let more = self.digits(&mut out)?;
        if lead == b'0' && more > 0 {
            return bad();
        }
        if self.input.peek()? == Some(b'.') {
            self.push(&mut out, b'.')?;
            if self.digits(&mut out)? == 0 {
                return bad();
            }
        }
        if let Some(e @ (b'e' | b'E')) = self.input.peek()? {
            self.push(&mut out, e)?;
            if let Some(s @ (b'+' | b'-')) = self.input.peek()? {
                self.push(&mut out, s)?;
            }
            if self.digits(&mut out)? == 0 {
                return bad();
            }
        }
        if let Some(b) = self.input.peek()? {
            if b.is_ascii_alphanumeric() || b == b'_' {
                return bad();
            }
        }
        Ok(out)
    }

    fn digits(&mut self, out: &mut Vec<u8>) -> Result<usize, ManifestErrorKind> {
        let mut n = 0;
        while let Some(b @ b'0'..=b'9') = self.input.peek()? {
            self.push(out, b)?;
            n += 1;
        }
        Ok(n)
    }

    fn push(&mut self, out: &mut Vec<u8>, b: u8) -> Result<(), ManifestErrorKind> {
        if out.len() >= MAX_TOKEN_LEN {
            return Err(ManifestErrorKind::TokenTooLong);
        }
        self.input.next()?;
        out.push(b);
        Ok(())
    }

    fn literal(&mut self, first: u8) -> Result<Vec<u8>, ManifestErrorKind> {
        let mut out = vec![first];
        while let Some(b) = self.input.peek()? {
            if !(b.is_ascii_alphanumeric() || b == b'_') {
                break;
            }
            self.push(&mut out, b)?;
        }
        match out.as_slice() {
            b"true" | b"false" | b"null" => Ok(out),
            _ => parse_err(format!(
                "token \"{}\" is invalid",
                String::from_utf8_lossy(&out)
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reader: the semantic state machine of parse_manifest.c

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
/// The parser's position; each variant names what is expected next.
enum State {
    #[default]
    ToplevelStart,
    ToplevelEnd,
    ToplevelField,
    VersionValue,
    SystemIdentifierValue,
    FilesStart,
    FilesNext,
    ThisFileField,
    ThisFileValue,
    WalRangesStart,
    WalRangesNext,
    ThisWalRangeField,
    ThisWalRangeValue,
    ManifestChecksumValue,
    Eof,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum FileField {
    #[default]
    Path,
    EncodedPath,
    Size,
    LastModified,
    Algorithm,
    Checksum,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum WalField {
    #[default]
    Timeline,
    StartLsn,
    EndLsn,
}

#[derive(Default)]
struct Semantic {
    state: State,
    saw_version: bool,
    file_field: FileField,
    path: Option<Vec<u8>>,
    encoded_path: Option<Vec<u8>>,
    size: Option<Vec<u8>>,
    last_modified: Option<Vec<u8>>,
    algorithm: Option<Vec<u8>>,
    checksum: Option<Vec<u8>>,
    wal_field: WalField,
    timeline: Option<Vec<u8>>,
    start_lsn: Option<Vec<u8>>,
    end_lsn: Option<Vec<u8>>,
    manifest_checksum: Option<Vec<u8>>,
    manifest: Manifest,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            version: 0,
            system_identifier: None,
            files: IndexMap::new(),
            wal_ranges: Vec::new(),
        }
    }
}

impl Semantic {
    fn object_start(&mut self) -> Result<(), ManifestErrorKind> {
        self.state = match self.state {
            State::ToplevelStart => State::ToplevelField,
            State::FilesNext => {
                self.path = None;
                self.encoded_path = None;
                self.size = None;
                self.last_modified = None;
                self.algorithm = None;
                self.checksum = None;
                State::ThisFileField
            }
            State::WalRangesNext => {
                self.timeline = None;
                self.start_lsn = None;
                self.end_lsn = None;
                State::ThisWalRangeField
            }
            _ => return parse_err("unexpected object start"),
        };
        Ok(())
    }

    fn object_end(&mut self) -> Result<(), ManifestErrorKind> {
        self.state = match self.state {
            State::ToplevelEnd => State::Eof,
            State::ThisFileField => {
                self.finalize_file()?;
                State::FilesNext
            }
            State::ThisWalRangeField => {
                self.finalize_wal_range()?;
                State::WalRangesNext
            }
            _ => return parse_err("unexpected object end"),
        };
        Ok(())
    }

    fn array_start(&mut self) -> Result<(), ManifestErrorKind> {
        self.state = match self.state {
            State::FilesStart => State::FilesNext,
            State::WalRangesStart => State::WalRangesNext,
            _ => return parse_err("unexpected array start"),
        };
        Ok(())
    }

    fn array_end(&mut self) -> Result<(), ManifestErrorKind> {
        self.state = match self.state {
            State::FilesNext | State::WalRangesNext => State::ToplevelField,
            _ => return parse_err("unexpected array end"),
        };
        Ok(())
    }

    fn field(&mut self, name: &[u8]) -> Result<(), ManifestErrorKind> {
        match self.state {
            State::ToplevelField => {
                if !self.saw_version {
                    if name != b"PostgreSQL-Backup-Manifest-Version" {
                        return parse_err("expected version indicator");
                    }
                    self.saw_version = true;
                    self.state = State::VersionValue;
                    return Ok(());
                }
                self.state = match name {
                    b"System-Identifier" => State::SystemIdentifierValue,
                    b"Files" => State::FilesStart,
                    b"WAL-Ranges" => State::WalRangesStart,
                    b"Manifest-Checksum" => State::ManifestChecksumValue,
                    _ => return parse_err("unrecognized top-level field"),
                };
            }
            State::ThisFileField => {
                self.file_field = match name {
                    b"Path" => FileField::Path,
                    b"Encoded-Path" => FileField::EncodedPath,
                    b"Size" => FileField::Size,
                    b"Last-Modified" => FileField::LastModified,
                    b"Checksum-Algorithm" => FileField::Algorithm,
                    b"Checksum" => FileField::Checksum,
                    _ => return parse_err("unexpected file field"),
                };
                self.state = State::ThisFileValue;
            }
            State::ThisWalRangeField => {
                self.wal_field = match name {
                    b"Timeline" => WalField::Timeline,
                    b"Start-LSN" => WalField::StartLsn,
                    b"End-LSN" => WalField::EndLsn,
                    _ => return parse_err("unexpected WAL range field"),
                };
                self.state = State::ThisWalRangeValue;
            }
            _ => return parse_err("unexpected object field"),
        }
        Ok(())
    }

    fn scalar(&mut self, token: Vec<u8>) -> Result<(), ManifestErrorKind> {
        match self.state {
            State::VersionValue => {
                let v = parse_i64(&token).ok_or_else(|| {
                    ManifestErrorKind::Parse("manifest version not an integer".into())
                })?;
                if v != 1 && v != 2 {
                    return parse_err("unexpected manifest version");
                }
                self.manifest.version = v as u32;
                self.state = State::ToplevelField;
            }
            State::SystemIdentifierValue => {
                let v = parse_u64(&token).ok_or_else(|| {
                    ManifestErrorKind::Parse("manifest system identifier not an integer".into())
                })?;
                self.manifest.system_identifier = Some(v);
                self.state = State::ToplevelField;
            }
            State::ThisFileValue => {
                let slot = match self.file_field {
                    FileField::Path => &mut self.path,
                    FileField::EncodedPath => &mut self.encoded_path,
                    FileField::Size => &mut self.size,
                    FileField::LastModified => &mut self.last_modified,
                    FileField::Algorithm => &mut self.algorithm,
                    FileField::Checksum => &mut self.checksum,
                };
                *slot = Some(token);
                self.state = State::ThisFileField;
            }
            State::ThisWalRangeValue => {
                let slot = match self.wal_field {
                    WalField::Timeline => &mut self.timeline,
                    WalField::StartLsn => &mut self.start_lsn,
                    WalField::EndLsn => &mut self.end_lsn,
                };
                *slot = Some(token);
                self.state = State::ThisWalRangeField;
            }
            State::ManifestChecksumValue => {
                self.manifest_checksum = Some(token);
                self.state = State::ToplevelEnd;
            }
            _ => return parse_err("unexpected scalar"),
        }
        Ok(())
    }

    fn finalize_file(&mut self) -> Result<(), ManifestErrorKind> {
        let path = match (self.path.take(), self.encoded_path.take()) {
            (None, None) => return parse_err("missing path name"),
            (Some(_), Some(_)) => return parse_err("both path name and encoded path name"),
            (Some(p), None) => p,
            // PostgreSQL keeps paths as C strings, so a decoded NUL cannot be a real path.
            (None, Some(e)) => hex_decode(&e)
                .filter(|p| !p.contains(&0))
                .ok_or_else(|| ManifestErrorKind::Parse("could not decode file name".into()))?,
        };
        let Some(size) = self.size.take() else {
            return parse_err("missing size");
        };
        let (algorithm, checksum) = (self.algorithm.take(), self.checksum.take());
        if algorithm.is_none() && checksum.is_some() {
            return parse_err("checksum without algorithm");
        }
        let size = parse_u64(&size)
            .ok_or_else(|| ManifestErrorKind::Parse("file size is not an integer".into()))?;
        let checksum_type = match &algorithm {
            None => ChecksumType::None,
            Some(a) => std::str::from_utf8(a)
                .ok()
                .and_then(ChecksumType::parse)
                .ok_or_else(|| {
                    ManifestErrorKind::UnknownAlgorithm(String::from_utf8_lossy(a).into_owned())
                })?,
        };
        let checksum: Box<[u8]> = match checksum {
            None => Box::default(),
            Some(c) if c.is_empty() => Box::default(),
            Some(c) => hex_decode(&c)
                .ok_or_else(|| ManifestErrorKind::BadFileChecksum {
                    path: String::from_utf8_lossy(&path).into_owned(),
                    checksum: String::from_utf8_lossy(&c).into_owned(),
                })?
                .into(),
        };
        let last_modified = self.last_modified.take().and_then(|t| parse_gmt(&t));
        let entry = ManifestFile {
            size,
            last_modified,
            checksum_type,
            checksum,
        };
        match self.manifest.files.entry(path.into_boxed_slice()) {
            indexmap::map::Entry::Occupied(o) => Err(ManifestErrorKind::DuplicatePath(
                String::from_utf8_lossy(o.key()).into_owned(),
            )),
            indexmap::map::Entry::Vacant(v) => {
                v.insert(entry);
                Ok(())
            }
        }
    }

    fn finalize_wal_range(&mut self) -> Result<(), ManifestErrorKind> {
        let Some(tli) = self.timeline.take() else {
            return parse_err("missing timeline");
        };
        let Some(start) = self.start_lsn.take() else {
            return parse_err("missing start LSN");
        };
        let Some(end) = self.end_lsn.take() else {
            return parse_err("missing end LSN");
        };
        let tli = parse_u64(&tli)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| ManifestErrorKind::Parse("timeline is not an integer".into()))?;
        let lsn = |t: &[u8], what: &str| {
            std::str::from_utf8(t)
                .ok()
                .and_then(|s| s.parse::<Lsn>().ok())
                .ok_or_else(|| ManifestErrorKind::Parse(format!("could not parse {what}")))
        };
        self.manifest.wal_ranges.push(WalRange {
            tli: TimeLineId(tli),
            start: lsn(&start, "start LSN")?,
            end: lsn(&end, "end LSN")?,
        });
        Ok(())
    }

    fn verify_checksum(&self, actual: &[u8; 32]) -> Result<(), ManifestErrorKind> {
        let Some(text) = &self.manifest_checksum else {
            return Err(ManifestErrorKind::NoChecksum);
        };
        let expected = (text.len() == 64).then(|| hex_decode(text)).flatten();
        let Some(expected) = expected else {
            return Err(ManifestErrorKind::BadChecksumText(
                String::from_utf8_lossy(text).into_owned(),
            ));
        };
        if expected != actual {
            return Err(ManifestErrorKind::ChecksumMismatch);
        }
        Ok(())
    }
}

/// Strict decimal: digits only (PostgreSQL's strtoul would also take signs and blanks; no
/// manifest writer produces them).
fn parse_u64(t: &[u8]) -> Option<u64> {
    if t.is_empty() || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(t).ok()?.parse().ok()
}

fn parse_i64(t: &[u8]) -> Option<i64> {
    std::str::from_utf8(t).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::Checksummer;

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

    #[test]
    fn gmt_round_trip() {
        for t in [0, -1, 1_763_000_000, 951_782_400, 4_102_444_800] {
            assert_eq!(parse_gmt(format_gmt(t).as_bytes()), Some(t), "{t}");
        }
        assert_eq!(format_gmt(951_782_400), "2000-02-29 00:00:00 GMT");
    }
}
