//! Recovery targets, as PostgreSQL's `recovery_target_*` settings spell them, and the time
//! parsing pgincr needs to pick a backup for `--time` on its own.

use pgincr_types::Lsn;
use serde::Serialize;

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The end of the archived WAL (PostgreSQL's default: no `recovery_target_*`).
    End,
    /// The backup's own consistency point (`recovery_target = 'immediate'`).
    Immediate,
    /// `recovery_target_time`: the text as given (PostgreSQL parses it) and the instant, in
    /// microseconds since the Unix epoch, pgincr parsed from it.
    Time {
        text: String,
        unix_micros: i64,
    },
    Lsn(Lsn),
    /// `recovery_target_name`: a restore point made with `pg_create_restore_point()`.
    Name(String),
    Xid(u64),
}

/// `recovery_target_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pause,
    Promote,
    Shutdown,
}

impl Action {
    pub fn parse(s: &str) -> Result<Action, String> {
        match s {
            "pause" => Ok(Action::Pause),
            "promote" => Ok(Action::Promote),
            "shutdown" => Ok(Action::Shutdown),
            _ => Err(format!(
                "invalid recovery target action \"{s}\": pause, promote or shutdown"
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Promote => "promote",
            Action::Shutdown => "shutdown",
        }
    }
}

/// A target with its modifiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetOptions {
    pub target: Target,
    /// `recovery_target_inclusive` (PostgreSQL's default: true).
    pub inclusive: bool,
    /// `recovery_target_timeline`: "current", "latest" (the default) or a number.
    pub timeline: Option<String>,
    pub action: Option<Action>,
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions {
            target: Target::End,
            inclusive: true,
            timeline: None,
            action: None,
        }
    }
}

/// A value as `postgresql.auto.conf` quotes it.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

impl TargetOptions {
    /// The `recovery_target_*` lines for `postgresql.auto.conf`.
    pub fn settings(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut set = |k: &str, v: String| out.push((k.to_string(), v));
        let targeted = match &self.target {
            Target::End => false,
            Target::Immediate => {
                set("recovery_target", quote("immediate"));
                true
            }
            Target::Time { text, .. } => {
                set("recovery_target_time", quote(text));
                true
            }
            Target::Lsn(l) => {
                set("recovery_target_lsn", quote(&l.to_string()));
                true
            }
            Target::Name(n) => {
                set("recovery_target_name", quote(n));
                true
            }
            Target::Xid(x) => {
                set("recovery_target_xid", quote(&x.to_string()));
                true
            }
        };
        if targeted && !matches!(self.target, Target::Immediate | Target::Name(_)) {
            set(
                "recovery_target_inclusive",
                if self.inclusive { "on" } else { "off" }.into(),
            );
        }
        if let Some(t) = &self.timeline {
            set("recovery_target_timeline", quote(t));
        }
        if let (true, Some(a)) = (targeted, self.action) {
            set("recovery_target_action", quote(a.as_str()));
        }
        out
    }

    /// What happens when recovery gets there, in words for the user.
    pub fn outcome(&self) -> String {
        if self.target == Target::End {
            return "recovery replays all archived WAL, then the server is promoted to a new timeline and accepts writes".into();
        }
        match self.action.unwrap_or(Action::Pause) {
            Action::Pause => "at the target recovery pauses with the server read-only: inspect the data, then run SELECT pg_wal_replay_resume(); to promote it (or stop it and restore to another target)".into(),
            Action::Promote => "at the target the server is promoted to a new timeline and accepts writes".into(),
            Action::Shutdown => "at the target the server shuts down; start it again to promote, or change the target".into(),
        }
    }
}

/// Parses a time with an explicit zone: `YYYY-MM-DD HH:MM:SS[.ffffff]` followed by `Z`,
/// `UTC`, `+HH`, `+HH:MM` or `+HHMM` (or `-`), with a space or `T` between date and time.
/// A time without a zone is refused: PostgreSQL would read it in the server's `TimeZone`,
/// which pgincr cannot know, and the two must agree on which backup comes first.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let bad = |why: &str| {
        format!("invalid --time \"{text}\": {why}; write it as 2025-01-23 05:00:02+00 (a time zone is required)")
    };
    let t = text.trim();
    let (date, rest) = t.split_at_checked(10).ok_or_else(|| bad("too short"))?;
    let mut d = date.split('-');
    let (Some(y), Some(mo), Some(da), None) = (d.next(), d.next(), d.next(), d.next()) else {
        return Err(bad("the date is not YYYY-MM-DD"));
    };
    let num = |s: &str, what: &str| s.parse::<u32>().map_err(|_| bad(what));
    let (y, mo, da) = (
        num(y, "bad year")?,
        num(mo, "bad month")?,
        num(da, "bad day")?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return Err(bad("month or day out of range"));
    }
    let rest = rest
        .strip_prefix(' ')
        .or_else(|| rest.strip_prefix('T'))
        .ok_or_else(|| bad("expected a time after the date"))?;
    let (clock, zone) = rest
        .split_at_checked(8)
        .ok_or_else(|| bad("the time is not HH:MM:SS"))?;
    let mut c = clock.split(':');
    let (Some(h), Some(mi), Some(se), None) = (c.next(), c.next(), c.next(), c.next()) else {
        return Err(bad("the time is not HH:MM:SS"));
    };
    let (h, mi, se) = (
        num(h, "bad hour")?,
        num(mi, "bad minute")?,
        num(se, "bad second")?,
    );
    if h > 23 || mi > 59 || se > 60 {
        return Err(bad("hour, minute or second out of range"));
    }
    let (micros, zone) = match zone.strip_prefix('.') {
        Some(z) => {
            let n = z.find(|c: char| !c.is_ascii_digit()).unwrap_or(z.len());
            let (frac, zone) = z.split_at(n);
            let mut f = frac.to_string();
            f.truncate(6);
            while f.len() < 6 {
                f.push('0');
            }
            (f.parse::<i64>().map_err(|_| bad("bad fraction"))?, zone)
        }
        None => (0, zone),
    };
    let zone = zone.trim();
    let offset_secs: i64 = match zone {
        "Z" | "UTC" | "+00" | "-00" => 0,
        "" => return Err(bad("no time zone")),
        z => {
            let (sign, hm) = match z.split_at_checked(1) {
                Some(("+", hm)) => (1, hm),
                Some(("-", hm)) => (-1, hm),
                _ => return Err(bad("the time zone is not Z, UTC or +HH[:MM]")),
            };
            let hm = hm.replace(':', "");
            let (hh, mm) = match hm.len() {
                2 => (hm.as_str(), "0"),
                4 => hm.split_at(2),
                _ => return Err(bad("the time zone is not +HH or +HH:MM")),
            };
            let hh: i64 = hh.parse().map_err(|_| bad("bad zone hours"))?;
            let mm: i64 = mm.parse().map_err(|_| bad("bad zone minutes"))?;
            sign * (hh * 3600 + mm * 60)
        }
    };
    let days = pgincr_types::time::days_from_civil(i64::from(y), mo, da);
    let secs =
        days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(se) - offset_secs;
    Ok(secs * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_with_zones() {
        assert_eq!(
            parse_time("2025-01-23 05:00:02+00"),
            Ok(1_737_608_402_000_000)
        );
        assert_eq!(
            parse_time("2025-01-23T05:00:02Z"),
            Ok(1_737_608_402_000_000)
        );
        assert_eq!(
            parse_time("2025-01-23 07:00:02+02:00"),
            Ok(1_737_608_402_000_000)
        );
        assert_eq!(
            parse_time("2025-01-23 05:00:02.5 UTC"),
            Ok(1_737_608_402_500_000)
        );
        assert_eq!(
            parse_time("2025-01-23 00:00:02-0500"),
            Ok(1_737_608_402_000_000)
        );
        assert!(parse_time("2025-01-23 05:00:02")
            .unwrap_err()
            .contains("time zone"));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2025-13-23 05:00:02Z").is_err());
    }

    #[test]
    fn settings_quote_and_default() {
        let t = TargetOptions {
            target: Target::Name("before 'drop'".into()),
            action: Some(Action::Promote),
            ..TargetOptions::default()
        };
        assert_eq!(
            t.settings(),
            vec![
                ("recovery_target_name".into(), "'before ''drop'''".into()),
                ("recovery_target_action".into(), "'promote'".into()),
            ]
        );
        assert!(TargetOptions::default().settings().is_empty());
        let t = TargetOptions {
            target: Target::Xid(1234),
            inclusive: false,
            ..TargetOptions::default()
        };
        assert_eq!(
            t.settings(),
            vec![
                ("recovery_target_xid".into(), "'1234'".into()),
                ("recovery_target_inclusive".into(), "off".into()),
            ]
        );
    }
}
