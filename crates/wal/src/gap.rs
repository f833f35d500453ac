//! Timeline history files, and which WAL an archive holds without a gap.
//!
//! [`parse_history`] reads `NNNNNNNN.history` the way `readTimeLineHistory` (timeline.c) does:
//! lines `parentTLI<TAB>switchpoint<TAB>reason`, blank lines and `#` comments skipped, the
//! parent timelines strictly increasing and below the file's own. [`scan_names`] groups an
//! archive listing per timeline into contiguous runs of segments (compressed copies count as
//! their segment). [`reachable_end`] follows a backup's timeline through the history to the
//! first segment recovery would need and not find, the way recovery picks segment files
//! (`XLogFileReadAnyTLI`: for each segment the newest timeline of the history whose start is
//! not after it), so a parent's segments past the switch point are never on the path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::archive::{self, classify, ArchiveError, Compression, WalFileKind};
use crate::segment_name::{is_valid_segment_size, parse_segment_file_name, segment_file_name};
use pgincr_types::{Lsn, TimeLineId};

/// The largest history file accepted (a line per timeline switch; real ones are a few KiB).
pub const MAX_HISTORY_BYTES: usize = 1 << 20;

/// One line of a history file: the server left timeline `parent` at `switch_lsn`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    pub parent: TimeLineId,
    pub switch_lsn: Lsn,
    pub reason: String,
}

/// A parsed `NNNNNNNN.history`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineHistory {
    /// The timeline the file belongs to (from its name).
    pub tli: TimeLineId,
    /// In file order (oldest parent first).
    pub entries: Vec<HistoryEntry>,
}

/// A timeline's stretch of WAL in a history: `[begin, end)`, `end` `None` for the open tip.
/// A `begin` of 0 means "from the beginning", as in `TimeLineHistoryEntry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineSpan {
    pub tli: TimeLineId,
    pub begin: Lsn,
    pub end: Option<Lsn>,
}

/// Why a history file was refused; `line` is 1-based.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error(
        "history file of timeline {tli}: {size} bytes, more than the {MAX_HISTORY_BYTES} accepted"
    )]
    TooLarge { tli: u32, size: usize },
    #[error("history file of timeline {tli}, line {line}: syntax error: {what}")]
    Syntax { tli: u32, line: usize, what: String },
    #[error("history file of timeline {tli}, line {line}: timeline IDs must be in increasing sequence ({found} after {after})")]
    NotIncreasing {
        tli: u32,
        line: usize,
        found: u32,
        after: u32,
    },
    #[error("history file of timeline {tli}, line {line}: parent timeline {found} is not less than the file's own timeline")]
    NotBelowOwn { tli: u32, line: usize, found: u32 },
    #[error("history file of timeline 0: there is no timeline 0")]
    TimelineZero,
}

/// Parses the history file of timeline `tli`. Stricter than `sscanf("%u\t%X/%X")` in two ways:
/// the timeline must be plain decimal digits fitting 32 bits (sscanf wraps and accepts a sign),
/// and the LSN must be followed by whitespace or the end of the line (sscanf ignores anything).
pub fn parse_history(tli: TimeLineId, data: &[u8]) -> Result<TimelineHistory, HistoryError> {
    if tli.0 == 0 {
        return Err(HistoryError::TimelineZero);
    }
    if data.len() > MAX_HISTORY_BYTES {
        return Err(HistoryError::TooLarge {
            tli: tli.0,
            size: data.len(),
        });
    }
    let mut entries: Vec<HistoryEntry> = Vec::new();
    for (i, raw) in data.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let syntax = |what: &str| HistoryError::Syntax {
            tli: tli.0,
            line,
            what: what.to_string(),
        };
        let text = trim_start(raw);
        if text.is_empty() || text.first() == Some(&b'#') {
            continue;
        }
        let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
        let (num, rest) = text.split_at_checked(digits).unwrap_or((text, &[]));
        if num.is_empty() {
            return Err(syntax("expected a numeric timeline ID"));
        }
        let parent: u32 = std::str::from_utf8(num)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| syntax("timeline ID out of range"))?;
        let rest = trim_start(rest);
        let lsn_len = rest
            .iter()
            .take_while(|b| b.is_ascii_hexdigit() || **b == b'/')
            .count();
        let (lsn_text, reason) = rest.split_at_checked(lsn_len).unwrap_or((rest, &[]));
        let switch_lsn: Lsn = std::str::from_utf8(lsn_text)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| syntax("expected a write-ahead log switchpoint location (X/X)"))?;
        if reason.first().is_some_and(|b| !b.is_ascii_whitespace()) {
            return Err(syntax(
                "unexpected characters after the switchpoint location",
            ));
        }
        if let Some(last) = entries.last() {
            if parent <= last.parent.0 {
                return Err(HistoryError::NotIncreasing {
                    tli: tli.0,
                    line,
                    found: parent,
                    after: last.parent.0,
                });
            }
        }
        if parent >= tli.0 {
            return Err(HistoryError::NotBelowOwn {
                tli: tli.0,
                line,
                found: parent,
            });
        }
        let reason = reason.strip_prefix(b"\t").unwrap_or(reason);
        let keep = reason.len() - reason.iter().rev().take_while(|&&b| b == b'\r').count();
        let reason = reason.get(..keep).unwrap_or_default();
        entries.push(HistoryEntry {
            parent: TimeLineId(parent),
            switch_lsn,
            reason: String::from_utf8_lossy(reason).into_owned(),
        });
    }
    Ok(TimelineHistory { tli, entries })
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    b.get(n..).unwrap_or_default()
}

impl TimelineHistory {
    /// The history without a file: just `tli`, from the beginning, open.
    pub fn root(tli: TimeLineId) -> TimelineHistory {
        TimelineHistory {
            tli,
            entries: Vec::new(),
        }
    }

    /// `readTimeLineHistory`'s list, oldest first: each parent from the previous switch point
    /// to its own, then this timeline from the last switch point, open.
    pub fn spans(&self) -> Vec<TimelineSpan> {
        let mut out = Vec::with_capacity(self.entries.len() + 1);
        let mut begin = Lsn(0);
        for e in &self.entries {
            out.push(TimelineSpan {
                tli: e.parent,
                begin,
                end: Some(e.switch_lsn),
            });
            begin = e.switch_lsn;
        }
        out.push(TimelineSpan {
            tli: self.tli,
            begin,
            end: None,
        });
        out
    }

    /// The file as the server writes it (each line after the first preceded by a blank line).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                s.push('\n');
            }
            s.push_str(&format!("{}\t{}\t{}\n", e.parent, e.switch_lsn, e.reason));
        }
        s
    }
}

/// Contiguous segments `first..=last` of one timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub first: u64,
    pub last: u64,
}

impl Run {
    pub fn segments(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// Segments missing between two runs of one timeline: `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub tli: TimeLineId,
    pub first: u64,
    pub last: u64,
}

/// An archive listing, sorted out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveScan {
    pub segment_size: u64,
    /// Per timeline, its segments as sorted, disjoint, non-adjacent runs.
    pub timelines: BTreeMap<TimeLineId, Vec<Run>>,
    /// Timelines whose history file is present.
    pub histories: BTreeSet<TimeLineId>,
    /// `.partial` files (never read by recovery).
    pub partials: Vec<String>,
    /// Backup history files (`.backup`).
    pub backup_files: Vec<String>,
    /// Names starting with `.`: a push's temporary file (left behind by a killed push).
    pub temporary: Vec<String>,
    /// Anything else: reported, never guessed at.
    pub unrecognized: Vec<String>,
}

/// Sorts out archive file `names` for segments of `segment_size` bytes.
pub fn scan_names<I, S>(names: I, segment_size: u64) -> ArchiveScan
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut scan = ArchiveScan {
        segment_size,
        ..Default::default()
    };
    let mut segs: BTreeMap<TimeLineId, BTreeSet<u64>> = BTreeMap::new();
    let per_id = 0x1_0000_0000u64.checked_div(segment_size).unwrap_or(0);
    for name in names {
        let name = name.as_ref();
        if name.starts_with('.') {
            if name != archive::SYSID_FILE && !name.ends_with(archive::AHEAD_SUFFIX) {
                scan.temporary.push(name.to_string());
            }
            continue;
        }
        let base = Compression::from_name(name).1;
        match classify(base) {
            Some(WalFileKind::Segment) if is_valid_segment_size(segment_size) => {
                let low = base
                    .get(16..24)
                    .and_then(|l| u64::from_str_radix(l, 16).ok())
                    .unwrap_or(u64::MAX);
                match parse_segment_file_name(base, segment_size) {
                    Some((tli, segno)) if low < per_id && tli.0 != 0 => {
                        segs.entry(tli).or_default().insert(segno);
                    }
                    _ => scan.unrecognized.push(name.to_string()),
                }
            }
            Some(WalFileKind::History) => {
                match base.get(..8).and_then(|t| u32::from_str_radix(t, 16).ok()) {
                    Some(t) if t != 0 => {
                        scan.histories.insert(TimeLineId(t));
                    }
                    _ => scan.unrecognized.push(name.to_string()),
                }
            }
            Some(WalFileKind::Partial) => scan.partials.push(name.to_string()),
            Some(WalFileKind::BackupHistory) => scan.backup_files.push(name.to_string()),
            Some(WalFileKind::Segment) | None => scan.unrecognized.push(name.to_string()),
        }
    }
    for (tli, set) in segs {
        let mut runs: Vec<Run> = Vec::new();
        for s in set {
            match runs.last_mut() {
                Some(r) if r.last.checked_add(1) == Some(s) => r.last = s,
                _ => runs.push(Run { first: s, last: s }),
            }
        }
        scan.timelines.insert(tli, runs);
    }
    for v in [
        &mut scan.partials,
        &mut scan.backup_files,
        &mut scan.temporary,
        &mut scan.unrecognized,
    ] {
        v.sort();
    }
    scan
}

impl ArchiveScan {
    /// The holes between the runs of each timeline.
    pub fn gaps(&self) -> Vec<Gap> {
        let mut out = Vec::new();
        for (&tli, runs) in &self.timelines {
            for w in runs.windows(2) {
                if let [a, b] = w {
                    out.push(Gap {
                        tli,
                        first: a.last + 1,
                        last: b.first - 1,
                    });
                }
            }
        }
        out
    }

    /// The run of `tli` holding segment `segno`.
    pub fn run_containing(&self, tli: TimeLineId, segno: u64) -> Option<Run> {
        let runs = self.timelines.get(&tli)?;
        let i = runs.partition_point(|r| r.last < segno);
        runs.get(i).copied().filter(|r| r.first <= segno)
    }

    pub fn has_segment(&self, tli: TimeLineId, segno: u64) -> bool {
        self.run_containing(tli, segno).is_some()
    }

    /// The segment's file name.
    pub fn name(&self, tli: TimeLineId, segno: u64) -> String {
        segment_file_name(tli, segno, self.segment_size)
    }

    /// The LSN segment `segno` starts at.
    pub fn start_lsn(&self, segno: u64) -> Lsn {
        Lsn(segno.saturating_mul(self.segment_size))
    }
}

/// Which timeline recovery heads for (`recovery_target_timeline`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetTimeline {
    /// `latest`: the newest timeline reached by probing history files start+1, start+2, ...
    /// (the first one missing ends the probe, as in `findNewestTimeLine`).
    Latest,
    /// `current`: stay on the backup's timeline.
    Current,
    /// A given timeline.
    Timeline(TimeLineId),
}

/// How the reachable WAL ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReachEnd {
    /// The archive ends there: nothing later on the path is archived yet.
    EndOfArchive,
    /// A hole: later segments of the path are archived, but recovery cannot get past this one.
    Gap,
}

/// Where the WAL reachable from a backup's start ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    /// The timeline recovery heads for.
    pub target: TimeLineId,
    /// The timelines walked, from the start's to the one the walk ended on.
    pub path: Vec<TimelineSpan>,
    /// The end of the last segment recovery can read without a gap (the start LSN when even
    /// its first segment is missing). An upper bound: the last segment may be only partly
    /// filled with records.
    pub end_lsn: Lsn,
    /// The timeline of `end_lsn`.
    pub end_tli: TimeLineId,
    /// The last segment on the path that is present.
    pub last_segment: Option<String>,
    /// The first segment needed and absent.
    pub missing_segment: String,
    pub kind: ReachEnd,
}

/// Why no path could be followed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReachError {
    #[error("segment size {0} is not a valid WAL segment size")]
    SegmentSize(u64),
    #[error("the history file of timeline {0} is needed and is missing or unreadable")]
    MissingHistory(TimeLineId),
    #[error("timeline {target} is not a child of timeline {tli} at {lsn}: {detail}")]
    NotAChild {
        target: TimeLineId,
        tli: TimeLineId,
        lsn: Lsn,
        detail: String,
    },
}

/// Follows the WAL from a backup's start (`start_tli`, `start_lsn`: its START WAL LOCATION)
/// towards `target` and returns where the archive stops providing it.
pub fn reachable_end(
    scan: &ArchiveScan,
    histories: &BTreeMap<TimeLineId, TimelineHistory>,
    start_tli: TimeLineId,
    start_lsn: Lsn,
    target: TargetTimeline,
) -> Result<Reach, ReachError> {
    let seg = scan.segment_size;
    if !is_valid_segment_size(seg) {
        return Err(ReachError::SegmentSize(seg));
    }
    let target = match target {
        TargetTimeline::Current => start_tli,
        TargetTimeline::Timeline(t) => t,
        TargetTimeline::Latest => {
            let mut t = start_tli;
            while let Some(next) = t.0.checked_add(1).map(TimeLineId) {
                if scan.histories.contains(&next) || histories.contains_key(&next) {
                    t = next;
                } else {
                    break;
                }
            }
            t
        }
    };
    let not_child = |detail: String| ReachError::NotAChild {
        target,
        tli: start_tli,
        lsn: start_lsn,
        detail,
    };
    let history = match histories.get(&target) {
        Some(h) => h.clone(),
        None if target == start_tli || target.0 == 1 => TimelineHistory::root(target),
        None => return Err(ReachError::MissingHistory(target)),
    };
    let spans = history.spans();
    let first = spans
        .iter()
        .position(|s| s.tli == start_tli)
        .ok_or_else(|| not_child(format!("timeline {start_tli} is not in its history")))?;
    let span0 = spans
        .get(first)
        .copied()
        .ok_or_else(|| not_child(String::new()))?;
    if span0.end.is_some_and(|e| start_lsn >= e) || (span0.begin.0 != 0 && start_lsn < span0.begin)
    {
        return Err(not_child(format!(
            "its history has timeline {start_tli} from {} to {}",
            span0.begin,
            span0
                .end
                .map(|e| e.to_string())
                .unwrap_or_else(|| "the end".into())
        )));
    }

    let mut cur = start_lsn.segment(seg);
    let mut last_present: Option<(TimeLineId, u64)> = None;
    let mut path = Vec::new();
    let mut stop: Option<(TimeLineId, u64)> = None;
    for span in spans.get(first..).unwrap_or_default() {
        path.push(*span);
        // The child's file holds the segment of the switch point (a copy of the parent's
        // pages up to it), so the parent is read up to the segment before.
        let upto = span.end.map(|e| e.segment(seg));
        if let Some(u) = upto {
            if cur >= u {
                continue;
            }
        }
        match scan.run_containing(span.tli, cur) {
            None => {
                stop = Some((span.tli, cur));
                break;
            }
            Some(r) => match upto {
                Some(u) if r.last >= u - 1 => {
                    last_present = Some((span.tli, u - 1));
                    cur = u;
                }
                _ => {
                    last_present = Some((span.tli, r.last));
                    stop = Some((span.tli, r.last.saturating_add(1)));
                    break;
                }
            },
        }
    }
    // The walk always stops: the last span is open.
    let (miss_tli, miss_seg) = stop.unwrap_or((history.tli, cur));
    let later = |tli: TimeLineId, after: u64| {
        scan.timelines
            .get(&tli)
            .and_then(|runs| runs.last())
            .is_some_and(|r| r.last > after)
    };
    let later_tlis = path
        .iter()
        .map(|s| s.tli)
        .chain(spans.iter().skip(first + path.len()).map(|s| s.tli))
        .filter(|&t| t > miss_tli)
        .any(|t| scan.timelines.contains_key(&t));
    let kind = if later(miss_tli, miss_seg) || later_tlis {
        ReachEnd::Gap
    } else {
        ReachEnd::EndOfArchive
    };
    let (end_lsn, end_tli) = match last_present {
        Some((t, s)) => (scan.start_lsn(s.saturating_add(1)).max(start_lsn), t),
        None => (start_lsn, start_tli),
    };
    Ok(Reach {
        target,
        path,
        end_lsn,
        end_tli,
        last_segment: last_present.map(|(t, s)| scan.name(t, s)),
        missing_segment: scan.name(miss_tli, miss_seg),
        kind,
    })
}

/// An archive directory, read: its scan, its parsed history files, and those that failed.
#[derive(Clone, Debug, Default)]
pub struct DirScan {
    pub scan: ArchiveScan,
    pub histories: BTreeMap<TimeLineId, TimelineHistory>,
    pub history_errors: Vec<String>,
}

/// Lists `archive`, sorts the names out for `segment_size` (or the size the first segment's
/// header says, else 16 MiB), and reads every history file.
pub fn scan_dir(archive: &Path, segment_size: Option<u64>) -> Result<DirScan, ArchiveError> {
    let seg = match segment_size {
        Some(s) => s,
        None => archive::detect_segment_size(archive)?.unwrap_or(16 << 20),
    };
    let mut names = Vec::new();
    for e in std::fs::read_dir(archive).map_err(|source| ArchiveError::Io {
        path: archive.to_path_buf(),
        op: "list",
        source,
    })? {
        let e = e.map_err(|source| ArchiveError::Io {
            path: archive.to_path_buf(),
            op: "list",
            source,
        })?;
        match e.file_name().into_string() {
            Ok(n) => names.push(n),
            Err(n) => names.push(n.to_string_lossy().into_owned()),
        }
    }
    let scan = scan_names(&names, seg);
    let mut histories = BTreeMap::new();
    let mut history_errors = Vec::new();
    for &tli in &scan.histories {
        let base = pgincr_types::walfile::history_file_name(tli);
        let path = archive::stored_copies(archive, &base)?.into_iter().next();
        let Some(path) = path else { continue };
        match archive::read_stored(&path, MAX_HISTORY_BYTES as u64) {
            Ok(data) => match parse_history(tli, &data) {
                Ok(h) => {
                    histories.insert(tli, h);
                }
                Err(e) => history_errors.push(e.to_string()),
            },
            Err(e) => history_errors.push(e.to_string()),
        }
    }
    Ok(DirScan {
        scan,
        histories,
        history_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEG: u64 = 16 << 20;

    fn t(n: u32) -> TimeLineId {
        TimeLineId(n)
    }

    #[test]
    fn parses_server_written_history() {
        let text = "1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tbefore 2026-01-01 00:00:00+00\n\n\n# a comment\n   \n3\t1/A0\tat restore point \"x\"\n";
        let h = parse_history(t(4), text.as_bytes()).unwrap();
        assert_eq!(h.entries.len(), 3);
        assert_eq!(h.entries[0].parent, t(1));
        assert_eq!(h.entries[0].switch_lsn, Lsn(0x3000158));
        assert_eq!(h.entries[0].reason, "no recovery target specified");
        assert_eq!(h.entries[2].switch_lsn, Lsn(0x1_0000_00A0));
        let spans = h.spans();
        assert_eq!(
            spans,
            vec![
                TimelineSpan {
                    tli: t(1),
                    begin: Lsn(0),
                    end: Some(Lsn(0x3000158))
                },
                TimelineSpan {
                    tli: t(2),
                    begin: Lsn(0x3000158),
                    end: Some(Lsn(0x5000000))
                },
                TimelineSpan {
                    tli: t(3),
                    begin: Lsn(0x5000000),
                    end: Some(Lsn(0x1_0000_00A0))
                },
                TimelineSpan {
                    tli: t(4),
                    begin: Lsn(0x1_0000_00A0),
                    end: None
                },
            ]
        );
        // What we write parses back the same.
        assert_eq!(parse_history(t(4), h.to_text().as_bytes()).unwrap(), h);
        // No reason, CRLF, leading blanks: accepted.
        let h = parse_history(t(2), b"  1\t0/10\r\n").unwrap();
        assert_eq!(h.entries[0].switch_lsn, Lsn(0x10));
        assert_eq!(h.entries[0].reason, "");
        assert_eq!(parse_history(t(2), b"").unwrap().entries, vec![]);
    }

    #[test]
    fn history_errors_name_the_line() {
        let e = |tli: u32, s: &str| parse_history(t(tli), s.as_bytes()).unwrap_err();
        assert!(matches!(
            e(3, "1\t0/10\tx\n\nabc\n"),
            HistoryError::Syntax { line: 3, .. }
        ));
        assert!(matches!(
            e(3, "1\tzz\tx\n"),
            HistoryError::Syntax { line: 1, .. }
        ));
        assert!(matches!(e(3, "1\n"), HistoryError::Syntax { line: 1, .. }));
        assert!(matches!(
            e(3, "1\t0/10x\n"),
            HistoryError::Syntax { line: 1, .. }
        ));
        assert!(matches!(
            e(3, "99999999999\t0/10\n"),
            HistoryError::Syntax { line: 1, .. }
        ));
        assert!(matches!(
            e(3, "-1\t0/10\n"),
            HistoryError::Syntax { line: 1, .. }
        ));
        assert_eq!(
            e(5, "2\t0/10\tx\n\n2\t0/20\ty\n"),
            HistoryError::NotIncreasing {
                tli: 5,
                line: 3,
                found: 2,
                after: 2
            }
        );
        assert_eq!(
            e(2, "2\t0/10\n"),
            HistoryError::NotBelowOwn {
                tli: 2,
                line: 1,
                found: 2
            }
        );
        assert_eq!(e(0, ""), HistoryError::TimelineZero);
        let big = "# x\n".repeat(MAX_HISTORY_BYTES / 4 + 1);
        assert!(matches!(e(2, &big), HistoryError::TooLarge { .. }));
        assert!(e(3, "1\t0/10\tx\n\nabc\n").to_string().contains("line 3"));
    }

    fn names(v: &[(u32, u64)]) -> Vec<String> {
        v.iter()
            .map(|&(tli, s)| segment_file_name(t(tli), s, SEG))
            .collect()
    }

    #[test]
    fn scan_sorts_names_out() {
        let mut n = names(&[(1, 1), (1, 2), (1, 3), (1, 5), (2, 5), (2, 6)]);
        n.push(format!("{}.zst", segment_file_name(t(1), 4, SEG)));
        n.push(format!("{}.gz", segment_file_name(t(1), 3, SEG)));
        n.extend(
            [
                "00000002.history",
                "000000010000000000000005.partial",
                "000000010000000000000001.00000028.backup",
                ".000000010000000000000009.123.tmp",
                archive::SYSID_FILE,
                "README",
                "000000010000000000000100", // low word out of range for 16 MiB
                "00000000.history",
            ]
            .map(String::from),
        );
        let s = scan_names(&n, SEG);
        assert_eq!(s.timelines[&t(1)], vec![Run { first: 1, last: 5 }]);
        assert_eq!(s.timelines[&t(2)], vec![Run { first: 5, last: 6 }]);
        assert_eq!(s.histories, BTreeSet::from([t(2)]));
        assert_eq!(s.partials, vec!["000000010000000000000005.partial"]);
        assert_eq!(s.backup_files.len(), 1);
        assert_eq!(s.temporary, vec![".000000010000000000000009.123.tmp"]);
        assert_eq!(
            s.unrecognized,
            vec!["00000000.history", "000000010000000000000100", "README"]
        );
        assert!(s.gaps().is_empty());
        let s = scan_names(names(&[(1, 1), (1, 4), (1, 5), (1, 9)]), SEG);
        assert_eq!(
            s.gaps(),
            vec![
                Gap {
                    tli: t(1),
                    first: 2,
                    last: 3
                },
                Gap {
                    tli: t(1),
                    first: 6,
                    last: 8
                }
            ]
        );
    }

    fn hist(tli: u32, lines: &[(u32, u64)]) -> (TimeLineId, TimelineHistory) {
        let text: String = lines
            .iter()
            .map(|&(p, l)| format!("{p}\t{}\treason\n", Lsn(l)))
            .collect();
        (t(tli), parse_history(t(tli), text.as_bytes()).unwrap())
    }

    #[test]
    fn reach_on_one_timeline() {
        let s = scan_names(names(&[(1, 2), (1, 3), (1, 4), (1, 7)]), SEG);
        let h = BTreeMap::new();
        let r = reachable_end(&s, &h, t(1), Lsn(0x2000028), TargetTimeline::Latest).unwrap();
        assert_eq!(r.end_lsn, Lsn(0x5000000));
        assert_eq!(r.last_segment.as_deref(), Some("000000010000000000000004"));
        assert_eq!(r.missing_segment, "000000010000000000000005");
        assert_eq!(r.kind, ReachEnd::Gap);
        let r = reachable_end(&s, &h, t(1), Lsn(0x7000028), TargetTimeline::Latest).unwrap();
        assert_eq!(
            (r.end_lsn, r.kind),
            (Lsn(0x8000000), ReachEnd::EndOfArchive)
        );
        // The start segment itself missing.
        let r = reachable_end(&s, &h, t(1), Lsn(0x1000028), TargetTimeline::Latest).unwrap();
        assert_eq!(r.end_lsn, Lsn(0x1000028));
        assert_eq!(r.last_segment, None);
        assert_eq!(r.missing_segment, "000000010000000000000001");
        assert_eq!(r.kind, ReachEnd::Gap);
    }

    #[test]
    fn reach_follows_a_switch_mid_segment() {
        // Timeline 2 forked from 1 at 0/5800000 (mid segment 5): recovery reads 1's segments
        // up to 4, then 2's from 5. 1's own segment 5 and later are not on the path.
        let mut n = names(&[(1, 3), (1, 4), (1, 5), (1, 6), (2, 5), (2, 6), (2, 7)]);
        n.push("00000002.history".into());
        let s = scan_names(&n, SEG);
        let h = BTreeMap::from([hist(2, &[(1, 0x5800000)])]);
        let r = reachable_end(&s, &h, t(1), Lsn(0x3000028), TargetTimeline::Latest).unwrap();
        assert_eq!(r.target, t(2));
        assert_eq!(r.end_tli, t(2));
        assert_eq!(r.end_lsn, Lsn(0x8000000));
        assert_eq!(r.missing_segment, "000000020000000000000008");
        assert_eq!(r.kind, ReachEnd::EndOfArchive);
        assert_eq!(r.path.len(), 2);
        // Staying on timeline 1 reads 1's segments past the switch.
        let r = reachable_end(&s, &h, t(1), Lsn(0x3000028), TargetTimeline::Current).unwrap();
        assert_eq!((r.end_tli, r.end_lsn), (t(1), Lsn(0x7000000)));
        // Child's switch segment missing: a gap, even though 1's segment 5 is there.
        let s2 = scan_names(
            names(&[(1, 3), (1, 4), (1, 5), (2, 6)])
                .into_iter()
                .chain(["00000002.history".to_string()]),
            SEG,
        );
        let r = reachable_end(&s2, &h, t(1), Lsn(0x3000028), TargetTimeline::Latest).unwrap();
        assert_eq!(r.missing_segment, "000000020000000000000005");
        assert_eq!(r.end_lsn, Lsn(0x5000000));
        assert_eq!(r.kind, ReachEnd::Gap);
        // A backup taken on the child.
        let r = reachable_end(&s, &h, t(2), Lsn(0x6000028), TargetTimeline::Latest).unwrap();
        assert_eq!((r.end_tli, r.end_lsn), (t(2), Lsn(0x8000000)));
        // A backup in the switch segment of the parent, before the switch point.
        let r = reachable_end(&s, &h, t(1), Lsn(0x5000028), TargetTimeline::Latest).unwrap();
        assert_eq!(r.last_segment.as_deref(), Some("000000020000000000000007"));
    }

    #[test]
    fn reach_switch_at_a_segment_boundary_and_errors() {
        let mut n = names(&[(1, 3), (1, 4), (2, 5), (3, 5)]);
        n.push("00000002.history".into());
        n.push("00000003.history".into());
        let s = scan_names(&n, SEG);
        let h = BTreeMap::from([
            hist(2, &[(1, 0x5000000)]),
            hist(3, &[(1, 0x4800000)]), // a sibling: forked from 1 before the backup
        ]);
        // Latest probes 2 then 3; 3 forked off 1 at 0/4800000, after a start at 0/3000028:
        // 3 is on the path (1 up to segment 3, then 3 from segment 4) and 3's segment 4 is
        // missing.
        let r = reachable_end(&s, &h, t(1), Lsn(0x3000028), TargetTimeline::Latest).unwrap();
        assert_eq!(r.target, t(3));
        assert_eq!(r.missing_segment, "000000030000000000000004");
        // Timeline 2 explicitly: boundary switch, 1 up to 4, then 2 from 5.
        let r =
            reachable_end(&s, &h, t(1), Lsn(0x3000028), TargetTimeline::Timeline(t(2))).unwrap();
        assert_eq!((r.end_tli, r.end_lsn), (t(2), Lsn(0x6000000)));
        // A backup after 3's fork point is not on 3's history.
        let e = reachable_end(&s, &h, t(1), Lsn(0x4900000), TargetTimeline::Latest).unwrap_err();
        assert!(matches!(e, ReachError::NotAChild { .. }), "{e}");
        // A target whose history is missing.
        let e = reachable_end(&s, &h, t(1), Lsn(0x3000028), TargetTimeline::Timeline(t(7)))
            .unwrap_err();
        assert_eq!(e, ReachError::MissingHistory(t(7)));
        // Latest stops at the first missing history file (4 absent, so 5 is never seen).
        let mut h5 = h.clone();
        h5.insert(t(5), hist(5, &[(1, 0x9000000)]).1);
        let r = reachable_end(&s, &h5, t(1), Lsn(0x3000028), TargetTimeline::Latest).unwrap();
        assert_eq!(r.target, t(3));
    }

    #[test]
    fn scans_a_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("00000002.history"), "1\t0/5000000\tx\n").unwrap();
        std::fs::write(d.path().join("00000003.history"), "garbage\n").unwrap();
        std::fs::write(d.path().join("000000010000000000000001"), b"").unwrap();
        let ds = scan_dir(d.path(), Some(SEG)).unwrap();
        assert_eq!(ds.histories.len(), 1);
        assert_eq!(ds.history_errors.len(), 1);
        assert!(
            ds.history_errors[0].contains("line 1"),
            "{:?}",
            ds.history_errors
        );
        assert_eq!(ds.scan.timelines[&t(1)], vec![Run { first: 1, last: 1 }]);
    }

    proptest! {
        /// The runs are exactly the segments listed, sorted, disjoint and non-adjacent; the gaps
        /// are exactly what lies between; compressed duplicates and order do not matter.
        #[test]
        fn scan_runs_cover_exactly(
            segs in proptest::collection::btree_set((1u32..4, 0u64..300), 0..120),
            dup_every in 1usize..5,
            seed in any::<u64>(),
        ) {
            let mut n: Vec<String> = Vec::new();
            for (i, &(tli, s)) in segs.iter().enumerate() {
                let name = segment_file_name(t(tli), s, SEG);
                if i % dup_every == 0 {
                    n.push(format!("{name}.zst"));
                }
                n.push(name);
            }
            // A deterministic shuffle.
            let len = n.len();
            if len > 1 {
                let mut x = seed | 1;
                for i in (1..len).rev() {
                    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                    n.swap(i, (x % (i as u64 + 1)) as usize);
                }
            }
            let scan = scan_names(&n, SEG);
            prop_assert!(scan.unrecognized.is_empty());
            for tli in 1u32..4 {
                let want: BTreeSet<u64> = segs.iter().filter(|(x, _)| *x == tli).map(|&(_, s)| s).collect();
                let runs = scan.timelines.get(&t(tli)).cloned().unwrap_or_default();
                let got: BTreeSet<u64> = runs.iter().flat_map(|r| r.first..=r.last).collect();
                prop_assert_eq!(&got, &want);
                for w in runs.windows(2) {
                    prop_assert!(w[0].last + 1 < w[1].first);
                }
                let gaps: BTreeSet<u64> = scan.gaps().iter().filter(|g| g.tli == t(tli)).flat_map(|g| g.first..=g.last).collect();
                if let (Some(lo), Some(hi)) = (want.first(), want.last()) {
                    let between: BTreeSet<u64> = (*lo..=*hi).filter(|s| !want.contains(s)).collect();
                    prop_assert_eq!(gaps, between);
                } else {
                    prop_assert!(gaps.is_empty());
                }
                for s in 0..300 {
                    prop_assert_eq!(scan.has_segment(t(tli), s), want.contains(&s));
                }
            }
        }

        /// On one timeline the reachable end is the end of the run holding the start segment.
        #[test]
        fn reach_one_timeline(
            segs in proptest::collection::btree_set(0u64..64, 0..64),
            start in 0u64..64,
            off in 0u64..(16 << 20),
        ) {
            let n: Vec<String> = segs.iter().map(|&s| segment_file_name(t(1), s, SEG)).collect();
            let scan = scan_names(&n, SEG);
            let lsn = Lsn(start * SEG + off);
            let r = reachable_end(&scan, &BTreeMap::new(), t(1), lsn, TargetTimeline::Latest).unwrap();
            let mut s = start;
            while segs.contains(&s) { s += 1; }
            prop_assert_eq!(&r.missing_segment, &segment_file_name(t(1), s, SEG));
            let want_end = if s == start { lsn } else { Lsn(s * SEG) };
            prop_assert_eq!(r.end_lsn, want_end);
            prop_assert_eq!(r.kind == ReachEnd::Gap, segs.iter().any(|&x| x > s));
        }

        /// Across one switch, the path is the parent's segments before the switch segment and
        /// the child's from it; the parent's later segments never extend it.
        #[test]
        fn reach_across_a_switch(
            parent in proptest::collection::btree_set(0u64..40, 0..40),
            child in proptest::collection::btree_set(0u64..40, 0..40),
            switch_seg in 1u64..40,
            switch_off in 0u64..(16 << 20),
            start in 0u64..40,
        ) {
            prop_assume!(start * SEG < switch_seg * SEG + switch_off);
            let switch = Lsn(switch_seg * SEG + switch_off);
            let mut n: Vec<String> = parent.iter().map(|&s| segment_file_name(t(1), s, SEG)).collect();
            n.extend(child.iter().map(|&s| segment_file_name(t(2), s, SEG)));
            n.push("00000002.history".into());
            let scan = scan_names(&n, SEG);
            let h = BTreeMap::from([hist(2, &[(1, switch.0)])]);
            let r = reachable_end(&scan, &h, t(1), Lsn(start * SEG), TargetTimeline::Latest).unwrap();
            // Model: walk segment by segment.
            let mut s = start;
            let missing = loop {
                let (tli, have) = if s < switch_seg { (1, parent.contains(&s)) } else { (2, child.contains(&s)) };
                if !have { break (tli, s); }
                s += 1;
            };
            prop_assert_eq!(&r.missing_segment, &segment_file_name(t(missing.0), missing.1, SEG));
            if missing.1 > start {
                prop_assert_eq!(r.end_lsn, Lsn(missing.1 * SEG));
            }
        }
    }
}
