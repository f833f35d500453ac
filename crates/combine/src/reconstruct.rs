//! Rebuilding one relation segment from the final backup's `INCREMENTAL.<name>` and the older
//! backups (`reconstruct_from_incremental_file`, format reference 16 step 9).

use crate::chain::{Chain, Layout};
use crate::copy::{self, Source};
use crate::error::{CombineError, Result};
use crate::incremental::{IncrementalHeader, INCREMENTAL_PREFIX};
use crate::options::CopyMode;
use crate::walk::FileRef;
use pgincr_types::checksum::{Checksum, ChecksumType, Checksummer};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Where each block of the output comes from.
pub struct Plan {
    /// Source files consulted, newest first; index 0 is the final incremental file.
    pub sources: Vec<PlanSource>,
    /// Per output block: index into `sources` plus one, or 0 for a zero-filled block.
    pub source_of: Vec<u32>,
    /// Per output block: byte offset in its source.
    pub offset_of: Vec<u64>,
    /// Set when the whole output equals a full file of an older backup.
    pub copy_source: Option<usize>,
    /// The value in `source_of` of the full file found in an older backup, if any: its
    /// blocks sit at their own offsets, so any span of them can be read at once.
    pub full_source: Option<u32>,
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
    let latest_header = parse_incremental(chain, n - 1, &incr_path, &latest)?;
    let t = latest_header.truncation_block_length;
    let block_length = latest_header.reconstructed_length() as usize;
    let mut source_of = vec![0u32; block_length];
    let mut offset_of = vec![0u64; block_length];
    for (i, &b) in latest_header.blocks.iter().enumerate() {
        source_of[b as usize] = 1;
        offset_of[b as usize] = latest_header.block_offset(i, geom.blcksz);
    }
    // A whole-file copy from an older backup is possible only if the newest file supplies no
    // block of its own.
    let mut full_copy_possible = latest_header.blocks.is_empty();
    let mut sources = vec![PlanSource {
        backup: n - 1,
        source: latest,
    }];
    let mut copy_source = None;
    let mut full_source = None;
    for k in (0..n - 1).rev() {
        let backup = &chain.backups[k];
        if let Some(src) = backup.open(&full_path)? {
            check_size(chain, k, &full_path, &src)?;
            let size = src.len();
            let blocks_here = size / blcksz;
            let idx = sources.len() as u32 + 1;
            full_source = Some(idx);
            // Only blocks below the final truncation length may come from older backups.
            let limit = u64::from(t).min(blocks_here) as usize;
            for b in 0..limit {
                if source_of[b] == 0 {
                    source_of[b] = idx;
                    offset_of[b] = b as u64 * blcksz;
                }
            }
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
        let header = parse_incremental(chain, k, &incr_path, &src)?;
        let idx = sources.len() as u32 + 1;
        let mut used = false;
        for (i, &b) in header.blocks.iter().enumerate() {
            // The truncation length of intermediate files is not consulted, only the final one.
            if b < t && source_of[b as usize] == 0 {
                source_of[b as usize] = idx;
                offset_of[b as usize] = header.block_offset(i, geom.blcksz);
                used = true;
            }
        }
        if used {
            full_copy_possible = false;
        }
        sources.push(PlanSource {
            backup: k,
            source: src,
        });
    }
    Ok(Plan {
        sources,
        source_of,
        offset_of,
        copy_source,
        full_source,
    })
}

/// Opens a file of the final backup.
pub fn resolve(chain: &Chain, f: &FileRef) -> Result<Source> {
    match f {
        FileRef::Path(p) => Source::open(p).map_err(CombineError::io("could not open file", p)),
        FileRef::Member(i) => match &chain.last().layout {
            Layout::Tar(index) => index.open_member(&index.members[*i]),
            Layout::Plain => Err(CombineError::Output(
                "internal error: member of a plain backup".into(),
            )),
        },
    }
}

/// Validates the incremental file `src` (manifest path `rel`) of backup `k`.
fn parse_incremental(
    chain: &Chain,
    k: usize,
    rel: &[u8],
    src: &Source,
) -> Result<IncrementalHeader> {
    let backup = &chain.backups[k];
    check_size(chain, k, rel, src)?;
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
fn check_size(chain: &Chain, k: usize, manifest_path: &[u8], src: &Source) -> Result<()> {
    let backup = &chain.backups[k];
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
    pub whole_copy: bool,
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
}

/// Executes `plan` into `target`; warnings (a manifest lacking an entry) go to `warnings`.
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
    } = *target;
    let blcksz = chain.geometry.block_bytes();
    if let Some(ci) = plan.copy_source {
        let src = &plan.sources[ci];
        let mut reuse = None;
        if checksum_type != ChecksumType::None {
            match chain.backups[src.backup].manifest.file(manifest_path) {
                None => warnings.push(format!(
                    "\"{}\" contains no entry for \"{}\"",
                    chain.backups[src.backup]
                        .dir
                        .join("backup_manifest")
                        .display(),
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
        copy::copy_whole(&src.source, out_path, mode, file_mode, direct, &mut sum)?;
        return Ok(Written {
            checksum: reuse.or_else(|| sum.finish()),
            zero_blocks: 0,
            whole_copy: true,
        });
    }
    let direct = direct && mode != CopyMode::CopyFileRange;
    let n = plan.source_of.len();
    let mut out = copy::create_output(out_path, file_mode, direct, n as u64 * blcksz)?;
    let mut sum = Checksummer::new(checksum_type);
    let mut zero_blocks = 0u64;
    let bs = blcksz as usize;
    // The output is assembled a buffer at a time: each run of blocks that come from
    // consecutive offsets of one source is read straight into its place, then the whole
    // buffer is checksummed and written at once.
    let chunk_blocks = (copy::BUFFER / bs).max(1);
    let mut buf = pgincr_io::AlignedBuf::new(chunk_blocks.min(n.max(1)) * bs);
    let mut chunk_start = 0;
    while chunk_start < n {
        let chunk_end = (chunk_start + chunk_blocks).min(n);
        let spanned = match mode {
            CopyMode::CopyFileRange => None,
            _ => read_full_span(plan, chunk_start, chunk_end, blcksz, &mut buf)?,
        };
        let mut i = chunk_start;
        while i < chunk_end {
            let s = plan.source_of[i];
            let mut j = i + 1;
            while j < chunk_end
                && plan.source_of[j] == s
                && (s == 0 || plan.offset_of[j] == plan.offset_of[j - 1] + blcksz)
            {
                j += 1;
            }
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
                    copy::copy_range(src, plan.offset_of[i], len, &mut out, out_path)?;
                }
                if mode != CopyMode::CopyFileRange || checksum_type != ChecksumType::None {
                    src.read_at(plan.offset_of[i], slot)?;
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
            i = j;
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
        whole_copy: false,
    })
}

/// Reads, in one call, the span of a chunk's blocks that the full file of an older backup
/// supplies, including any blocks between them that newer sources will overwrite: one large
/// read costs less than several small ones (on a virtual disk each request is an exit to the
/// host; cold, a chain took a third less time to combine this way). Returns the source read,
/// or `None` when the full file supplies too little of the chunk to be worth it.
fn read_full_span(
    plan: &Plan,
    chunk_start: usize,
    chunk_end: usize,
    blcksz: u64,
    buf: &mut [u8],
) -> Result<Option<u32>> {
    let Some(full) = plan.full_source else {
        return Ok(None);
    };
    let blocks = &plan.source_of[chunk_start..chunk_end];
    let (Some(first), Some(last)) = (
        blocks.iter().position(|&s| s == full),
        blocks.iter().rposition(|&s| s == full),
    ) else {
        return Ok(None);
    };
    let supplied = blocks[first..=last].iter().filter(|&&s| s == full).count();
    if supplied * 2 < last + 1 - first {
        return Ok(None);
    }
    let bs = blcksz as usize;
    let src = &plan.sources[full as usize - 1].source;
    let offset = (chunk_start + first) as u64 * blcksz;
    src.read_at(offset, &mut buf[first * bs..(last + 1) * bs])?;
    Ok(Some(full))
}
