//! [`Config::resolve`]: validation and libpq's defaults (ports, socket directory, OS user,
//! files under `~/.postgresql` and `~/.pgpass`), giving the [`Resolved`] settings to connect with.

use std::path::PathBuf;
use std::time::Duration;

use super::{ChannelBindingMode, Config, Host, Secret, SslMode};
use crate::error::{Error, Result};

impl Config {
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
        // `split` yields at least one item, so there is always a first port.
        let first_port = ports.first().copied().unwrap_or(5432);
        let hosts: Vec<Host> = match self.host.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => h
                .split(',')
                .map(|h| {
                    if h.is_empty() {
                        default_socket_dir(first_port)
                    } else {
                        Host::parse(h)
                    }
                })
                .collect(),
            None => match &self.hostaddr {
                Some(a) => vec![Host::Tcp(a.clone())],
                None => vec![default_socket_dir(first_port)],
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
            // One port for every host, or one each (checked above).
            hosts: hosts
                .into_iter()
                .zip(ports.iter().copied().cycle())
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

#[allow(unsafe_code)] // getpwuid_r(3), geteuid(2)
fn os_user_name() -> Option<String> {
    if let Ok(u) = std::env::var("USER") {
        if !u.is_empty() {
            return Some(u);
        }
    }
    let mut buf = vec![0u8; 4096];
    // SAFETY: passwd is plain old data (integers and pointers), for which all-zero is valid.
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
