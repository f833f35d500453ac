//! Rebuilding one relation segment from the final backup's `INCREMENTAL.<name>` and the older
//! backups (`reconstruct_from_incremental_file`, format reference 16 step 9).

use crate::archive::TarIndexExt as _;
use crate::chain::{Backup, Chain, Layout};
use crate::copy::{self, Source};
use crate::error::{CombineError, Result};
use crate::incremental::{IncrementalHeader, INCREMENTAL_PREFIX};
use crate::options::CopyMode;
use crate::walk::FileRef;
use pgincr_types::checksum::{Checksum, ChecksumType, Checksummer};
use pgincr_types::page;
use pgincr_types::relfile::{ForkNumber, RelFileName};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A run of output blocks that one source supplies from consecutive offsets, or zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First output block.
    pub start: u32,
    pub len: u32,
    /// Index into [`Plan::sources`] plus one, or 0 for zero-filled blocks.
    pub source: u32,
    /// Byte offset of the run's first block in its source.
    pub offset: u64,
}

impl Run {
    pub fn end(&self) -> u32 {
        self.start + self.len
    }
}

/// Where each block of the output comes from, as runs: its size follows the number of
/// changed runs in the chain, never a truncation length read off disk, so a crafted
/// `INCREMENTAL` header cannot make the plan allocate.
pub struct Plan {
    /// Source files consulted, newest first; index 0 is the final incremental file.
    pub sources: Vec<PlanSource>,
    /// Runs covering `[0, blocks)` in order, adjacent runs of one source merged.
    pub runs: Vec<Run>,
    /// Length of the output in blocks.
    pub blocks: u32,
    /// Set when the whole output equals a full file of an older backup.
    pub copy_source: Option<usize>,
    /// The value of [`Run::source`] of the full file found in an older backup, if any: its
    /// blocks sit at their own offsets, so any span of them can be read at once.
    pub full_source: Option<u32>,
    /// Page checks of blocks from older backups: the first block number of this segment
    /// within its fork, when the file is a main fork and the cluster has data checksums.
    pub check_pages_from: Option<u32>,
}

impl Plan {
    /// Blocks written as zeros.
    pub fn zero_blocks(&self) -> u64 {
        self.runs
            .iter()
            .filter(|r| r.source == 0)
            .map(|r| u64::from(r.len))
            .sum()
    }
}

pub struct PlanSource {
    pub backup: usize,
    pub source: Source,
}

/// Plans the reconstruction of `bare_name` in `relative_dir` (a manifest prefix such as
/// `base/5/`), whose newest version is the incremental file `incremental` of the last backup.
pub fn plan(
    chain: &Chain,
    incremental: &FileRef,
    relative_dir: &[u8],
    bare_name: &OsStr,
) -> Result<Plan> {
    let geom = chain.geometry;
    let blcksz = geom.block_bytes();
    let n = chain.backups.len();
    let incr_name = [INCREMENTAL_PREFIX.as_bytes(), bare_name.as_bytes()].concat();
    let incr_path = [relative_dir, &incr_name].concat();
    let full_path = [relative_dir, bare_name.as_bytes()].concat();
    let latest = resolve(chain, incremental)?;
    let latest_header = parse_incremental(chain, chain.last(), &incr_path, &latest)?;
    let t = latest_header.truncation_block_length;
    let block_length = latest_header.reconstructed_length();
    // Blocks stored in incremental files, newest version of each: (block, source, offset),
    // ascending. Bounded by the incremental files' own sizes.
    let mut stored: Vec<(u32, u32, u64)> = latest_header
        .blocks
        .iter()
        .enumerate()
        .map(|(i, &b)| (b, 1, latest_header.block_offset(i, geom.blcksz)))
        .collect();
    // A whole-file copy from an older backup is possible only if the newest file supplies no
    // block of its own.
    let mut full_copy_possible = latest_header.blocks.is_empty();
    let mut sources = vec![PlanSource {
        backup: n - 1,
        source: latest,
    }];
    let mut copy_source = None;
    // The full file of an older backup: its source index and how many blocks it supplies.
    let mut full: Option<(u32, u32)> = None;
    let older = chain
        .backups
        .split_last()
        .map_or(&[][..], |(_, older)| older);
    for (k, backup) in older.iter().enumerate().rev() {
        if let Some(src) = backup.open(&full_path)? {
            check_size(backup, &full_path, &src)?;
            let size = src.len();
            let blocks_here = size / blcksz;
            let idx = sources.len() as u32 + 1;
            // Only blocks below the final truncation length may come from older backups.
            let limit = u64::from(t).min(blocks_here) as u32;
            full = Some((idx, limit));
            if full_copy_possible && u64::from(t) * blcksz == size {
                copy_source = Some(sources.len());
            }
            sources.push(PlanSource {
                backup: k,
                source: src,
            });
            // A full file ends the walk: nothing older can matter.
            break;
        }
        let Some(src) = backup.open(&incr_path)? else {
            return Err(CombineError::Input {
                backup: backup.dir.clone(),
                message: format!(
                    "neither \"{}\" nor its INCREMENTAL file exists, but the final backup's \"{}\" needs older blocks from it: the chain is broken or the backup damaged",
                    String::from_utf8_lossy(&full_path),
                    String::from_utf8_lossy(&incr_path)
                ),
            });
        };
        if k == 0 {
            return Err(CombineError::Input {
                backup: backup.dir.clone(),
                message: format!(
                    "full backup contains unexpected incremental file \"{}\"",
                    src.path.display()
                ),
            });
        }
        let header = parse_incremental(chain, backup, &incr_path, &src)?;
        let idx = sources.len() as u32 + 1;
        // The truncation length of intermediate files is not consulted, only the final one.
        let older = header
            .blocks
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b < t)
            .map(|(i, &b)| (b, idx, header.block_offset(i, geom.blcksz)));
        let before = stored.len();
        stored = merge_older(stored, older);
        if stored.len() > before {
            full_copy_possible = false;
        }
        sources.push(PlanSource {
            backup: k,
            source: src,
        });
    }
    let check_pages_from = match RelFileName::parse(&bare_name.to_string_lossy()) {
        Some(f) if f.fork == ForkNumber::Main && chain.last().control.data_checksums_enabled() => {
            f.segno.checked_mul(geom.relseg_size)
        }
        _ => None,
    };
    Ok(Plan {
        sources,
        runs: build_runs(&stored, full, block_length, blcksz),
        blocks: block_length,
        copy_source,
        full_source: full.map(|(idx, _)| idx),
        check_pages_from,
    })
}

/// `stored` (ascending) plus the blocks of `older` (ascending) that it lacks: a newer
/// version of a block always wins.
fn merge_older(
    stored: Vec<(u32, u32, u64)>,
    older: impl Iterator<Item = (u32, u32, u64)>,
) -> Vec<(u32, u32, u64)> {
    let mut out = Vec::with_capacity(stored.len());
    let mut newer = stored.into_iter().peekable();
    for o in older {
        while let Some(n) = newer.next_if(|n| n.0 < o.0) {
            out.push(n);
        }
        if newer.peek().is_some_and(|n| n.0 == o.0) {
            continue;
        }
        out.push(o);
    }
    out.extend(newer);
    out
}

/// The runs of an output of `blocks` blocks: the `stored` blocks, the full file's blocks
/// (source index, blocks it supplies) in the gaps between them, zeros elsewhere.
fn build_runs(
    stored: &[(u32, u32, u64)],
    full: Option<(u32, u32)>,
    blocks: u32,
    blcksz: u64,
) -> Vec<Run> {
    fn push(runs: &mut Vec<Run>, run: Run, blcksz: u64) {
        if run.len == 0 {
            return;
        }
        if let Some(last) = runs.last_mut() {
            let contiguous =
                run.source == 0 || last.offset + u64::from(last.len) * blcksz == run.offset;
            if last.source == run.source && last.end() == run.start && contiguous {
                last.len += run.len;
                return;
            }
        }
        runs.push(run);
    }
    let fill = |runs: &mut Vec<Run>, from: u32, to: u32| {
        let full_end = full.map_or(from, |(_, limit)| limit.clamp(from, to));
        if let Some((idx, _)) = full {
            let run = Run {
                start: from,
                len: full_end - from,
                source: idx,
                offset: u64::from(from) * blcksz,
            };
            push(runs, run, blcksz);
        }
        let zeros = Run {
            start: full_end,
            len: to - full_end,
            source: 0,
            offset: 0,
        };
        push(runs, zeros, blcksz);
    };
    let mut runs = Vec::new();
    let mut pos = 0u32;
    for &(b, source, offset) in stored.iter().filter(|s| s.0 < blocks) {
        fill(&mut runs, pos, b);
        let run = Run {
            start: b,
            len: 1,
            source,
            offset,
        };
        push(&mut runs, run, blcksz);
        pos = b + 1;
    }
    fill(&mut runs, pos, blocks);
    runs
}

/// Opens a file of the final backup.
pub fn resolve(chain: &Chain, f: &FileRef) -> Result<Source> {
    match f {
        FileRef::Path(p) => Source::open(p).map_err(CombineError::io("could not open file", p)),
        FileRef::Member(i) => match &chain.last().layout {
            Layout::Tar(index) => match index.members.get(*i) {
                Some(m) => index.open_member(m),
                None => Err(CombineError::Internal(format!(
                    "internal error: no member {i} in the final backup's archives"
                ))),
            },
            Layout::Plain => Err(CombineError::Internal(
                "internal error: member of a plain backup".into(),
            )),
        },
    }
}

/// Validates the incremental file `src` (manifest path `rel`) of `backup`.
fn parse_incremental(
    chain: &Chain,
    backup: &Backup,
    rel: &[u8],
    src: &Source,
) -> Result<IncrementalHeader> {
    check_size(backup, rel, src)?;
    let head = IncrementalHeader::read_head(src, chain.geometry)?;
    let header =
        IncrementalHeader::parse_prefix(&head, src.len(), chain.geometry).map_err(|source| {
            CombineError::Incremental {
                backup: backup.dir.clone(),
                file: src.path.clone(),
                source,
            }
        })?;
    if let Some(stored) = header.clamped_from {
        tracing::warn!(
            "\"{}\": truncation block length {stored} exceeds the segment size; using {} (written by a server before 17.8/18.2)",
            src.path.display(),
            header.truncation_block_length
        );
    }
    Ok(header)
}

/// A source whose size differs from its backup's manifest is damaged; refuse it rather than
/// build a wrong file from it.
fn check_size(backup: &Backup, manifest_path: &[u8], src: &Source) -> Result<()> {
    let Some(entry) = backup.manifest.file(manifest_path) else {
        return Ok(());
    };
    let len = src.len();
    if entry.size != len {
        return Err(CombineError::Input {
            backup: backup.dir.clone(),
            message: format!(
                "file \"{}\" is {len} bytes but backup_manifest says {}: the backup is damaged",
                src.path.display(),
                entry.size
            ),
        });
    }
    Ok(())
}

/// Outcome of writing one reconstructed file.
pub struct Written {
    pub checksum: Option<Checksum>,
    pub zero_blocks: u64,
    /// With [`Target::note_all_visible`]: which output blocks are heap pages with
    /// `PD_ALL_VISIBLE`, noted as they passed through the buffer (`None` where the data never
    /// did: `--link`, `--clone`, `--copy-file-range` without checksums).
    pub all_visible: Option<AllVisibleBits>,
}

/// One bit per block of a heap segment: set where the page as written is a sane page with
/// `PD_ALL_VISIBLE`. What the visibility-map repair needs of most heap pages, without
/// reading them again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllVisibleBits {
    words: Vec<u64>,
}

impl AllVisibleBits {
    fn with_blocks(blocks: u64) -> AllVisibleBits {
        AllVisibleBits {
            words: vec![0; blocks.div_ceil(64) as usize],
        }
    }

    /// Notes the pages of `data`, which start at block `first`.
    fn note(&mut self, data: &[u8], first: u64, blcksz: usize) {
        for (i, p) in data.chunks_exact(blcksz).enumerate() {
            if page::is_all_visible(p) && page::header_is_sane(p) {
                let b = first + i as u64;
                if let Some(w) = self.words.get_mut((b / 64) as usize) {
                    *w |= 1 << (b % 64);
                }
            }
        }
    }

    /// Whether block `b` is an all-visible page.
    pub fn get(&self, b: u32) -> bool {
        self.words
            .get((b / 64) as usize)
            .is_some_and(|w| w & (1 << (b % 64)) != 0)
    }
}

/// Where and how one output file is written.
pub struct Target<'a> {
    pub path: &'a Path,
    /// The file's path in the manifests, for checksum reuse.
    pub manifest_path: &'a [u8],
    pub checksum_type: ChecksumType,
    pub copy_mode: CopyMode,
    pub file_mode: u32,
    /// Write with direct I/O where the file system allows.
    pub direct: bool,
    /// Note which blocks are all-visible heap pages (see [`Written::all_visible`]).
    pub note_all_visible: bool,
}

/// Executes `plan` into `target`; warnings (a manifest lacking an entry) go to `warnings`.
///
/// The chunk loop indexes the buffer and the plan's sources directly: the bounds are
/// established by the plan (its runs cover `[0, blocks)` exactly, every piece is clipped to
/// the chunk the buffer holds, and a run's source is 0 or an index into `sources` plus one),
/// and this loop is the measured hot path.
#[allow(clippy::indexing_slicing)]
pub fn execute(
    chain: &Chain,
    plan: &Plan,
    target: &Target,
    warnings: &mut Vec<String>,
) -> Result<Written> {
    let Target {
        path: out_path,
        manifest_path,
        checksum_type,
        copy_mode: mode,
        file_mode,
        direct,
        note_all_visible,
    } = *target;
    let blcksz = chain.geometry.block_bytes();
    if let Some(ci) = plan.copy_source {
        let (Some(src), Some(backup)) = (
            plan.sources.get(ci),
            plan.sources
                .get(ci)
                .and_then(|s| chain.backups.get(s.backup)),
        ) else {
            return Err(CombineError::Internal(format!(
                "internal error: plan copies from source {ci}, which it lacks"
            )));
        };
        let mut reuse = None;
        if checksum_type != ChecksumType::None {
            match backup.manifest.file(manifest_path) {
                None => warnings.push(format!(
                    "\"{}\" contains no entry for \"{}\"",
                    backup.dir.join("backup_manifest").display(),
                    String::from_utf8_lossy(manifest_path)
                )),
                Some(f) => reuse = f.checksum_of(checksum_type),
            }
        }
        let mut sum = Checksummer::new(if reuse.is_some() {
            ChecksumType::None
        } else {
            checksum_type
        });
        let checker = PageChecker::new(chain, plan, src);
        let mut all_visible = None;
        match mode {
            // The bytes pass through us anyway: check every page on the way, and note what
            // the visibility-map repair needs.
            CopyMode::Copy if checker.is_some() || note_all_visible => {
                let mut out = copy::create_output(out_path, file_mode, direct, src.source.len())?;
                let mut buf = copy::buffer_for(src.source.len());
                let mut noted = note_all_visible
                    .then(|| AllVisibleBits::with_blocks(src.source.len() / blcksz));
                let mut block = 0u32;
                src.source
                    .for_each_chunk(0, src.source.len(), &mut buf, |chunk| {
                        if let Some(checker) = &checker {
                            checker.check(chunk, block)?;
                        }
                        if let Some(noted) = &mut noted {
                            noted.note(chunk, u64::from(block), blcksz as usize);
                        }
                        block += (chunk.len() as u64 / blcksz) as u32;
                        copy::write_and_sum(&mut out, out_path, chunk, &mut sum)
                    })?;
                copy::finish_output(out, out_path)?;
                all_visible = noted;
            }
            // --link, --clone and --copy-file-range never read the data; the file is taken
            // as the backup holds it.
            _ => copy::copy_whole(&src.source, out_path, mode, file_mode, direct, &mut sum)?,
        }
        return Ok(Written {
            checksum: reuse.or_else(|| sum.finish()),
            zero_blocks: 0,
            all_visible,
        });
    }
    let direct = direct && mode != CopyMode::CopyFileRange;
    let n = plan.blocks as usize;
    let mut out = copy::create_output(out_path, file_mode, direct, n as u64 * blcksz)?;
    let mut sum = Checksummer::new(checksum_type);
    let mut zero_blocks = 0u64;
    let bs = blcksz as usize;
    let checkers: Vec<Option<PageChecker>> = plan
        .sources
        .iter()
        .map(|src| PageChecker::new(chain, plan, src))
        .collect();
    // In copy_file_range mode without manifest checksums the kernel copies and nothing is
    // read, so nothing can be checked.
    let data_read = mode != CopyMode::CopyFileRange || checksum_type != ChecksumType::None;
    let mut all_visible =
        (note_all_visible && data_read).then(|| AllVisibleBits::with_blocks(n as u64));
    // The output is assembled a buffer at a time: each run of blocks that come from
    // consecutive offsets of one source is read straight into its place, then the whole
    // buffer is checksummed and written at once.
    let chunk_blocks = (copy::BUFFER / bs).max(1);
    let mut buf = pgincr_io::AlignedBuf::new(chunk_blocks.min(n.max(1)) * bs);
    let mut first_run = 0;
    let mut chunk_start = 0;
    while chunk_start < n {
        let chunk_end = (chunk_start + chunk_blocks).min(n);
        // The runs overlapping this chunk, clipped to it: (first block, end, source, offset).
        while plan
            .runs
            .get(first_run)
            .is_some_and(|r| (r.end() as usize) <= chunk_start)
        {
            first_run += 1;
        }
        let pieces: Vec<(usize, usize, u32, u64)> = plan.runs[first_run..]
            .iter()
            .take_while(|r| (r.start as usize) < chunk_end)
            .map(|r| {
                let start = (r.start as usize).max(chunk_start);
                let skip = (start - r.start as usize) as u64 * blcksz;
                let end = (r.end() as usize).min(chunk_end);
                let offset = if r.source == 0 { 0 } else { r.offset + skip };
                (start, end, r.source, offset)
            })
            .collect();
        let spanned = match mode {
            CopyMode::CopyFileRange => None,
            _ => read_full_span(plan, &pieces, chunk_start, blcksz, &mut buf)?,
        };
        for &(i, j, s, offset) in &pieces {
            let slot = &mut buf[(i - chunk_start) * bs..(j - chunk_start) * bs];
            if spanned == Some(s) {
                // Already read with the span.
            } else if s == 0 {
                zero_blocks += (j - i) as u64;
                slot.fill(0);
            } else {
                let src = &plan.sources[s as usize - 1].source;
                if mode == CopyMode::CopyFileRange {
                    // Flush what precedes this run, then let the kernel copy the run.
                    let len = slot.len() as u64;
                    copy::copy_range(src, offset, len, &mut out, out_path)?;
                }
                if data_read {
                    src.read_at(offset, slot)?;
                }
            }
            if mode == CopyMode::CopyFileRange {
                let slot = &buf[(i - chunk_start) * bs..(j - chunk_start) * bs];
                sum.update(slot);
                if s == 0 {
                    out.write_all(slot)
                        .map_err(CombineError::io("could not write file", out_path))?;
                }
            }
        }
        if data_read {
            // Every block taken from an older backup must be a page PostgreSQL accepts.
            for &(i, j, s, _) in pieces.iter().filter(|p| p.2 != 0) {
                if let Some(Some(checker)) = checkers.get(s as usize - 1) {
                    let pages = &buf[(i - chunk_start) * bs..(j - chunk_start) * bs];
                    checker.check(pages, i as u32)?;
                }
            }
        }
        if let Some(noted) = &mut all_visible {
            noted.note(
                &buf[..(chunk_end - chunk_start) * bs],
                chunk_start as u64,
                bs,
            );
        }
        if mode != CopyMode::CopyFileRange {
            let data = &buf[..(chunk_end - chunk_start) * bs];
            copy::write_and_sum(&mut out, out_path, data, &mut sum)?;
        }
        chunk_start = chunk_end;
    }
    copy::finish_output(out, out_path)?;
    Ok(Written {
        checksum: sum.finish(),
        zero_blocks,
        all_visible,
    })
}

/// Checks the data checksums of pages taken from one source of a plan.
///
/// A block that changed while backup k ran is carried again by backup k + 1: with data
/// checksums on, every change to a page after a checkpoint is WAL-logged, hint bits included,
/// so the summary of the next backup lists it. A block that a backup older than the newest
/// supplies must therefore be a clean page; only the newest backup's blocks can be torn,
/// and WAL replay fixes those. A bad page from an older backup is damage (the disk, the
/// copy), and combining it would hand it to the restored cluster, with a manifest that
/// `pg_verifybackup` accepts; upstream does exactly that.
struct PageChecker<'a> {
    backup: &'a std::path::Path,
    file: &'a std::path::Path,
    /// Block number within the fork of the segment's first block.
    fork_block: u32,
    blcksz: usize,
}

impl<'a> PageChecker<'a> {
    /// A checker for `src`, or `None` when its pages are not checked: not a main fork, no
    /// data checksums, or the newest backup (its pages may be torn; replay fixes them).
    fn new(chain: &'a Chain, plan: &Plan, src: &'a PlanSource) -> Option<PageChecker<'a>> {
        let fork_block = plan.check_pages_from?;
        if src.backup + 1 >= chain.backups.len() {
            return None;
        }
        Some(PageChecker {
            backup: &chain.backups.get(src.backup)?.dir,
            file: &src.source.path,
            fork_block,
            blcksz: chain.geometry.blcksz as usize,
        })
    }

    /// Checks `pages`, whose first page is block `first` of the output segment.
    fn check(&self, pages: &[u8], first: u32) -> Result<()> {
        for (i, p) in pages.chunks_exact(self.blcksz).enumerate() {
            let blkno = self.fork_block.wrapping_add(first).wrapping_add(i as u32);
            if page::checksum_is_valid(p, blkno) {
                continue;
            }
            let block = first as usize + i;
            return Err(CombineError::Input {
                backup: self.backup.to_path_buf(),
                message: format!(
                    "block {block} of \"{}\" (block {blkno} of its relation fork) fails its data checksum (stored {:04x}, computed {:04x}): the backup is damaged, and a restore would carry the bad page; take a new full backup (pg_combinebackup would copy it silently)",
                    self.file.display(),
                    page::checksum(p).unwrap_or(0),
                    page::pg_checksum_page(p, blkno).unwrap_or(0),
                ),
            });
        }
        Ok(())
    }
}

/// Reads, in one call, the span of a chunk's blocks that the full file of an older backup
/// supplies, including any blocks between them that newer sources will overwrite: one large
/// read costs less than several small ones (on a virtual disk each request is an exit to the
/// host; cold, a chain took a third less time to combine this way). Returns the source read,
/// or `None` when the full file supplies too little of the chunk to be worth it.
fn read_full_span(
    plan: &Plan,
    pieces: &[(usize, usize, u32, u64)],
    chunk_start: usize,
    blcksz: u64,
    buf: &mut [u8],
) -> Result<Option<u32>> {
    let Some(full) = plan.full_source else {
        return Ok(None);
    };
    let mut from_full = pieces.iter().filter(|p| p.2 == full);
    let Some(&(first, _, _, _)) = from_full.next() else {
        return Ok(None);
    };
    let last = pieces
        .iter()
        .rev()
        .find(|p| p.2 == full)
        .map_or(first, |p| p.1);
    let supplied: usize = pieces
        .iter()
        .filter(|p| p.2 == full)
        .map(|p| p.1 - p.0)
        .sum();
    if supplied * 2 < last - first {
        return Ok(None);
    }
    let bs = blcksz as usize;
    let (Some(src), Some(span)) = (
        plan.sources.get(full as usize - 1),
        buf.get_mut((first - chunk_start) * bs..(last - chunk_start) * bs),
    ) else {
        return Err(CombineError::Internal(format!(
            "internal error: span of blocks {first}..{last} from source {full} outside the plan"
        )));
    };
    src.source.read_at(first as u64 * blcksz, span)?;
    Ok(Some(full))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: u32, len: u32, source: u32, offset: u64) -> Run {
        Run {
            start,
            len,
            source,
            offset,
        }
    }

    #[test]
    fn newer_blocks_win_the_merge() {
        let stored = vec![(1, 1, 100), (5, 1, 200)];
        let older = [(0, 2, 10), (1, 2, 20), (5, 2, 30), (7, 2, 40)];
        assert_eq!(
            merge_older(stored, older.into_iter()),
            vec![(0, 2, 10), (1, 1, 100), (5, 1, 200), (7, 2, 40)]
        );
        assert_eq!(
            merge_older(Vec::new(), [(3, 2, 0)].into_iter()),
            vec![(3, 2, 0)]
        );
    }

    #[test]
    fn runs_cover_the_output() {
        let bs = 8192;
        // Blocks 2 and 3 stored consecutively in source 1; the full file (source 3) has 6
        // blocks; the output has 8: blocks 6 and 7 are zeros.
        let stored = [(2, 1, 8192), (3, 1, 16384)];
        let runs = build_runs(&stored, Some((3, 6)), 8, bs);
        assert_eq!(
            runs,
            vec![
                run(0, 2, 3, 0),
                run(2, 2, 1, 8192),
                run(4, 2, 3, 4 * bs),
                run(6, 2, 0, 0)
            ]
        );
        // No full file: everything not stored is zeros; non-consecutive offsets split runs.
        let stored = [(1, 1, 8192), (2, 1, 3 * 8192)];
        assert_eq!(
            build_runs(&stored, None, 4, bs),
            vec![
                run(0, 1, 0, 0),
                run(1, 1, 1, 8192),
                run(2, 1, 1, 3 * 8192),
                run(3, 1, 0, 0)
            ]
        );
        // A truncation length far past everything stored costs one run, not one entry per
        // block.
        assert_eq!(
            build_runs(&[], Some((2, 10)), u32::MAX, bs),
            vec![run(0, 10, 2, 0), run(10, u32::MAX - 10, 0, 0)]
        );
    }
}
