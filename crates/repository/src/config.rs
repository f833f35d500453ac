//! `pgincr.toml`: the repository and per-server rotation settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a configuration was refused. Messages name the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// toml's message names the line, the column and the unknown key.
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: [server.{server}] {message}")]
    Invalid {
        path: PathBuf,
        server: String,
        message: String,
    },
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub repository: RepositoryConfig,
    #[serde(default)]
    pub server: BTreeMap<String, ServerConfig>,
    /// Parsed by the notify crate; kept opaque here.
    #[serde(default)]
    pub notify: Option<toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    pub path: PathBuf,
}

/// `[server.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub conninfo: String,
    #[serde(default = "default_max_incrementals")]
    pub max_incrementals: u32,
    #[serde(default)]
    pub keep_rounds: Option<u32>,
    /// "14d", "36h", "90m", "3600s"; seconds after parsing.
    #[serde(default, deserialize_with = "de_duration")]
    pub keep_for: Option<u64>,
    #[serde(default)]
    pub round_start: RoundStart,
    #[serde(default)]
    pub format: Format,
    /// "zstd:3", "gzip", "lz4": checked by the backup engine, which owns the codecs.
    #[serde(default)]
    pub compress: Option<String>,
    #[serde(default)]
    pub wal_keep: WalKeep,
    #[serde(default)]
    pub pg_bin: Option<PathBuf>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// pg_basebackup's `-c`: "spread" (default, gentle on the server) or "fast".
    #[serde(default)]
    pub checkpoint: CheckpointMode,
    /// Warn in `pgincr info` when the newest backup is older than this ("26h").
    #[serde(default, deserialize_with = "de_duration")]
    pub warn_backup_age: Option<u64>,
    /// Warn in `pgincr info` when the newest archived WAL is older than this ("1h").
    #[serde(default, deserialize_with = "de_duration")]
    pub warn_wal_age: Option<u64>,
    /// Whether `pgincr run` ends with a restore test: "off" (default), "after-round" (when
    /// the run completed a round) or "every-run".
    #[serde(default)]
    pub drill: DrillMode,
    /// SQL a drill's recovered cluster must answer with true (`[[server.NAME.drill_check]]`).
    #[serde(default)]
    pub drill_check: Vec<DrillCheck>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrillMode {
    #[default]
    Off,
    AfterRound,
    EveryRun,
}

/// `[[server.NAME.drill_check]]`: `sql` must return true in `database`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillCheck {
    #[serde(default = "default_database")]
    pub database: String,
    pub sql: String,
}

fn default_database() -> String {
    "postgres".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointMode {
    #[default]
    Spread,
    Fast,
}

fn default_max_incrementals() -> u32 {
    6
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoundStart {
    #[default]
    Full,
    Synthetic,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Plain,
    Tar,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WalKeep {
    #[default]
    OldestBackup,
    LatestBackup,
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// "14d" / "36h" / "90m" / "3600s" to seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad =
        || format!("invalid duration \"{s}\": expected a number then d, h, m or s, e.g. \"14d\"");
    let t = s.trim();
    let unit = t.chars().last().ok_or_else(bad)?;
    let mult = match unit {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return Err(bad()),
    };
    let n: u64 = t
        .get(..t.len() - 1)
        .ok_or_else(bad)?
        .parse()
        .map_err(|_| bad())?;
    n.checked_mul(mult).filter(|&v| v > 0).ok_or_else(bad)
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        for (name, s) in &cfg.server {
            let invalid = |message: String| ConfigError::Invalid {
                path: path.to_path_buf(),
                server: name.clone(),
                message,
            };
            if !valid_server_name(name) {
                return Err(invalid(
                    "server names may hold only letters, digits, '-' and '_' (they name a directory)".into(),
                ));
            }
            if conninfo_has_password(&s.conninfo) {
                return Err(invalid("conninfo contains a password: remove it and put it in PGPASSWORD, ~/.pgpass or password_file (a file readable only by the backup user)".into()));
            }
            if s.compress.is_some() && s.format == Format::Plain {
                return Err(invalid("compress needs format = \"tar\"".into()));
            }
        }
        Ok(cfg)
    }
}

fn valid_server_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A `password` keyword in key=value conninfo, a `password=` URI parameter, or a
/// `user:password@` in a URI. Errs on the side of refusing.
pub fn conninfo_has_password(conninfo: &str) -> bool {
    let lower = conninfo.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        let rest = lower.split_once("://").map(|(_, r)| r).unwrap_or("");
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if userinfo.contains(':') {
                return true;
            }
        }
        return lower.split_once('?').is_some_and(|(_, q)| {
            q.split('&')
                .any(|kv| kv.trim_start().starts_with("password="))
        });
    }
    let mut rest = lower.as_str();
    while let Some(i) = rest.find("password") {
        let before_ok = rest
            .get(..i)
            .is_none_or(|b| b.is_empty() || b.ends_with(char::is_whitespace));
        let after = rest.get(i + "password".len()..).unwrap_or("");
        if before_ok && after.trim_start().starts_with('=') {
            return true;
        }
        rest = after;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE: &str = r#"
[repository]
path = "/var/lib/pgincr"

[server.main]
conninfo = "host=/run/postgresql user=postgres"
max_incrementals = 6
keep_rounds = 2
keep_for = "14d"
round_start = "synthetic"
format = "tar"
compress = "zstd:3"
wal_keep = "latest-backup"
pg_bin = "/usr/lib/postgresql/17/bin"
password_file = "/etc/pgincr/main.password"

[notify]
webhook = { url = "https://example.invalid/hook", secret_file = "/etc/pgincr/webhook.secret" }
command = "/usr/local/bin/on-backup"
"#;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("test.toml"))
    }

    #[test]
    fn parses_issue_example() {
        let c = parse(ISSUE).unwrap();
        assert_eq!(c.repository.path, PathBuf::from("/var/lib/pgincr"));
        let s = &c.server["main"];
        assert_eq!(s.max_incrementals, 6);
        assert_eq!(s.keep_rounds, Some(2));
        assert_eq!(s.keep_for, Some(14 * 86_400));
        assert_eq!(s.round_start, RoundStart::Synthetic);
        assert_eq!(s.format, Format::Tar);
        assert_eq!(s.compress.as_deref(), Some("zstd:3"));
        assert_eq!(s.wal_keep, WalKeep::LatestBackup);
        assert!(c.notify.unwrap().get("webhook").is_some());
    }

    #[test]
    fn defaults() {
        let c = parse("[repository]\npath='/r'\n[server.a]\nconninfo='host=x'\n").unwrap();
        let s = &c.server["a"];
        assert_eq!(
            (s.max_incrementals, s.round_start, s.format, s.wal_keep),
            (6, RoundStart::Full, Format::Plain, WalKeep::OldestBackup)
        );
    }

    #[test]
    fn unknown_key_named_with_line() {
        let e = parse("[repository]\npath='/r'\n[server.a]\nconninfo='host=x'\nkeep_round = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("keep_round"), "{e}");
        assert!(e.contains("line 5"), "{e}");
    }

    #[test]
    fn password_in_conninfo_refused() {
        for ci in [
            "host=x password=secret",
            "host=x PASSWORD = 'a b'",
            "postgresql://u:secret@h/db",
            "postgres://u@h/db?sslmode=require&password=s",
        ] {
            let t = format!("[repository]\npath='/r'\n[server.a]\nconninfo=\"{ci}\"\n");
            let e = parse(&t).unwrap_err().to_string();
            assert!(e.contains("PGPASSWORD"), "{e}");
            assert!(!e.contains("secret"), "{e}");
        }
        for ci in [
            "host=x passfile=/p",
            "postgresql://u@h/db",
            "host=x user=password_owner",
        ] {
            assert!(!conninfo_has_password(ci), "{ci}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("36h"), Ok(36 * 3600));
        assert_eq!(parse_duration("14d"), Ok(14 * 86_400));
        assert!(parse_duration("14").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("0d").is_err());
        assert!(
            parse("[repository]\npath='/r'\n[server.a]\nconninfo='h'\nkeep_for='2w'\n").is_err()
        );
    }

    #[test]
    fn example_file_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pgincr.toml");
        let c = Config::load(&p).unwrap();
        assert!(c.server.contains_key("main"));
    }
}
