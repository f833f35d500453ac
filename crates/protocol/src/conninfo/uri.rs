//! `postgresql://` and `postgres://` URIs.

use super::{Config, Secret};
use crate::error::{Error, Result};

fn percent_decode(s: &str) -> Result<String> {
    let mut rest = s.as_bytes();
    let mut out = Vec::with_capacity(rest.len());
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let (hex, after) = tail
                .split_at_checked(2)
                .and_then(|(h, after)| {
                    let h = u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
                    Some((h, after))
                })
                .ok_or_else(|| {
                    Error::Config(format!("invalid percent-encoded token in \"{s}\""))
                })?;
            out.push(hex);
            rest = after;
        } else {
            out.push(b);
            rest = tail;
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::Config(format!("percent-encoded value is not UTF-8 in \"{s}\"")))
}

/// `postgresql://[user[:password]@][host][:port][,...][/dbname][?key=value&...]`
pub(super) fn parse_uri(c: &mut Config, s: &str) -> Result<()> {
    let rest = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
        .unwrap_or(s);
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match main.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (main, None),
    };
    let (userinfo, hostlist) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
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
                let (addr, after) = v6.split_once(']').ok_or_else(|| {
                    Error::Config(format!("unterminated IPv6 address in \"{s}\""))
                })?;
                (addr.to_string(), after.strip_prefix(':'))
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
    use crate::conninfo::Host;

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
}
