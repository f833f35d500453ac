//! `pgincr backup` over TLS with a certificate made here (rcgen): verify-full with SCRAM
//! channel binding (SCRAM-SHA-256-PLUS, forced by channel_binding=require), verify-ca vs
//! verify-full on a name mismatch, an untrusted CA, and sslmode=allow/disable against a
//! TLS-only pg_hba.conf; client certificates (`cert` authentication) given by conninfo and by
//! PGSSLCERT/PGSSLKEY, refused without one, and a key file others can read refused before
//! connecting.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::Command;

use pgincr_testkit::{give_to_server, output, Cluster, Major};

struct Certs {
    ca: String,
    other_ca: String,
    cert: String,
    key: String,
    /// Client certificate for the role `certuser` (CN = user name), signed by `ca`.
    client_cert: String,
    client_key: String,
}

fn make_certs() -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let k = KeyPair::generate().unwrap();
        let c = p.self_signed(&k).unwrap();
        (c, k)
    };
    let (ca_cert, ca_key) = ca("pgincr test CA");
    let (other, _) = ca("some other CA");
    // Only the DNS name: connecting to 127.0.0.1 is then a name mismatch.
    let mut sp = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    sp.distinguished_name.push(DnType::CommonName, "localhost");
    let sk = KeyPair::generate().unwrap();
    let server = sp.signed_by(&sk, &ca_cert, &ca_key).unwrap();
    let mut cp = CertificateParams::new(Vec::<String>::new()).unwrap();
    cp.distinguished_name.push(DnType::CommonName, "certuser");
    let ck = KeyPair::generate().unwrap();
    let client = cp.signed_by(&ck, &ca_cert, &ca_key).unwrap();
    Certs {
        ca: ca_cert.pem(),
        other_ca: other.pem(),
        cert: server.pem(),
        key: sk.serialize_pem(),
        client_cert: client.pem(),
        client_key: ck.serialize_pem(),
    }
}

fn pgincr(connstr: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgincr"));
    // HOME: no ~/.postgresql/postgresql.crt of the machine's sneaks in.
    cmd.env("PGPASSWORD", "tls-pw")
        .env("HOME", dir.parent().unwrap())
        .env_remove("PGHOST")
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLCERT")
        .env_remove("PGSSLKEY");
    cmd.args(["backup", "-d", connstr, "-c", "fast", "-X", "stream", "-D"])
        .arg(dir);
    cmd
}

fn tls(major: Major) {
    let Some(c) = Cluster::start(major) else {
        return;
    };
    let scratch = pgincr_testkit::scratch("pgincr-backup-tls-");
    let s = scratch.path();
    let certs = make_certs();
    let tdir = c.base_dir().join("tls");
    std::fs::create_dir(&tdir).unwrap();
    std::fs::write(tdir.join("server.crt"), &certs.cert).unwrap();
    std::fs::write(tdir.join("server.key"), &certs.key).unwrap();
    std::fs::write(tdir.join("ca.crt"), &certs.ca).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        tdir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    give_to_server(&tdir);
    let ca = s.join("ca.crt");
    std::fs::write(&ca, &certs.ca).unwrap();
    let other_ca = s.join("other.crt");
    std::fs::write(&other_ca, &certs.other_ca).unwrap();

    c.sql("SET password_encryption = 'scram-sha-256'; CREATE ROLE tlsuser LOGIN REPLICATION PASSWORD 'tls-pw'");
    c.sql("CREATE ROLE certuser LOGIN REPLICATION");
    // The server asks for client certificates signed by this CA.
    c.sql(&format!(
        "ALTER SYSTEM SET ssl_ca_file = '{}'",
        tdir.join("ca.crt").display()
    ));
    c.sql(&format!(
        "ALTER SYSTEM SET ssl_cert_file = '{}'",
        tdir.join("server.crt").display()
    ));
    c.sql(&format!(
        "ALTER SYSTEM SET ssl_key_file = '{}'",
        tdir.join("server.key").display()
    ));
    // The PostgreSQL 18 wheel installed here is built without OpenSSL: TLS runs against 17 only
    // there, and this check makes sure nothing else is being skipped.
    let o =
        output(
            c.tool("psql")
                .args(["-X", "-q", "-c", "ALTER SYSTEM SET ssl = on", "postgres"]),
        );
    if !o.status.success() {
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("SSL is not supported by this build"), "{e}");
        // The 17 wheel has OpenSSL: there TLS must be tested, never skipped.
        assert_ne!(major, Major::V17, "{major} must have SSL support: {e}");
        eprintln!("SKIP: {} is built without SSL support", major);
        return;
    }
    let hba = c.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!(
            "hostssl all tlsuser 127.0.0.1/32 scram-sha-256\nhostssl replication tlsuser 127.0.0.1/32 scram-sha-256\n\
             hostnossl all tlsuser 127.0.0.1/32 reject\nhostnossl replication tlsuser 127.0.0.1/32 reject\n\
             hostssl all certuser 127.0.0.1/32 cert\nhostssl replication certuser 127.0.0.1/32 cert\n\
             host all certuser 127.0.0.1/32 reject\nhost replication certuser 127.0.0.1/32 reject\n{old}"
        ),
    )
    .unwrap();
    c.sql("SELECT pg_reload_conf()");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(c.sql("SHOW ssl"), "on", "{}", c.log());

    let base = |host: &str, mode: &str, root: &Path| {
        format!(
            "host={host} port={} user=tlsuser sslmode={mode} sslrootcert={}",
            c.port(),
            root.display()
        )
    };
    // verify-full + SCRAM-SHA-256-PLUS.
    let full = s.join("full");
    c.run(&mut pgincr(
        &format!(
            "{} channel_binding=require",
            base("localhost", "verify-full", &ca)
        ),
        &full,
    ));
    c.run(c.pg.tool("pg_verifybackup").arg(&full));

    // Name mismatch: verify-full refuses, verify-ca accepts.
    let o = output(&mut pgincr(
        &base("127.0.0.1", "verify-full", &ca),
        &s.join("x1"),
    ));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("TLS"), "{e}");
    c.run(&mut pgincr(
        &base("127.0.0.1", "verify-ca", &ca),
        &s.join("ca-only"),
    ));

    // An untrusted CA is refused.
    let o = output(&mut pgincr(
        &base("localhost", "verify-full", &other_ca),
        &s.join("x2"),
    ));
    assert!(!o.status.success(), "untrusted CA accepted");

    // disable hits the hostnossl reject; allow retries with TLS.
    let o = output(&mut pgincr(
        &base("127.0.0.1", "disable", &ca),
        &s.join("x3"),
    ));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("28000"), "{e}");
    c.run(&mut pgincr(
        &base("127.0.0.1", "allow", &ca),
        &s.join("allow"),
    ));
    c.run(c.pg.tool("pg_verifybackup").arg(s.join("allow")));
    for x in ["x1", "x2", "x3"] {
        assert!(!s.join(x).exists());
    }
    client_certificates(&c, s, &certs, &ca);
}

/// `cert` authentication for `certuser`: a full backup with sslcert/sslkey in the connection
/// string, an incremental on top of it with PGSSLCERT/PGSSLKEY (its checks run on an ordinary
/// SQL session, also by certificate), both checked by pg_verifybackup; no certificate gets the
/// server's refusal; a key file with mode 0644 is refused before any connection.
fn client_certificates(c: &Cluster, s: &Path, certs: &Certs, ca: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let crt = s.join("client.crt");
    std::fs::write(&crt, &certs.client_cert).unwrap();
    let key = s.join("client.key");
    std::fs::write(&key, &certs.client_key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let open_key = s.join("open.key");
    std::fs::write(&open_key, &certs.client_key).unwrap();
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let base = format!(
        "host=localhost port={} user=certuser sslmode=verify-full sslrootcert={}",
        c.port(),
        ca.display()
    );

    let full = s.join("cert-full");
    c.run(
        pgincr(
            &format!("{base} sslcert={} sslkey={}", crt.display(), key.display()),
            &full,
        )
        .env_remove("PGPASSWORD"),
    );
    c.run(c.pg.tool("pg_verifybackup").arg(&full));

    c.sql("CREATE TABLE cert_t AS SELECT g FROM generate_series(1, 1000) g");
    c.summarize();
    let incr = s.join("cert-incr");
    c.run(
        pgincr(&base, &incr)
            .env_remove("PGPASSWORD")
            .env("PGSSLCERT", &crt)
            .env("PGSSLKEY", &key)
            .arg("-i")
            .arg(full.join("backup_manifest")),
    );
    c.run(c.pg.tool("pg_verifybackup").arg(&incr));
    let label = std::fs::read_to_string(incr.join("backup_label")).unwrap();
    assert!(label.contains("INCREMENTAL FROM LSN"), "{label}");

    // No certificate: the server's own refusal, with its SQLSTATE.
    let o = output(pgincr(&base, &s.join("x4")).env_remove("PGPASSWORD"));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && e.contains("connection requires a valid client certificate")
            && e.contains("28000"),
        "{e}"
    );

    // A key others can read is refused, naming the file, as libpq does.
    let o = output(
        pgincr(&base, &s.join("x5"))
            .env_remove("PGPASSWORD")
            .env("PGSSLCERT", &crt)
            .env("PGSSLKEY", &open_key),
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && e.contains(&open_key.display().to_string())
            && e.contains("group or world access")
            && !e.contains("PRIVATE KEY"),
        "{e}"
    );
    for x in ["x4", "x5"] {
        assert!(!s.join(x).exists());
    }
}

#[test]
fn tls_17() {
    tls(Major::V17);
}

#[test]
fn tls_18() {
    tls(Major::V18);
}
