//! Unions of summaries, and "which blocks changed in this LSN range".

use std::path::Path;

use pgincr_types::{Lsn, TimeLineId};

use crate::block_ref_table::BlockRefTable;
use crate::directory::{list_summaries, select_for_range, SummaryFileInfo};
use crate::error::Result;
use crate::reader::SummaryReader;

/// Merges summary files into one table (section 5.4 semantics) in ascending start-LSN order
/// (then end LSN, then timeline), whatever order they are given in, so that blocks recorded
/// after a truncation survive it.
pub fn merge_files(files: &[SummaryFileInfo]) -> Result<BlockRefTable> {
    let mut sorted: Vec<&SummaryFileInfo> = files.iter().collect();
    sorted.sort_by_key(|f| (f.start, f.end, f.tli));
    let mut table = BlockRefTable::new();
    for f in sorted {
        let mut r = SummaryReader::open(&f.path)?;
        while let Some((key, entry)) = r.next_entry()? {
            table.merge_entry(key, &entry);
        }
    }
    Ok(table)
}

/// The blocks modified in `[start, end)` on `tli` according to the summaries in `dir`: the
/// union of the files the server would use for that range (see [`select_for_range`]; a file
/// is used whole, so the result can include changes just outside the range). Fails, naming
/// the uncovered LSN range, when the files leave a gap.
pub fn modified_blocks(
    dir: &Path,
    tli: TimeLineId,
    start: Lsn,
    end: Lsn,
) -> Result<(Vec<SummaryFileInfo>, BlockRefTable)> {
    let all = list_summaries(dir)?;
    let used = select_for_range(dir, &all, tli, start, end)?;
    let table = merge_files(&used)?;
    Ok((used, table))
}
