//! Per-file checksums of `backup_manifest`: CRC-32C and the SHA-2 family, computed as a stream.
//!
//! Names and payloads follow `src/common/checksum_helper.c`: the CRC-32C payload is the finished
//! CRC stored as a native-endian `uint32` (so on little-endian machines the hex text is the CRC
//! byte-reversed), the SHA-2 payloads are the plain digests.

use sha2::Digest;
use std::fmt;

/// A manifest checksum algorithm (`pg_checksum_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ChecksumType {
    None,
    #[default]
    Crc32c,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl ChecksumType {
    pub const ALL: [ChecksumType; 6] = [
        Self::None,
        Self::Crc32c,
        Self::Sha224,
        Self::Sha256,
        Self::Sha384,
        Self::Sha512,
    ];

    /// The upper-case name written in manifests (`pg_checksum_type_name`).
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Crc32c => "CRC32C",
            Self::Sha224 => "SHA224",
            Self::Sha256 => "SHA256",
            Self::Sha384 => "SHA384",
            Self::Sha512 => "SHA512",
        }
    }

    /// Parses a name in any case, as `pg_checksum_parse_type` does.
    pub fn parse(name: &str) -> Option<ChecksumType> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Length in bytes of a finished checksum of this type (0 for `None`).
    pub fn digest_len(self) -> usize {
        match self {
            Self::None => 0,
            Self::Crc32c => 4,
            Self::Sha224 => 28,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }
}

impl fmt::Display for ChecksumType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ChecksumType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s).ok_or_else(|| {
            format!("unrecognized checksum algorithm \"{s}\": expected CRC32C, SHA224, SHA256, SHA384, SHA512 or NONE")
        })
    }
}

/// A finished checksum: its type and payload bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Checksum {
    pub kind: ChecksumType,
    pub bytes: Box<[u8]>,
}

impl Checksum {
    /// Lower-case hex of the payload, as manifests write it.
    pub fn hex(&self) -> String {
        hex_lower(&self.bytes)
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.hex())
    }
}

/// A running checksum computation (`pg_checksum_context`).
#[derive(Clone)]
pub enum Checksummer {
    None,
    Crc32c(u32),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Checksummer {
    pub fn new(kind: ChecksumType) -> Checksummer {
        match kind {
            ChecksumType::None => Self::None,
            ChecksumType::Crc32c => Self::Crc32c(0),
            ChecksumType::Sha224 => Self::Sha224(sha2::Sha224::new()),
            ChecksumType::Sha256 => Self::Sha256(sha2::Sha256::new()),
            ChecksumType::Sha384 => Self::Sha384(sha2::Sha384::new()),
            ChecksumType::Sha512 => Self::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn kind(&self) -> ChecksumType {
        match self {
            Self::None => ChecksumType::None,
            Self::Crc32c(_) => ChecksumType::Crc32c,
            Self::Sha224(_) => ChecksumType::Sha224,
            Self::Sha256(_) => ChecksumType::Sha256,
            Self::Sha384(_) => ChecksumType::Sha384,
            Self::Sha512(_) => ChecksumType::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::None => {}
            // crc32c_append works on finished values, so chunks chain correctly.
            Self::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            Self::Sha224(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
            Self::Sha384(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    /// The finished checksum, or `None` for [`ChecksumType::None`].
    pub fn finish(self) -> Option<Checksum> {
        let kind = self.kind();
        let bytes: Box<[u8]> = match self {
            Self::None => return None,
            // Native-endian uint32, as pg_checksum_final memcpy()s it; PostgreSQL's on-disk
            // formats are little-endian on every platform pgincr supports.
            Self::Crc32c(c) => c.to_le_bytes().into(),
            Self::Sha224(h) => h.finalize().to_vec().into(),
            Self::Sha256(h) => h.finalize().to_vec().into(),
            Self::Sha384(h) => h.finalize().to_vec().into(),
            Self::Sha512(h) => h.finalize().to_vec().into(),
        };
        Some(Checksum { kind, bytes })
    }
}

/// Lower-case hex encoding (`hex_encode` in write_manifest.c).
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        // from_digit is lower-case and `Some` for every nibble.
        s.extend(char::from_digit(u32::from(b >> 4), 16));
        s.extend(char::from_digit(u32::from(b & 15), 16));
    }
    s
}

/// Decodes hex of either case; `None` on an odd length or a non-hex character.
pub(crate) fn hex_decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() & 1 == 1 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.chunks_exact(2)
        .map(|p| match *p {
            [hi, lo] => Some(nibble(hi)? << 4 | nibble(lo)?),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(kind: ChecksumType, data: &[u8]) -> String {
        let mut c = Checksummer::new(kind);
        // Feed in uneven pieces to exercise streaming.
        for piece in data.chunks(3) {
            c.update(piece);
        }
        c.finish().map(|c| c.hex()).unwrap_or_default()
    }

    #[test]
    fn known_values() {
        // CRC-32C("123456789") = 0xE3069283, written native-endian (little).
        assert_eq!(sum(ChecksumType::Crc32c, b"123456789"), "839206e3");
        assert_eq!(sum(ChecksumType::Crc32c, b""), "00000000");
        assert_eq!(
            sum(ChecksumType::Sha256, b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sum(ChecksumType::Sha224, b"abc"),
            "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7"
        );
        assert_eq!(sum(ChecksumType::Sha384, b"").len(), 96);
        assert_eq!(sum(ChecksumType::Sha512, b"").len(), 128);
        assert_eq!(sum(ChecksumType::None, b"abc"), "");
    }

    #[test]
    fn names_parse_in_any_case() {
        for t in ChecksumType::ALL {
            assert_eq!(ChecksumType::parse(&t.name().to_lowercase()), Some(t));
            assert_eq!(Checksummer::new(t).kind(), t);
        }
        assert_eq!(ChecksumType::parse("md5"), None);
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex_decode(b"00ffAb"), Some(vec![0, 255, 0xab]));
        assert_eq!(hex_decode(b"0"), None);
        assert_eq!(hex_decode(b"zz"), None);
        assert_eq!(hex_lower(&[0, 255, 0xab]), "00ffab");
    }
}
