//! Against real PostgreSQL 17 and 18: the reader walks the WAL of pgbench, DDL, a restore
//! point, a base backup, a segment switch and a checkpoint exactly as `pg_waldump` does (same
//! records, LSNs, prev links, resource managers, lengths, xids, block references and the
//! decoded fields its `desc` shows), and corrupt copies fail naming segment and offset.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::time::Instant;

use pgincr_testkit::{Cluster, Major};
use pgincr_types::{Lsn, TimeLineId};
use pgincr_wal::decode::{format_timestamptz, wal_level_name};
use pgincr_wal::{
    DirectorySource, ReaderOptions, Record, RecordBody, WalErrorKind, WalMagic, WalReader,
};

#[test]
fn pg17() {
    check(Major::V17);
}

#[test]
fn pg18() {
    check(Major::V18);
}

struct Dumped {
    rmgr: String,
    rec_len: u32,
    tot_len: u32,
    xid: u32,
    lsn: Lsn,
    prev: Lsn,
    desc: String,
    line: String,
}

fn field<'a>(line: &'a str, key: &str, until: &str) -> &'a str {
    let at = line
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in {line}"))
        + key.len();
    let rest = &line[at..];
    rest[..rest.find(until).unwrap_or(rest.len())].trim()
}

fn parse_dump(out: &str) -> Vec<Dumped> {
    out.lines()
        .filter(|l| l.starts_with("rmgr: "))
        .map(|l| {
            let lens = field(l, "len (rec/tot):", ",");
            let (rec, tot) = lens.split_once('/').unwrap();
            Dumped {
                rmgr: field(l, "rmgr: ", " len").to_string(),
                rec_len: rec.trim().parse().unwrap(),
                tot_len: tot.trim().parse().unwrap(),
                xid: field(l, "tx:", ",").parse().unwrap(),
                lsn: field(l, "lsn: ", ",").parse().unwrap(),
                prev: field(l, "prev ", ",").parse().unwrap(),
                desc: l[l.find("desc: ").unwrap() + 6..].to_string(),
                line: l.to_string(),
            }
        })
        .collect()
}

/// The block-reference suffix pg_waldump appends to `desc` (`XLogRecGetBlockRefInfo`, pretty).
fn blkrefs(r: &Record) -> String {
    let mut s = String::new();
    for b in &r.blocks {
        let l = &b.locator;
        s.push_str(&format!(
            ", blkref #{}: rel {}/{}/{}",
            b.id, l.spc_oid, l.db_oid, l.rel_number
        ));
        if b.fork != 0 {
            s.push_str(&format!(" fork {}", b.fork_number().unwrap().name()));
        }
        s.push_str(&format!(" blk {}", b.block));
        if let Some(img) = &b.image {
            s.push_str(if img.apply() {
                " FPW"
            } else {
                " FPW for WAL verification"
            });
        }
    }
    s
}

/// The `-b` lines (`XLogRecGetBlockRefInfo`, detailed).
fn block_details(r: &Record) -> Vec<String> {
    r.blocks
        .iter()
        .map(|b| {
            let l = &b.locator;
            let mut s = format!(
                "blkref #{}: rel {}/{}/{} fork {} blk {}",
                b.id,
                l.spc_oid,
                l.db_oid,
                l.rel_number,
                b.fork_number().unwrap().name(),
                b.block
            );
            if let Some(img) = &b.image {
                let fpw = if img.apply() {
                    ""
                } else {
                    " for WAL verification"
                };
                s.push_str(&format!(
                    " (FPW{fpw}); hole: offset: {}, length: {}",
                    img.hole_offset, img.hole_length
                ));
                if img.is_compressed() {
                    let saved = 8192 - u32::from(img.len) - u32::from(img.hole_length);
                    let method = match img.info & 0x1C {
                        0x04 => "pglz",
                        0x08 => "lz4",
                        0x10 => "zstd",
                        _ => "unknown",
                    };
                    s.push_str(&format!(", compression saved: {saved}, method: {method}"));
                }
            }
            s
        })
        .collect()
}

fn read(
    dir: &Path,
    start: Lsn,
    end: Lsn,
    magic: Option<WalMagic>,
) -> Result<Vec<Record>, pgincr_wal::WalError> {
    let mut o = ReaderOptions::new(TimeLineId(1), start);
    o.end = Some(end);
    o.magic = magic;
    WalReader::new(DirectorySource::new(dir), o)?.collect()
}

fn check(major: Major) {
    let Some(mut c) = Cluster::start(major) else {
        return;
    };
    let t0 = Instant::now();
    c.sql("ALTER SYSTEM SET autovacuum = off");
    // Keep every segment from the start: the checkpoint would recycle them.
    c.sql("ALTER SYSTEM SET wal_keep_size = '1GB'");
    c.sql("SELECT pg_reload_conf()");
    let start: Lsn = c.current_lsn().parse().unwrap();
    c.pgbench(&["-i", "-s", "1", "-q"]);
    c.pgbench(&["-n", "-c", "2", "-t", "150"]);
    // Compressed full-page images (the image header's extra hole length) after a checkpoint.
    c.sql("ALTER SYSTEM SET wal_compression = 'pglz'");
    c.sql("SELECT pg_reload_conf()");
    c.checkpoint();
    c.pgbench(&["-n", "-c", "2", "-t", "50"]);
    c.sql("ALTER SYSTEM SET wal_compression = 'off'");
    c.sql("SELECT pg_reload_conf()");
    c.sql("CREATE TABLE ddl_t (a int primary key, b text)");
    c.sql("INSERT INTO ddl_t SELECT g, repeat('x', g % 50) FROM generate_series(1, 2000) g");
    c.sql("CREATE INDEX ON ddl_t (b)");
    c.sql("BEGIN; INSERT INTO ddl_t VALUES (-1, 'gone'); ROLLBACK");
    c.sql("ALTER TABLE ddl_t ADD COLUMN c int DEFAULT 7");
    c.sql("DROP TABLE pgbench_history");
    c.sql("SELECT pg_create_restore_point('pgincr_rp')");
    let scratch = pgincr_testkit::scratch("pgincr-wal-it-");
    c.run(
        c.tool("pg_basebackup")
            .arg("-D")
            .arg(scratch.path().join("base"))
            .args(["-c", "fast", "-X", "none", "-F", "t"]),
    );
    c.switch_wal();
    c.checkpoint();
    c.sql("INSERT INTO ddl_t VALUES (-2, 'after')");
    c.sql("SELECT pg_switch_wal()");
    let end: Lsn = c.sql("SELECT pg_current_wal_flush_lsn()").parse().unwrap();

    let copy = scratch.path().join("pg_wal");
    pgincr_testkit::run(
        std::process::Command::new("cp")
            .arg("-r")
            .arg(c.data_dir().join("pg_wal"))
            .arg(&copy),
    );

    let dump = c.run(
        c.pg.tool("pg_waldump")
            .arg(format!("--path={}", copy.display()))
            .arg(format!("--start={start}"))
            .arg(format!("--end={end}"))
            .arg("--timeline=1"),
    );
    let want = parse_dump(&dump);
    // pg_waldump -b: one detail line per block reference, with image holes and compression.
    let detailed = c.run(
        c.pg.tool("pg_waldump")
            .arg(format!("--path={}", copy.display()))
            .arg(format!("--start={start}"))
            .arg(format!("--end={end}"))
            .args(["--timeline=1", "-b"]),
    );
    let mut details: Vec<Vec<String>> = Vec::new();
    // (one entry per record, in order)
    for l in detailed.lines() {
        if l.starts_with("rmgr: ") {
            details.push(Vec::new());
        } else if let Some(b) = l.strip_prefix("\tblkref #") {
            details.last_mut().unwrap().push(format!("blkref #{b}"));
        }
    }
    let expected_magic = WalMagic::for_major(major.number()).unwrap();
    let got = read(&copy, start, end, None).unwrap();
    // The page magic is the one of this major (checked on the first segment's bytes too).
    let first_seg = std::fs::read(copy.join(pgincr_wal::segment_name::segment_file_name_for(
        TimeLineId(1),
        start,
        16 << 20,
    )))
    .unwrap();
    assert_eq!(
        u16::from_le_bytes([first_seg[0], first_seg[1]]),
        expected_magic.value()
    );
    assert!(got.iter().all(|r| r.magic == expected_magic));

    assert_eq!(got.len(), want.len(), "record count for {major}");
    assert_eq!(details.len(), want.len());
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for (i, (r, w)) in got.iter().zip(&want).enumerate() {
        let ctx = &w.line;
        assert_eq!(r.lsn, w.lsn, "{ctx}");
        assert_eq!(r.prev, w.prev, "{ctx}");
        assert_eq!(r.rmgr_name(), w.rmgr, "{ctx}");
        assert_eq!((r.rec_len(), r.total_len), (w.rec_len, w.tot_len), "{ctx}");
        assert_eq!(r.xid, w.xid, "{ctx}");
        let refs = blkrefs(r);
        if !refs.is_empty() {
            assert!(w.desc.ends_with(&refs), "block refs {refs:?} vs {ctx}");
        } else {
            assert!(!w.desc.contains(", blkref #"), "{ctx}");
        }
        assert_eq!(block_details(r), details[i], "{ctx}");
        let body = r.decode().unwrap_or_else(|e| panic!("{e}: {ctx}"));
        let kind = match &body {
            RecordBody::CheckpointOnline(cp) | RecordBody::CheckpointShutdown(cp) => {
                let online = matches!(body, RecordBody::CheckpointOnline(_));
                let text = format!(
                    "{} redo {}; tli {}; prev tli {}; fpw {}; wal_level {}; xid {}:{}; oid {}; multi {}; offset {}; oldest xid {} in DB {}; oldest multi {} in DB {}; oldest/newest commit timestamp xid: {}/{}; oldest running xid {}; {}",
                    if online { "CHECKPOINT_ONLINE" } else { "CHECKPOINT_SHUTDOWN" },
                    cp.redo, cp.tli, cp.prev_tli, cp.full_page_writes, wal_level_name(cp.wal_level),
                    cp.next_xid >> 32, cp.next_xid as u32, cp.next_oid, cp.next_multi, cp.next_multi_offset,
                    cp.oldest_xid, cp.oldest_xid_db, cp.oldest_multi, cp.oldest_multi_db,
                    cp.oldest_commit_ts_xid, cp.newest_commit_ts_xid, cp.oldest_active_xid,
                    if online { "online" } else { "shutdown" }
                );
                assert_eq!(w.desc, text, "{ctx}");
                "checkpoint"
            }
            RecordBody::CheckpointRedo { wal_level } => {
                assert_eq!(
                    w.desc,
                    format!("CHECKPOINT_REDO wal_level {}", wal_level_name(*wal_level)),
                    "{ctx}"
                );
                "checkpoint_redo"
            }
            RecordBody::Switch => {
                assert_eq!(w.desc.trim(), "SWITCH", "{ctx}");
                "switch"
            }
            RecordBody::BackupEnd { start } => {
                assert_eq!(w.desc, format!("BACKUP_END {start}"), "{ctx}");
                "backup_end"
            }
            RecordBody::RestorePoint { name, .. } => {
                assert_eq!(name, "pgincr_rp");
                assert_eq!(w.desc, format!("RESTORE_POINT {name}"), "{ctx}");
                "restore_point"
            }
            RecordBody::Xact(x) => {
                let word = match x.kind {
                    pgincr_wal::XactKind::Commit => "COMMIT",
                    pgincr_wal::XactKind::Abort => "ABORT",
                    pgincr_wal::XactKind::CommitPrepared => "COMMIT_PREPARED",
                    pgincr_wal::XactKind::AbortPrepared => "ABORT_PREPARED",
                };
                let prefix = format!("{word} {}", format_timestamptz(x.time));
                assert!(w.desc.starts_with(&prefix), "{prefix:?} vs {ctx}");
                if word == "COMMIT" {
                    "commit"
                } else {
                    "abort"
                }
            }
            RecordBody::ParameterChange { wal_level, .. } => {
                assert!(
                    w.desc
                        .contains(&format!("wal_level={}", wal_level_name(*wal_level))),
                    "{ctx}"
                );
                "parameter_change"
            }
            _ => "other",
        };
        *seen.entry(kind).or_default() += 1;
    }
    for k in [
        "checkpoint",
        "checkpoint_redo",
        "switch",
        "backup_end",
        "restore_point",
        "commit",
        "abort",
    ] {
        assert!(seen.contains_key(k), "no {k} record among {seen:?}");
    }
    let fpw = got
        .iter()
        .filter(|r| r.blocks.iter().any(|b| b.has_image()))
        .count();
    let compressed = got
        .iter()
        .flat_map(|r| &r.blocks)
        .filter(|b| b.image.as_ref().is_some_and(|i| i.is_compressed()))
        .count();
    assert!(compressed > 0, "no compressed full-page image");
    let segments: std::collections::BTreeSet<u64> =
        got.iter().map(|r| r.lsn.segment(16 << 20)).collect();
    assert!(segments.len() >= 2, "{segments:?}");
    eprintln!(
        "{major}: {} records agree with pg_waldump ({} with full-page images, {} compressed, {} segments): {seen:?}",
        got.len(),
        fpw,
        compressed,
        segments.len()
    );

    corrupt(&copy, start, end, &got, expected_magic);
    end_of_wal(&mut c, start);
    eprintln!("{major}: done in {:.1}s", t0.elapsed().as_secs_f64());
}

/// Damages the copy three ways; each read must fail naming the segment and offset.
fn corrupt(dir: &Path, start: Lsn, end: Lsn, recs: &[Record], magic: WalMagic) {
    let seg = 16u64 << 20;
    let name = |lsn: Lsn| pgincr_wal::segment_name::segment_file_name_for(TimeLineId(1), lsn, seg);
    // A record in the middle that lies within one page.
    let victim = recs
        .iter()
        .skip(recs.len() / 2)
        .find(|r| r.total_len > 64 && r.lsn.0 % 8192 + u64::from(r.total_len) < 8192)
        .unwrap();
    let file = dir.join(name(victim.lsn));
    let orig = std::fs::read(&file).unwrap();

    // 1. A flipped byte inside the record.
    let mut bad = orig.clone();
    let at = victim.lsn.segment_offset(seg) as usize + 40;
    bad[at] ^= 0x5A;
    std::fs::write(&file, &bad).unwrap();
    let e = read(dir, start, end, Some(magic)).unwrap_err();
    eprintln!("flipped byte: {e}");
    assert_eq!(e.segment, name(victim.lsn));
    assert_eq!(e.lsn, victim.lsn, "{e}");
    assert_eq!(e.offset, victim.lsn.segment_offset(seg));
    assert!(
        matches!(
            e.kind,
            WalErrorKind::BadCrc { .. } | WalErrorKind::BadBody { .. }
        ),
        "{e}"
    );

    // 2. The segment truncated at the victim's page plus 100 bytes.
    let page_off = victim.lsn.segment_offset(seg) / 8192 * 8192;
    std::fs::write(&file, &orig[..page_off as usize + 100]).unwrap();
    let e = read(dir, start, end, Some(magic)).unwrap_err();
    eprintln!("truncated segment: {e}");
    assert_eq!(e.segment, name(victim.lsn));
    assert_eq!(e.offset, page_off);
    assert!(
        matches!(e.kind, WalErrorKind::Truncated { got: 100, .. }),
        "{e}"
    );

    // 3. The victim's page zeroed.
    let mut z = orig.clone();
    z[page_off as usize..page_off as usize + 8192].fill(0);
    std::fs::write(&file, &z).unwrap();
    let e = read(dir, start, end, Some(magic)).unwrap_err();
    eprintln!("zeroed page: {e}");
    assert_eq!(e.segment, name(victim.lsn));
    assert_eq!(e.offset, page_off);
    assert!(matches!(e.kind, WalErrorKind::EndNotReached { .. }), "{e}");

    // Without an end LSN, the zeroed page is where WAL ends, not an error.
    let mut o = ReaderOptions::new(TimeLineId(1), start);
    o.segment_size = Some(seg);
    let mut r = WalReader::new(DirectorySource::new(dir), o).unwrap();
    let mut n = 0;
    while r.next_record().unwrap().is_some() {
        n += 1;
    }
    let eow = r.end_of_wal().unwrap();
    assert!(
        eow.lsn.0 <= victim.lsn.0 - victim.lsn.0 % 8192 + 8192 && n > 0,
        "{eow:?}"
    );
    std::fs::write(&file, &orig).unwrap();
    assert_eq!(
        read(dir, start, end, Some(magic)).unwrap().len(),
        recs.len()
    );
}

/// After a clean shutdown, read the live pg_wal to its end without an end LSN: the same records
/// as `pg_waldump` without `--end`, ending with the shutdown checkpoint, and WAL ends where
/// xlogreader says it does (pg_waldump's final "invalid record length ... got 0").
fn end_of_wal(c: &mut Cluster, from: Lsn) {
    c.stop();
    let wal = c.data_dir().join("pg_wal");
    let out = pgincr_testkit::output(
        c.pg.tool("pg_waldump")
            .arg(format!("--path={}", wal.display()))
            .arg(format!("--start={from}"))
            .arg("--timeline=1"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = parse_dump(&stdout);
    // "pg_waldump: error: error in WAL record at X/Y: invalid record length at A/B: expected at least 24, got 0"
    let at: Lsn = field(&stderr, "invalid record length at ", ":")
        .parse()
        .unwrap();
    assert!(stderr.contains("expected at least 24, got 0"), "{stderr}");

    let mut o = ReaderOptions::new(TimeLineId(1), from);
    o.segment_size = None;
    let mut r = WalReader::new(DirectorySource::new(&wal), o).unwrap();
    let mut got = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        got.push(rec);
    }
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            (g.lsn, g.prev, g.total_len),
            (w.lsn, w.prev, w.tot_len),
            "{}",
            w.line
        );
    }
    let last = got.last().unwrap();
    let RecordBody::CheckpointShutdown(cp) = last.decode().unwrap() else {
        panic!(
            "last record is not a shutdown checkpoint: {}",
            want.last().unwrap().line
        )
    };
    assert_eq!(cp.redo, last.lsn);
    let eow = r.end_of_wal().unwrap();
    assert_eq!(eow.lsn, at);
    assert!(
        matches!(
            eow.reason.as_ref().unwrap().kind,
            WalErrorKind::ZeroedRecord
        ),
        "{eow:?}"
    );
    eprintln!(
        "end of WAL at {at} after {} records, as pg_waldump says; last: {}",
        got.len(),
        want.last().unwrap().line
    );
}
