//! `pgincr restore` and `pgincr drill`: the logic is in `pgincr-restore`; this parses the
//! target flags, loads the repository, prints and notifies.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use pgincr_repository::{Catalog, Config, Repository};
use pgincr_restore::{Action, Target, TargetOptions};

/// The recovery target, as PostgreSQL's `recovery_target_*` settings.
#[derive(clap::Args)]
pub struct TargetFlags {
    /// Recover to this time (with a time zone: "2025-01-23 05:00:02+00").
    #[arg(long, value_name = "TIMESTAMP", group = "target")]
    time: Option<String>,
    /// Recover to this WAL location.
    #[arg(long, value_name = "LSN", group = "target")]
    lsn: Option<String>,
    /// Recover to this restore point (pg_create_restore_point).
    #[arg(long, value_name = "RESTORE_POINT", group = "target")]
    name: Option<String>,
    /// Recover to the commit of this transaction.
    #[arg(long, value_name = "XID", group = "target")]
    xid: Option<u64>,
    /// Stop as soon as the backup is consistent.
    #[arg(long, group = "target")]
    immediate: bool,
    /// Stop just before the target instead of just after it.
    #[arg(long)]
    exclusive: bool,
    /// recovery_target_timeline: current, latest or a number.
    #[arg(long, value_name = "TIMELINE")]
    timeline: Option<String>,
    /// At the target: pause (PostgreSQL's default), promote or shutdown.
    #[arg(long, value_name = "ACTION")]
    action: Option<String>,
    /// Restore this backup (and its ancestors) instead of the one pgincr picks.
    #[arg(long, value_name = "NAME")]
    backup: Option<String>,
}

impl TargetFlags {
    fn options(&self) -> anyhow::Result<TargetOptions> {
        let target = if let Some(t) = &self.time {
            Target::Time {
                text: t.clone(),
                unix_micros: pgincr_restore::parse_time(t).map_err(anyhow::Error::msg)?,
            }
        } else if let Some(l) = &self.lsn {
            Target::Lsn(
                l.parse()
                    .map_err(|_| anyhow::anyhow!("invalid --lsn \"{l}\": write it as 0/3000028"))?,
            )
        } else if let Some(n) = &self.name {
            Target::Name(n.clone())
        } else if let Some(x) = self.xid {
            Target::Xid(x)
        } else if self.immediate {
            Target::Immediate
        } else {
            Target::End
        };
        let action = self
            .action
            .as_deref()
            .map(Action::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        if action.is_some() && target == Target::End {
            anyhow::bail!("--action needs a target (--time, --lsn, --name, --xid or --immediate): without one recovery replays all WAL and promotes");
        }
        Ok(TargetOptions {
            target,
            inclusive: !self.exclusive,
            timeline: self.timeline.clone(),
            action,
        })
    }
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The configuration file.
    #[arg(
        long,
        short = 'c',
        env = "PGINCR_CONFIG",
        default_value = "/etc/pgincr/pgincr.toml",
        value_name = "FILE"
    )]
    config: PathBuf,
    /// The server whose repository to restore from (needed when several are configured).
    #[arg(long, short = 's', value_name = "NAME")]
    server: Option<String>,
    /// The data directory to create (must not exist or be empty).
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Instead of the repository: these backup directories, full first (each the parent of
    /// the next), with --archive.
    #[arg(value_name = "BACKUP_DIR", requires = "archive")]
    backups: Vec<PathBuf>,
    /// With backup directories: the WAL archive recovery reads.
    #[arg(long, value_name = "DIR")]
    archive: Option<PathBuf>,
    #[command(flatten)]
    target: TargetFlags,
    /// Replace the contents of a non-empty --to directory.
    #[arg(long)]
    force: bool,
    /// Relocate the tablespace in OLDDIR to NEWDIR; repeatable.
    #[arg(short = 'T', long = "tablespace-mapping", value_name = "OLDDIR=NEWDIR")]
    tablespace_mapping: Vec<String>,
    /// Hard-link unchanged files from the backup instead of copying (the restore then shares
    /// them with the repository: never start it while the backup must stay intact).
    #[arg(long, conflicts_with = "clone")]
    link: bool,
    /// Clone files with reflinks (XFS, Btrfs), as pg_combinebackup --clone.
    #[arg(long)]
    clone: bool,
    /// Skip checking the backups against their manifests first.
    #[arg(long)]
    no_verify: bool,
    /// The restore_command to write (default: this pgincr's archive-get for the repository).
    #[arg(long, value_name = "COMMAND")]
    restore_command: Option<String>,
    /// Start the server and wait until the target is reached.
    #[arg(long)]
    start: bool,
    /// With --start: the port (default: a free one) and how long to wait.
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    start_timeout: u64,
    /// When run as root: the account that gets the restored files, and that --start runs the
    /// server as (--start's default: postgres).
    #[arg(long, value_name = "USER")]
    owner: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct DrillArgs {
    #[arg(
        long,
        short = 'c',
        env = "PGINCR_CONFIG",
        default_value = "/etc/pgincr/pgincr.toml",
        value_name = "FILE"
    )]
    config: PathBuf,
    /// The server (default: every configured server).
    #[arg(long, short = 's', value_name = "NAME")]
    server: Option<String>,
    #[command(flatten)]
    target: TargetFlags,
    /// Keep the restored directory (stopped) and say where.
    #[arg(long)]
    keep: bool,
    #[arg(long, value_name = "COMMAND", hide = true)]
    restore_command: Option<String>,
    /// How long the recovery may take.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    timeout: u64,
    /// When run as root: the account the throwaway server runs as.
    #[arg(long, default_value = "postgres", value_name = "USER")]
    run_as: String,
    /// Do not send notifications.
    #[arg(long)]
    no_notify: bool,
    #[arg(long)]
    json: bool,
    #[arg(long, hide = true, env = "PGINCR_NOW")]
    now: Option<i64>,
}

fn load(config: &std::path::Path, server: Option<&str>) -> anyhow::Result<(Config, Vec<String>)> {
    let cfg = Config::load(config)?;
    let servers = match server {
        Some(s) if cfg.server.contains_key(s) => vec![s.to_string()],
        Some(s) => anyhow::bail!("no [server.{s}] in {}", config.display()),
        None => cfg.server.keys().cloned().collect(),
    };
    Ok((cfg, servers))
}

fn catalog(repo: &Repository, server: &str) -> anyhow::Result<Catalog> {
    Ok(match Catalog::load(repo.storage(), server)? {
        Some(c) => c,
        None => Catalog::rebuild(repo.storage(), server, None)?,
    })
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<i32> {
    let target = args.target.options()?;
    let (plan, pg_bin) = match &args.archive {
        Some(archive) if !args.backups.is_empty() => (
            pgincr_restore::plan_dirs(&args.backups, archive, &target)?,
            None,
        ),
        _ => {
            let (cfg, servers) = load(&args.config, args.server.as_deref())?;
            let [server] = servers.as_slice() else {
                anyhow::bail!("the configuration has several servers: choose one with --server");
            };
            let repo = Repository::new(&cfg.repository.path, server);
            let cat = catalog(&repo, server)?;
            let plan = pgincr_restore::plan(&repo, &cat, &target, args.target.backup.as_deref())?;
            (plan, cfg.server.get(server).and_then(|s| s.pg_bin.clone()))
        }
    };
    let mut maps = Vec::new();
    for m in &args.tablespace_mapping {
        maps.push(pgincr_combine::TablespaceMapping::parse(m).map_err(anyhow::Error::msg)?);
    }
    let opts = pgincr_restore::RestoreOptions {
        to: args.to.clone(),
        force: args.force,
        tablespace_mappings: maps,
        copy_mode: if args.link {
            pgincr_combine::CopyMode::Link
        } else if args.clone {
            pgincr_combine::CopyMode::Clone
        } else {
            pgincr_combine::CopyMode::Copy
        },
        restore_command: args
            .restore_command
            .clone()
            .unwrap_or_else(|| pgincr_restore::archive_get_command(&plan.archive)),
        extra_settings: Vec::new(),
        verify: !args.no_verify,
    };
    let mut report = pgincr_restore::restore(&plan, &opts)?;
    // Run as root, the files go to the account the server will run as.
    if let Some(owner) = &args.owner {
        pgincr_server::RunAs::unless_root(owner)
            .give(&args.to)
            .with_context(|| format!("giving {} to {owner}", args.to.display()))?;
        for m in &opts.tablespace_mappings {
            pgincr_server::RunAs::unless_root(owner)
                .give(&m.new_dir)
                .with_context(|| format!("giving {} to {owner}", m.new_dir.display()))?;
        }
    }
    if args.start {
        let log = args.to.join("log").join("pgincr-restore-start.log");
        std::fs::create_dir_all(args.to.join("log")).context("creating the log directory")?;
        let spec = pgincr_restore::StartSpec {
            pg_bin: pg_bin.clone(),
            run_as: args.owner.clone().unwrap_or_else(|| "postgres".into()),
            port: args.port,
            socket_dir: args.to.clone(),
            log_file: log,
            settings: Vec::new(),
            timeout: Duration::from_secs(args.start_timeout),
        };
        let (server, reached) = pgincr_restore::start(&args.to, &spec)?;
        report.reached = Some(reached);
        // The server outlives this command.
        let _ = server.detach();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "restored {} into {} in {:.1} s ({} files)",
            report.chain.join(" + "),
            report.directory.display(),
            report.restore_secs,
            report.files
        );
        println!("  {}", report.outcome);
        match &report.reached {
            Some(r) => println!(
                "  started: {} on port {} (socket {}), replayed to {} (last transaction {}) in {:.1} s",
                r.state,
                r.port,
                r.socket_dir.display(),
                r.lsn.as_deref().unwrap_or("-"),
                r.last_transaction.as_deref().unwrap_or("-"),
                r.recovery_secs
            ),
            None => println!(
                "  start it with: pg_ctl -D {} start   (as the owner of the directory; the server\n  must be PostgreSQL {})",
                report.directory.display(),
                pgincr_restore::major_of(&report.directory).map_or(0, |m| m.number())
            ),
        }
        for w in &report.warnings {
            eprintln!("pgincr: warning: {w}");
        }
    }
    Ok(0)
}

pub fn drill(args: DrillArgs) -> anyhow::Result<i32> {
    let (cfg, servers) = load(&args.config, args.server.as_deref())?;
    let notify = if args.no_notify {
        None
    } else {
        let nc: pgincr_notify::NotifyConfig = match &cfg.notify {
            Some(v) => v.clone().try_into().context("[notify]")?,
            None => pgincr_notify::NotifyConfig::default(),
        };
        Some(pgincr_notify::Notifiers::from_config(&nc).context("[notify]")?)
    };
    let target = args.target.options()?;
    let now = args.now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    });
    let mut worst = 0;
    let mut reports = Vec::new();
    for server in &servers {
        let settings = DrillSettings {
            target: target.clone(),
            backup: args.target.backup.clone(),
            keep: args.keep,
            restore_command: args.restore_command.clone(),
            timeout: Duration::from_secs(args.timeout),
            run_as: args.run_as.clone(),
            now,
        };
        match drill_server(&cfg, server, &settings, notify.as_ref()) {
            Ok(report) => {
                if !report.ok {
                    worst = worst.max(1);
                }
                if args.json {
                    reports.push(report);
                } else {
                    print!("{}", report.text());
                }
            }
            Err((code, e)) => {
                eprintln!("pgincr: error: server {server}: {e}");
                worst = worst.max(code);
            }
        }
    }
    if args.json {
        let v = if reports.len() == 1 {
            serde_json::to_value(reports.first())?
        } else {
            serde_json::to_value(&reports)?
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(worst)
}

/// What a drill of one server needs besides the configuration.
pub struct DrillSettings {
    pub target: TargetOptions,
    pub backup: Option<String>,
    pub keep: bool,
    pub restore_command: Option<String>,
    pub timeout: Duration,
    pub run_as: String,
    pub now: i64,
}

/// One server's drill: locked, planned, run, recorded in the catalog, notified. `Err` carries
/// the exit status (3: locked, 1: could not plan or record).
pub fn drill_server(
    cfg: &Config,
    server: &str,
    s: &DrillSettings,
    notify: Option<&pgincr_notify::Notifiers>,
) -> Result<pgincr_restore::DrillReport, (i32, String)> {
    let sc = cfg
        .server
        .get(server)
        .ok_or_else(|| (2, format!("no [server.{server}]")))?;
    let repo = Repository::new(&cfg.repository.path, server);
    // One drill or run at a time per repository.
    let _lock = pgincr_repository::ServerLock::acquire(&repo.server_dir(), s.now)
        .map_err(|e| (3, e.to_string()))?;
    let mut cat = catalog(&repo, server).map_err(|e| (1, e.to_string()))?;
    let plan = pgincr_restore::plan(&repo, &cat, &s.target, s.backup.as_deref())
        .map_err(|e| (1, e.to_string()))?;
    let opts = pgincr_restore::DrillOptions {
        pg_bin: sc.pg_bin.clone(),
        run_as: s.run_as.clone(),
        keep: s.keep,
        user_checks: sc
            .drill_check
            .iter()
            .map(|c| (c.database.clone(), c.sql.clone()))
            .collect(),
        timeout: s.timeout,
        now: s.now,
        restore_command: s
            .restore_command
            .clone()
            .unwrap_or_else(|| pgincr_restore::archive_get_command(&plan.archive)),
    };
    let report = pgincr_restore::drill(&repo, &plan, &opts);
    pgincr_restore::drill::record_drill(&repo, &mut cat, report.record(s.now))
        .map_err(|e| (1, e.to_string()))?;
    if let Some(n) = notify {
        let status = if report.ok {
            pgincr_notify::Status::Success
        } else {
            pgincr_notify::Status::Failure
        };
        let note = pgincr_notify::Notification {
            status,
            title: format!(
                "pgincr drill {server}: {}",
                if report.ok { "passed" } else { "FAILED" }
            ),
            markdown: format!("```\n{}```\n", report.text()),
            report: serde_json::to_value(&report).unwrap_or(serde_json::Value::Null),
        };
        for o in n.send(&note) {
            if o.is_failed() {
                eprintln!("pgincr: warning: notification {} failed", o.notifier);
            }
        }
    }
    Ok(report)
}
