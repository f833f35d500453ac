//! Backup names: `{YYYY}-{mm}-{dd}-{HHMMSS}_{FULL|INCR}_{index in round}` in UTC, e.g.
//! `2025-01-23-050002_FULL_0`. For years 0000–9999 sorting by name is sorting by time.

use std::fmt;

use pgincr_types::time::{civil_from_days, days_from_civil};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NameKind {
    Full,
    Incr,
}

/// A parsed backup name. Ordered by time, then kind, then index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupName {
    /// Unix seconds (UTC) the run started.
    pub time: i64,
    pub kind: NameKind,
    pub index: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("\"{0}\" is not a backup name (expected YYYY-mm-dd-HHMMSS_FULL_0 or ..._INCR_<n>)")]
    Malformed(String),
    #[error("time {0} cannot be written as a four-digit-year backup name")]
    OutOfRange(i64),
}

impl BackupName {
    pub fn new(time: i64, kind: NameKind, index: u32) -> Result<BackupName, NameError> {
        // 0000-01-01 .. 9999-12-31: outside it the name no longer sorts by time.
        const MIN: i64 = -62_167_219_200;
        const MAX: i64 = 253_402_300_799;
        if !(MIN..=MAX).contains(&time) {
            return Err(NameError::OutOfRange(time));
        }
        Ok(BackupName { time, kind, index })
    }

    pub fn parse(s: &str) -> Result<BackupName, NameError> {
        let bad = || NameError::Malformed(s.to_string());
        let b = s.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Result<u32, NameError> {
            let part = s.get(r).ok_or_else(bad)?;
            if part.bytes().all(|c| c.is_ascii_digit()) {
                part.parse().map_err(|_| bad())
            } else {
                Err(bad())
            }
        };
        if b.len() < 24
            || b.get(4) != Some(&b'-')
            || b.get(7) != Some(&b'-')
            || b.get(10) != Some(&b'-')
            || b.get(17) != Some(&b'_')
        {
            return Err(bad());
        }
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, se) = (num(11..13)?, num(13..15)?, num(15..17)?);
        let rest = s.get(18..).ok_or_else(bad)?;
        let (kind, idx) = if let Some(i) = rest.strip_prefix("FULL_") {
            (NameKind::Full, i)
        } else if let Some(i) = rest.strip_prefix("INCR_") {
            (NameKind::Incr, i)
        } else {
            return Err(bad());
        };
        // Canonical decimal only, so that name -> parse -> format is the identity.
        if idx.is_empty()
            || !idx.bytes().all(|c| c.is_ascii_digit())
            || (idx.len() > 1 && idx.starts_with('0'))
        {
            return Err(bad());
        }
        let index: u32 = idx.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&mo)
            || d == 0
            || d > days_in_month(i64::from(y), mo)
            || h > 23
            || mi > 59
            || se > 59
        {
            return Err(bad());
        }
        if (kind == NameKind::Full) != (index == 0) {
            return Err(bad());
        }
        let days = days_from_civil(i64::from(y), mo, d);
        let time = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(se);
        Ok(BackupName { time, kind, index })
    }
}

fn days_in_month(y: i64, m: u32) -> u32 {
    let next = if m == 12 {
        days_from_civil(y + 1, 1, 1)
    } else {
        days_from_civil(y, m + 1, 1)
    };
    (next - days_from_civil(y, m, 1)) as u32
}

impl fmt::Display for BackupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = civil_from_days(self.time.div_euclid(86_400));
        let r = self.time.rem_euclid(86_400);
        let kind = match self.kind {
            NameKind::Full => "FULL",
            NameKind::Incr => "INCR",
        };
        write!(
            f,
            "{y:04}-{m:02}-{d:02}-{:02}{:02}{:02}_{kind}_{}",
            r / 3600,
            r / 60 % 60,
            r % 60,
            self.index
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let n = BackupName::parse("2025-01-23-050002_FULL_0").unwrap();
        assert_eq!(n.kind, NameKind::Full);
        assert_eq!(n.to_string(), "2025-01-23-050002_FULL_0");
        let i = BackupName::parse("2025-01-24-223002_INCR_17").unwrap();
        assert_eq!((i.kind, i.index), (NameKind::Incr, 17));
        assert_eq!(i.time - n.time, 86_400 + 17 * 3600 + 30 * 60);
        for t in [0i64, 951_782_400, 1_737_608_402, 4_102_444_799, -1] {
            let b = BackupName::new(t, NameKind::Incr, 3).unwrap();
            assert_eq!(BackupName::parse(&b.to_string()).unwrap(), b);
        }
        assert!(BackupName::new(253_402_300_800, NameKind::Full, 0).is_err());
    }

    #[test]
    fn sorting_by_name_is_by_time() {
        let mut names: Vec<String> = (0..200)
            .map(|k| {
                BackupName::new(
                    1_000_000_000 + k * 7_777_777 % 500_000_000,
                    NameKind::Incr,
                    1,
                )
                .unwrap()
                .to_string()
            })
            .collect();
        names.sort();
        let times: Vec<i64> = names
            .iter()
            .map(|n| BackupName::parse(n).unwrap().time)
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn refuses_malformed() {
        for s in [
            "2025-01-23-050002_FULL_1",
            "2025-01-23-050002_INCR_0",
            "2025-02-30-050002_FULL_0",
            "2025-01-23-250002_FULL_0",
            "2025-01-23-050002_INCR_01",
            "2025-01-23-050002_DIFF_1",
            "2025-01-23_050002_FULL_0",
            "2025-1-23-050002_FULL_0",
            "2025-01-23-050002_FULL_",
            ".2025-01-23-050002_FULL_0.tmp",
        ] {
            assert!(BackupName::parse(s).is_err(), "{s}");
        }
        assert!(BackupName::parse("2024-02-29-000000_FULL_0").is_ok());
    }
}
