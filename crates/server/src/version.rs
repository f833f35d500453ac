//! Major versions and what `postgres --version` says.

use std::fmt;

/// A PostgreSQL major version pgincr supports: the ones with WAL summaries and incremental
/// backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Major {
    V17,
    V18,
}

impl Major {
    pub const ALL: [Major; 2] = [Major::V17, Major::V18];

    /// The version number, as in `PG_VERSION`: 17 or 18.
    pub fn number(self) -> u32 {
        match self {
            Major::V17 => 17,
            Major::V18 => 18,
        }
    }

    /// The supported major whose number is `n`, if any.
    pub fn from_number(n: u32) -> Option<Major> {
        Major::ALL.into_iter().find(|m| m.number() == n)
    }
}

impl fmt::Display for Major {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgreSQL {}", self.number())
    }
}

/// A server version as `postgres --version` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// 17 for "17.10", "17beta2" and "17devel".
    pub major: u32,
    /// 10 for "17.10"; `None` for pre-releases ("18beta1", "18rc1", "18devel").
    pub minor: Option<u32>,
    /// The version word itself, such as "17.10" or "18beta1".
    pub text: String,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses the output of `postgres --version` (or `pg_config --version`, `psql --version`):
/// `postgres (PostgreSQL) 17.10`, possibly followed by a packager's note such as
/// `(Debian 17.2-1.pgdg120+1)`. Returns `None` when there is no version word.
pub(crate) fn parse_version(output: &str) -> Option<Version> {
    let line = output.lines().next()?;
    // The version follows "(PostgreSQL) " in every build; fall back to the first word that
    // starts with a digit for forks that rename the product.
    let word = match line.split_once("(PostgreSQL) ") {
        Some((_, rest)) => rest.split_whitespace().next()?,
        None => line
            .split_whitespace()
            .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?,
    };
    let digits = |s: &str| -> usize { s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()) };
    let n = digits(word);
    let major = word[..n].parse().ok()?;
    let rest = &word[n..];
    let minor = match rest.strip_prefix('.') {
        Some(m) if digits(m) > 0 => m[..digits(m)].parse().ok(),
        _ => None,
    };
    Some(Version {
        major,
        minor,
        text: word.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> (u32, Option<u32>, String) {
        let v = parse_version(s).unwrap_or_else(|| panic!("no version in {s:?}"));
        (v.major, v.minor, v.text)
    }

    #[test]
    fn releases() {
        assert_eq!(
            parse("postgres (PostgreSQL) 17.10\n"),
            (17, Some(10), "17.10".into())
        );
        assert_eq!(
            parse("postgres (PostgreSQL) 18.6"),
            (18, Some(6), "18.6".into())
        );
        assert_eq!(
            parse("psql (PostgreSQL) 17.2 (Debian 17.2-1.pgdg120+1)"),
            (17, Some(2), "17.2".into())
        );
    }

    #[test]
    fn pre_releases_have_no_minor() {
        assert_eq!(parse("postgres (PostgreSQL) 18beta1").0, 18);
        assert_eq!(parse("postgres (PostgreSQL) 18beta1").1, None);
        assert_eq!(parse("postgres (PostgreSQL) 19devel").1, None);
        assert_eq!(parse("postgres (PostgreSQL) 18rc1").0, 18);
    }

    #[test]
    fn other_spellings() {
        assert_eq!(parse("PostgreSQL 17.4").0, 17);
        // Before 10 the major had two parts; only its first number is kept.
        assert_eq!(parse("postgres (PostgreSQL) 9.6.24").0, 9);
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("postgres: command not found"), None);
        assert_eq!(parse_version("postgres (PostgreSQL) beta"), None);
    }

    #[test]
    fn majors() {
        assert_eq!(Major::from_number(17), Some(Major::V17));
        assert_eq!(Major::from_number(18), Some(Major::V18));
        assert_eq!(Major::from_number(16), None);
        assert_eq!(Major::V18.to_string(), "PostgreSQL 18");
    }
}
