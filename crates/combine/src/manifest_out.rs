//! The output's `backup_manifest`: one entry per produced file, in the order the walk
//! found them (pg_combinebackup's), with the size and mtime of the file as written and the
//! checksum computed (or reused) while producing it, then the final backup's WAL ranges.

use crate::chain::Chain;
use crate::copy;
use crate::error::{CombineError, Result};
use crate::jobs::Outcome;
use crate::tar_output::Entry;
use crate::walk::Job;
use pgincr_types::manifest::ManifestWriter;
use std::path::Path;

/// The manifest entry of one produced file.
pub(crate) fn entry(job: &Job, o: &Outcome) -> Entry {
    Entry {
        manifest_path: job.manifest_path.clone(),
        size: o.size,
        mtime: o.mtime,
        checksum: o.checksum.clone(),
    }
}

/// The entries of the produced files, in job order.
pub(crate) fn entries(jobs: &[Job], outcomes: &[Outcome]) -> Vec<Entry> {
    jobs.iter()
        .zip(outcomes)
        .map(|(j, o)| entry(j, o))
        .collect()
}

/// Writes the manifest listing `entries` to `path` (a new file), fsynced unless `no_sync`.
pub(crate) fn write_manifest(
    chain: &Chain,
    entries: &[Entry],
    path: &Path,
    file_mode: u32,
    no_sync: bool,
) -> Result<()> {
    let out = copy::create_output(path, file_mode, false, 0)?;
    let io = CombineError::io("could not write file", path);
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
            .map_err(CombineError::io("could not fsync file", path))?;
    }
    Ok(())
}
