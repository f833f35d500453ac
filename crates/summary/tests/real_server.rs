//! Against real PostgreSQL 17 and 18: every summary a varied workload produces must round-trip
//! byte for byte, render exactly as `pg_walsummary` renders it, agree with
//! `pg_wal_summary_contents()`, and the incremental-backup estimate must make the server's
//! decision for every relation file of a real `pg_basebackup --incremental`.

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use pgincr_summary::estimate::{self, EstimateParams, Method};
use pgincr_summary::{
    directory, list_summaries, text, BlockRefKey, BlockRefTable, SummaryFile, SummaryFileInfo,
};
use pgincr_testkit::{Cluster, Major};
use pgincr_types::{BackupLabel, ControlFile};

#[test]
fn pg17() {
    check(Major::V17);
}

#[test]
fn pg18() {
    check(Major::V18);
}

fn check(major: Major) {
    let Some(c) = Cluster::start(major) else {
        return;
    };
    c.sql("ALTER SYSTEM SET autovacuum = off");
    c.sql("SELECT pg_reload_conf()");
    let scratch = pgincr_testkit::scratch("pgincr-summary-it-");
    let full = scratch.path().join("full");
    c.run(
        c.tool("pg_basebackup")
            .arg("-D")
            .arg(&full)
            .args(["-c", "fast"]),
    );

    workload(&c);
    c.summarize();

    let files = list_summaries(&c.summaries_dir()).unwrap();
    assert!(
        files.len() >= 3,
        "expected several summaries, got {files:?}"
    );
    let mut saw_limit = false;
    let mut saw_bitmap = false;
    let mut saw_empty = false;
    for f in &files {
        let bytes = std::fs::read(&f.path).unwrap();
        let parsed = SummaryFile::parse(&bytes, &f.path.display().to_string()).unwrap();
        assert_eq!(
            parsed.to_bytes(),
            bytes,
            "round trip of {}",
            f.path.display()
        );
        // The file is what the server would write for the table it describes.
        let table = parsed.to_table();
        assert!(
            table.same_contents(&parsed.to_table().to_summary_file().to_table()),
            "{}",
            f.path.display()
        );
        saw_empty |= parsed.entries.is_empty();
        for (_, e) in &parsed.entries {
            saw_limit |= e.limit_block() != u32::MAX;
            saw_bitmap |= e
                .chunks()
                .iter()
                .any(|ch| matches!(ch, pgincr_summary::Chunk::Bitmap(_)));
        }
        for individual in [false, true] {
            let mut ours = String::new();
            for (k, e) in &parsed.entries {
                ours.push_str(&text::entry_text(k, e, individual));
            }
            let mut cmd = c.pg.tool("pg_walsummary");
            if individual {
                cmd.arg("-i");
            }
            let theirs = pgincr_testkit::run(cmd.arg(&f.path));
            assert_eq!(ours, theirs, "-i={individual} on {}", f.path.display());
        }
        compare_with_sql(&c, f, &parsed);
    }
    assert!(
        saw_limit && saw_bitmap,
        "limit {saw_limit} bitmap {saw_bitmap}"
    );
    eprintln!(
        "{major}: {} summaries round-tripped and matched pg_walsummary (empty one seen: {saw_empty})",
        files.len()
    );

    // The union over the whole range equals an independent merge of the SQL view, in LSN order.
    let tli = files[0].tli;
    let last = files
        .iter()
        .filter(|f| f.tli == tli)
        .map(|f| f.end)
        .max()
        .unwrap();
    let (used, union) =
        pgincr_summary::modified_blocks(&c.summaries_dir(), tli, files[0].start, last).unwrap();
    assert_eq!(used.len(), files.len());
    assert_eq!(flatten(&union), sql_union(&c, &files));

    check_estimate(&c, &full, &scratch.path().join("incr"));
}

fn workload(c: &Cluster) {
    c.pgbench(&["-i", "-s", "1", "-q"]);
    c.summarize();
    c.pgbench(&["-t", "100", "-c", "2", "-n"]);
    // More than 4095 blocks of one chunk in one summary: a bitmap chunk.
    c.sql("CREATE TABLE wide (a int) WITH (fillfactor = 10)");
    c.sql("INSERT INTO wide SELECT g FROM generate_series(1, 92000) g");
    c.sql("CREATE TABLE shrink AS SELECT g AS a, repeat('x', 200) AS b FROM generate_series(1, 4000) g");
    c.sql("VACUUM shrink");
    c.summarize();
    c.sql("DELETE FROM shrink WHERE a > 500");
    c.sql("VACUUM shrink"); // truncates main (and vm): limit blocks
    c.sql("TRUNCATE pgbench_history");
    c.sql("CREATE TABLE gone AS SELECT g FROM generate_series(1, 1000) g");
    c.sql("DROP TABLE gone");
    c.sql("CREATE DATABASE d2");
    c.sql_db(
        "d2",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );
    c.sql("DROP DATABASE d2");
    c.sql("CREATE DATABASE d3 STRATEGY FILE_COPY");
    c.sql_db(
        "d3",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    );
    c.pgbench(&["-t", "50", "-c", "1", "-n"]);
    c.sql("UPDATE shrink SET b = 'y' WHERE a < 20");
}

/// Every fork line of one file: `(spc, db, rel, fork, block, is_limit)` as the SQL view has it.
type Row = (u32, u32, u32, i32, u64, bool);

fn compare_with_sql(c: &Cluster, f: &SummaryFileInfo, parsed: &SummaryFile) {
    let mut ours = BTreeSet::new();
    for (k, e) in &parsed.entries {
        let (s, d, r, fk) = key_parts(k);
        if e.limit_block() != u32::MAX {
            ours.insert((s, d, r, fk, u64::from(e.limit_block()), true));
        }
        e.for_each_block(|b| {
            ours.insert((s, d, r, fk, u64::from(b), false));
        });
    }
    let rows = c.sql(&format!(
        "SELECT reltablespace, reldatabase, relfilenode, relforknumber, relblocknumber, is_limit_block \
         FROM pg_wal_summary_contents({}, '{}', '{}')",
        f.tli, f.start, f.end
    ));
    let theirs: BTreeSet<Row> = rows.lines().map(parse_row).collect();
    assert_eq!(
        ours,
        theirs,
        "pg_wal_summary_contents for {}",
        f.path.display()
    );
}

fn key_parts(k: &BlockRefKey) -> ForkId {
    (
        k.rlocator.spc_oid,
        k.rlocator.db_oid,
        k.rlocator.rel_number,
        k.fork as i32,
    )
}

fn parse_row(line: &str) -> Row {
    let p: Vec<&str> = line.split('|').collect();
    (
        p[0].parse().unwrap(),
        p[1].parse().unwrap(),
        p[2].parse().unwrap(),
        p[3].parse().unwrap(),
        p[4].parse().unwrap(),
        p[5] == "t",
    )
}

type ForkId = (u32, u32, u32, i32);
/// Per fork: (limit, sorted blocks).
type Flat = BTreeMap<ForkId, (u32, Vec<u32>)>;

fn flatten(t: &BlockRefTable) -> Flat {
    t.iter()
        .map(|(k, e)| (key_parts(k), (e.limit_block(), e.sorted_blocks())))
        .collect()
}

/// Section 5.4 merge written independently over the SQL rows: min limit, blocks at or above a
/// lowered limit dropped, later blocks kept.
fn sql_union(c: &Cluster, files: &[SummaryFileInfo]) -> Flat {
    let mut sorted: Vec<&SummaryFileInfo> = files.iter().collect();
    sorted.sort_by_key(|f| f.start);
    let mut out: BTreeMap<ForkId, (u32, BTreeSet<u32>)> = BTreeMap::new();
    for f in sorted {
        let rows = c.sql(&format!(
            "SELECT reltablespace, reldatabase, relfilenode, relforknumber, relblocknumber, is_limit_block \
             FROM pg_wal_summary_contents({}, '{}', '{}') ORDER BY is_limit_block DESC",
            f.tli, f.start, f.end
        ));
        let rows: Vec<Row> = rows.lines().map(parse_row).collect();
        let mut keys_in_file = BTreeSet::new();
        for r in &rows {
            keys_in_file.insert((r.0, r.1, r.2, r.3));
        }
        for k in keys_in_file {
            let limit = rows
                .iter()
                .find(|r| (r.0, r.1, r.2, r.3) == k && r.5)
                .map_or(u32::MAX, |r| r.4 as u32);
            let e = out.entry(k).or_insert((limit, BTreeSet::new()));
            if limit < e.0 {
                e.0 = limit;
                e.1.retain(|&b| b < limit);
            }
            for r in rows.iter().filter(|r| (r.0, r.1, r.2, r.3) == k && !r.5) {
                e.1.insert(r.4 as u32);
            }
        }
    }
    out.into_iter()
        .map(|(k, (l, b))| (k, (l, b.into_iter().collect())))
        .collect()
}

/// Takes a real incremental backup and checks that the estimate decided every relation file
/// the way the server did, with the same size.
fn check_estimate(c: &Cluster, full: &Path, incr: &Path) {
    let manifest = full.join("backup_manifest");
    c.run(
        c.tool("pg_basebackup")
            .arg("-D")
            .arg(incr)
            .args(["-c", "fast", "--incremental"])
            .arg(&manifest),
    );
    let prior = BackupLabel::parse(&std::fs::read(full.join("backup_label")).unwrap()).unwrap();
    let this = BackupLabel::parse(&std::fs::read(incr.join("backup_label")).unwrap()).unwrap();
    let all = list_summaries(&c.summaries_dir()).unwrap();
    let used = directory::select_for_range(
        &c.summaries_dir(),
        &all,
        prior.start_tli,
        prior.start_lsn,
        this.start_lsn,
    )
    .unwrap();
    let table = pgincr_summary::merge_files(&used).unwrap();
    let control = ControlFile::read(&c.data_dir().join("global/pg_control")).unwrap();
    let params =
        EstimateParams::for_cluster(&control, Some(estimate::manifest_paths(&manifest).unwrap()));
    let est = estimate::estimate(c.data_dir(), &table, &params).unwrap();
    assert!(est.incremental_files > 100 && est.full_files > 0, "{est:?}");
    let mut mismatches = Vec::new();
    for f in &est.files {
        let (dir, name) = f.path.rsplit_once('/').unwrap();
        let (expect, size) = match f.method {
            Method::Full => (format!("{dir}/{name}"), f.size),
            Method::Incremental { .. } => (format!("{dir}/INCREMENTAL.{name}"), f.backup_bytes),
        };
        match std::fs::metadata(incr.join(&expect)) {
            Ok(m) if m.len() == size => {}
            Ok(m) => mismatches.push(format!(
                "{expect}: size {} in backup, {size} estimated",
                m.len()
            )),
            Err(_) => mismatches.push(format!("{expect} ({:?}) is not in the backup", f.method)),
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    eprintln!(
        "{}: estimate matched {} relation files ({} incremental, {} full)",
        c.major(),
        est.files.len(),
        est.incremental_files,
        est.full_files
    );
}
