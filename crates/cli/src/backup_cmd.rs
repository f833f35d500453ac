//! `pgincr backup`: a full or incremental base backup, with pg_basebackup's flags.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pgincr_backup::{BackupOptions, Checkpoint, Compression, Format, WalMethod};
use pgincr_protocol::Config;

/// The flags, boxed so the subcommand enum stays small.
#[derive(clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    #[command(flatten)]
    flags: Box<Flags>,
}

#[derive(clap::Args)]
struct Flags {
    /// Directory to write the backup to (must not exist, or be empty).
    #[arg(short = 'D', long = "pgdata", value_name = "DIR")]
    pgdata: PathBuf,
    /// Output format: p (plain) or t (tar).
    #[arg(short = 'F', long, default_value = "p", value_name = "p|t")]
    format: String,
    /// Take an incremental backup on top of the backup whose backup_manifest this is.
    #[arg(short = 'i', long, value_name = "OLD_MANIFEST")]
    incremental: Option<PathBuf>,
    /// How to include WAL: stream (second connection, default), fetch, or none.
    #[arg(
        short = 'X',
        long = "wal-method",
        default_value = "stream",
        value_name = "METHOD"
    )]
    wal_method: String,
    /// Checkpoint mode: fast or spread.
    #[arg(
        short = 'c',
        long,
        default_value = "spread",
        value_name = "fast|spread"
    )]
    checkpoint: String,
    /// Backup label.
    #[arg(short = 'l', long, default_value = "pgincr base backup")]
    label: String,
    /// Show progress.
    #[arg(short = 'P', long)]
    progress: bool,
    /// Relocate the tablespace in OLDDIR to NEWDIR (plain format); repeatable.
    #[arg(short = 'T', long = "tablespace-mapping", value_name = "OLDDIR=NEWDIR")]
    tablespace_mapping: Vec<String>,
    /// Maximum transfer rate (kB/s; suffix k or M), enforced by the server.
    #[arg(short = 'r', long = "max-rate", value_name = "RATE")]
    max_rate: Option<String>,
    /// Compress tar output on the client: gzip, lz4 or zstd, optionally :LEVEL.
    #[arg(short = 'Z', long, value_name = "METHOD[:LEVEL]")]
    compress: Option<String>,
    /// Compression threads (default: one per CPU).
    #[arg(long = "compress-threads", value_name = "N", default_value_t = 0)]
    compress_threads: usize,
    /// Manifest checksum algorithm: NONE, CRC32C (default), SHA224, SHA256, SHA384, SHA512.
    #[arg(long = "manifest-checksums", value_name = "ALGORITHM")]
    manifest_checksums: Option<String>,
    /// Stream WAL through this replication slot.
    #[arg(short = 'S', long, value_name = "SLOTNAME")]
    slot: Option<String>,
    /// Create the -S slot first.
    #[arg(short = 'C', long = "create-slot")]
    create_slot: bool,
    /// Do not wait for the backup to be written safely to disk.
    #[arg(short = 'N', long = "no-sync")]
    no_sync: bool,
    /// Write through the page cache instead of with direct I/O (direct I/O is used by default
    /// where the file system supports it).
    #[arg(long)]
    no_direct_io: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Connection string (key=value or postgresql:// URI).
    #[arg(short = 'd', long = "dbname", value_name = "CONNSTR")]
    dbname: Option<String>,
    /// Server host or socket directory.
    #[arg(short = 'h', long)]
    host: Option<String>,
    /// Server port.
    #[arg(short = 'p', long)]
    port: Option<String>,
    /// User name to connect as.
    #[arg(short = 'U', long)]
    username: Option<String>,
    /// Never prompt for a password (pgincr never prompts; accepted for compatibility).
    #[arg(short = 'w', long = "no-password")]
    no_password: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

fn parse_rate(s: &str) -> anyhow::Result<u32> {
    let (num, mult) = match s.trim() {
        t if t.ends_with('M') => (&t[..t.len() - 1], 1024.0),
        t if t.ends_with('k') => (&t[..t.len() - 1], 1.0),
        t => (t, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("invalid transfer rate \"{s}\""))?;
    let kb = (v * mult) as u64;
    if !(32..=1_048_576).contains(&kb) {
        bail!("transfer rate \"{s}\" is out of range: use 32 kB/s to 1024 MB/s");
    }
    Ok(kb as u32)
}

/// `OLDDIR=NEWDIR`, with `\=` for a literal `=`.
fn parse_mapping(s: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (mut old, mut new, mut seen) = (String::new(), String::new(), false);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'=') => {
                let cur = if seen { &mut new } else { &mut old };
                cur.push('=');
                chars.next();
            }
            '=' if !seen => seen = true,
            '=' => bail!("multiple \"=\" signs in tablespace mapping \"{s}\""),
            c => (if seen { &mut new } else { &mut old }).push(c),
        }
    }
    if !seen || old.is_empty() || new.is_empty() {
        bail!("invalid tablespace mapping format \"{s}\", must be \"OLDDIR=NEWDIR\"");
    }
    Ok((PathBuf::from(old), PathBuf::from(new)))
}

fn options(a: &Flags) -> anyhow::Result<BackupOptions> {
    let mut conn = match &a.dbname {
        Some(d) => Config::parse(d)?,
        None => Config::default(),
    };
    if let Some(h) = &a.host {
        conn.host = Some(h.clone());
    }
    if let Some(p) = &a.port {
        conn.port = Some(p.clone());
    }
    if let Some(u) = &a.username {
        conn.user = Some(u.clone());
    }
    let mut o = BackupOptions::new(conn, a.pgdata.clone());
    o.format = match a.format.as_str() {
        "p" | "plain" => Format::Plain,
        "t" | "tar" => Format::Tar,
        f => bail!("invalid output format \"{f}\", must be \"plain\" or \"tar\""),
    };
    o.wal = match a.wal_method.as_str() {
        "s" | "stream" => WalMethod::Stream,
        "f" | "fetch" => WalMethod::Fetch,
        "n" | "none" => WalMethod::None,
        m => bail!("invalid wal-method option \"{m}\", must be \"fetch\", \"stream\", or \"none\""),
    };
    o.checkpoint = match a.checkpoint.as_str() {
        "fast" => Checkpoint::Fast,
        "spread" => Checkpoint::Spread,
        c => bail!("invalid checkpoint argument \"{c}\", must be \"fast\" or \"spread\""),
    };
    o.incremental = a.incremental.clone();
    o.label = a.label.clone();
    o.tablespace_mapping = a
        .tablespace_mapping
        .iter()
        .map(|m| parse_mapping(m))
        .collect::<anyhow::Result<_>>()?;
    o.max_rate = a.max_rate.as_deref().map(parse_rate).transpose()?;
    o.compression = match &a.compress {
        Some(z) => Compression::parse(z).map_err(anyhow::Error::msg)?,
        None => None,
    };
    o.threads = a.compress_threads;
    o.manifest_checksums = a.manifest_checksums.clone();
    o.slot = a.slot.clone();
    o.create_slot = a.create_slot;
    o.no_sync = a.no_sync;
    o.direct_io = !a.no_direct_io;
    if a.progress {
        o.progress = Some(progress_printer());
    }
    Ok(o)
}

/// pg_basebackup-style progress on stderr, at most five times a second.
pub(crate) fn progress_printer() -> pgincr_backup::ProgressFn {
    let last = Mutex::new(Instant::now() - Duration::from_secs(1));
    Arc::new(move |done: u64, total: Option<u64>| {
        let Ok(mut l) = last.lock() else { return };
        if l.elapsed() < Duration::from_millis(200) {
            return;
        }
        *l = Instant::now();
        let kb = done / 1024;
        let line = match total {
            Some(t) if t > 0 => {
                // The estimate can be exceeded while the backup runs.
                let t = t.max(done) / 1024;
                format!("{kb}/{t} kB ({}%)", kb * 100 / t.max(1))
            }
            _ => format!("{kb} kB"),
        };
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r{line:<40}");
        let _ = e.flush();
    })
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let args = *args.flags;
    let _ = args.no_password;
    let opts = options(&args)?;
    let progress = args.progress;
    // One thread for both connections: the work is I/O-bound and the disk writes and
    // compression run on their own threads, so a single reactor saves wake-ups.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let summary = rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        // SIGTERM (what service managers and `kill` send) is treated exactly like Ctrl-C.
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("\npgincr: cancelling the backup");
            let _ = tx.send(true);
        });
        anyhow::Ok(pgincr_backup::run(opts, rx).await?)
    });
    if progress {
        eprintln!();
    }
    let summary = summary?;
    if !args.json {
        for w in &summary.warnings {
            eprintln!("pgincr: warning: {w}");
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        tracing::info!(
            "backup written to {} ({} to {}, {} bytes)",
            summary.directory.display(),
            summary.start_lsn,
            summary.end_lsn,
            summary.bytes
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_and_rates() {
        let (o, n) = parse_mapping("/a\\=b=/c").unwrap();
        assert_eq!((o, n), (PathBuf::from("/a=b"), PathBuf::from("/c")));
        assert!(parse_mapping("/a").is_err());
        assert!(parse_mapping("/a=/b=/c").is_err());
        assert_eq!(parse_rate("1M").unwrap(), 1024);
        assert_eq!(parse_rate("100").unwrap(), 100);
        assert!(parse_rate("10").is_err());
    }
}
