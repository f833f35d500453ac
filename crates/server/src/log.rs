//! The end of a server log, for error messages.

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// How many lines of the server log an error carries.
pub(crate) const TAIL_LINES: usize = 30;

/// A log can be large (a long-running restore drill logs every checkpoint); only this much of
/// its end is read, which holds far more than `TAIL_LINES` lines of any real log.
const TAIL_BYTES: u64 = 64 * 1024;

/// The last lines of a server log, as carried by errors and shown by their `Display`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogTail {
    pub path: PathBuf,
    /// The last lines, without the final newline; empty when the log is empty or unreadable.
    pub text: String,
}

impl LogTail {
    /// The last `lines` lines of the log at `path`. A missing or unreadable log gives an empty
    /// tail: the error being reported matters more than the log's own.
    pub fn read(path: &Path, lines: usize) -> LogTail {
        LogTail {
            path: path.to_path_buf(),
            text: read_end(path, TAIL_BYTES)
                .map(|t| tail(&t, lines).to_string())
                .unwrap_or_default(),
        }
    }
}

impl fmt::Display for LogTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.is_empty() {
            write!(f, "--- server log {}: empty ---", self.path.display())
        } else {
            write!(
                f,
                "--- server log {} (tail) ---\n{}",
                self.path.display(),
                self.text
            )
        }
    }
}

/// The last `n` lines of `text`, without the trailing newline.
pub fn tail(text: &str, n: usize) -> &str {
    let text = text.trim_end_matches('\n');
    if n == 0 {
        return "";
    }
    // The start of the n-th line from the end is just after the n-th newline from the end.
    match text.rmatch_indices('\n').nth(n - 1) {
        Some((i, _)) => &text[i + 1..],
        None => text,
    }
}

/// The last `max` bytes of a file, as text; a line cut in two at the start is dropped.
pub(crate) fn read_end(path: &Path, max: u64) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max);
    f.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    f.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(match (start > 0, text.find('\n')) {
        (true, Some(i)) => text[i + 1..].to_string(),
        _ => text.into_owned(),
    })
}

/// The part of the log at `path` written after byte `offset`: what one start of the server
/// said, without what earlier runs appended to the same file.
pub(crate) fn read_from(path: &Path, offset: u64) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a\nb\nc\n", 3), "a\nb\nc");
        assert_eq!(tail("a\nb\nc\n", 30), "a\nb\nc");
        assert_eq!(tail("a\nb\nc\n", 1), "c");
        assert_eq!(tail("a\nb\nc\n", 0), "");
        assert_eq!(tail("", 5), "");
        assert_eq!(tail("\n\n", 5), "");
        assert_eq!(tail("only", 1), "only");
    }

    #[test]
    fn reads_only_the_end_of_a_big_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.log");
        let mut log = String::new();
        for i in 0..20_000 {
            log.push_str(&format!("2026-01-01 00:00:00 UTC LOG:  line {i}\n"));
        }
        std::fs::write(&path, &log).unwrap();
        let t = LogTail::read(&path, 3);
        assert_eq!(
            t.text,
            "2026-01-01 00:00:00 UTC LOG:  line 19997\n\
             2026-01-01 00:00:00 UTC LOG:  line 19998\n\
             2026-01-01 00:00:00 UTC LOG:  line 19999"
        );
        // The first, partial line of the window is not shown as if it were whole.
        let end = read_end(&path, 100).unwrap();
        assert!(end.starts_with("2026-01-01"), "{end:?}");
        assert!(t.to_string().contains("(tail) ---\n2026"));
    }

    #[test]
    fn missing_log_is_an_empty_tail() {
        let t = LogTail::read(Path::new("/nonexistent/pgincr/server.log"), 30);
        assert_eq!(t.text, "");
        assert!(t.to_string().contains("empty"));
    }

    #[test]
    fn read_from_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.log");
        std::fs::write(&path, "old run\nnew run\n").unwrap();
        assert_eq!(read_from(&path, 8), "new run\n");
        assert_eq!(read_from(&path, 100), "");
    }
}
