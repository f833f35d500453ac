//! libpq-compatible connection settings: `key=value` strings, `postgresql://` URIs, the `PG*`
//! environment and defaults.
//!
//! Precedence is libpq's: explicit settings (connection string, then command-line flags applied
//! with [`Config::set`]) win over the environment, which wins over built-in defaults.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

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

const ENV: &[(&str, &str)] = &[
    ("host", "PGHOST"),
    ("hostaddr", "PGHOSTADDR"),
    ("port", "PGPORT"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("dbname", "PGDATABASE"),
    ("application_name", "PGAPPNAME"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("passfile", "PGPASSFILE"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("channel_binding", "PGCHANNELBINDING"),
    ("options", "PGOPTIONS"),
];

impl Config {
    /// Parses a libpq connection string: `key=value ...` or a `postgresql://` / `postgres://`
    /// URI. A bare word without `=` is taken as a database name, as libpq does for `dbname`.
    pub fn parse(s: &str) -> Result<Config> {
        let mut c = Config::default();
        c.merge_conninfo(s)?;
        Ok(c)
    }

    /// Applies the settings of a connection string on top of this one.
    pub fn merge_conninfo(&mut self, s: &str) -> Result<()> {
        if s.starts_with("postgresql://") || s.starts_with("postgres://") {
            return parse_uri(self, s);
        }
        if !s.contains('=') {
            if !s.trim().is_empty() {
                self.dbname = Some(s.trim().to_string());
            }
            return Ok(());
        }
        for (k, v) in parse_keyvalue(s)? {
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

    /// Fills unset fields from the environment (`PGHOST`, `PGPORT`, ...), read through `env`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) {
        for (key, var) in ENV {
            let Some(val) = env(var).filter(|v| !v.is_empty()) else {
                continue;
            };
            let slot = match *key {
                "host" => &mut self.host,
                "hostaddr" => &mut self.hostaddr,
                "port" => &mut self.port,
                "user" => &mut self.user,
                "password" => {
                    if self.password.is_none() {
                        self.password = Some(Secret::new(val));
                    }
                    continue;
                }
                "dbname" => &mut self.dbname,
                "application_name" => &mut self.application_name,
                "sslmode" => &mut self.sslmode,
                "sslrootcert" => &mut self.sslrootcert,
                "sslcert" => &mut self.sslcert,
                "sslkey" => &mut self.sslkey,
                "passfile" => &mut self.passfile,
                "connect_timeout" => &mut self.connect_timeout,
                "channel_binding" => &mut self.channel_binding,
                "options" => &mut self.options,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(val);
            }
        }
    }

    /// Fills unset fields from the process environment.
    pub fn apply_process_env(&mut self) {
        self.apply_env(|k| std::env::var(k).ok());
    }

    /// Validates the settings and applies libpq's defaults.
    pub fn resolve(&self) -> Result<Resolved> {
        let ports: Vec<u16> = match &self.port {
            None => vec![5432],
            Some(p) => p
                .split(',')
                .map(|p| match p.trim() {
                    "" => Ok(5432),
                    p => p
                        .parse::<u16>()
                        .ok()
                        .filter(|&p| p != 0)
                        .ok_or_else(|| Error::Config(format!("invalid port number: \"{p}\""))),
                })
                .collect::<Result<_>>()?,
        };
        let hosts: Vec<Host> = match self.host.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => h
                .split(',')
                .map(|h| {
                    if h.is_empty() {
                        default_socket_dir(ports[0])
                    } else {
                        Host::parse(h)
                    }
                })
                .collect(),
            None => match &self.hostaddr {
                Some(a) => vec![Host::Tcp(a.clone())],
                None => vec![default_socket_dir(ports[0])],
            },
        };
        if ports.len() != 1 && ports.len() != hosts.len() {
            return Err(Error::Config(format!(
                "could not match {} port numbers to {} hosts",
                ports.len(),
                hosts.len()
            )));
        }
        let user = match &self.user {
            Some(u) if !u.is_empty() => u.clone(),
            _ => os_user_name().ok_or_else(|| {
                Error::Config("no user name given and the current OS user has none: use -U".into())
            })?,
        };
        let sslmode = SslMode::parse(self.sslmode.as_deref().unwrap_or("prefer"))?;
        let channel_binding = match self.channel_binding.as_deref().unwrap_or("prefer") {
            "disable" => ChannelBindingMode::Disable,
            "prefer" => ChannelBindingMode::Prefer,
            "require" => ChannelBindingMode::Require,
            other => {
                return Err(Error::Config(format!(
                    "invalid channel_binding \"{other}\": use disable, prefer or require"
                )))
            }
        };
        let connect_timeout = match self.connect_timeout.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(t) => {
                let secs: i64 = t.parse().map_err(|_| {
                    Error::Config(format!("invalid connect_timeout \"{t}\": expected seconds"))
                })?;
                // libpq: zero or negative means wait forever; 1 is raised to 2.
                (secs > 0).then(|| Duration::from_secs(secs.max(2) as u64))
            }
        };
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let in_home = |name: &str| home.as_ref().map(|h| h.join(name));
        let dbname = self
            .dbname
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| user.clone());
        Ok(Resolved {
            hosts: hosts
                .iter()
                .enumerate()
                .map(|(i, h)| (h.clone(), ports[if ports.len() == 1 { 0 } else { i }]))
                .collect(),
            hostaddr: self.hostaddr.clone(),
            user,
            password: self.password.clone(),
            dbname,
            application_name: self
                .application_name
                .clone()
                .or_else(|| self.fallback_application_name.clone()),
            sslmode,
            channel_binding,
            sslrootcert: self
                .sslrootcert
                .clone()
                .map(PathBuf::from)
                .or_else(|| in_home(".postgresql/root.crt")),
            sslcert: self
                .sslcert
                .clone()
                .map(PathBuf::from)
                .or_else(|| in_home(".postgresql/postgresql.crt")),
            sslkey: self
                .sslkey
                .clone()
                .map(PathBuf::from)
                .or_else(|| in_home(".postgresql/postgresql.key")),
            passfile: self
                .passfile
                .clone()
                .map(PathBuf::from)
                .or_else(|| in_home(".pgpass")),
            connect_timeout,
            options: self.options.clone(),
            replication: self.replication.clone(),
        })
    }
}

/// Settings after defaults, ready to connect with.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// Candidates tried in order, as libpq does with host lists.
    pub hosts: Vec<(Host, u16)>,
    pub hostaddr: Option<String>,
    pub user: String,
    pub password: Option<Secret>,
    pub dbname: String,
    pub application_name: Option<String>,
    pub sslmode: SslMode,
    pub channel_binding: ChannelBindingMode,
    pub sslrootcert: Option<PathBuf>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    pub passfile: Option<PathBuf>,
    pub connect_timeout: Option<Duration>,
    pub options: Option<String>,
    pub replication: Option<String>,
}

/// libpq looks in the compiled-in socket directory; builds differ (`/var/run/postgresql` on
/// Debian, `/tmp` upstream), so take whichever holds the socket.
fn default_socket_dir(port: u16) -> Host {
    for dir in ["/var/run/postgresql", "/tmp"] {
        if std::path::Path::new(dir)
            .join(format!(".s.PGSQL.{port}"))
            .exists()
        {
            return Host::Unix(dir.into());
        }
    }
    Host::Unix("/tmp".into())
}

fn os_user_name() -> Option<String> {
    if let Ok(u) = std::env::var("USER") {
        if !u.is_empty() {
            return Some(u);
        }
    }
    let mut buf = vec![0u8; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: buffers are valid for the given lengths; getpwuid_r writes only into them.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::geteuid(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Splits `key = value` pairs; values may be single-quoted with `\'` and `\\` escapes.
fn parse_keyvalue(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = it.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            it.next();
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.next() != Some('=') {
            return Err(Error::Config(format!(
                "missing \"=\" after \"{key}\" in connection string"
            )));
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        let mut value = String::new();
        if it.peek() == Some(&'\'') {
            it.next();
            loop {
                match it.next() {
                    None => {
                        return Err(Error::Config(
                            "unterminated quoted string in connection string".into(),
                        ))
                    }
                    Some('\\') => match it.next() {
                        Some(c) => value.push(c),
                        None => {
                            return Err(Error::Config(
                                "unterminated quoted string in connection string".into(),
                            ))
                        }
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                it.next();
                if c == '\\' {
                    if let Some(n) = it.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    Error::Config(format!("invalid percent-encoded token in \"{s}\""))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::Config(format!("percent-encoded value is not UTF-8 in \"{s}\"")))
}

/// `postgresql://[user[:password]@][host][:port][,...][/dbname][?key=value&...]`
fn parse_uri(c: &mut Config, s: &str) -> Result<()> {
    let rest = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
        .unwrap_or(s);
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match main.find('/') {
        Some(i) => (&main[..i], Some(&main[i + 1..])),
        None => (main, None),
    };
    let (userinfo, hostlist) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    if let Some(ui) = userinfo {
        let (u, p) = match ui.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (ui, None),
        };
        if !u.is_empty() {
            c.user = Some(percent_decode(u)?);
        }
        if let Some(p) = p {
            c.password = Some(Secret::new(percent_decode(p)?));
        }
    }
    if !hostlist.is_empty() {
        let (mut hosts, mut ports) = (Vec::new(), Vec::new());
        for part in hostlist.split(',') {
            let (h, p) = if let Some(v6) = part.strip_prefix('[') {
                let end = v6.find(']').ok_or_else(|| {
                    Error::Config(format!("unterminated IPv6 address in \"{s}\""))
                })?;
                let after = &v6[end + 1..];
                (v6[..end].to_string(), after.strip_prefix(':'))
            } else {
                match part.rsplit_once(':') {
                    Some((h, p)) => (percent_decode(h)?, Some(p)),
                    None => (percent_decode(part)?, None),
                }
            };
            hosts.push(h);
            ports.push(p.unwrap_or("").to_string());
        }
        c.host = Some(hosts.join(","));
        if ports.iter().any(|p| !p.is_empty()) {
            c.port = Some(ports.join(","));
        }
    }
    if let Some(db) = path.filter(|d| !d.is_empty()) {
        c.dbname = Some(percent_decode(db)?);
    }
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                Error::Config(format!("missing \"=\" in URI query parameter \"{pair}\""))
            })?;
            let k = percent_decode(k)?;
            // libpq accepts JDBC's ssl=true as sslmode=require.
            if k == "ssl" && v == "true" {
                c.sslmode = Some("require".into());
                continue;
            }
            c.set(&k, &percent_decode(v)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyvalue() {
        let c = Config::parse("host=db port = 5433 user='a b' password='it\\'s' dbname=x").unwrap();
        assert_eq!(c.host.as_deref(), Some("db"));
        assert_eq!(c.port.as_deref(), Some("5433"));
        assert_eq!(c.user.as_deref(), Some("a b"));
        assert_eq!(c.password.as_ref().unwrap().expose(), "it's");
        assert!(!format!("{c:?}").contains("it's"));
        assert!(Config::parse("host").unwrap().dbname.is_some());
        assert!(Config::parse("bogus=1").is_err());
        assert!(Config::parse("host='x").is_err());
    }

    #[test]
    fn uri() {
        let c = Config::parse("postgresql://us%40r:p%3Aw@h1:5433,[::1]:5434/my%20db?sslmode=require&application_name=x").unwrap();
        assert_eq!(c.user.as_deref(), Some("us@r"));
        assert_eq!(c.password.as_ref().unwrap().expose(), "p:w");
        assert_eq!(c.host.as_deref(), Some("h1,::1"));
        assert_eq!(c.port.as_deref(), Some("5433,5434"));
        assert_eq!(c.dbname.as_deref(), Some("my db"));
        assert_eq!(c.sslmode.as_deref(), Some("require"));
        let c = Config::parse("postgres://%2Ftmp%2Fsock/db").unwrap();
        let r = c.resolve().unwrap();
        assert_eq!(r.hosts[0], (Host::Unix("/tmp/sock".into()), 5432));
        let c = Config::parse("postgresql:///db?host=/var/run/x&port=6000").unwrap();
        let r = c.resolve().unwrap();
        assert_eq!(r.hosts[0], (Host::Unix("/var/run/x".into()), 6000));
    }

    #[test]
    fn env_and_precedence() {
        let mut c = Config::parse("host=explicit").unwrap();
        c.apply_env(|k| match k {
            "PGHOST" => Some("fromenv".into()),
            "PGPORT" => Some("6543".into()),
            "PGUSER" => Some("envuser".into()),
            "PGPASSWORD" => Some("pw".into()),
            "PGSSLMODE" => Some("verify-full".into()),
            "PGCONNECT_TIMEOUT" => Some("1".into()),
            _ => None,
        });
        let r = c.resolve().unwrap();
        assert_eq!(r.hosts, vec![(Host::Tcp("explicit".into()), 6543)]);
        assert_eq!(r.user, "envuser");
        assert_eq!(r.dbname, "envuser");
        assert_eq!(r.sslmode, SslMode::VerifyFull);
        assert_eq!(r.connect_timeout, Some(Duration::from_secs(2)));
        assert!(Config::parse("sslmode=bogus").unwrap().resolve().is_err());
        assert!(Config::parse("port=99999").unwrap().resolve().is_err());
    }
}
