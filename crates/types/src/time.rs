//! Calendar arithmetic for the timestamps PostgreSQL's files carry (`backup_manifest`'s
//! `Last-Modified`, WAL commit and restore-point times), in UTC, without a time zone database.

/// Seconds between the Unix epoch and PostgreSQL's (2000-01-01 00:00:00 UTC).
pub const POSTGRES_EPOCH_UNIX_SECS: i64 = 946_684_800;

/// `YYYY-MM-DD HH:MM:SS` for Unix seconds `secs`, with `.uuuuuu` when `usecs` is given,
/// followed by a space and `zone`.
pub fn format_utc(secs: i64, usecs: Option<i64>, zone: &str) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let frac = usecs.map(|u| format!(".{u:06}")).unwrap_or_default();
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}{frac} {zone}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Year, month and day of the `z`-th day since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, public domain), for any day an `i64` of seconds can name.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
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

/// The inverse of [`civil_from_days`] (`days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip() {
        for z in [-800_000, -1, 0, 1, 11_016, 19_723, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z, "{z}");
        }
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(
            format_utc(951_782_400, None, "GMT"),
            "2000-02-29 00:00:00 GMT"
        );
        assert_eq!(
            format_utc(POSTGRES_EPOCH_UNIX_SECS, Some(42), "UTC"),
            "2000-01-01 00:00:00.000042 UTC"
        );
    }
}
