//! The `PG*` environment variables: they fill the settings a connection string left unset.

use super::{Config, Secret};

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
    /// Fills unset fields from the environment (`PGHOST`, `PGPORT`, ...), read through `env`.
    pub(crate) fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) {
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::conninfo::{Host, SslMode};

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
