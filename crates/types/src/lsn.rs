//! Log sequence numbers and timeline IDs.

use std::fmt;
use std::str::FromStr;

/// A WAL position (`XLogRecPtr`). Text form is `%X/%X`: uppercase, unpadded halves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(into = "String")]
pub struct Lsn(pub u64);

impl Lsn {
    /// `InvalidXLogRecPtr`.
    pub const INVALID: Lsn = Lsn(0);

    pub fn is_valid(self) -> bool {
        self.0 != 0
    }

    /// The WAL segment number holding this position (`XLByteToSeg`).
    pub fn segment(self, wal_segment_size: u64) -> u64 {
        self.0 / wal_segment_size
    }

    /// The segment holding the byte just before this position (`XLByteToPrevSeg`).
    pub fn prev_segment(self, wal_segment_size: u64) -> u64 {
        self.0.saturating_sub(1) / wal_segment_size
    }

    /// Offset of this position inside its segment.
    pub fn segment_offset(self, wal_segment_size: u64) -> u64 {
        self.0 & (wal_segment_size - 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 as u32)
    }
}

impl From<Lsn> for String {
    fn from(lsn: Lsn) -> String {
        lsn.to_string()
    }
}

/// Why a text LSN was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN \"{0}\": expected two hexadecimal halves such as 0/3000028")]
pub struct ParseLsnError(pub String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    /// Accepts what PostgreSQL's `sscanf("%X/%X")` accepts in practice: 1-8 hex digits per
    /// half, either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseLsnError(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let half = |h: &str| {
            if h.is_empty() || h.len() > 8 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u32::from_str_radix(h, 16).map_err(|_| bad())
        };
        Ok(Lsn((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
    }
}

/// A timeline (`TimeLineID`). Decimal in text, 8 uppercase hex digits in file names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct TimeLineId(pub u32);

impl fmt::Display for TimeLineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_like_postgres() {
        assert_eq!(Lsn(0x3000028).to_string(), "0/3000028");
        assert_eq!(Lsn(0x1A_B374D848).to_string(), "1A/B374D848");
    }

    #[test]
    fn parses_leniently() {
        assert_eq!("0/3000028".parse::<Lsn>(), Ok(Lsn(0x3000028)));
        assert_eq!("1a/b374d848".parse::<Lsn>(), Ok(Lsn(0x1A_B374D848)));
        assert_eq!("00000000/00000001".parse::<Lsn>(), Ok(Lsn(1)));
        for bad in ["", "0", "/1", "1/", "0/123456789", "g/1", "0/1/2", " 0/1"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn segments() {
        let seg = 16 << 20;
        assert_eq!(Lsn(0x3000028).segment(seg), 3);
        assert_eq!(Lsn(0x3000000).prev_segment(seg), 2);
        assert_eq!(Lsn(0x3000028).segment_offset(seg), 0x28);
    }

    proptest! {
        #[test]
        fn text_round_trip(v: u64) {
            prop_assert_eq!(Lsn(v).to_string().parse::<Lsn>(), Ok(Lsn(v)));
        }
    }
}
