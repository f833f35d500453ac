//! `pgincr summary`: inspect and query WAL summary files.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use pgincr_summary::estimate::{self, EstimateParams, Method};
use pgincr_summary::{
    directory, text, BlockRefEntry, BlockRefKey, BlockRefTable, SummaryFileInfo, SummaryReader,
};
use pgincr_types::{BackupLabel, ControlFile, Lsn, TimeLineId};
use serde::Serialize;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Print the contents of WAL summary files, exactly as pg_walsummary does.
    Show(ShowArgs),
    /// List a summaries directory: timelines, LSN ranges, gaps and overlaps.
    List(ListArgs),
    /// Print the blocks modified in an LSN range of one timeline (the union of the summaries).
    Blocks(BlocksArgs),
    /// Estimate the size of an incremental backup of a data directory.
    Estimate(EstimateArgs),
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// List block numbers individually, not as ranges.
    #[arg(short, long)]
    individual: bool,
    /// Don't print anything, just parse (and so verify) the files.
    #[arg(short, long)]
    quiet: bool,
    /// Print JSON instead of pg_walsummary's text.
    #[arg(long)]
    json: bool,
    /// Summary files (pg_wal/summaries/*.summary).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// A summaries directory, such as $PGDATA/pg_wal/summaries.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

#[derive(clap::Args)]
pub struct BlocksArgs {
    /// Timeline.
    #[arg(long, value_name = "TLI")]
    tli: u32,
    /// Start of the range (inclusive), e.g. 0/3000028.
    #[arg(long, value_name = "LSN")]
    start: Lsn,
    /// End of the range (exclusive).
    #[arg(long, value_name = "LSN")]
    end: Lsn,
    /// List block numbers individually, not as ranges.
    #[arg(short, long)]
    individual: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// A summaries directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

#[derive(clap::Args)]
pub struct EstimateArgs {
    /// The prior backup's directory: its backup_label gives the start LSN and timeline, its
    /// backup_manifest the files it holds.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["start", "manifest"])]
    prior: Option<PathBuf>,
    /// Start LSN of the prior backup (instead of --prior).
    #[arg(long, value_name = "LSN", required_unless_present = "prior")]
    start: Option<Lsn>,
    /// Timeline (default: the prior backup's, else the data directory's current one).
    #[arg(long, value_name = "TLI")]
    tli: Option<u32>,
    /// End LSN (default: as far as the summaries reach without a gap).
    #[arg(long, value_name = "LSN")]
    end: Option<Lsn>,
    /// The prior backup's backup_manifest (files not in it are counted in full).
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Summaries directory (default: DATADIR/pg_wal/summaries).
    #[arg(long, value_name = "DIR")]
    summaries: Option<PathBuf>,
    /// Also list every relation file with its decision.
    #[arg(long)]
    files: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// The data directory to estimate.
    #[arg(value_name = "DATADIR")]
    data_dir: PathBuf,
}

pub fn run(cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Show(a) => show(a),
        Command::List(a) => list(a),
        Command::Blocks(a) => blocks(a),
        Command::Estimate(a) => estimate_cmd(a),
    }
}

/// Streams each file: a fork's lines are printed as soon as it is read, so that on a corrupt
/// file stdout holds what pg_walsummary prints before it fails.
fn show(a: ShowArgs) -> anyhow::Result<i32> {
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut json_files = Vec::new();
    let mut buf = Vec::with_capacity(1 << 16);
    let mut scratch = Vec::new();
    for path in &a.files {
        let result = (|| -> anyhow::Result<()> {
            let mut r = SummaryReader::open(path)?;
            let mut entries = Vec::new();
            while let Some((key, entry)) = r.next_entry()? {
                if a.quiet {
                    continue;
                }
                if a.json {
                    entries.push(JsonEntry::new(&key, &entry, a.individual));
                } else {
                    buf.clear();
                    text::push_entry_lines(&mut buf, &key, &entry, a.individual, &mut scratch);
                    out.write_all(&buf)?;
                }
            }
            if a.json && !a.quiet {
                json_files.push(JsonFile {
                    file: path.display().to_string(),
                    entries,
                });
            }
            Ok(())
        })();
        if let Err(e) = result {
            out.flush()?;
            return Err(e);
        }
    }
    if a.json && !a.quiet {
        // Compact: block lists can be long.
        serde_json::to_writer(&mut out, &json_files)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(0)
}

#[derive(Serialize)]
struct JsonFile {
    file: String,
    entries: Vec<JsonEntry>,
}

#[derive(Serialize)]
struct JsonEntry {
    tablespace: u32,
    database: u32,
    relfilenumber: u32,
    fork: &'static str,
    /// Absent when there is no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    limit_block: Option<u32>,
    /// Runs `[first, last]`, or single block numbers with `-i`.
    blocks: Vec<serde_json::Value>,
}

impl JsonEntry {
    fn new(key: &BlockRefKey, entry: &BlockRefEntry, individual: bool) -> Self {
        let sorted = entry.sorted_blocks();
        let blocks = if individual {
            sorted.iter().map(|&b| b.into()).collect()
        } else {
            // Consecutive blocks as [first, last] runs.
            let mut runs: Vec<(u32, u32)> = Vec::new();
            for &b in &sorted {
                match runs.last_mut() {
                    Some((_, end)) if b == end.wrapping_add(1) => *end = b,
                    _ => runs.push((b, b)),
                }
            }
            runs.into_iter()
                .map(|(start, end)| serde_json::json!([start, end]))
                .collect()
        };
        JsonEntry {
            tablespace: key.rlocator.spc_oid,
            database: key.rlocator.db_oid,
            relfilenumber: key.rlocator.rel_number,
            fork: key.fork.name(),
            limit_block: (entry.limit_block() != pgincr_types::INVALID_BLOCK_NUMBER)
                .then_some(entry.limit_block()),
            blocks,
        }
    }
}

fn list(a: ListArgs) -> anyhow::Result<i32> {
    let files = directory::list_summaries(&a.dir)?;
    let cov = directory::coverage(&files);
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if a.json {
        #[derive(Serialize)]
        struct J<'a> {
            directory: String,
            files: Vec<JFile>,
            timelines: &'a [directory::TimelineCoverage],
        }
        #[derive(Serialize)]
        struct JFile {
            name: String,
            tli: TimeLineId,
            start_lsn: Lsn,
            end_lsn: Lsn,
            size: u64,
        }
        let j = J {
            directory: a.dir.display().to_string(),
            files: files
                .iter()
                .map(|f| JFile {
                    name: f.file_name(),
                    tli: f.tli,
                    start_lsn: f.start,
                    end_lsn: f.end,
                    size: f.size,
                })
                .collect(),
            timelines: &cov,
        };
        serde_json::to_writer_pretty(&mut out, &j)?;
        out.write_all(b"\n")?;
        out.flush()?;
        return Ok(0);
    }
    if files.is_empty() {
        writeln!(out, "no summary files in \"{}\"", a.dir.display())?;
        out.flush()?;
        return Ok(0);
    }
    writeln!(
        out,
        "{:>3}  {:>17}  {:>17}  {:>10}  FILE",
        "TLI", "START LSN", "END LSN", "BYTES"
    )?;
    for f in &files {
        writeln!(
            out,
            "{:>3}  {:>17}  {:>17}  {:>10}  {}",
            f.tli.0,
            f.start.to_string(),
            f.end.to_string(),
            f.size,
            f.file_name()
        )?;
    }
    writeln!(out)?;
    for c in &cov {
        writeln!(
            out,
            "timeline {}: {}..{} in {} file{}, {} gap{}, {} overlap{}",
            c.tli,
            c.start,
            c.end,
            c.files,
            plural(c.files),
            c.gaps.len(),
            plural(c.gaps.len()),
            c.overlaps.len(),
            plural(c.overlaps.len())
        )?;
        for (from, to) in &c.gaps {
            writeln!(out, "  gap: {from}..{to} is not summarized")?;
        }
        for o in &c.overlaps {
            writeln!(
                out,
                "  overlap: {}..{} is in both {} and {}",
                o.from, o.to, o.first, o.second
            )?;
        }
    }
    out.flush()?;
    Ok(0)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn blocks(a: BlocksArgs) -> anyhow::Result<i32> {
    let (used, table) = pgincr_summary::modified_blocks(&a.dir, TimeLineId(a.tli), a.start, a.end)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    if a.json {
        #[derive(Serialize)]
        struct J {
            tli: TimeLineId,
            start_lsn: Lsn,
            end_lsn: Lsn,
            files: Vec<String>,
            entries: Vec<JsonEntry>,
        }
        let j = J {
            tli: TimeLineId(a.tli),
            start_lsn: a.start,
            end_lsn: a.end,
            files: used.iter().map(SummaryFileInfo::file_name).collect(),
            entries: table
                .iter()
                .map(|(k, e)| JsonEntry::new(k, e, a.individual))
                .collect(),
        };
        serde_json::to_writer(&mut out, &j)?;
        out.write_all(b"\n")?;
    } else {
        write_table(&mut out, &table, a.individual)?;
    }
    out.flush()?;
    Ok(0)
}

fn write_table(
    out: &mut impl Write,
    table: &BlockRefTable,
    individual: bool,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let mut scratch = Vec::new();
    for (k, e) in table.iter() {
        buf.clear();
        text::push_entry_lines(&mut buf, k, e, individual, &mut scratch);
        out.write_all(&buf)?;
    }
    Ok(())
}

fn estimate_cmd(a: EstimateArgs) -> anyhow::Result<i32> {
    let control_path = a.data_dir.join("global/pg_control");
    let control = ControlFile::read(&control_path)?;
    let (start, prior_tli, manifest) = match &a.prior {
        Some(dir) => {
            let label_path = dir.join("backup_label");
            let text = pgincr_types::read_bounded(
                &label_path,
                pgincr_types::bounded::BACKUP_LABEL_LIMIT,
                "backup_label",
            )?;
            let label = BackupLabel::parse(&text)
                .with_context(|| format!("in \"{}\"", label_path.display()))?;
            (
                label.start_lsn,
                Some(label.start_tli),
                Some(dir.join("backup_manifest")),
            )
        }
        None => match a.start {
            Some(s) => (s, None, a.manifest.clone()),
            None => bail!("give --prior DIR or --start LSN"),
        },
    };
    let tli = a
        .tli
        .map(TimeLineId)
        .or(prior_tli)
        .unwrap_or(TimeLineId(control.timeline));
    let dir = a
        .summaries
        .clone()
        .unwrap_or_else(|| estimate::summaries_dir(&a.data_dir));
    let all = directory::list_summaries(&dir)?;
    let end = match a.end {
        Some(e) => e,
        None => reach(&all, tli, start).with_context(|| {
            format!(
                "no summary on timeline {tli} in \"{}\" starts at or before {start}",
                dir.display()
            )
        })?,
    };
    let used = directory::select_for_range(&dir, &all, tli, start, end)?;
    let table = pgincr_summary::merge_files(&used)?;
    let prior_files = match &manifest {
        Some(m) => Some(estimate::manifest_paths(m)?),
        None => None,
    };
    let params = EstimateParams::for_cluster(&control, prior_files);
    let mut est = estimate::estimate(&a.data_dir, &table, &params)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if a.json {
        if !a.files {
            est.files.clear();
        }
        #[derive(Serialize)]
        struct J<'a> {
            tli: TimeLineId,
            start_lsn: Lsn,
            end_lsn: Lsn,
            summaries: Vec<String>,
            #[serde(flatten)]
            estimate: &'a estimate::Estimate,
        }
        let j = J {
            tli,
            start_lsn: start,
            end_lsn: end,
            summaries: used.iter().map(SummaryFileInfo::file_name).collect(),
            estimate: &est,
        };
        serde_json::to_writer_pretty(&mut out, &j)?;
        out.write_all(b"\n")?;
        out.flush()?;
        return Ok(0);
    }
    writeln!(
        out,
        "summaries: {} file{} on timeline {tli}, {start}..{end}",
        used.len(),
        plural(used.len())
    )?;
    writeln!(
        out,
        "relation files:  {:>8}  {}",
        est.relation_files,
        bytes(est.relation_bytes)
    )?;
    writeln!(
        out,
        "  sent in full:  {:>8}  {}",
        est.full_files,
        bytes(est.full_bytes)
    )?;
    writeln!(
        out,
        "  incremental:   {:>8}  {} (for {})",
        est.incremental_files,
        bytes(est.incremental_bytes),
        bytes(est.incremental_source_bytes)
    )?;
    writeln!(
        out,
        "other files:     {:>8}  {}",
        est.other_files,
        bytes(est.other_bytes)
    )?;
    writeln!(
        out,
        "incremental backup: {} (a full backup: {})",
        bytes(est.incremental_backup_bytes),
        bytes(est.full_backup_bytes)
    )?;
    if a.files {
        writeln!(out)?;
        for f in &est.files {
            match f.method {
                Method::Full => writeln!(out, "full         {:>12}  {}", f.size, f.path)?,
                Method::Incremental {
                    num_blocks,
                    truncation_block_length,
                } => writeln!(
                    out,
                    "incremental  {:>12}  {}  ({} blocks, truncation length {})",
                    f.backup_bytes, f.path, num_blocks, truncation_block_length
                )?,
            }
        }
    }
    out.flush()?;
    Ok(0)
}

/// How far the summaries of `tli` reach from `start` without a gap.
fn reach(files: &[SummaryFileInfo], tli: TimeLineId, start: Lsn) -> Option<Lsn> {
    let mut cursor = None::<Lsn>;
    for f in files.iter().filter(|f| f.tli == tli) {
        let at = cursor.unwrap_or(start);
        if f.start > at {
            break;
        }
        if f.end >= start {
            cursor = Some(at.max(f.end));
        }
    }
    cursor
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {} ({n} bytes)", UNITS.get(u).unwrap_or(&"TB"))
    }
}
