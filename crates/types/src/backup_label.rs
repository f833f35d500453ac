//! `backup_label`: parsed as `pg_combinebackup` parses it, rewritten as it rewrites it.

use crate::lsn::{Lsn, TimeLineId};

/// Upper bound pg_combinebackup accepts for a backup_label (10 000 + 1024 bytes).
pub const MAX_BACKUP_LABEL_LEN: usize = 10_000 + 1024;

/// The fields of `backup_label` that chain checks need; the text is kept verbatim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupLabel {
    pub start_lsn: Lsn,
    pub start_tli: TimeLineId,
    /// `INCREMENTAL FROM LSN/TLI`: present only on incremental backups.
    pub incremental_from: Option<(Lsn, TimeLineId)>,
    pub text: Vec<u8>,
}

/// Why a backup_label was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupLabelError {
    #[error(
        "backup_label is {0} bytes, more than the {MAX_BACKUP_LABEL_LEN} bytes PostgreSQL writes"
    )]
    TooLong(usize),
    #[error("backup_label: could not parse {field}: \"{line}\"")]
    BadField { field: &'static str, line: String },
    #[error("backup_label: {0} line is missing")]
    Missing(&'static str),
    #[error("backup_label: INCREMENTAL FROM LSN and INCREMENTAL FROM TLI must both be present or both be absent")]
    HalfIncremental,
}

const START_WAL: &[u8] = b"START WAL LOCATION: ";
const START_TLI: &[u8] = b"START TIMELINE: ";
const INCR_LSN: &[u8] = b"INCREMENTAL FROM LSN: ";
const INCR_TLI: &[u8] = b"INCREMENTAL FROM TLI: ";

impl BackupLabel {
    pub fn parse(text: &[u8]) -> Result<BackupLabel, BackupLabelError> {
        if text.len() > MAX_BACKUP_LABEL_LEN {
            return Err(BackupLabelError::TooLong(text.len()));
        }
        let (mut start_lsn, mut start_tli, mut incr_lsn, mut incr_tli) = (None, None, None, None);
        for line in text.split_inclusive(|&b| b == b'\n') {
            let bad = |field| BackupLabelError::BadField {
                field,
                line: String::from_utf8_lossy(line).trim_end().to_string(),
            };
            if let Some(rest) = line.strip_prefix(START_WAL) {
                // The LSN must be followed by a space (then "(file ...)").
                let (lsn, after) = take_lsn(rest).ok_or_else(|| bad("START WAL LOCATION"))?;
                if !after.starts_with(b" ") {
                    return Err(bad("START WAL LOCATION"));
                }
                start_lsn = Some(lsn);
            } else if let Some(rest) = line.strip_prefix(START_TLI) {
                start_tli = Some(take_tli_line(rest).ok_or_else(|| bad("START TIMELINE"))?);
            } else if let Some(rest) = line.strip_prefix(INCR_LSN) {
                let (lsn, after) = take_lsn(rest).ok_or_else(|| bad("INCREMENTAL FROM LSN"))?;
                if after != b"\n" {
                    return Err(bad("INCREMENTAL FROM LSN"));
                }
                incr_lsn = Some(lsn);
            } else if let Some(rest) = line.strip_prefix(INCR_TLI) {
                incr_tli = Some(take_tli_line(rest).ok_or_else(|| bad("INCREMENTAL FROM TLI"))?);
            }
        }
        let incremental_from = match (incr_lsn, incr_tli) {
            (Some(l), Some(t)) => Some((l, t)),
            (None, None) => None,
            _ => return Err(BackupLabelError::HalfIncremental),
        };
        Ok(BackupLabel {
            start_lsn: start_lsn.ok_or(BackupLabelError::Missing("START WAL LOCATION"))?,
            start_tli: start_tli.ok_or(BackupLabelError::Missing("START TIMELINE"))?,
            incremental_from,
            text: text.to_vec(),
        })
    }

    /// The label of a combined backup: every line kept byte for byte except the
    /// `INCREMENTAL FROM` lines.
    pub fn without_incremental_lines(&self) -> Vec<u8> {
        self.text
            .split_inclusive(|&b| b == b'\n')
            .filter(|l| !l.starts_with(INCR_LSN) && !l.starts_with(INCR_TLI))
            .flatten()
            .copied()
            .collect()
    }
}

/// Parses a `%X/%X` LSN at the start of `s`, returning it and what follows.
fn take_lsn(s: &[u8]) -> Option<(Lsn, &[u8])> {
    let end = s
        .iter()
        .position(|&b| !(b.is_ascii_hexdigit() || b == b'/'))
        .unwrap_or(s.len());
    let (text, rest) = s.split_at_checked(end)?;
    Some((std::str::from_utf8(text).ok()?.parse().ok()?, rest))
}

/// Parses a non-zero decimal TLI followed immediately by a newline.
fn take_tli_line(s: &[u8]) -> Option<TimeLineId> {
    let digits = s.strip_suffix(b"\n")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (v != 0).then_some(TimeLineId(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INCR: &str = "START WAL LOCATION: 0/6000028 (file 000000010000000000000006)\n\
CHECKPOINT LOCATION: 0/6000080\n\
BACKUP METHOD: streamed\n\
BACKUP FROM: primary\n\
START TIME: 2026-11-21 10:00:00 UTC\n\
LABEL: pg_basebackup base backup\n\
START TIMELINE: 1\n\
INCREMENTAL FROM LSN: 0/2000028\n\
INCREMENTAL FROM TLI: 1\n";

    #[test]
    fn parses_and_rewrites() {
        let l = BackupLabel::parse(INCR.as_bytes()).unwrap();
        assert_eq!(l.start_lsn, Lsn(0x6000028));
        assert_eq!(l.start_tli, TimeLineId(1));
        assert_eq!(l.incremental_from, Some((Lsn(0x2000028), TimeLineId(1))));
        let full = String::from_utf8(l.without_incremental_lines()).unwrap();
        assert!(full.ends_with("START TIMELINE: 1\n"));
        assert_eq!(
            BackupLabel::parse(full.as_bytes())
                .unwrap()
                .incremental_from,
            None
        );
    }

    #[test]
    fn refuses_bad_labels() {
        let half = INCR.replace("INCREMENTAL FROM TLI: 1\n", "");
        assert_eq!(
            BackupLabel::parse(half.as_bytes()),
            Err(BackupLabelError::HalfIncremental)
        );
        let zero = INCR.replace("START TIMELINE: 1", "START TIMELINE: 0");
        assert!(BackupLabel::parse(zero.as_bytes()).is_err());
        assert!(BackupLabel::parse(b"LABEL: x\n").is_err());
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_bytes_never_panic(text in proptest::collection::vec(any::<u8>(), 0..512)) {
                if let Ok(l) = BackupLabel::parse(&text) {
                    let full = BackupLabel::parse(&l.without_incremental_lines()).unwrap();
                    prop_assert_eq!((full.start_lsn, full.start_tli), (l.start_lsn, l.start_tli));
                }
            }

            #[test]
            fn written_labels_round_trip(
                start: u64,
                tli in 1u32..,
                incr in proptest::option::of((any::<u64>(), 1u32..)),
                label in "[ -~]{0,40}",
            ) {
                let mut text = format!(
                    "START WAL LOCATION: {} (file 000000010000000000000006)\n\
                     CHECKPOINT LOCATION: 0/6000080\nLABEL: {label}\nSTART TIMELINE: {tli}\n",
                    Lsn(start)
                );
                if let Some((lsn, t)) = incr {
                    text.push_str(&format!(
                        "INCREMENTAL FROM LSN: {}\nINCREMENTAL FROM TLI: {t}\n",
                        Lsn(lsn)
                    ));
                }
                let l = BackupLabel::parse(text.as_bytes()).unwrap();
                prop_assert_eq!(l.start_lsn, Lsn(start));
                prop_assert_eq!(l.start_tli, TimeLineId(tli));
                prop_assert_eq!(l.incremental_from, incr.map(|(a, t)| (Lsn(a), TimeLineId(t))));
                let full = BackupLabel::parse(&l.without_incremental_lines()).unwrap();
                prop_assert_eq!(full.incremental_from, None);
                prop_assert_eq!(full.start_lsn, Lsn(start));
            }
        }
    }
}
