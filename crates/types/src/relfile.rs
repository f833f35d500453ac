//! Relation identity and relation file names (`<relfilenumber>[_<fork>][.<segno>]`).

use std::fmt;

/// An object identifier.
pub type Oid = u32;

/// A block number within a relation fork (`BlockNumber`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockNumber(pub u32);

impl fmt::Display for BlockNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A relation fork. Stored on disk as a 4-byte C enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ForkNumber {
    Main = 0,
    Fsm = 1,
    VisibilityMap = 2,
    Init = 3,
}

impl ForkNumber {
    pub const ALL: [ForkNumber; 4] = [Self::Main, Self::Fsm, Self::VisibilityMap, Self::Init];

    pub fn from_i32(v: i32) -> Option<ForkNumber> {
        Self::ALL.get(usize::try_from(v).ok()?).copied()
    }

    /// The name PostgreSQL prints (`forkNames`): main, fsm, vm, init.
    pub fn name(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Fsm => "fsm",
            Self::VisibilityMap => "vm",
            Self::Init => "init",
        }
    }

    /// The file-name suffix: empty for the main fork, else `_<name>`.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Main => "",
            Self::Fsm => "_fsm",
            Self::VisibilityMap => "_vm",
            Self::Init => "_init",
        }
    }
}

impl fmt::Display for ForkNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `RelFileLocator`: where a relation's files live. Field order is PostgreSQL's sort order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelFileLocator {
    pub spc_oid: Oid,
    pub db_oid: Oid,
    pub rel_number: Oid,
}

/// A parsed relation file name: `<relfilenumber>[_<fork>][.<segno>]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RelFileName {
    pub rel_number: Oid,
    pub fork: ForkNumber,
    pub segno: u32,
}

impl RelFileName {
    /// Parses a bare file name as `parse_filename_for_nontemp_relation` does: decimal numbers
    /// without leading zeros in 1..=u32::MAX, fork one of fsm/vm/init, nothing after.
    pub fn parse(name: &str) -> Option<RelFileName> {
        let (rel, rest) = split_decimal(name)?;
        let (fork, rest) = match rest.strip_prefix('_') {
            Some(r) => {
                let fork = [ForkNumber::Fsm, ForkNumber::VisibilityMap, ForkNumber::Init]
                    .into_iter()
                    .find(|f| r.starts_with(f.name()))?;
                (fork, &r[fork.name().len()..])
            }
            None => (ForkNumber::Main, rest),
        };
        let segno = match rest.strip_prefix('.') {
            Some(r) => {
                let (seg, tail) = split_decimal(r)?;
                if !tail.is_empty() {
                    return None;
                }
                seg
            }
            None if rest.is_empty() => 0,
            None => return None,
        };
        Some(RelFileName {
            rel_number: rel,
            fork,
            segno,
        })
    }
}

impl fmt::Display for RelFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.rel_number, self.fork.suffix())?;
        if self.segno > 0 {
            write!(f, ".{}", self.segno)?;
        }
        Ok(())
    }
}

/// Splits a leading decimal in 1..=u32::MAX with no leading zero.
fn split_decimal(s: &str) -> Option<(u32, &str)> {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    let digits = &s[..end];
    if digits.is_empty() || digits.starts_with('0') {
        return None;
    }
    let v: u32 = digits.parse().ok()?;
    Some((v, &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_relation_file_names() {
        let p = |s| RelFileName::parse(s);
        assert_eq!(
            p("16384"),
            Some(RelFileName {
                rel_number: 16384,
                fork: ForkNumber::Main,
                segno: 0
            })
        );
        assert_eq!(
            p("16384_vm.2"),
            Some(RelFileName {
                rel_number: 16384,
                fork: ForkNumber::VisibilityMap,
                segno: 2
            })
        );
        assert_eq!(
            p("1_init"),
            Some(RelFileName {
                rel_number: 1,
                fork: ForkNumber::Init,
                segno: 0
            })
        );
        for bad in [
            "0",
            "01",
            "16384.0",
            "16384.",
            "16384_foo",
            "16384_vmx",
            "t3_16384",
            "4294967296",
            "pg_control",
            "",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
        assert_eq!(
            p("16384_fsm.7").map(|r| r.to_string()).as_deref(),
            Some("16384_fsm.7")
        );
    }
}
