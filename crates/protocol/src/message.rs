//! Backend message framing and decoding. Bodies are `Bytes` split off the read buffer, so
//! CopyData payloads reach the caller without a copy.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{DbError, Error, Result};

/// Largest message accepted. The server's own limit for a data row is 1 GB; nothing a backup
/// needs comes near it, and refusing larger lengths keeps a corrupt length from driving an
/// allocation.
pub const MAX_MESSAGE_LEN: usize = 1 << 30;

/// One column of a RowDescription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
}

/// An authentication request (`R`).
#[derive(Debug)]
pub enum AuthRequest {
    Ok,
    Cleartext,
    Md5([u8; 4]),
    Sasl(Vec<String>),
    SaslContinue(Bytes),
    SaslFinal(Bytes),
    Other(i32),
}

/// A decoded backend message.
#[derive(Debug)]
pub enum Backend {
    Auth(AuthRequest),
    ParameterStatus(String, String),
    KeyData { pid: i32, key: Bytes },
    ReadyForQuery(u8),
    RowDescription(Vec<Column>),
    DataRow(Vec<Option<Bytes>>),
    CommandComplete(String),
    EmptyQuery,
    Error(Box<DbError>),
    Notice(Box<DbError>),
    CopyInResponse,
    CopyOutResponse,
    CopyBothResponse,
    CopyData(Bytes),
    CopyDone,
    NegotiateProtocolVersion,
    Other(u8),
}

impl Backend {
    pub fn name(&self) -> String {
        match self {
            Backend::Auth(_) => "Authentication".into(),
            Backend::ParameterStatus(..) => "ParameterStatus".into(),
            Backend::KeyData { .. } => "BackendKeyData".into(),
            Backend::ReadyForQuery(s) => format!("ReadyForQuery '{}'", char::from(*s)),
            Backend::RowDescription(_) => "RowDescription".into(),
            Backend::DataRow(_) => "DataRow".into(),
            Backend::CommandComplete(t) => format!("CommandComplete \"{t}\""),
            Backend::EmptyQuery => "EmptyQueryResponse".into(),
            Backend::Error(_) => "ErrorResponse".into(),
            Backend::Notice(_) => "NoticeResponse".into(),
            Backend::CopyInResponse => "CopyInResponse".into(),
            Backend::CopyOutResponse => "CopyOutResponse".into(),
            Backend::CopyBothResponse => "CopyBothResponse".into(),
            Backend::CopyData(_) => "CopyData".into(),
            Backend::CopyDone => "CopyDone".into(),
            Backend::NegotiateProtocolVersion => "NegotiateProtocolVersion".into(),
            Backend::Other(t) => format!("message type '{}'", char::from(*t)),
        }
    }
}

/// What [`split_message`] found at the front of the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Split {
    Message(u8, Bytes),
    /// Read at least this many more bytes.
    Need(usize),
    /// The length word is impossible.
    BadLength(u8, usize),
}

/// Splits one complete message off `buf`, if there is one.
pub fn split_message(buf: &mut BytesMut) -> Split {
    let Some(&[tag, l0, l1, l2, l3]) = buf.first_chunk::<5>() else {
        return Split::Need(5 - buf.len());
    };
    let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
    if !(4..=MAX_MESSAGE_LEN).contains(&len) {
        return Split::BadLength(tag, len);
    }
    if buf.len() < len + 1 {
        return Split::Need(len + 1 - buf.len());
    }
    let mut msg = buf.split_to(len + 1).freeze();
    msg.advance(5);
    Split::Message(tag, msg)
}

/// A cursor over a message body that reports truncation as a protocol error.
struct Body {
    b: Bytes,
    what: &'static str,
}

impl Body {
    fn short(&self) -> Error {
        Error::protocol(format!("truncated {} message", self.what))
    }
    fn u8(&mut self) -> Result<u8> {
        if self.b.remaining() < 1 {
            return Err(self.short());
        }
        Ok(self.b.get_u8())
    }
    fn i16(&mut self) -> Result<i16> {
        if self.b.remaining() < 2 {
            return Err(self.short());
        }
        Ok(self.b.get_i16())
    }
    /// Reads an Int16 item count whose items take at least `min_item_len` bytes each, so a
    /// count that cannot fit the rest of the body is refused before anything is allocated.
    fn count(&mut self, min_item_len: usize) -> Result<usize> {
        let n = self.i16()?;
        match usize::try_from(n) {
            Ok(n) if n * min_item_len <= self.b.remaining() => Ok(n),
            _ => Err(Error::protocol(format!(
                "{} count {n} does not fit its length",
                self.what
            ))),
        }
    }
    fn i32(&mut self) -> Result<i32> {
        if self.b.remaining() < 4 {
            return Err(self.short());
        }
        Ok(self.b.get_i32())
    }
    fn cstr(&mut self) -> Result<String> {
        let end = self
            .b
            .iter()
            .position(|&c| c == 0)
            .ok_or_else(|| self.short())?;
        // In bounds: `end` is the position of a NUL found above.
        let field = self.b.split_to(end);
        self.b.advance(1);
        Ok(String::from_utf8_lossy(&field).into_owned())
    }
    fn take(&mut self, n: usize) -> Result<Bytes> {
        if self.b.remaining() < n {
            return Err(self.short());
        }
        Ok(self.b.split_to(n))
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        <[u8; N]>::try_from(s.as_ref()).map_err(|_| self.short())
    }
}

/// Decodes a message body by its type byte.
pub fn decode(tag: u8, body: Bytes) -> Result<Backend> {
    Ok(match tag {
        b'd' => Backend::CopyData(body),
        b'c' => Backend::CopyDone,
        b'D' => {
            let mut b = Body {
                b: body,
                what: "DataRow",
            };
            // Each column takes at least its 4-byte length.
            let n = b.count(4)?;
            let mut cols = Vec::with_capacity(n);
            for _ in 0..n {
                let len = b.i32()?;
                cols.push(if len < 0 {
                    None
                } else {
                    Some(b.take(len as usize)?)
                });
            }
            Backend::DataRow(cols)
        }
        b'T' => {
            let mut b = Body {
                b: body,
                what: "RowDescription",
            };
            // Each field takes at least 19 bytes: an empty name and six integers.
            let n = b.count(19)?;
            let mut cols = Vec::with_capacity(n);
            for _ in 0..n {
                let name = b.cstr()?;
                let _table = b.i32()?;
                let _attnum = b.i16()?;
                let type_oid = b.i32()? as u32;
                let _typlen = b.i16()?;
                let _typmod = b.i32()?;
                let _format = b.i16()?;
                cols.push(Column { name, type_oid });
            }
            Backend::RowDescription(cols)
        }
        b'C' => Backend::CommandComplete(
            Body {
                b: body,
                what: "CommandComplete",
            }
            .cstr()?,
        ),
        b'Z' => Backend::ReadyForQuery(
            Body {
                b: body,
                what: "ReadyForQuery",
            }
            .u8()?,
        ),
        b'E' => Backend::Error(Box::new(DbError::parse(&body))),
        b'N' => Backend::Notice(Box::new(DbError::parse(&body))),
        b'S' => {
            let mut b = Body {
                b: body,
                what: "ParameterStatus",
            };
            Backend::ParameterStatus(b.cstr()?, b.cstr()?)
        }
        b'K' => {
            let mut b = Body {
                b: body,
                what: "BackendKeyData",
            };
            let pid = b.i32()?;
            Backend::KeyData { pid, key: b.b }
        }
        b'G' => Backend::CopyInResponse,
        b'H' => Backend::CopyOutResponse,
        b'W' => Backend::CopyBothResponse,
        b'I' => Backend::EmptyQuery,
        b'v' => Backend::NegotiateProtocolVersion,
        b'R' => {
            let mut b = Body {
                b: body,
                what: "Authentication",
            };
            Backend::Auth(match b.i32()? {
                0 => AuthRequest::Ok,
                3 => AuthRequest::Cleartext,
                5 => AuthRequest::Md5(b.array()?),
                10 => {
                    let mut mechs = Vec::new();
                    loop {
                        let m = b.cstr()?;
                        if m.is_empty() {
                            break;
                        }
                        mechs.push(m);
                    }
                    AuthRequest::Sasl(mechs)
                }
                11 => AuthRequest::SaslContinue(b.b),
                12 => AuthRequest::SaslFinal(b.b),
                other => AuthRequest::Other(other),
            })
        }
        other => Backend::Other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn splits_and_decodes() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(
            b'D',
            &[0, 2, 0, 0, 0, 1, b'x', 0xff, 0xff, 0xff, 0xff],
        ));
        buf.extend_from_slice(&frame(b'Z', b"I")[..3]);
        let Split::Message(tag, body) = split_message(&mut buf) else {
            panic!()
        };
        match decode(tag, body).unwrap() {
            Backend::DataRow(c) => assert_eq!(c, vec![Some(Bytes::from_static(b"x")), None]),
            m => panic!("{m:?}"),
        }
        assert_eq!(split_message(&mut buf), Split::Need(2));
    }

    #[test]
    fn refuses_bad_lengths() {
        let mut buf = BytesMut::from(&[b'd', 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(split_message(&mut buf), Split::BadLength(..)));
        // A DataRow claiming 30000 columns in 2 bytes is an error, not a 30000-entry Vec.
        assert!(decode(b'D', Bytes::from_static(&[0x75, 0x30])).is_err());
        assert!(decode(b'T', Bytes::from_static(&[0, 1, b'a'])).is_err());
        assert!(decode(b'R', Bytes::from_static(&[0, 0, 0, 5, 1])).is_err());
    }
}
