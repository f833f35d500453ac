//! Running the walk's jobs: one output file each, produced in parallel on a rayon pool, and
//! the bookkeeping of what each produced ([`Outcome`]) for the manifest, the
//! visibility-map repair and the report.

use crate::chain::Chain;
use crate::error::{CombineError, Result};
use crate::options::{CombineOptions, Progress};
use crate::walk::{Job, JobKind};
use crate::{copy, output, reconstruct, spill, vm_repair};
use pgincr_types::checksum::{Checksum, ChecksumType, Checksummer};
use rayon::prelude::*;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};

/// What producing one output file gave.
pub(crate) struct Outcome {
    pub size: u64,
    pub mtime: i64,
    pub checksum: Option<Checksum>,
    pub reconstructed: bool,
    pub whole: bool,
    pub zero_blocks: u64,
    pub warnings: Vec<String>,
    /// Which backup supplied each block, for the files the visibility-map repair looks at.
    pub origins: Option<vm_repair::BlockOrigins>,
    /// Which of those blocks are all-visible heap pages, where the data passed through us.
    pub all_visible: Option<reconstruct::AllVisibleBits>,
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            size: 0,
            mtime: 0,
            checksum: None,
            reconstructed: false,
            whole: false,
            zero_blocks: 0,
            warnings: Vec::new(),
            origins: None,
            all_visible: None,
        }
    }

    /// Takes the size, mtime and checksum of a file the visibility-map repair rewrote: it
    /// is no longer a copy of an input.
    pub fn rewritten(&mut self, w: vm_repair::Rewritten) {
        self.size = w.size;
        self.mtime = w.mtime;
        self.checksum = w.checksum;
        self.whole = false;
    }
}

/// A rayon pool of `jobs` threads (0: one per core).
pub(crate) fn worker_pool(jobs: usize) -> Result<rayon::ThreadPool> {
    let threads = if jobs == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        jobs
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("pgincr-combine-{i}"))
        .build()
        .map_err(|e| CombineError::Internal(format!("could not start worker threads: {e}")))
}

/// Runs every job on a pool of `opts.jobs` threads, calling `progress` after each, and
/// returns their outcomes in job order. `track_origins[i]` asks job `i` to record where each
/// of its blocks came from. Stops before the next job once `opts.cancel` is set.
pub(crate) fn run_jobs(
    chain: &Chain,
    jobs: &[Job],
    track_origins: &[bool],
    opts: &CombineOptions,
    file_mode: u32,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Vec<Outcome>> {
    let pool = worker_pool(opts.jobs)?;
    // Biggest first, so one large file does not start last and leave the other workers idle
    // (a stable sort: jobs of one size keep their order).
    let mut order: Vec<(usize, &Job)> = jobs.iter().enumerate().collect();
    order.sort_by_key(|(_, job)| std::cmp::Reverse(job.size_hint));
    let total_bytes: u64 = jobs.iter().map(|j| j.size_hint).sum();
    let (files_done, bytes_done) = (AtomicU64::new(0), AtomicU64::new(0));
    let results: Vec<(usize, Outcome)> = pool.install(|| {
        order
            .par_iter()
            .map(|&(i, job)| {
                if opts.cancel.load(Ordering::Relaxed) {
                    return Err(CombineError::Cancelled);
                }
                let track = track_origins.get(i).copied().unwrap_or(false);
                let o = run_job(chain, job, track, opts, file_mode)?;
                progress(Progress {
                    files_done: files_done.fetch_add(1, Ordering::Relaxed) + 1,
                    files_total: jobs.len() as u64,
                    bytes_done: bytes_done.fetch_add(job.size_hint, Ordering::Relaxed)
                        + job.size_hint,
                    bytes_total: total_bytes,
                });
                Ok((i, o))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let mut slots: Vec<Option<Outcome>> = (0..jobs.len()).map(|_| None).collect();
    for (i, o) in results {
        if let Some(slot) = slots.get_mut(i) {
            *slot = Some(o);
        }
    }
    Ok(slots.into_iter().flatten().collect())
}

/// Produces the output file of one job (in a dry run, checks and plans it only).
fn run_job(
    chain: &Chain,
    job: &Job,
    track_origins: bool,
    opts: &CombineOptions,
    file_mode: u32,
) -> Result<Outcome> {
    let mut out = Outcome::new();
    match &job.kind {
        JobKind::Label(text) => {
            if !opts.dry_run {
                let mut f = copy::create_output(&job.output, file_mode, false, 0)?;
                f.write_all(text)
                    .map_err(CombineError::io("could not write file", &job.output))?;
                copy::finish_output(f, &job.output)?;
                let mut sum = Checksummer::new(job.checksum_type);
                sum.update(text);
                out.checksum = sum.finish();
            }
        }
        JobKind::Copy { source, reuse } => {
            out.whole = true;
            if opts.dry_run {
                reconstruct::resolve(chain, source)?;
            } else if let Some(spilled) = spill::spilled_member(chain, source) {
                // Our own decompressed copy: move it into place rather than copy it again.
                spill::adopt(spilled, &job.output, file_mode, opts)?;
                out.checksum = match reuse {
                    Some(r) => Some(r.clone()),
                    None => {
                        let src = copy::Source::open(&job.output)
                            .map_err(CombineError::io("could not open file", &job.output))?;
                        let mut sum = Checksummer::new(job.checksum_type);
                        copy::checksum_source(&src, &mut sum)?;
                        sum.finish()
                    }
                };
            } else {
                let src = reconstruct::resolve(chain, source)?;
                let kind = if reuse.is_some() {
                    ChecksumType::None
                } else {
                    job.checksum_type
                };
                let mut sum = Checksummer::new(kind);
                copy::copy_whole(
                    &src,
                    &job.output,
                    opts.copy_mode,
                    file_mode,
                    opts.direct_io,
                    &mut sum,
                )?;
                out.checksum = reuse.clone().or_else(|| sum.finish());
            }
        }
        JobKind::Reconstruct {
            incremental,
            relative_dir,
            bare_name,
        } => {
            out.reconstructed = true;
            let plan = reconstruct::plan(chain, incremental, relative_dir, bare_name)?;
            out.whole = plan.copy_source.is_some();
            if track_origins {
                out.origins = Some(vm_repair::BlockOrigins::from_plan(&plan));
            }
            if opts.dry_run {
                out.zero_blocks = plan.zero_blocks();
            } else {
                let target = reconstruct::Target {
                    path: &job.output,
                    manifest_path: &job.manifest_path,
                    checksum_type: job.checksum_type,
                    copy_mode: opts.copy_mode,
                    file_mode,
                    direct: opts.direct_io,
                    note_all_visible: track_origins,
                };
                let w = reconstruct::execute(chain, &plan, &target, &mut out.warnings)?;
                out.checksum = w.checksum;
                out.zero_blocks = w.zero_blocks;
                out.all_visible = w.all_visible;
            }
        }
    }
    if !opts.dry_run {
        if !opts.no_sync {
            // Start writing back now; the fsync at the end then mostly finds clean pages
            // (what PostgreSQL's sync_pgdata does with its pre-sync pass).
            output::start_writeback(&job.output);
        }
        // Size and mtime come from the output file, as pg_combinebackup stat()s it.
        let meta = std::fs::metadata(&job.output)
            .map_err(CombineError::io("could not stat file", &job.output))?;
        out.size = meta.len();
        out.mtime = meta.mtime();
    }
    Ok(out)
}
