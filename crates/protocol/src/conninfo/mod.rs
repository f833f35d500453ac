//! libpq-compatible connection settings: `key=value` strings, `postgresql://` URIs, the `PG*`
//! environment and defaults.
//!
//! Precedence is libpq's: explicit settings (connection string, then command-line flags applied
//! with [`Config::set`]) win over the environment, which wins over built-in defaults.

mod env;
mod keyvalue;
mod resolve;
mod uri;

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};

pub use resolve::Resolved;

/// A password that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(Error::Config(format!(
                "invalid sslmode \"{s}\": use disable, allow, prefer, require, verify-ca or verify-full"
            )))
            }
        })
    }
}

/// libpq's `channel_binding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelBindingMode {
    Disable,
    Prefer,
    Require,
}

/// Where to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Tcp(String),
    /// A directory holding the server's `.s.PGSQL.<port>` socket.
    Unix(PathBuf),
}

impl Host {
    fn parse(s: &str) -> Host {
        if s.starts_with('/') || s.starts_with('@') {
            Host::Unix(PathBuf::from(s))
        } else {
            Host::Tcp(s.to_string())
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp(h) => f.write_str(h),
            Host::Unix(p) => write!(f, "socket directory {}", p.display()),
        }
    }
}

/// Connection settings. Unset fields take the environment's or libpq's default in
/// [`Config::resolve`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub host: Option<String>,
    pub hostaddr: Option<String>,
    pub port: Option<String>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub dbname: Option<String>,
    pub application_name: Option<String>,
    pub fallback_application_name: Option<String>,
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
    pub passfile: Option<String>,
    pub connect_timeout: Option<String>,
    pub channel_binding: Option<String>,
    pub options: Option<String>,
    /// Startup parameter `replication`: `true` for a physical walsender.
    pub replication: Option<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("replication", &self.replication)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Parses a libpq connection string: `key=value ...` or a `postgresql://` / `postgres://`
    /// URI. A bare word without `=` is taken as a database name, as libpq does for `dbname`.
    pub fn parse(s: &str) -> Result<Config> {
        let mut c = Config::default();
        c.merge_conninfo(s)?;
        Ok(c)
    }

    /// Applies the settings of a connection string on top of this one.
    pub(crate) fn merge_conninfo(&mut self, s: &str) -> Result<()> {
        if s.starts_with("postgresql://") || s.starts_with("postgres://") {
            return uri::parse_uri(self, s);
        }
        if !s.contains('=') {
            if !s.trim().is_empty() {
                self.dbname = Some(s.trim().to_string());
            }
            return Ok(());
        }
        for (k, v) in keyvalue::parse_keyvalue(s)? {
            self.set(&k, &v)?;
        }
        Ok(())
    }

    /// Sets one libpq keyword. Unknown keywords are refused, as libpq does.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let v = Some(value.to_string());
        match key {
            "host" => self.host = v,
            "hostaddr" => self.hostaddr = v,
            "port" => self.port = v,
            "user" => self.user = v,
            "password" => self.password = Some(Secret::new(value)),
            "dbname" => {
                // libpq expands a dbname that is itself a connection string.
                if value.contains('=') || value.starts_with("postgres") && value.contains("://") {
                    return self.merge_conninfo(value);
                }
                self.dbname = v
            }
            "application_name" => self.application_name = v,
            "fallback_application_name" => self.fallback_application_name = v,
            "sslmode" => self.sslmode = v,
            "sslrootcert" => self.sslrootcert = v,
            "sslcert" => self.sslcert = v,
            "sslkey" => self.sslkey = v,
            "passfile" => self.passfile = v,
            "connect_timeout" => self.connect_timeout = v,
            "channel_binding" => self.channel_binding = v,
            "options" => self.options = v,
            "replication" => self.replication = v,
            // Accepted and ignored: they have no effect on what pgincr does.
            "sslcompression"
            | "sslsni"
            | "keepalives"
            | "keepalives_idle"
            | "keepalives_interval"
            | "keepalives_count"
            | "target_session_attrs"
            | "gssencmode"
            | "client_encoding"
            | "sslpassword"
            | "sslcrl"
            | "sslcrldir"
            | "ssl_min_protocol_version"
            | "ssl_max_protocol_version"
            | "load_balance_hosts"
            | "require_auth"
            | "tcp_user_timeout" => {}
            _ => {
                return Err(Error::Config(format!(
                    "invalid connection option \"{key}\""
                )))
            }
        }
        Ok(())
    }
}
