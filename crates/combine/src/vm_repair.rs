//! Visibility-map repair: the one place where pgincr deliberately writes something other than
//! what `pg_combinebackup` writes.
//!
//! Before 17.11 and 18.6, heap inserts, updates, deletes and tuple locks cleared visibility-map
//! bits without registering the map page in their WAL record (pgsql-hackers, "Why clearing the
//! VM doesn't require registering vm buffer in WAL record", 2026). The WAL summarizer only
//! records registered blocks, so an incremental backup does not carry the map pages those
//! changes touched, and a combined chain takes them from an older backup, bits still set for
//! heap pages that have changed since. Recovery begins at the newest backup's checkpoint, so
//! nothing replays the clears, and index-only scans on the restored cluster return dead rows.
//!
//! The combine knows which backup supplied every block. Where a map page comes from an older
//! backup than a heap block it covers, that heap block may have changed after the map page
//! was copied, and its bits are suspect; the heap page as written decides:
//!
//! - without `PD_ALL_VISIBLE` (which every change that clears the map bit clears too, in the
//!   same WAL record as the heap change) both bits are stale: cleared;
//! - with it, all-visible is right and stays, so index-only scans keep their speed; all-frozen
//!   stays only if every tuple on the page is frozen (a tuple lock clears only all-frozen).
//!
//! Map bits of heap blocks past the end of the heap are cleared too, as
//! `visibilitymap_prepare_truncate` would have (otherwise a relation that grows again after
//! the restore inherits them), and a map longer than its heap needs is cut to
//! `visibilitymap_truncation_length`: summaries written before 17.10/18.4 give the map fork the
//! heap's truncation limit after a multi-segment truncation ("pg_combinebackup: incorrect size
//! of VM fork after combine", January 2026), which zero-extends the rebuilt map to the heap's
//! length. Clearing bits is always safe (VACUUM sets them again); leaving a stale one is not.
//!
//! Only maps rebuilt from an `INCREMENTAL.*_vm` file are examined: a map the final backup
//! holds whole is as new as anything else in it. On a chain without the bug the rules find
//! nothing to change, so the output stays byte-identical to `pg_combinebackup`'s.

use crate::chain::Chain;
use crate::error::{CombineError, Result};
use crate::reconstruct::{AllVisibleBits, Plan};
use crate::walk::{Job, JobKind};
use pgincr_types::checksum::{Checksum, ChecksumType, Checksummer};
use pgincr_types::relfile::{ForkNumber, RelFileName};
use pgincr_types::visibility_map::{VmLayout, ALL_FROZEN, VALID_BITS};
use pgincr_types::{heap_page, page};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The origin of a block written as zeros (no backup supplied it): newer than any backup.
const ZEROED: u16 = u16::MAX;

/// Which backup of the chain (index, oldest 0) supplied each block of one output file, as
/// runs: `runs[i] = (first block, origin)`, each run reaching to the next one's first block or
/// to `len`. Proportional to the number of changed runs, not to the file's size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct BlockOrigins {
    runs: Vec<(u32, u16)>,
    len: u32,
}

impl BlockOrigins {
    /// Every block of a `len`-block file from backup `backup`.
    pub(crate) fn uniform(len: u32, backup: usize) -> BlockOrigins {
        let origin = u16::try_from(backup).unwrap_or(ZEROED);
        BlockOrigins {
            runs: if len > 0 {
                vec![(0, origin)]
            } else {
                Vec::new()
            },
            len,
        }
    }

    /// The origins of a reconstruction plan's blocks.
    pub(crate) fn from_plan(plan: &Plan) -> BlockOrigins {
        let mut runs: Vec<(u32, u16)> = Vec::new();
        for r in &plan.runs {
            let origin = match r.source {
                0 => ZEROED,
                s => plan
                    .sources
                    .get(s as usize - 1)
                    .and_then(|src| u16::try_from(src.backup).ok())
                    .unwrap_or(ZEROED),
            };
            if runs.last().is_none_or(|&(_, o)| o != origin) {
                runs.push((r.start, origin));
            }
        }
        BlockOrigins {
            runs,
            len: plan.blocks,
        }
    }

    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    /// The origin of `block`, if the file has it.
    fn origin(&self, block: u32) -> Option<u16> {
        if block >= self.len {
            return None;
        }
        let i = self.runs.partition_point(|&(start, _)| start <= block);
        i.checked_sub(1).and_then(|i| self.runs.get(i)).map(|r| r.1)
    }

    /// The runs overlapping `[from, to)`, clipped to it: `(first, end, origin)`.
    fn runs_in(&self, from: u32, to: u32) -> impl Iterator<Item = (u32, u32, u16)> + '_ {
        let to = to.min(self.len);
        let first = self
            .runs
            .partition_point(|&(start, _)| start <= from)
            .saturating_sub(1);
        self.runs
            .get(first..)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(move |(i, &(start, origin))| {
                let end = self
                    .runs
                    .get(first + i + 1)
                    .map_or(self.len, |&(next, _)| next);
                (start.max(from), end.min(to), origin)
            })
            .take_while(move |&(start, _, _)| start < to)
            .filter(|&(start, end, _)| start < end)
    }
}

/// What was repaired in one visibility map.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VmFileRepair {
    /// The map's path in the output manifest.
    pub path: String,
    /// Map pages changed.
    pub pages: u64,
    /// Heap blocks whose all-visible bit (and with it all-frozen) was cleared.
    pub all_visible_cleared: u64,
    /// Heap blocks whose all-frozen bit alone was cleared (the page stays all-visible).
    pub all_frozen_cleared: u64,
    /// Set when the map was cut: its length in blocks before.
    pub truncated_from_blocks: Option<u32>,
    pub blocks: u32,
}

/// What the repair of a whole combine did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VmRepairReport {
    /// Whether the repair ran (`--no-vm-repair` and dry runs turn it off).
    pub enabled: bool,
    /// Maps examined: those rebuilt from an `INCREMENTAL.*_vm` file.
    pub maps_checked: u64,
    pub maps_repaired: u64,
    pub pages_repaired: u64,
    pub all_visible_cleared: u64,
    pub all_frozen_cleared: u64,
    pub maps_truncated: u64,
    /// Heap pages read to decide.
    pub heap_pages_read: u64,
    pub files: Vec<VmFileRepair>,
}

/// A relation whose visibility map was rebuilt from an incremental file: its map's job and
/// the jobs of its heap segments, by segment number.
#[derive(Debug, Default)]
struct Relation {
    vm: Option<usize>,
    heap: BTreeMap<u32, usize>,
}

/// Splits a manifest path into its directory prefix and parsed relation file name.
fn relation_file(manifest_path: &[u8]) -> Option<(&[u8], RelFileName)> {
    let slash = manifest_path.iter().rposition(|&b| b == b'/')?;
    let (dir, name) = manifest_path.split_at(slash + 1);
    Some((dir, RelFileName::parse(std::str::from_utf8(name).ok()?)?))
}

/// The jobs whose block origins the repair needs: every job of a relation whose map is
/// rebuilt (`JobKind::Reconstruct`), the map's own and its heap segments'.
pub(crate) fn jobs_needing_origins(jobs: &[Job]) -> Vec<bool> {
    let relations = relations(&jobs.iter().collect::<Vec<_>>());
    let mut want = vec![false; jobs.len()];
    for rel in relations.values() {
        for &j in rel.vm.iter().chain(rel.heap.values()) {
            if let Some(w) = want.get_mut(j) {
                *w = true;
            }
        }
    }
    want
}

/// Relations with a rebuilt visibility map (segment 0; a second map segment needs a heap of
/// over 4.28 billion blocks), keyed by directory and relation number, with their heap
/// segments.
fn relations(jobs: &[&Job]) -> BTreeMap<(Vec<u8>, u32), Relation> {
    let mut rels: BTreeMap<(Vec<u8>, u32), Relation> = BTreeMap::new();
    for (i, job) in jobs.iter().enumerate() {
        if let (JobKind::Reconstruct { .. }, Some((dir, f))) =
            (&job.kind, relation_file(&job.manifest_path))
        {
            if f.fork == ForkNumber::VisibilityMap && f.segno == 0 {
                rels.entry((dir.to_vec(), f.rel_number)).or_default().vm = Some(i);
            }
        }
    }
    for (i, job) in jobs.iter().enumerate() {
        if matches!(job.kind, JobKind::Label(_)) {
            continue;
        }
        if let Some((dir, f)) = relation_file(&job.manifest_path) {
            if f.fork == ForkNumber::Main {
                if let Some(rel) = rels.get_mut(&(dir.to_vec(), f.rel_number)) {
                    rel.heap.insert(f.segno, i);
                }
            }
        }
    }
    rels
}

/// One produced file as the repair sees it.
pub(crate) struct Produced<'a> {
    pub job: &'a Job,
    /// `None` for files taken whole from the final backup.
    pub origins: Option<&'a BlockOrigins>,
    /// Which blocks are all-visible heap pages, where the combine noted it.
    pub all_visible: Option<&'a AllVisibleBits>,
    pub size: u64,
}

/// A map file the repair rewrote: the caller updates its manifest entry.
pub(crate) struct Rewritten {
    pub job: usize,
    pub size: u64,
    pub mtime: i64,
    pub checksum: Option<Checksum>,
}

/// Settings of one repair pass.
pub(crate) struct RepairContext<'a> {
    pub chain: &'a Chain,
    pub file_mode: u32,
}

/// Examines every rebuilt visibility map and repairs it in the output (in parallel on the
/// current rayon pool). Returns the report and the files rewritten.
pub(crate) fn repair(
    ctx: &RepairContext,
    produced: &[Produced],
) -> Result<(VmRepairReport, Vec<Rewritten>)> {
    use rayon::prelude::*;
    let rels = relations(&produced.iter().map(|p| p.job).collect::<Vec<_>>());
    let results: Vec<(VmFileRepair, u64, Option<Rewritten>)> = rels
        .par_iter()
        .map(|(_, rel)| repair_relation(ctx, produced, rel))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    let mut report = VmRepairReport {
        enabled: true,
        maps_checked: rels.len() as u64,
        ..VmRepairReport::default()
    };
    let mut rewritten = Vec::new();
    for (file, heap_pages_read, written) in results {
        report.heap_pages_read += heap_pages_read;
        if let Some(w) = written {
            report.maps_repaired += 1;
            report.pages_repaired += file.pages;
            report.all_visible_cleared += file.all_visible_cleared;
            report.all_frozen_cleared += file.all_frozen_cleared;
            report.maps_truncated += u64::from(file.truncated_from_blocks.is_some());
            report.files.push(file);
            rewritten.push(w);
        }
    }
    report.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((report, rewritten))
}

/// The heap of one relation as the output has it.
struct Heap<'a> {
    segments: Vec<(u32, &'a Produced<'a>, BlockOrigins)>,
    relseg_size: u32,
    blocks: u32,
}

fn repair_relation(
    ctx: &RepairContext,
    produced: &[Produced],
    rel: &Relation,
) -> Result<Option<(VmFileRepair, u64, Option<Rewritten>)>> {
    let chain = ctx.chain;
    let Some(vm_index) = rel.vm else {
        return Ok(None);
    };
    let (Some(vm), Some(layout)) = (produced.get(vm_index), VmLayout::new(chain.geometry.blcksz))
    else {
        return Ok(None);
    };
    let Some(vm_origins) = vm.origins else {
        return Ok(None);
    };
    if rel.heap.is_empty() {
        // A map without a heap is not something to guess about.
        return Ok(None);
    }
    let blcksz = chain.geometry.blcksz;
    let bs = blcksz as usize;
    let last = chain.backups.len().saturating_sub(1);
    let mut heap = Heap {
        segments: Vec::new(),
        relseg_size: chain.geometry.relseg_size,
        blocks: 0,
    };
    for (&segno, &j) in &rel.heap {
        let Some(p) = produced.get(j) else { continue };
        let origins = match p.origins {
            Some(o) => o.clone(),
            None => BlockOrigins::uniform((p.size / u64::from(blcksz)) as u32, last),
        };
        let end = u64::from(segno) * u64::from(heap.relseg_size) + u64::from(origins.len());
        heap.blocks = heap.blocks.max(u32::try_from(end).unwrap_or(u32::MAX));
        heap.segments.push((segno, p, origins));
    }

    let vm_path = &vm.job.output;
    let mut map = read_small_file(
        vm_path,
        vm.size,
        u64::from(blcksz) * u64::from(heap.relseg_size),
    )?;
    let vm_blocks = (map.len() / bs) as u32;
    let needed = layout.truncation_length(heap.blocks);
    let mut file = VmFileRepair {
        path: String::from_utf8_lossy(&vm.job.manifest_path).into_owned(),
        blocks: vm_blocks.min(needed),
        ..VmFileRepair::default()
    };
    if vm_blocks > needed {
        file.truncated_from_blocks = Some(vm_blocks);
        map.truncate(needed as usize * bs);
    }

    // First pass: the suspect heap blocks of every map page older than them.
    let per_page = layout.heap_blocks_per_page();
    let mut changed_pages = vec![false; map.len() / bs];
    let mut suspects: Vec<(u32, u8)> = Vec::new();
    for (b, (page, changed)) in map
        .chunks_exact_mut(bs)
        .zip(changed_pages.iter_mut())
        .enumerate()
    {
        let b = b as u32;
        let Some(vm_origin) = vm_origins.origin(b).filter(|&o| o != ZEROED) else {
            continue;
        };
        if page::is_new(page) {
            continue;
        }
        let first = b * per_page;
        let end = first.saturating_add(per_page);
        let mut h = first;
        while h < end.min(heap.blocks) {
            // Heap blocks in runs: skip whole runs that are no newer than the map page.
            let (run_end, origin) = heap_run(&heap, h, end.min(heap.blocks));
            if origin.is_none_or(|o| o > vm_origin) {
                for hb in h..run_end {
                    let bits = layout.bits(page, hb);
                    if bits != 0 {
                        suspects.push((hb, bits));
                    }
                }
            }
            h = run_end;
        }
        // Bits of heap blocks past the end of the heap.
        for hb in heap.blocks.max(first)..end {
            if layout.clear(page, hb, VALID_BITS) != 0 {
                *changed = true;
                file.all_visible_cleared += 1;
            }
        }
    }

    // Second pass: the heap pages decide.
    let (verdicts, heap_pages_read) = judge_heap_pages(&heap, &suspects, bs)?;
    for ((hb, bits), verdict) in suspects.iter().zip(verdicts) {
        let mask = match verdict {
            HeapVerdict::AllVisibleAndFrozen => 0,
            HeapVerdict::AllVisibleOnly => ALL_FROZEN,
            HeapVerdict::NotAllVisible => VALID_BITS,
        };
        let cleared = bits & mask;
        if cleared == 0 {
            continue;
        }
        let b = layout.map_block(*hb) as usize;
        if let (Some(page), Some(changed)) =
            (map.get_mut(b * bs..(b + 1) * bs), changed_pages.get_mut(b))
        {
            layout.clear(page, *hb, mask);
            *changed = true;
            if mask == VALID_BITS {
                file.all_visible_cleared += 1;
            } else {
                file.all_frozen_cleared += 1;
            }
        }
    }

    file.pages = changed_pages.iter().filter(|&&c| c).count() as u64;
    if file.pages == 0 && file.truncated_from_blocks.is_none() {
        return Ok(Some((file, heap_pages_read, None)));
    }
    let checksums = chain.last().control.data_checksums_enabled();
    for (b, _) in changed_pages.iter().enumerate().filter(|(_, &c)| c) {
        if let (true, Some(page)) = (checksums, map.get_mut(b * bs..(b + 1) * bs)) {
            page::set_checksum(page, b as u32);
        }
    }
    let written = rewrite(ctx, vm_index, vm.job, &map)?;
    tracing::info!(
        "repaired visibility map \"{}\": {} page(s), {} all-visible and {} all-frozen bit(s) cleared{}",
        file.path,
        file.pages,
        file.all_visible_cleared,
        file.all_frozen_cleared,
        file.truncated_from_blocks
            .map(|n| format!(", cut from {n} to {} blocks", file.blocks))
            .unwrap_or_default()
    );
    Ok(Some((file, heap_pages_read, Some(written))))
}

/// From heap block `h`, the end of its run of equal origin (at most `limit`) and the origin.
fn heap_run(heap: &Heap, h: u32, limit: u32) -> (u32, Option<u16>) {
    let segno = h / heap.relseg_size;
    let seg_start = segno * heap.relseg_size;
    let seg_end = seg_start.saturating_add(heap.relseg_size).min(limit);
    match heap.segments.iter().find(|(s, _, _)| *s == segno) {
        None => (seg_end, None),
        Some((_, _, origins)) => {
            let local = h - seg_start;
            match origins.runs_in(local, seg_end - seg_start).next() {
                Some((_, end, origin)) => (seg_start + end, Some(origin)),
                // Past the segment's own end: no block there.
                None => (seg_end, None),
            }
        }
    }
}

/// What a heap page, as written, says about the map bits of its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeapVerdict {
    /// `PD_ALL_VISIBLE`, and every tuple frozen: both bits may stay.
    AllVisibleAndFrozen,
    /// `PD_ALL_VISIBLE`, but some tuple is not frozen: all-frozen must go.
    AllVisibleOnly,
    /// No `PD_ALL_VISIBLE`, or no readable page: both bits must go.
    NotAllVisible,
}

/// Judges the heap pages of `suspects` (sorted by block). Most need no read: the combine
/// noted which pages it wrote are all-visible, and a page that is not loses both bits, one
/// that is keeps all-visible. Only an all-frozen bit on an all-visible page needs the page's
/// tuples, and pages the combine did not see pass through (`--link`, `--clone`): those are
/// read from the output, a window of up to 1 MiB at a time. Returns the verdicts and how
/// many pages were read.
fn judge_heap_pages(
    heap: &Heap,
    suspects: &[(u32, u8)],
    bs: usize,
) -> Result<(Vec<HeapVerdict>, u64)> {
    const WINDOW: u32 = 128;
    let mut verdicts: Vec<Option<HeapVerdict>> = suspects
        .iter()
        .map(|&(h, bits)| {
            let (segno, b) = (h / heap.relseg_size, h % heap.relseg_size);
            let noted = heap
                .segments
                .iter()
                .find(|(s, _, _)| *s == segno)
                .and_then(|(_, p, _)| p.all_visible)?;
            Some(if !noted.get(b) {
                HeapVerdict::NotAllVisible
            } else if bits & ALL_FROZEN == 0 {
                HeapVerdict::AllVisibleOnly
            } else {
                return None;
            })
        })
        .collect();
    let to_read: Vec<(usize, u32, u8)> = suspects
        .iter()
        .zip(&verdicts)
        .enumerate()
        .filter(|(_, (_, v))| v.is_none())
        .map(|(i, (&(h, bits), _))| (i, h, bits))
        .collect();
    let mut buf = vec![0u8; WINDOW as usize * bs];
    let mut i = 0;
    while let Some(&(_, first, _)) = to_read.get(i) {
        let segno = first / heap.relseg_size;
        let seg_start = segno * heap.relseg_size;
        let local_first = first - seg_start;
        // The pages to read within this window and segment.
        let mut j = i;
        while to_read.get(j).is_some_and(|&(_, h, _)| {
            h / heap.relseg_size == segno && h - seg_start < local_first + WINDOW
        }) {
            j += 1;
        }
        let local_last = to_read
            .get(j - 1)
            .map_or(local_first, |&(_, h, _)| h - seg_start);
        let span = (local_last - local_first + 1) as usize * bs;
        // `span` is at most the window (the pages are within WINDOW of the first).
        let read = match (
            heap.segments.iter().find(|(s, _, _)| *s == segno),
            buf.get_mut(..span),
        ) {
            (Some((_, p, _)), Some(window)) => {
                read_span(&p.job.output, u64::from(local_first) * bs as u64, window)
            }
            _ => Ok(false),
        }?;
        for &(k, h, bits) in to_read.get(i..j).unwrap_or_default() {
            let off = (h - seg_start - local_first) as usize * bs;
            let verdict = match buf.get(off..off + bs).filter(|_| read) {
                Some(page) if page::header_is_sane(page) && page::is_all_visible(page) => {
                    match (bits & ALL_FROZEN != 0, heap_page::may_be_all_frozen(page)) {
                        (true, Ok(true)) => HeapVerdict::AllVisibleAndFrozen,
                        _ => HeapVerdict::AllVisibleOnly,
                    }
                }
                _ => HeapVerdict::NotAllVisible,
            };
            if let Some(v) = verdicts.get_mut(k) {
                *v = Some(verdict);
            }
        }
        i = j;
    }
    let read = to_read.len() as u64;
    Ok((
        verdicts
            .into_iter()
            .map(|v| v.unwrap_or(HeapVerdict::NotAllVisible))
            .collect(),
        read,
    ))
}

/// Reads `buf.len()` bytes at `offset` of `path`; `Ok(false)` if the file is shorter.
fn read_span(path: &Path, offset: u64, buf: &mut [u8]) -> Result<bool> {
    let f = File::open(path).map_err(CombineError::io("could not open file", path))?;
    match f.read_exact_at(buf, offset) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(CombineError::io("could not read file", path)(e)),
    }
}

/// Reads a whole output file expected to be `size` bytes and at most `limit`.
fn read_small_file(path: &Path, size: u64, limit: u64) -> Result<Vec<u8>> {
    if size > limit {
        return Err(CombineError::Internal(format!(
            "visibility map \"{}\" is {size} bytes, more than one segment: not repairing it",
            path.display()
        )));
    }
    let mut buf = vec![0u8; size as usize];
    if !read_span(path, 0, &mut buf)? {
        return Err(CombineError::Internal(format!(
            "visibility map \"{}\" is shorter than the {size} bytes just written",
            path.display()
        )));
    }
    Ok(buf)
}

/// Replaces the output file of `job` with `data`: written under a temporary name next to it,
/// fsynced, renamed over it. The old file may be a hard link or clone of an input backup's
/// file (`--link`, `--clone`), which must not change, so it is never written in place.
fn rewrite(ctx: &RepairContext, index: usize, job: &Job, data: &[u8]) -> Result<Rewritten> {
    let path = &job.output;
    let tmp = temp_name(path);
    let result = (|| -> std::io::Result<File> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(ctx.file_mode)
            .open(&tmp)?;
        // No fsync here: the combine fsyncs every output file (plain) or packs it into an
        // archive that it fsyncs (tar) afterwards.
        f.write_all(data)?;
        Ok(f)
    })();
    let f = match result {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(CombineError::io("could not write file", &tmp)(e));
        }
    };
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(CombineError::io("could not move file into place", path)(e));
    }
    let meta = f
        .metadata()
        .map_err(CombineError::io("could not stat file", path))?;
    let mut sum = Checksummer::new(job.checksum_type);
    if job.checksum_type != ChecksumType::None {
        sum.update(data);
    }
    Ok(Rewritten {
        job: index,
        size: data.len() as u64,
        mtime: meta.mtime(),
        checksum: sum.finish(),
    })
}

/// `.<name>.pgincr-vm` next to `path`.
fn temp_name(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().map_or(std::ffi::OsStr::new("vm"), |n| n));
    name.push(".pgincr-vm");
    let name = PathBuf::from(name);
    debug_assert!(!name.as_os_str().as_bytes().contains(&b'/'));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(runs: &[(u32, u16)], len: u32) -> BlockOrigins {
        BlockOrigins {
            runs: runs.to_vec(),
            len,
        }
    }

    #[test]
    fn origin_lookup() {
        let o = origins(&[(0, 0), (10, 2), (12, 0)], 20);
        assert_eq!(o.origin(0), Some(0));
        assert_eq!(o.origin(9), Some(0));
        assert_eq!(o.origin(10), Some(2));
        assert_eq!(o.origin(11), Some(2));
        assert_eq!(o.origin(12), Some(0));
        assert_eq!(o.origin(19), Some(0));
        assert_eq!(o.origin(20), None);
        assert_eq!(BlockOrigins::uniform(0, 3).origin(0), None);
        assert_eq!(BlockOrigins::uniform(5, 3).origin(4), Some(3));
    }

    #[test]
    fn runs_are_clipped() {
        let o = origins(&[(0, 0), (10, 2), (12, 0)], 20);
        let all: Vec<_> = o.runs_in(0, 100).collect();
        assert_eq!(all, vec![(0, 10, 0), (10, 12, 2), (12, 20, 0)]);
        let mid: Vec<_> = o.runs_in(11, 15).collect();
        assert_eq!(mid, vec![(11, 12, 2), (12, 15, 0)]);
        assert_eq!(o.runs_in(20, 30).count(), 0);
        assert_eq!(o.runs_in(5, 5).count(), 0);
    }

    #[test]
    fn relation_files() {
        let (dir, f) = relation_file(b"base/5/16384_vm").unwrap();
        assert_eq!(dir, b"base/5/");
        assert_eq!(
            (f.rel_number, f.fork, f.segno),
            (16384, ForkNumber::VisibilityMap, 0)
        );
        let (_, f) = relation_file(b"pg_tblspc/16385/PG_18_202506291/5/16390.2").unwrap();
        assert_eq!(
            (f.rel_number, f.fork, f.segno),
            (16390, ForkNumber::Main, 2)
        );
        assert!(relation_file(b"PG_VERSION").is_none());
        assert!(relation_file(b"base/5/pg_filenode.map").is_none());
    }

    #[test]
    fn temp_names_stay_in_the_directory() {
        assert_eq!(
            temp_name(Path::new("/o/base/5/16384_vm")),
            PathBuf::from("/o/base/5/.16384_vm.pgincr-vm")
        );
    }
}
