//! WAL segment geometry and file names (`TTTTTTTTXXXXXXXXYYYYYYYY`).

use pgincr_types::walfile;
use pgincr_types::{Lsn, TimeLineId};

/// Smallest WAL segment size initdb accepts (1 MiB).
pub const MIN_SEGMENT_SIZE: u64 = 1 << 20;
/// Largest WAL segment size initdb accepts (1 GiB).
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;

/// `IsValidWalSegSize`: a power of two from 1 MiB to 1 GiB.
pub fn is_valid_segment_size(size: u64) -> bool {
    size.is_power_of_two() && (MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&size)
}

/// `XLogFileName` of the segment holding `lsn`.
pub fn segment_file_name_for(tli: TimeLineId, lsn: Lsn, segment_size: u64) -> String {
    walfile::segment_file_name(tli, lsn.segment(segment_size), segment_size)
}

/// `XLogFileName` of segment number `segno`.
pub fn segment_file_name(tli: TimeLineId, segno: u64, segment_size: u64) -> String {
    walfile::segment_file_name(tli, segno, segment_size)
}

/// Parses a segment file name into (timeline, segment number).
pub fn parse_segment_file_name(name: &str, segment_size: u64) -> Option<(TimeLineId, u64)> {
    walfile::parse_segment_file_name(name, segment_size)
}

/// `XLogSegNoOffsetToRecPtr`: the LSN of byte `offset` of segment `segno`.
pub fn segment_start(segno: u64, segment_size: u64) -> Lsn {
    Lsn(segno.saturating_mul(segment_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sizes() {
        let seg = 16 << 20;
        assert_eq!(
            segment_file_name_for(TimeLineId(1), Lsn(0x3000028), seg),
            "000000010000000000000003"
        );
        assert!(is_valid_segment_size(seg));
        assert!(!is_valid_segment_size(0));
        assert!(!is_valid_segment_size(3 << 20));
        assert!(!is_valid_segment_size(2 << 30));
        assert_eq!(segment_start(3, seg), Lsn(0x3000000));
    }
}
