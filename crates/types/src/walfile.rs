//! WAL segment, timeline history and WAL summary file names.

use crate::lsn::{Lsn, TimeLineId};

/// `XLogFileName`: 24 uppercase hex digits of (tli, segno / segs_per_id, segno % segs_per_id).
pub fn segment_file_name(tli: TimeLineId, segno: u64, wal_segment_size: u64) -> String {
    let per_id = 0x1_0000_0000u64 / wal_segment_size;
    format!("{:08X}{:08X}{:08X}", tli.0, segno / per_id, segno % per_id)
}

/// Parses a WAL segment file name (exactly 24 uppercase hex digits) into (tli, segno).
pub fn parse_segment_file_name(name: &str, wal_segment_size: u64) -> Option<(TimeLineId, u64)> {
    if name.len() != 24 || !name.bytes().all(is_upper_hex) {
        return None;
    }
    let tli = u32::from_str_radix(&name[0..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    let per_id = 0x1_0000_0000u64 / wal_segment_size;
    Some((TimeLineId(tli), log * per_id + seg))
}

/// `TLHistoryFileName`: `%08X.history`.
pub fn history_file_name(tli: TimeLineId) -> String {
    format!("{:08X}.history", tli.0)
}

/// The name of a WAL summary file covering `[start, end)` on `tli`.
pub fn summary_file_name(tli: TimeLineId, start: Lsn, end: Lsn) -> String {
    format!(
        "{:08X}{:08X}{:08X}{:08X}{:08X}.summary",
        tli.0,
        start.0 >> 32,
        start.0 as u32,
        end.0 >> 32,
        end.0 as u32
    )
}

/// Parses a WAL summary file name: 40 uppercase hex digits then exactly `.summary`.
pub fn parse_summary_file_name(name: &str) -> Option<(TimeLineId, Lsn, Lsn)> {
    let hex = name.strip_suffix(".summary")?;
    if hex.len() != 40 || !hex.bytes().all(is_upper_hex) {
        return None;
    }
    let word = |i: usize| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok();
    let lsn = |hi: u32, lo: u32| Lsn((u64::from(hi) << 32) | u64::from(lo));
    Some((
        TimeLineId(word(0)?),
        lsn(word(1)?, word(2)?),
        lsn(word(3)?, word(4)?),
    ))
}

fn is_upper_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        let seg = 16 << 20;
        let n = segment_file_name(TimeLineId(1), Lsn(0x3000028).segment(seg), seg);
        assert_eq!(n, "000000010000000000000003");
        assert_eq!(parse_segment_file_name(&n, seg), Some((TimeLineId(1), 3)));
        assert_eq!(
            parse_segment_file_name("00000001000000000000000a", seg),
            None
        );
        assert_eq!(
            segment_file_name(TimeLineId(2), 0x1_05, seg),
            "000000020000000100000005"
        );
    }

    #[test]
    fn summary_names() {
        let n = "0000000100000000010000280000000001A3F5B8.summary";
        let (tli, s, e) = parse_summary_file_name(n).unwrap();
        assert_eq!((tli, s, e), (TimeLineId(1), Lsn(0x1000028), Lsn(0x1A3F5B8)));
        assert_eq!(summary_file_name(tli, s, e), n);
        assert_eq!(parse_summary_file_name("temp.summary"), None);
        assert_eq!(parse_summary_file_name(&n.to_lowercase()), None);
    }
}
