//! A summaries directory: listing, gaps and overlaps, and the files covering an LSN range.

use std::path::{Path, PathBuf};

use pgincr_types::walfile::parse_summary_file_name;
use pgincr_types::{Lsn, TimeLineId};

use crate::error::{Result, SummaryError};

/// One summary file found in a directory.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SummaryFileInfo {
    pub tli: TimeLineId,
    pub start: Lsn,
    pub end: Lsn,
    pub path: PathBuf,
    pub size: u64,
}

impl SummaryFileInfo {
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Every summary file in `dir` (names as the server accepts them; anything else, such as
/// `temp.summary`, is ignored), sorted by timeline, start and end LSN. An entry with a
/// summary's name whose range runs backwards, or that is not a regular file (a directory, a
/// FIFO), is refused naming it: skipping it would turn it into a silent gap.
pub fn list_summaries(dir: &Path) -> Result<Vec<SummaryFileInfo>> {
    let rd = std::fs::read_dir(dir).map_err(|e| SummaryError::io("read directory", dir, e))?;
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| SummaryError::io("read directory", dir, e))?;
        let name = ent.file_name();
        let Some((tli, start, end)) = name.to_str().and_then(parse_summary_file_name) else {
            continue;
        };
        let path = ent.path();
        if start > end {
            return Err(SummaryError::BackwardsRange { path, start, end });
        }
        let md = std::fs::metadata(&path).map_err(|e| SummaryError::io("stat file", &path, e))?;
        if !md.is_file() {
            return Err(SummaryError::NotRegular {
                path,
                kind: pgincr_types::bounded::FileKind::of(md.file_type()),
            });
        }
        out.push(SummaryFileInfo {
            tli,
            start,
            end,
            path,
            size: md.len(),
        });
    }
    out.sort_by_key(|f| (f.tli, f.start, f.end));
    Ok(out)
}

/// Two files of one timeline whose ranges overlap.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Overlap {
    pub first: String,
    pub second: String,
    pub from: Lsn,
    pub to: Lsn,
}

/// What the files of one timeline cover.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TimelineCoverage {
    pub tli: TimeLineId,
    pub start: Lsn,
    pub end: Lsn,
    pub files: usize,
    /// Ranges `[from, to)` between `start` and `end` that no file covers.
    pub gaps: Vec<(Lsn, Lsn)>,
    pub overlaps: Vec<Overlap>,
}

/// Coverage per timeline of a listing sorted as [`list_summaries`] sorts it.
pub fn coverage(files: &[SummaryFileInfo]) -> Vec<TimelineCoverage> {
    let mut out: Vec<TimelineCoverage> = Vec::new();
    for group in files.chunk_by(|a, b| a.tli == b.tli) {
        // chunk_by yields no empty group.
        let Some((first, rest)) = group.split_first() else {
            continue;
        };
        let mut cov = TimelineCoverage {
            tli: first.tli,
            start: first.start,
            end: first.end,
            files: group.len(),
            gaps: Vec::new(),
            overlaps: Vec::new(),
        };
        // The file reaching furthest so far, to report overlaps against it.
        let mut furthest = first;
        for f in rest {
            if f.start > cov.end {
                cov.gaps.push((cov.end, f.start));
            } else if f.start < cov.end {
                cov.overlaps.push(Overlap {
                    first: furthest.file_name(),
                    second: f.file_name(),
                    from: f.start,
                    to: f.end.min(cov.end),
                });
            }
            if f.end > cov.end {
                cov.end = f.end;
                furthest = f;
            }
        }
        out.push(cov);
    }
    out
}

/// The files the server would read for `[start, end)` on `tli` (`FilterWalSummaries`: files
/// with `file.end >= start` and `file.start <= end`, ends inclusive), sorted by start LSN, after
/// its completeness check (`WalSummariesAreComplete`). A gap is an error naming the first
/// uncovered range. An empty range needs no files.
pub fn select_for_range(
    dir: &Path,
    files: &[SummaryFileInfo],
    tli: TimeLineId,
    start: Lsn,
    end: Lsn,
) -> Result<Vec<SummaryFileInfo>> {
    if start > end {
        return Err(SummaryError::BadRange { start, end });
    }
    if start == end {
        return Ok(Vec::new());
    }
    let mut keep: Vec<SummaryFileInfo> = files
        .iter()
        .filter(|f| f.tli == tli && f.end >= start && f.start <= end)
        .cloned()
        .collect();
    keep.sort_by_key(|f| (f.start, f.end));
    if keep.is_empty() {
        return Err(SummaryError::NoSummaries {
            dir: dir.to_path_buf(),
            tli,
            start,
            end,
        });
    }
    // Sweep a cursor through the files in start order: the first file that starts past the
    // cursor, or running out of files, leaves a hole from the cursor on.
    let mut cursor = start;
    let mut hole_end = end;
    for f in &keep {
        if cursor >= end {
            break;
        }
        if f.start > cursor {
            hole_end = f.start.min(end);
            break;
        }
        cursor = cursor.max(f.end);
    }
    if cursor < end {
        return Err(SummaryError::Incomplete {
            dir: dir.to_path_buf(),
            tli,
            start,
            end,
            missing_from: cursor,
            missing_to: hole_end,
        });
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(tli: u32, s: u64, e: u64) -> SummaryFileInfo {
        let name = pgincr_types::walfile::summary_file_name(TimeLineId(tli), Lsn(s), Lsn(e));
        SummaryFileInfo {
            tli: TimeLineId(tli),
            start: Lsn(s),
            end: Lsn(e),
            path: PathBuf::from(name),
            size: 32,
        }
    }

    #[test]
    fn finds_gaps_and_overlaps() {
        let files = vec![
            f(1, 10, 20),
            f(1, 20, 30),
            f(1, 25, 28),
            f(1, 40, 50),
            f(2, 50, 60),
        ];
        let cov = coverage(&files);
        assert_eq!(cov.len(), 2);
        assert_eq!(
            (cov[0].start, cov[0].end, cov[0].files),
            (Lsn(10), Lsn(50), 4)
        );
        assert_eq!(cov[0].gaps, vec![(Lsn(30), Lsn(40))]);
        assert_eq!(cov[0].overlaps.len(), 1);
        assert_eq!(
            (cov[0].overlaps[0].from, cov[0].overlaps[0].to),
            (Lsn(25), Lsn(28))
        );
        assert!(cov[1].gaps.is_empty() && cov[1].overlaps.is_empty());
    }

    #[test]
    fn selects_like_the_server() {
        let d = Path::new("/x");
        let files = vec![f(1, 10, 20), f(1, 20, 30), f(1, 40, 50), f(2, 30, 40)];
        let got = select_for_range(d, &files, TimeLineId(1), Lsn(15), Lsn(30)).unwrap();
        assert_eq!(got.len(), 2);
        // Inclusive ends: a file ending exactly at the start is kept, as the server keeps it.
        let got = select_for_range(d, &files, TimeLineId(1), Lsn(20), Lsn(25)).unwrap();
        assert_eq!(got.len(), 2);
        let err = select_for_range(d, &files, TimeLineId(1), Lsn(15), Lsn(45)).unwrap_err();
        assert!(
            err.to_string().contains("nothing covers 0/1E..0/28"),
            "{err}"
        );
        let err = select_for_range(d, &files, TimeLineId(1), Lsn(5), Lsn(15)).unwrap_err();
        assert!(err.to_string().contains("nothing covers 0/5..0/A"), "{err}");
        let err = select_for_range(d, &files, TimeLineId(3), Lsn(5), Lsn(15)).unwrap_err();
        assert!(matches!(err, SummaryError::NoSummaries { .. }));
        assert!(select_for_range(d, &files, TimeLineId(1), Lsn(5), Lsn(5))
            .unwrap()
            .is_empty());
        assert!(select_for_range(d, &files, TimeLineId(1), Lsn(9), Lsn(5)).is_err());
    }

    #[test]
    fn refuses_backwards_names_and_non_files() {
        let d = tempfile::tempdir().unwrap();
        let good = pgincr_types::walfile::summary_file_name(TimeLineId(1), Lsn(16), Lsn(32));
        std::fs::write(d.path().join(&good), b"x").unwrap();
        assert_eq!(list_summaries(d.path()).unwrap().len(), 1);
        // 0/30..0/10: start after end.
        let back = pgincr_types::walfile::summary_file_name(TimeLineId(1), Lsn(48), Lsn(16));
        std::fs::write(d.path().join(&back), b"x").unwrap();
        let err = list_summaries(d.path()).unwrap_err();
        assert!(
            matches!(err, SummaryError::BackwardsRange { .. })
                && err.to_string().contains(&back)
                && err.to_string().contains("backwards"),
            "{err}"
        );
        std::fs::remove_file(d.path().join(&back)).unwrap();
        // A directory with a summary's name is reported as one, not skipped into a gap.
        let dir = pgincr_types::walfile::summary_file_name(TimeLineId(1), Lsn(32), Lsn(48));
        std::fs::create_dir(d.path().join(&dir)).unwrap();
        let err = list_summaries(d.path()).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }
}
