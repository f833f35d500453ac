//! Connection strings and URIs (`Config::parse`), settings resolution, and `.pgpass` lines:
//! never a panic; an accepted connection string written back as `key='value'` pairs parses to
//! the same settings.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgincr_protocol::fuzzing::pgpass_find;
use pgincr_protocol::Config;

fn quote(v: &str) -> String {
    let mut s = String::from("'");
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('\'');
    s
}

/// `c` as a key/value connection string.
fn write(c: &Config) -> String {
    let mut out = Vec::new();
    let mut kv = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            out.push(format!("{k}={}", quote(v)));
        }
    };
    kv("host", &c.host);
    kv("hostaddr", &c.hostaddr);
    kv("port", &c.port);
    kv("user", &c.user);
    kv(
        "password",
        &c.password.as_ref().map(|p| p.expose().to_string()),
    );
    kv("dbname", &c.dbname);
    kv("application_name", &c.application_name);
    kv("fallback_application_name", &c.fallback_application_name);
    kv("sslmode", &c.sslmode);
    kv("sslrootcert", &c.sslrootcert);
    kv("sslcert", &c.sslcert);
    kv("sslkey", &c.sslkey);
    kv("passfile", &c.passfile);
    kv("connect_timeout", &c.connect_timeout);
    kv("channel_binding", &c.channel_binding);
    kv("options", &c.options);
    kv("replication", &c.replication);
    out.join(" ")
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Config::parse(s) {
        // libpq expands a dbname that is itself a connection string: such a value cannot be
        // written back as a plain dbname.
        let expands = c
            .dbname
            .as_deref()
            .is_some_and(|d| d.contains('=') || d.starts_with("postgres") && d.contains("://"));
        if !expands {
            let text = write(&c);
            let again = Config::parse(&text)
                .unwrap_or_else(|e| panic!("our own {text:?} does not parse: {e}"));
            assert!(again == c, "{text:?} parsed differently");
        }
        if let Ok(r) = c.resolve() {
            assert!(!r.hosts.is_empty());
            assert!(r.hosts.iter().all(|(_, p)| *p != 0));
        }
    }
    let _ = pgpass_find(s, "localhost", 5432, "postgres", "postgres");
    let _ = pgpass_find(s, "*", 1, "", "");
});
