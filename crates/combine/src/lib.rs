//! Reconstruction of full backups from a chain of incremental backups.
//!
//! This crate owns `pgincr combine`'s engine: given a chain of backups written by
//! `pg_basebackup` 17/18 (or by pgincr), plain or tar, oldest (full) first, it checks that they
//! form one chain, then writes a full backup whose every file is byte-identical to what
//! `pg_combinebackup` of the same major version writes, with a `backup_manifest` that
//! `pg_verifybackup` accepts. Files are produced in parallel on a rayon pool; the manifest,
//! which lists them in `pg_combinebackup`'s order, is written last, and the output only
//! appears under its final name once complete (see [`output`]).
//!
//! Module map: [`chain`] checks the inputs ([`archive`] reads tar-format ones),
//! [`tablespaces`] and [`walk`] decide what each output file is made from, [`incremental`]
//! reads `INCREMENTAL.*` files, [`reconstruct`] rebuilds relation segments, [`copy`] moves
//! bytes, [`output`] stages and commits, [`tar_output`] writes `-F t` archives.

pub mod archive;
pub mod chain;
pub mod copy;
pub mod error;
pub mod geometry;
pub mod incremental;
pub mod options;
pub mod output;
pub mod reconstruct;
pub mod tablespaces;
pub mod tar_output;
pub mod walk;
mod vm_repair;

pub use error::CombineError;
pub use geometry::Geometry;
pub use vm_repair::{VmFileRepair, VmRepairReport};
pub use options::{
    CombineOptions, CombineReport, CopyMode, OutputFormat, Progress, TablespaceMapping,
};

use chain::Chain;
use error::Result;
use pgincr_types::checksum::{Checksum, ChecksumType, Checksummer};
use pgincr_types::manifest::ManifestWriter;
use rayon::prelude::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use walk::{Job, JobKind};

/// Combines the chain described by `opts`. See [`combine_with_progress`].
pub fn combine(opts: &CombineOptions) -> Result<CombineReport> {
    combine_with_progress(opts, &|_| {})
}

/// Combines the chain described by `opts`, calling `progress` after each output file.
pub fn combine_with_progress(
    opts: &CombineOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<CombineReport> {
    let started = Instant::now();
    let checksum_type = if opts.no_manifest {
        ChecksumType::None
    } else {
        opts.manifest_checksums
    };
    let spill = output::SpillDir::new(&opts.output)?;
    let chain = chain::load(&opts.backups, spill.path())?;
    let last = chain.last();
    let (dir_mode, file_mode) = output::create_modes(&last.dir)?;
    let tar_out = opts.format == OutputFormat::Tar;
    let mappings = &opts.tablespace_mappings;
    let tablespaces = match &last.layout {
        chain::Layout::Plain => tablespaces::scan(&last.dir, mappings, &opts.output, !tar_out)?,
        chain::Layout::Tar(index) => {
            tablespaces::from_archives(index, mappings, &opts.output, !tar_out)?
        }
    };

    let mut staging = output::Staging::new(opts.dry_run);
    let final_out = staging.add(&opts.output, dir_mode)?;
    // Tar output is produced as a plain tree inside the staging directory first.
    let main_out = if tar_out {
        final_out.join(".plain")
    } else {
        final_out.clone()
    };
    let mut ts_out = Vec::with_capacity(tablespaces.len());
    let mut scratch_dirs = Vec::new();
    if tar_out {
        scratch_dirs.push(main_out.clone());
    }
    for ts in &tablespaces {
        ts_out.push(if ts.in_place {
            main_out.join("pg_tblspc").join(ts.oid.to_string())
        } else if tar_out {
            let d = final_out.join(format!(".tablespace-{}", ts.oid));
            scratch_dirs.push(d.clone());
            d
        } else {
            staging.add(&ts.new_dir, dir_mode)?
        });
    }
    if !opts.dry_run {
        for d in &scratch_dirs {
            std::fs::create_dir(d)
                .map_err(error::CombineError::io("could not create directory", d))?;
        }
    }

    let mut walker = walk::Walker::new(&chain, checksum_type, opts.dry_run, dir_mode);
    walker.push_label(
        last.label.without_incremental_lines(),
        main_out.join("backup_label"),
    );
    match &last.layout {
        chain::Layout::Plain => {
            walker.walk_main(&last.dir, &main_out)?;
            for (ts, out) in tablespaces.iter().zip(&ts_out) {
                if ts.in_place {
                    walker.mkdir(out)?;
                } else if !tar_out {
                    link_tablespace(ts, &main_out, opts.dry_run)?;
                }
                walker.walk_tablespace(ts, out)?;
            }
        }
        chain::Layout::Tar(index) => {
            let by_oid = tablespaces
                .iter()
                .map(|t| t.oid)
                .zip(ts_out.iter().cloned())
                .collect();
            walker.walk_tar(index, &main_out, &by_oid)?;
            for ts in tablespaces.iter().filter(|_| !tar_out) {
                link_tablespace(ts, &main_out, opts.dry_run)?;
            }
        }
    }
    walker.check_nothing_missing()?;
    let walked = walker.finish();
    let mut warnings = chain.warnings.clone();
    warnings.extend(staging.warnings());
    warnings.extend(walked.warnings);

    let track = if opts.vm_repair && !opts.dry_run {
        vm_repair::jobs_needing_origins(&walked.jobs)
    } else {
        vec![false; walked.jobs.len()]
    };
    let mut outcomes = run_jobs(&chain, &walked.jobs, &track, opts, file_mode, progress)?;
    let vm_report = if opts.vm_repair && !opts.dry_run {
        repair_visibility_maps(&chain, &walked.jobs, &mut outcomes, file_mode, opts.jobs)?
    } else {
        VmRepairReport::default()
    };
    if !opts.dry_run && !opts.no_sync && !tar_out {
        let files: Vec<_> = walked.jobs.iter().map(|j| j.output.clone()).collect();
        pgincr_io::fsync_all(&files, pgincr_io::FSYNC_THREADS)
            .map_err(|(p, e)| error::CombineError::io("could not fsync file", &p)(e))?;
    }

    let mut entries: Vec<tar_output::Entry> = Vec::new();
    if !opts.dry_run && tar_out {
        let produced = walked
            .jobs
            .iter()
            .zip(&outcomes)
            .map(|(j, o)| tar_output::Produced {
                entry: entry(j, o),
                file: j.output.clone(),
            })
            .collect();
        let archived: Vec<tar_output::TablespaceArchive> = tablespaces
            .iter()
            .zip(&ts_out)
            .filter(|(t, _)| !t.in_place)
            .map(|(t, d)| tar_output::TablespaceArchive {
                oid: t.oid,
                location: t.new_dir.clone(),
                dir: d.clone(),
            })
            .collect();
        let packer = tar_output::Packer {
            out: &final_out,
            plain: &main_out,
            dirs: &walked.dirs,
            tablespaces: &archived,
            file_mode,
            dir_mode,
            checksum_type,
            no_sync: opts.no_sync,
            direct: opts.direct_io,
        };
        entries = packer.pack(produced)?;
        for d in &scratch_dirs {
            std::fs::remove_dir_all(d).map_err(error::CombineError::io("could not remove", d))?;
        }
    } else if !opts.dry_run {
        entries = walked
            .jobs
            .iter()
            .zip(&outcomes)
            .map(|(j, o)| entry(j, o))
            .collect();
    }
    let manifest_written = !opts.dry_run && !opts.no_manifest;
    if manifest_written {
        write_manifest(
            &chain,
            &entries,
            &final_out.join("backup_manifest"),
            file_mode,
            opts.no_sync,
        )?;
    }
    if !opts.dry_run && !opts.no_sync {
        // Children before parents, then the staging roots.
        let dirs: &[std::path::PathBuf] = if tar_out { &[] } else { &walked.dirs };
        for d in dirs
            .iter()
            .rev()
            .chain(ts_out.iter().filter(|_| !tar_out))
            .chain(std::iter::once(&final_out))
        {
            output::fsync_dir(d)?;
        }
    }
    if opts.cancel.load(Ordering::Relaxed) {
        return Err(error::CombineError::Cancelled);
    }
    staging.commit(opts.no_sync)?;

    if opts.copy_mode == CopyMode::Link {
        warnings.push(
            "--link mode was used; any modifications to the output directory might destructively modify input directories".into(),
        );
    }
    let mut report = CombineReport {
        output: opts.output.clone(),
        dry_run: opts.dry_run,
        backups: chain.backups.len(),
        system_identifier: chain.system_identifier,
        pg_major: chain.pg_major,
        files: outcomes.len() as u64,
        manifest_written,
        vm_repair: vm_report,
        ..CombineReport::default()
    };
    for o in &outcomes {
        report.reconstructed += u64::from(o.reconstructed && !o.whole);
        report.copied_whole += u64::from(o.whole);
        report.bytes += o.size;
        report.zero_blocks += o.zero_blocks;
        warnings.extend(o.warnings.iter().cloned());
    }
    report.warnings = warnings;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Creates `OUT/pg_tblspc/<oid>` pointing at the tablespace's final directory.
fn link_tablespace(ts: &tablespaces::Tablespace, main_out: &Path, dry_run: bool) -> Result<()> {
    if dry_run || ts.in_place {
        return Ok(());
    }
    let link = main_out.join("pg_tblspc").join(ts.oid.to_string());
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).map_err(error::CombineError::io(
            "could not create directory",
            parent,
        ))?;
    }
    std::os::unix::fs::symlink(&ts.new_dir, &link).map_err(error::CombineError::io(
        "could not create symbolic link",
        &link,
    ))
}

/// Runs the visibility-map repair over the produced files and updates the outcomes of the
/// maps it rewrote (see [`vm_repair`]).
fn repair_visibility_maps(
    chain: &Chain,
    jobs: &[Job],
    outcomes: &mut [Outcome],
    file_mode: u32,
    threads: usize,
) -> Result<VmRepairReport> {
    let produced: Vec<vm_repair::Produced> = jobs
        .iter()
        .zip(outcomes.iter())
        .map(|(job, o)| vm_repair::Produced {
            job,
            origins: o.origins.as_ref(),
            all_visible: o.all_visible.as_ref(),
            size: o.size,
        })
        .collect();
    let ctx = vm_repair::RepairContext { chain, file_mode };
    let pool = worker_pool(threads)?;
    let (report, rewritten) = pool.install(|| vm_repair::repair(&ctx, &produced))?;
    for w in rewritten {
        if let Some(o) = outcomes.get_mut(w.job) {
            o.size = w.size;
            o.mtime = w.mtime;
            o.checksum = w.checksum;
            o.whole = false;
        }
    }
    Ok(report)
}

fn worker_pool(jobs: usize) -> Result<rayon::ThreadPool> {
    let threads = if jobs == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        jobs
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("pgincr-combine-{i}"))
        .build()
        .map_err(|e| error::CombineError::Output(format!("could not start worker threads: {e}")))
}

/// What producing one output file gave.
struct Outcome {
    size: u64,
    mtime: i64,
    checksum: Option<Checksum>,
    reconstructed: bool,
    whole: bool,
    zero_blocks: u64,
    warnings: Vec<String>,
    /// Which backup supplied each block, for the files the visibility-map repair looks at.
    origins: Option<vm_repair::BlockOrigins>,
    /// Which of those blocks are all-visible heap pages, where the data passed through us.
    all_visible: Option<reconstruct::AllVisibleBits>,
}

fn run_jobs(
    chain: &Chain,
    jobs: &[Job],
    track_origins: &[bool],
    opts: &CombineOptions,
    file_mode: u32,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Vec<Outcome>> {
    let pool = worker_pool(opts.jobs)?;
    // Biggest first, so one large file does not start last and leave the other workers idle.
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(jobs[i].size_hint));
    let total_bytes: u64 = jobs.iter().map(|j| j.size_hint).sum();
    let (files_done, bytes_done) = (AtomicU64::new(0), AtomicU64::new(0));
    let results: Vec<(usize, Outcome)> = pool.install(|| {
        order
            .par_iter()
            .map(|&i| {
                if opts.cancel.load(Ordering::Relaxed) {
                    return Err(error::CombineError::Cancelled);
                }
                let track = track_origins.get(i).copied().unwrap_or(false);
                let o = run_job(chain, &jobs[i], track, opts, file_mode)?;
                progress(Progress {
                    files_done: files_done.fetch_add(1, Ordering::Relaxed) + 1,
                    files_total: jobs.len() as u64,
                    bytes_done: bytes_done.fetch_add(jobs[i].size_hint, Ordering::Relaxed)
                        + jobs[i].size_hint,
                    bytes_total: total_bytes,
                });
                Ok((i, o))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let mut slots: Vec<Option<Outcome>> = (0..jobs.len()).map(|_| None).collect();
    for (i, o) in results {
        slots[i] = Some(o);
    }
    Ok(slots.into_iter().flatten().collect())
}

fn run_job(
    chain: &Chain,
    job: &Job,
    track_origins: bool,
    opts: &CombineOptions,
    file_mode: u32,
) -> Result<Outcome> {
    let mut out = Outcome {
        size: 0,
        mtime: 0,
        checksum: None,
        reconstructed: false,
        whole: false,
        zero_blocks: 0,
        warnings: Vec::new(),
        origins: None,
        all_visible: None,
    };
    match &job.kind {
        JobKind::Label(text) => {
            if !opts.dry_run {
                let mut f = copy::create_output(&job.output, file_mode, false, 0)?;
                f.write_all(text)
                    .map_err(error::CombineError::io("could not write file", &job.output))?;
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
            } else if let Some(spilled) = spilled_member(chain, source) {
                // Our own decompressed copy: move it into place rather than copy it again.
                adopt(spilled, &job.output, file_mode, opts)?;
                out.checksum = match reuse {
                    Some(r) => Some(r.clone()),
                    None => {
                        let src = copy::Source::open(&job.output)
                            .map_err(error::CombineError::io("could not open file", &job.output))?;
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
            .map_err(error::CombineError::io("could not stat file", &job.output))?;
        out.size = meta.len();
        out.mtime = meta.mtime();
    }
    Ok(out)
}

/// The spill file holding a member of the final backup, if it was decompressed.
fn spilled_member<'c>(chain: &'c Chain, source: &walk::FileRef) -> Option<&'c Path> {
    let (walk::FileRef::Member(i), chain::Layout::Tar(index)) = (source, &chain.last().layout)
    else {
        return None;
    };
    match &index.members[*i].location {
        archive::Location::Spilled(p) => Some(p),
        _ => None,
    }
}

/// Moves a spilled file into the output; copies it when the output is on another file system.
fn adopt(spilled: &Path, dst: &Path, file_mode: u32, opts: &CombineOptions) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::rename(spilled, dst) {
        Ok(()) => std::fs::set_permissions(dst, std::fs::Permissions::from_mode(file_mode))
            .map_err(error::CombineError::io("could not set permissions of", dst)),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let src = copy::Source::open(spilled)
                .map_err(error::CombineError::io("could not open file", spilled))?;
            copy::copy_whole(
                &src,
                dst,
                opts.copy_mode,
                file_mode,
                opts.direct_io,
                &mut Checksummer::new(ChecksumType::None),
            )
        }
        Err(e) => Err(error::CombineError::io(
            "could not move file into place",
            dst,
        )(e)),
    }
}

/// The manifest entry of one produced file.
fn entry(job: &Job, o: &Outcome) -> tar_output::Entry {
    tar_output::Entry {
        manifest_path: job.manifest_path.clone(),
        size: o.size,
        mtime: o.mtime,
        checksum: o.checksum.clone(),
    }
}

fn write_manifest(
    chain: &Chain,
    entries: &[tar_output::Entry],
    path: &Path,
    file_mode: u32,
    no_sync: bool,
) -> Result<()> {
    let out = copy::create_output(path, file_mode, false, 0)?;
    let io = error::CombineError::io("could not write file", path);
    let result = (|| -> std::io::Result<std::fs::File> {
        let out = std::io::BufWriter::with_capacity(256 * 1024, out);
        let mut w = ManifestWriter::new(out, chain.system_identifier)?;
        for e in entries {
            w.add_file(&e.manifest_path, e.size, e.mtime, e.checksum.as_ref())?;
        }
        let inner = w.finish(&chain.last().manifest.wal_ranges)?;
        inner.into_inner().map_err(|e| e.into_error())?.finish()
    })();
    let file = result.map_err(io)?;
    if !no_sync {
        file.sync_all()
            .map_err(error::CombineError::io("could not fsync file", path))?;
    }
    Ok(())
}
