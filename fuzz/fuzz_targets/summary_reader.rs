//! Any bytes: the summary reader returns a result or an error, never panics, and never
//! allocates more than the input justifies. Accepted input must re-serialize to the same bytes
//! (the reader keeps every stored detail), and its pg_walsummary text must render.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgincr_summary::{text, SummaryFile};

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = SummaryFile::parse(data, "fuzz.summary") {
        assert_eq!(file.to_bytes(), data);
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        for (k, e) in &file.entries {
            text::push_entry_lines(&mut out, k, e, false, &mut scratch);
            out.clear();
        }
        let _ = file.to_table().to_summary_file().to_bytes();
    }
});
