//! The protocol client against real PostgreSQL 17 and 18 servers: one cluster per major
//! version, several checks on each.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use pgincr_protocol::{
    replication_config, BackupEvent, BaseBackupOptions, Checkpoint, Config, Connection, Error,
};
use pgincr_testkit::{Cluster, Major};

fn tcp(c: &Cluster, user: &str) -> Config {
    Config::parse(&format!(
        "host=127.0.0.1 port={} user={user} dbname=postgres sslmode=disable",
        c.port()
    ))
    .unwrap()
}

async fn conn(cfg: &Config) -> Result<Connection, Error> {
    Connection::connect(&cfg.resolve().unwrap()).await
}

/// Adds password-authenticated roles and pg_hba lines in front of the kit's trust lines.
fn add_password_roles(c: &Cluster) {
    c.sql(
        "SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN REPLICATION PASSWORD 'md5 pw'",
    );
    c.sql("SET password_encryption = 'scram-sha-256'; CREATE ROLE scramuser LOGIN REPLICATION PASSWORD 'scr''am'");
    c.sql("CREATE ROLE clearuser LOGIN PASSWORD 'clear'");
    let hba = c.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    let new = format!(
        "host all md5user 127.0.0.1/32 md5\nhost replication md5user 127.0.0.1/32 md5\n\
         host all scramuser 127.0.0.1/32 scram-sha-256\nhost replication scramuser 127.0.0.1/32 scram-sha-256\n\
         host all clearuser 127.0.0.1/32 password\n{old}"
    );
    std::fs::write(&hba, new).unwrap();
    c.sql("SELECT pg_reload_conf()");
    std::thread::sleep(std::time::Duration::from_millis(300));
}

async fn check(c: &Cluster) {
    let major = c.major().number();
    // Unix socket, trust, normal session.
    let mut cfg = Config::parse(&format!(
        "host={} port={} user=postgres dbname=postgres",
        c.socket_dir().display(),
        c.port()
    ))
    .unwrap();
    let mut s = conn(&cfg).await.unwrap();
    assert_eq!(s.server_major(), Some(major));
    let r = s
        .simple_query("SELECT 1 AS a, NULL::text AS b; SELECT 'x'")
        .await
        .unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].text(0, 0), Some("1"));
    assert_eq!(r[0].text(0, 1), None);
    assert_eq!(r[1].text(0, 0), Some("x"));
    let e = s.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(e.code(), Some("22012"), "{e}");
    // The session is still usable after an error.
    assert_eq!(s.show("summarize_wal").await.unwrap(), "on");
    // Notices do not disturb results.
    let r = s
        .simple_query("DO $$BEGIN RAISE WARNING 'w'; END$$; SELECT 2")
        .await
        .unwrap();
    assert_eq!(r.last().unwrap().text(0, 0), Some("2"));
    s.close().await.unwrap();

    // Replication session over TCP.
    cfg = replication_config(&tcp(c, "postgres"), "pgincr-test");
    let mut r = conn(&cfg).await.unwrap();
    let sys = r.identify_system().await.unwrap();
    assert_eq!(
        sys.system_identifier.to_string(),
        c.sql("SELECT system_identifier FROM pg_control_system()")
    );
    assert_eq!(sys.timeline.0, 1);
    assert!(sys.xlogpos.0 > 0);
    assert_eq!(r.show("wal_segment_size").await.unwrap(), "16MB");
    let e = r
        .timeline_history(pgincr_types::TimeLineId(1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("58P01"), "{e}");
    let e = r.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(e.code(), Some("0A000"), "{e}");
    let db = e.db().unwrap();
    assert!(db.message.contains("cannot execute SQL commands"), "{db:?}");

    // A garbage manifest is refused with the server's reason, and the session survives.
    let e = r.upload_manifest(b"{ not a manifest").await.unwrap_err();
    assert!(e.db().is_some(), "{e}");

    // A full base backup as events: result sets, archives, progress, manifest, end.
    let opts = BaseBackupOptions {
        label: Some("proto test".into()),
        progress: true,
        checkpoint: Some(Checkpoint::Fast),
        wait: Some(false),
        manifest: true,
        ..Default::default()
    };
    let mut stream = r.base_backup(&opts).await.unwrap();
    let (mut start, mut end, mut bytes, mut manifest, mut archives, mut progress) =
        (None, None, 0u64, Vec::new(), Vec::new(), 0);
    while let Some(ev) = stream.next().await.unwrap() {
        match ev {
            BackupEvent::Start { lsn, .. } => start = Some(lsn),
            BackupEvent::Tablespaces(t) => assert_eq!(t.last().unwrap().oid, None),
            BackupEvent::ArchiveStart { name, .. } => archives.push(name),
            BackupEvent::ArchiveData(d) => bytes += d.len() as u64,
            BackupEvent::Progress(p) => progress = p,
            BackupEvent::ManifestStart => {}
            BackupEvent::ManifestData(d) => manifest.extend_from_slice(&d),
            BackupEvent::End { lsn, .. } => end = Some(lsn),
        }
    }
    assert!(start.unwrap() < end.unwrap());
    assert_eq!(archives, vec!["base.tar".to_string()]);
    assert_eq!(progress, bytes, "progress is cumulative tar bytes");
    assert!(manifest.starts_with(b"{ \"PostgreSQL-Backup-Manifest-Version\": 2,"));
    // The uploaded manifest of that backup is accepted.
    r.upload_manifest(&manifest).await.unwrap();
    // Permanent slot create/drop.
    r.create_physical_slot("pgincr_test_slot", false)
        .await
        .unwrap();
    assert_eq!(
        c.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name='pgincr_test_slot'"),
        "1"
    );
    r.drop_slot("pgincr_test_slot").await.unwrap();
    // WAL streaming: data arrives from the requested segment start; status updates are taken.
    r.create_physical_slot("tmp_slot", true).await.unwrap();
    // The position from before the base backup may be in a segment its checkpoint removed;
    // the slot holds the segment of the current position.
    c.sql("CREATE TABLE wal_maker AS SELECT 1 AS a");
    let now = r.identify_system().await.unwrap();
    let seg_start = pgincr_types::Lsn(now.xlogpos.0 & !((16 << 20) - 1));
    let mut w = r
        .start_replication(Some("tmp_slot"), seg_start, Some(sys.timeline))
        .await
        .unwrap();
    let mut got = 0;
    while got == 0 {
        match w.next().await.unwrap() {
            pgincr_protocol::WalEvent::Data { start, data, .. } => {
                assert_eq!(start, seg_start);
                got = data.len();
            }
            pgincr_protocol::WalEvent::Keepalive { .. } => {}
            pgincr_protocol::WalEvent::ServerDone => panic!("stream ended"),
        }
    }
    w.send_status(seg_start, seg_start, pgincr_types::Lsn(0), true)
        .await
        .unwrap();
    assert_eq!(w.finish().await.unwrap(), None);
    assert_eq!(
        r.show("wal_segment_size").await.unwrap(),
        "16MB",
        "session usable after streaming"
    );
    r.close().await.unwrap();

    // Password methods.
    add_password_roles(c);
    let with_pw = |user: &str, pw: &str| {
        let mut k = tcp(c, user);
        k.password = Some(pgincr_protocol::Secret::new(pw));
        k
    };
    for (user, pw) in [
        ("md5user", "md5 pw"),
        ("scramuser", "scr'am"),
        ("clearuser", "clear"),
    ] {
        let mut s = conn(&with_pw(user, pw))
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(
            s.simple_query("SELECT current_user").await.unwrap()[0].text(0, 0),
            Some(user)
        );
        let e = conn(&with_pw(user, "wrong")).await.unwrap_err();
        assert_eq!(e.code(), Some("28P01"), "{user}: {e}");
        assert!(
            !e.to_string().contains("wrong"),
            "the password must not appear in errors: {e}"
        );
    }
    // Replication connection with SCRAM, password from a 0600 pgpass file.
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pgpass");
    let mut f = std::fs::File::create(&pass).unwrap();
    writeln!(f, "127.0.0.1:{}:replication:scramuser:scr'am", c.port()).unwrap();
    drop(f);
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut k = replication_config(&tcp(c, "scramuser"), "t");
    k.passfile = Some(pass.display().to_string());
    let mut r = conn(&k).await.unwrap();
    r.identify_system().await.unwrap();
    // No password at all: a clear message, not a hang.
    let e = conn(&tcp(c, "scramuser")).await.unwrap_err();
    assert!(matches!(e, Error::Auth(_)), "{e}");
    // sslmode=require against a server without SSL is refused.
    let mut k = tcp(c, "postgres");
    k.sslmode = Some("require".into());
    let e = conn(&k).await.unwrap_err();
    assert!(matches!(e, Error::Tls(_)), "{e}");
    // prefer falls back to plain.
    k.sslmode = Some("prefer".into());
    conn(&k).await.unwrap();
}

#[tokio::test]
async fn protocol_against_17_and_18() {
    for major in Major::ALL {
        // A missing 17 (outside CI) must not skip 18's half.
        let Some(c) = Cluster::start(major) else {
            continue;
        };
        check(&c).await;
    }
}
