//! `Last-Modified` timestamps: `YYYY-MM-DD HH:MM:SS GMT`.

use crate::time::{days_from_civil, format_utc};

/// `strftime("%Y-%m-%d %H:%M:%S %Z", gmtime(t))` as glibc prints it.
pub(super) fn format_gmt(secs: i64) -> String {
    format_utc(secs, None, "GMT")
}

/// Parses what [`format_gmt`] writes; `None` for anything else.
pub(super) fn parse_gmt(text: &[u8]) -> Option<i64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmt_round_trip() {
        for t in [0, -1, 1_763_000_000, 951_782_400, 4_102_444_800] {
            assert_eq!(parse_gmt(format_gmt(t).as_bytes()), Some(t), "{t}");
        }
        assert_eq!(format_gmt(951_782_400), "2000-02-29 00:00:00 GMT");
    }
}
