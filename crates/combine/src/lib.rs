//! Reconstruction of full backups from a chain of incremental backups.
//!
//! This crate owns `pgincr combine`'s engine: given a chain of backups written by
//! `pg_basebackup` 17/18 (or by pgincr), plain or tar, oldest (full) first, it checks that they
//! form one chain, then writes a full backup whose every file is byte-identical to what
//! `pg_combinebackup` of the same major version writes, with a `backup_manifest` that
//! `pg_verifybackup` accepts. Files are produced in parallel on a rayon pool; the manifest,
//! which lists them in `pg_combinebackup`'s order, is written last, and the output only
//! appears under its final name once complete (see the `output` module).
//!
//! The API is [`combine`] / [`combine_with_progress`] with [`CombineOptions`], returning a
//! [`CombineReport`] or a [`CombineError`] whose [`CombineError::kind`] says what the caller
//! can do about it.
//!
//! Module map (all private): `chain` checks the inputs (`archive` reads tar-format ones),
//! `out_dirs` stages the output directories, `tablespaces` and `walk` decide what each output
//! file is made from, `jobs` produces them (`incremental` reads `INCREMENTAL.*` files,
//! `reconstruct` rebuilds relation segments, `copy` moves bytes, `spill` adopts files
//! decompressed from archives), `vm_repair` repairs visibility maps, `tar_output` writes
//! `-F t` archives, `manifest_out` writes the manifest, `output` stages and commits.

mod archive;
mod chain;
mod copy;
mod error;
mod geometry;
mod incremental;
mod jobs;
mod manifest_out;
mod options;
mod out_dirs;
mod output;
mod reconstruct;
mod spill;
mod tablespaces;
mod tar_output;
mod vm_repair;
mod walk;

pub use error::{CombineError, CombineErrorKind};
pub use options::{
    CombineOptions, CombineReport, CopyMode, OutputFormat, Progress, TablespaceMapping,
};
pub use vm_repair::{VmFileRepair, VmRepairReport};

use chain::{Chain, Layout};
use error::Result;
use jobs::Outcome;
use out_dirs::OutputDirs;
use pgincr_types::checksum::ChecksumType;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;
use walk::{Job, WalkResult};

/// Combines the chain described by `opts`. See [`combine_with_progress`].
pub fn combine(opts: &CombineOptions) -> Result<CombineReport> {
    combine_with_progress(opts, &|_| {})
}

/// Combines the chain described by `opts`, calling `progress` after each output file.
///
/// The steps are pg_combinebackup's, in its order; each is a function below. Nothing is
/// written before the chain has been checked, and nothing appears under the output's final
/// name before the last step.
pub fn combine_with_progress(
    opts: &CombineOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<CombineReport> {
    let started = Instant::now();
    let checksum_type = manifest_checksum_type(opts);
    // 1. Load and check the chain (`chain::load`) before anything is written, so that a
    //    broken chain or a damaged backup leaves nothing behind. The spill directory is
    //    declared first so that it is removed after the chain's open files into it are
    //    closed, whichever way the combine ends.
    let spill = output::SpillDir::new(&opts.output)?;
    let chain = chain::load(&opts.backups, spill.path())?;
    // 2. Plan the output: refuse an unusable output location and create the staging
    //    directories before the long work starts (`OutputDirs::stage`).
    let mut staging = output::Staging::new(opts.dry_run);
    let dirs = OutputDirs::stage(&chain, opts, &mut staging)?;
    // 3.-10.: one function each, below.
    let walked = walk(&chain, &dirs, opts, checksum_type)?;
    let mut warnings = chain.warnings.clone();
    warnings.extend(staging.warnings());
    warnings.extend(walked.warnings.iter().cloned());
    let mut outcomes = produce_files(&chain, &walked.jobs, opts, dirs.file_mode, progress)?;
    let vm_report = repair_visibility_maps(&chain, &walked.jobs, &mut outcomes, opts, &dirs)?;
    fsync_files(&walked.jobs, opts, &dirs)?;
    let entries = manifest_entries(&walked, &outcomes, opts, &dirs, checksum_type)?;
    let manifest_written = write_manifest(&chain, &entries, opts, &dirs)?;
    fsync_dirs(&walked.dirs, opts, &dirs)?;
    commit(staging, opts)?;
    Ok(report(
        opts,
        &chain,
        outcomes,
        vm_report,
        manifest_written,
        warnings,
        started,
    ))
}

/// The checksum the output manifest lists: none without a manifest, so that nothing is
/// computed for nobody.
fn manifest_checksum_type(opts: &CombineOptions) -> ChecksumType {
    if opts.no_manifest {
        ChecksumType::None
    } else {
        opts.manifest_checksums
    }
}

/// Step 3: the walk of the final backup (`process_directory_recursively`), which creates the
/// output directories, decides what every output file is made from, and links the
/// tablespaces of a plain output. Every file the final manifest lists must have been found:
/// a backup that lacks one is incomplete, and the output would be too.
fn walk(
    chain: &Chain,
    dirs: &OutputDirs,
    opts: &CombineOptions,
    checksum_type: ChecksumType,
) -> Result<WalkResult> {
    let last = chain.last();
    let main_out = &dirs.main_out;
    let mut walker = walk::Walker::new(chain, checksum_type, opts.dry_run, dirs.dir_mode);
    walker.push_label(
        last.label.without_incremental_lines(),
        main_out.join("backup_label"),
    );
    match &last.layout {
        Layout::Plain => {
            walker.walk_main(&last.dir, main_out)?;
            for (ts, out) in dirs.tablespaces.iter().zip(&dirs.ts_out) {
                if ts.in_place {
                    walker.mkdir(out)?;
                } else if !dirs.tar {
                    out_dirs::link_tablespace(ts, main_out, opts.dry_run)?;
                }
                walker.walk_tablespace(ts, out)?;
            }
        }
        Layout::Tar(index) => {
            let by_oid = dirs
                .tablespaces
                .iter()
                .map(|t| t.oid)
                .zip(dirs.ts_out.iter().cloned())
                .collect();
            walker.walk_tar(index, main_out, &by_oid)?;
            for ts in dirs.tablespaces.iter().filter(|_| !dirs.tar) {
                out_dirs::link_tablespace(ts, main_out, opts.dry_run)?;
            }
        }
    }
    walker.check_nothing_missing()?;
    Ok(walker.finish())
}

/// Step 4: produce every output file, in parallel, biggest first. The files the
/// visibility-map repair will examine record which backup supplied each of their blocks,
/// which only the reconstruction knows.
fn produce_files(
    chain: &Chain,
    jobs: &[Job],
    opts: &CombineOptions,
    file_mode: u32,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Vec<Outcome>> {
    let track = if opts.vm_repair && !opts.dry_run {
        vm_repair::jobs_needing_origins(jobs)
    } else {
        vec![false; jobs.len()]
    };
    jobs::run_jobs(chain, jobs, &track, opts, file_mode, progress)
}

/// Step 5: repair the visibility maps rebuilt from older backups (see [`vm_repair`]), after
/// every heap segment they cover has been written, since the heap pages as written decide.
/// The maps it rewrites get new outcomes for the manifest.
fn repair_visibility_maps(
    chain: &Chain,
    jobs: &[Job],
    outcomes: &mut [Outcome],
    opts: &CombineOptions,
    dirs: &OutputDirs,
) -> Result<VmRepairReport> {
    if !opts.vm_repair || opts.dry_run {
        return Ok(VmRepairReport::default());
    }
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
    let ctx = vm_repair::RepairContext {
        chain,
        file_mode: dirs.file_mode,
    };
    let pool = jobs::worker_pool(opts.jobs)?;
    let (report, rewritten) = pool.install(|| vm_repair::repair(&ctx, &produced))?;
    for w in rewritten {
        if let Some(o) = outcomes.get_mut(w.job) {
            o.rewritten(w);
        }
    }
    Ok(report)
}

/// Step 6: fsync the files of a plain output, on several threads so that journal commits
/// are shared; their writeback started as each was finished. Tar archives are fsynced as
/// they are packed instead.
fn fsync_files(jobs: &[Job], opts: &CombineOptions, dirs: &OutputDirs) -> Result<()> {
    if opts.dry_run || opts.no_sync || dirs.tar {
        return Ok(());
    }
    let files: Vec<_> = jobs.iter().map(|j| j.output.clone()).collect();
    pgincr_io::fsync_all(&files, pgincr_io::FSYNC_THREADS)
        .map_err(|(p, e)| CombineError::io("could not fsync file", &p)(e))
}

/// Step 7: the manifest entries of what was produced: with `-F t`, after packing the plain
/// tree into the archives (which adds `tablespace_map` and reorders entries as the archives
/// hold them); otherwise the files in walk order. A dry run has none.
fn manifest_entries(
    walked: &WalkResult,
    outcomes: &[Outcome],
    opts: &CombineOptions,
    dirs: &OutputDirs,
    checksum_type: ChecksumType,
) -> Result<Vec<tar_output::Entry>> {
    if opts.dry_run {
        return Ok(Vec::new());
    }
    if !dirs.tar {
        return Ok(manifest_out::entries(&walked.jobs, outcomes));
    }
    let produced = walked
        .jobs
        .iter()
        .zip(outcomes)
        .map(|(j, o)| tar_output::Produced {
            entry: manifest_out::entry(j, o),
            file: j.output.clone(),
        })
        .collect();
    let archived: Vec<tar_output::TablespaceArchive> = dirs
        .tablespaces
        .iter()
        .zip(&dirs.ts_out)
        .filter(|(t, _)| !t.in_place)
        .map(|(t, d)| tar_output::TablespaceArchive {
            oid: t.oid,
            location: t.new_dir.clone(),
            dir: d.clone(),
        })
        .collect();
    let packer = tar_output::Packer {
        out: &dirs.final_out,
        plain: &dirs.main_out,
        dirs: &walked.dirs,
        tablespaces: &archived,
        file_mode: dirs.file_mode,
        dir_mode: dirs.dir_mode,
        checksum_type,
        no_sync: opts.no_sync,
        direct: opts.direct_io,
    };
    let entries = packer.pack(produced)?;
    for d in &dirs.scratch_dirs {
        std::fs::remove_dir_all(d).map_err(CombineError::io("could not remove", d))?;
    }
    Ok(entries)
}

/// Step 8: write `backup_manifest`, last of all files, so that an output with a manifest is
/// complete. Returns whether one was written.
fn write_manifest(
    chain: &Chain,
    entries: &[tar_output::Entry],
    opts: &CombineOptions,
    dirs: &OutputDirs,
) -> Result<bool> {
    if opts.dry_run || opts.no_manifest {
        return Ok(false);
    }
    manifest_out::write_manifest(
        chain,
        entries,
        &dirs.final_out.join("backup_manifest"),
        dirs.file_mode,
        opts.no_sync,
    )?;
    Ok(true)
}

/// Step 9: fsync the directories, children before parents, then the staging roots, so that
/// every new entry is durable before the output is renamed into place.
fn fsync_dirs(walked_dirs: &[PathBuf], opts: &CombineOptions, dirs: &OutputDirs) -> Result<()> {
    if opts.dry_run || opts.no_sync {
        return Ok(());
    }
    let walked_dirs: &[PathBuf] = if dirs.tar { &[] } else { walked_dirs };
    for d in walked_dirs
        .iter()
        .rev()
        .chain(dirs.ts_out.iter().filter(|_| !dirs.tar))
        .chain(std::iter::once(&dirs.final_out))
    {
        output::fsync_dir(d)?;
    }
    Ok(())
}

/// Step 10: put the output in place, unless the combine was cancelled meanwhile: a cancel
/// after the last file must still leave no output (the staging directories are removed when
/// `staging` is dropped).
fn commit(staging: output::Staging, opts: &CombineOptions) -> Result<()> {
    if opts.cancel.load(Ordering::Relaxed) {
        return Err(CombineError::Cancelled);
    }
    staging.commit(opts.no_sync)
}

/// What the combine did, for the caller; the warnings come in the order they arose.
fn report(
    opts: &CombineOptions,
    chain: &Chain,
    outcomes: Vec<Outcome>,
    vm_report: VmRepairReport,
    manifest_written: bool,
    mut warnings: Vec<String>,
    started: Instant,
) -> CombineReport {
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
    report
}
