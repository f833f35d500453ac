//! `pgincr run`, `pgincr info` and `pgincr check`: the rotation over the repository
//! configured in `pgincr.toml`. The logic is in `pgincr-repository`; this parses flags, wires
//! signals and notifications, and prints.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use pgincr_repository::{Catalog, Config, Repository, RunOptions};

/// Where the configuration is unless `--config` or `PGINCR_CONFIG` says otherwise.
const DEFAULT_CONFIG: &str = "/etc/pgincr/pgincr.toml";

/// Flags every rotation command has.
#[derive(clap::Args)]
pub struct Common {
    /// The configuration file.
    #[arg(long, short = 'c', env = "PGINCR_CONFIG", default_value = DEFAULT_CONFIG, value_name = "FILE")]
    config: PathBuf,
    /// The server (a `[server.NAME]` of the configuration); default: every configured server.
    #[arg(long, short = 's', value_name = "NAME")]
    server: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Start a new round with a full backup from the server.
    #[arg(long)]
    full: bool,
    /// Print the decision, the retention plan and the WAL cleanup plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Show the backup's transfer progress on stderr.
    #[arg(short = 'P', long)]
    progress: bool,
    /// Do not send notifications.
    #[arg(long)]
    no_notify: bool,
    /// The time of the run as Unix seconds, instead of the clock (for tests and simulations).
    #[arg(long, hide = true, env = "PGINCR_NOW")]
    now: Option<i64>,
}

#[derive(clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    common: Common,
    /// Output format: text, json or prometheus (node_exporter textfile collector).
    #[arg(long, default_value = "text", value_name = "FORMAT")]
    format: String,
    /// Rebuild catalog.json from the backups on disk first.
    #[arg(long)]
    rebuild_catalog: bool,
    #[arg(long, hide = true, env = "PGINCR_NOW")]
    now: Option<i64>,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    common: Common,
    /// How long to wait for the switched WAL segment to arrive in the archive.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    archive_timeout: u64,
}

/// Usage and configuration errors exit with 2.
struct Usage(String);

fn load(common: &Common) -> Result<(Config, Vec<String>), Usage> {
    let cfg = Config::load(&common.config).map_err(|e| {
        Usage(if common.config == Path::new(DEFAULT_CONFIG) {
            format!("{e} (give the configuration with --config FILE or PGINCR_CONFIG; examples/pgincr.toml is a commented example)")
        } else {
            e.to_string()
        })
    })?;
    let servers = match &common.server {
        Some(s) if cfg.server.contains_key(s) => vec![s.clone()],
        Some(s) => {
            return Err(Usage(format!(
                "no [server.{s}] in {} (configured: {})",
                common.config.display(),
                cfg.server.keys().cloned().collect::<Vec<_>>().join(", ")
            )))
        }
        None if cfg.server.is_empty() => {
            return Err(Usage(format!(
                "{} configures no [server.NAME]",
                common.config.display()
            )))
        }
        None => cfg.server.keys().cloned().collect(),
    };
    Ok((cfg, servers))
}

fn now_or(now: Option<i64>) -> i64 {
    now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    })
}

fn usage_exit(u: Usage) -> anyhow::Result<i32> {
    eprintln!("pgincr: error: {}", u.0);
    Ok(2)
}

fn notifiers(cfg: &Config) -> Result<pgincr_notify::Notifiers, Usage> {
    let nc: pgincr_notify::NotifyConfig = match &cfg.notify {
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e| Usage(format!("[notify]: {e}")))?,
        None => pgincr_notify::NotifyConfig::default(),
    };
    pgincr_notify::Notifiers::from_config(&nc).map_err(|e| Usage(format!("[notify]: {e}")))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let (cfg, servers) = match load(&args.common) {
        Ok(v) => v,
        Err(u) => return usage_exit(u),
    };
    // Resolved before any backup, so a bad notifier path fails now, not after the backup.
    let notify = if args.no_notify || args.dry_run {
        None
    } else {
        match notifiers(&cfg) {
            Ok(n) => Some(n),
            Err(u) => return usage_exit(u),
        }
    };
    let opts = RunOptions {
        force_full: args.full,
        dry_run: args.dry_run,
        now: now_or(args.now),
        progress: args.progress.then(crate::backup_cmd::progress_printer),
    };
    let rt = runtime()?;
    let mut worst = 0;
    let mut reports = Vec::new();
    for server in &servers {
        let result = rt.block_on(async {
            let (tx, rx) = tokio::sync::watch::channel(false);
            use tokio::signal::unix::{signal, SignalKind};
            let mut int =
                signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
            let mut term =
                signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
            let watcher = tokio::spawn(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                eprintln!("\npgincr: cancelling the run");
                let _ = tx.send(true);
            });
            let r = pgincr_repository::run(&cfg, server, &opts, rx).await;
            watcher.abort();
            anyhow::Ok(r)
        })?;
        if args.progress {
            eprintln!();
        }
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                eprintln!("pgincr: error: server {server}: {e}");
                worst = worst.max(e.exit_code());
                continue;
            }
        };
        if let Some(n) = &notify {
            for o in n.send(&report.notification()) {
                if o.is_failed() {
                    eprintln!(
                        "pgincr: warning: notification {} failed (the run's result is unchanged)",
                        o.notifier
                    );
                }
            }
        }
        worst = worst.max(report.exit_code());
        let drill = cfg
            .server
            .get(server)
            .map_or(pgincr_repository::DrillMode::Off, |s| s.drill);
        let complete = report.round.as_ref().is_some_and(|r| r.complete);
        let wants_drill = report.status == pgincr_repository::RunStatus::Success
            && (drill == pgincr_repository::DrillMode::EveryRun
                || (drill == pgincr_repository::DrillMode::AfterRound && complete));
        if args.common.json {
            reports.push(report);
        } else {
            print!("{}", report.text());
        }
        if wants_drill {
            let settings = crate::restore_cmd::DrillSettings {
                target: pgincr_restore::TargetOptions::default(),
                backup: None,
                keep: false,
                restore_command: None,
                timeout: Duration::from_secs(3600),
                run_as: "postgres".into(),
                now: opts.now,
            };
            match crate::restore_cmd::drill_server(&cfg, server, &settings, notify.as_ref()) {
                Ok(d) => {
                    if !d.ok {
                        worst = worst.max(1);
                    }
                    if args.common.json {
                        eprint!("{}", d.text());
                    } else {
                        print!("{}", d.text());
                    }
                }
                Err((code, e)) => {
                    eprintln!("pgincr: error: drill of {server}: {e}");
                    worst = worst.max(code.min(1));
                }
            }
        }
    }
    if args.common.json {
        let v = if reports.len() == 1 {
            serde_json::to_value(reports.first())?
        } else {
            serde_json::to_value(&reports)?
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(worst)
}

pub fn info(args: InfoArgs) -> anyhow::Result<i32> {
    let (cfg, servers) = match load(&args.common) {
        Ok(v) => v,
        Err(u) => return usage_exit(u),
    };
    let format = if args.common.json {
        "json"
    } else {
        args.format.as_str()
    };
    if !matches!(format, "text" | "json" | "prometheus") {
        return usage_exit(Usage(format!(
            "invalid --format \"{format}\": text, json or prometheus"
        )));
    }
    let now = now_or(args.now);
    let mut infos = Vec::new();
    for server in &servers {
        let Some(sc) = cfg.server.get(server) else {
            continue;
        };
        let repo = Repository::new(&cfg.repository.path, server);
        let catalog = if args.rebuild_catalog {
            let _lock = pgincr_repository::ServerLock::acquire(&repo.server_dir(), now)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let previous = Catalog::load(repo.storage(), server).ok().flatten();
            let c = Catalog::rebuild(repo.storage(), server, previous.as_ref())
                .with_context(|| format!("rebuilding the catalog of {server}"))?;
            c.save(repo.storage(), server)?;
            eprintln!(
                "pgincr: rebuilt {} from {} backup(s) on disk",
                repo.server_dir().join("catalog.json").display(),
                c.backups.len()
            );
            c
        } else {
            match Catalog::load(repo.storage(), server)? {
                Some(c) => c,
                // Nothing written: info only reads.
                None => Catalog::rebuild(repo.storage(), server, None)?,
            }
        };
        infos.push(pgincr_repository::info(&repo, sc, &catalog, now)?);
    }
    match format {
        "json" => {
            let v = if infos.len() == 1 {
                serde_json::to_value(infos.first())?
            } else {
                serde_json::to_value(&infos)?
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        "prometheus" => {
            // Each metric's HELP/TYPE once, then every server's samples.
            let texts: Vec<String> = infos.iter().map(|i| i.prometheus(now)).collect();
            print!("{}", merge_prometheus(&texts));
        }
        _ => {
            for i in &infos {
                print!("{}", i.text());
            }
        }
    }
    Ok(0)
}

/// Joins per-server expositions so each metric family appears once, as the format requires.
fn merge_prometheus(texts: &[String]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut families: std::collections::HashMap<String, (Vec<String>, Vec<String>)> =
        std::collections::HashMap::new();
    for t in texts {
        let mut current = String::new();
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                current = rest.split(' ').next().unwrap_or("").to_string();
                if !families.contains_key(&current) {
                    order.push(current.clone());
                }
                let e = families.entry(current.clone()).or_default();
                if e.0.is_empty() {
                    e.0.push(line.to_string());
                }
            } else if line.starts_with("# TYPE ") {
                let e = families.entry(current.clone()).or_default();
                if e.0.len() == 1 {
                    e.0.push(line.to_string());
                }
            } else {
                families
                    .entry(current.clone())
                    .or_default()
                    .1
                    .push(line.to_string());
            }
        }
    }
    let mut out = String::new();
    for name in order {
        if let Some((head, samples)) = families.get(&name) {
            for l in head.iter().chain(samples) {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

pub fn check(args: CheckArgs) -> anyhow::Result<i32> {
    let (cfg, servers) = match load(&args.common) {
        Ok(v) => v,
        Err(u) => return usage_exit(u),
    };
    let rt = runtime()?;
    let mut worst = 0;
    let mut reports = Vec::new();
    for server in &servers {
        let r = rt.block_on(pgincr_repository::check(
            &cfg,
            server,
            Duration::from_secs(args.archive_timeout),
        ));
        match r {
            Ok(r) => {
                worst = worst.max(r.exit_code());
                if args.common.json {
                    reports.push(r);
                } else {
                    print!("{}", r.text());
                }
            }
            Err(e) => {
                eprintln!("pgincr: error: server {server}: {e}");
                worst = worst.max(e.exit_code());
            }
        }
    }
    if args.common.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::merge_prometheus;

    #[test]
    fn prometheus_families_appear_once() {
        let a = "# HELP m h\n# TYPE m gauge\nm{server=\"a\"} 1\n".to_string();
        let b = "# HELP m h\n# TYPE m gauge\nm{server=\"b\"} 2\n".to_string();
        assert_eq!(
            merge_prometheus(&[a, b]),
            "# HELP m h\n# TYPE m gauge\nm{server=\"a\"} 1\nm{server=\"b\"} 2\n"
        );
    }
}
