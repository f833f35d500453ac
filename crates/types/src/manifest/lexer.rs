//! Reader: the JSON lexer and syntax, feeding the semantic state machine.

use std::io::Read;

use super::error::parse_err;
use super::input::Input;
use super::semantic::{Semantic, State};
use super::{ManifestErrorKind, MAX_TOKEN_LEN};

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

pub(super) struct Parser<R> {
    pub(super) input: Input<R>,
    pub(super) sem: Semantic,
}

impl<R: Read> Parser<R> {
    pub(super) fn run(&mut self) -> Result<(), ManifestErrorKind> {
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
