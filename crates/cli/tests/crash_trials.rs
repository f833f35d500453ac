//! Crash trials: `pgincr backup` and `pgincr combine` are killed with SIGKILL at random moments
//! (uniformly over the measured length of a run: connecting, transfer, fsync, rename) and at
//! every named crash point (`PGINCR_CRASH_POINT`, see `pgincr_io::crash_point`). After each
//! kill, nothing complete-looking exists under the target's name (either nothing, or the
//! finished result when the kill came after the last rename), `pg_verifybackup` accepts no
//! partial result, and the next run into the same target succeeds and names the leftovers it
//! removed. Then SIGINT and SIGTERM: both tools stop, remove everything they made and exit
//! non-zero. Finally a combine whose `-T` target lies inside `-o`.
//!
//! PostgreSQL 18 only: the staging code is the same for both majors (17 runs the same backup
//! and combine paths in backup_chain, backup_failures and real_chains), and running the trials
//! twice would double the two minutes this test is allowed. `scripts/crash-trials` runs more
//! trials (`PGINCR_CRASH_TRIALS`, default 20 per tool) on a chosen major (`PGINCR_CRASH_MAJOR`).

// Test code: a failing unwrap, expect, panic or index is a failing test. clippy.toml's
// allow-*-in-tests covers #[test] functions but not an integration test's helpers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgincr_testkit::{output, Cluster, Major};

/// Every named point; `before-sync` is reached only by backup (combine fsyncs as it writes).
const POINTS: &[&str] = &[
    "staging-created",
    "before-sync",
    "before-rename",
    "between-renames",
    "after-rename",
];

fn trials() -> usize {
    std::env::var("PGINCR_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// xorshift64*: reproducible with `PGINCR_CRASH_SEED`, printed either way.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("PGINCR_CRASH_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("crash trials: PGINCR_CRASH_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// One tool's trials: how to run it into a target, and what it writes.
struct Subject<'a> {
    what: &'static str,
    c: &'a Cluster,
    target: PathBuf,
    ts_target: PathBuf,
    /// The command; with `true`, the same with `-N` (no fsync).
    command: Box<dyn Fn(bool) -> Command + 'a>,
}

/// What the kills hit, for the summary line.
#[derive(Default, Debug)]
struct Tally {
    kills: usize,
    named: usize,
    /// Killed before a staging directory existed (or while removing the last leftover).
    before_staging: usize,
    /// Killed while writing: staging directory without `backup_manifest`.
    writing: usize,
    /// Killed with everything written but not yet in place (fsync, rename).
    complete_unrenamed: usize,
    /// A tablespace already in place and claimed, the data directory not.
    between_renames: usize,
    /// The data directory was in place: the result is complete and verifies.
    after_commit: usize,
    /// The run ended before the kill arrived.
    finished_first: usize,
}

/// Hidden `.NAME.pgincr-*` entries next to `dir`.
fn hidden(dir: &Path) -> Vec<PathBuf> {
    let parent = dir.parent().unwrap();
    let prefix = format!(".{}.pgincr-", dir.file_name().unwrap().to_string_lossy());
    let mut v: Vec<PathBuf> = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn is_empty_or_absent(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut it) => it.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

fn verifies(c: &Cluster, dir: &Path) -> bool {
    output(c.pg.tool("pg_verifybackup").arg(dir))
        .status
        .success()
}

fn remove(p: &Path) {
    if p.is_dir() {
        std::fs::remove_dir_all(p).unwrap();
    } else if p.exists() {
        std::fs::remove_file(p).unwrap();
    }
}

fn clean(s: &Subject) {
    for d in [&s.target, &s.ts_target] {
        remove(d);
        for h in hidden(d) {
            remove(&h);
        }
    }
}

/// One successful run; unless `full`, it skips fsync (`-N`) and pg_verifybackup does not
/// check its result. Returns how long the run took and its stderr.
fn succeed(s: &Subject, full: bool) -> (Duration, String) {
    let verify = full;
    let t = Instant::now();
    let o = output(&mut (s.command)(!full));
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{}: run failed: {err}", s.what);
    assert!(
        !verify || verifies(s.c, &s.target),
        "{}: result does not verify",
        s.what
    );
    (took, err)
}

/// Kills runs until `trials()` kills have landed (a run that finishes before its kill does not
/// count), at most three times as many attempts. Returns the shortest successful run seen.
fn kill_trials(s: &Subject, rng: &mut Rng, mut measured: Duration, tally: &mut Tally) -> Duration {
    let n = trials().max(POINTS.len());
    // The deterministic points first, then random moments over 110% of the shortest run seen
    // (the first run is the slowest: later ones find the server's and the kernel's caches warm).
    let points: Vec<&str> = POINTS
        .iter()
        .copied()
        .filter(|p| s.what == "backup" || *p != "before-sync")
        .collect();
    let mut k = 0;
    while tally.kills < n && k < 3 * n {
        let named = points.get(k).copied();
        k += 1;
        let t0 = Instant::now();
        let mut cmd = (s.command)(false);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        if let Some(p) = named {
            cmd.env("PGINCR_CRASH_POINT", p);
        }
        let mut child = cmd.spawn().unwrap();
        let delay = Duration::from_micros(rng.below(measured.as_micros() as u64 * 11 / 10));
        let status = match named {
            Some(_) => child.wait().unwrap(),
            None => {
                std::thread::sleep(delay);
                let _ = child.kill();
                child.wait().unwrap()
            }
        };
        let at = named.map_or_else(|| format!("{delay:?}"), |p| p.to_string());
        if status.success() {
            assert!(named.is_none(), "{}: {at}: crash point not reached", s.what);
            tally.finished_first += 1;
            assert!(verifies(s.c, &s.target));
            clean(s);
            continue;
        }
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{}: {at}: {status}",
            s.what
        );
        tally.kills += 1;
        tally.named += usize::from(named.is_some());

        // Either the finished result (killed after the last rename) or nothing at all.
        if !is_empty_or_absent(&s.target) {
            assert!(
                verifies(s.c, &s.target),
                "{}: killed at {at}: {} exists but is not a valid result",
                s.what,
                s.target.display()
            );
            tally.after_commit += 1;
            clean(s);
            continue;
        }
        let staged = hidden(&s.target);
        assert!(
            staged.len() <= 1,
            "{}: {at}: leftovers pile up: {staged:?}",
            s.what
        );
        for d in &staged {
            // A staging directory still holding its owner marker is never a valid backup
            // (with the marker gone it is the finished result a rename away).
            if d.join(pgincr_io::staging::MARKER).exists() {
                assert!(
                    !verifies(s.c, d),
                    "{}: {at}: pg_verifybackup accepts {}",
                    s.what,
                    d.display()
                );
            }
        }
        let ts_claims = hidden(&s.ts_target);
        assert!(ts_claims.len() <= 1, "{}: {at}: {ts_claims:?}", s.what);
        let ts_claimed = ts_claims
            .iter()
            .any(|p| p.to_string_lossy().contains(".pgincr-claim-"));
        assert!(
            is_empty_or_absent(&s.ts_target) || ts_claimed,
            "{}: {at}: tablespace directory filled but unclaimed",
            s.what
        );
        match staged.first() {
            None => tally.before_staging += 1,
            Some(_) if ts_claimed && !is_empty_or_absent(&s.ts_target) => {
                tally.between_renames += 1
            }
            Some(d)
                if d.join("backup_manifest").exists() || d.join("backup_manifest.tmp").exists() =>
            {
                tally.complete_unrenamed += 1
            }
            Some(_) => tally.writing += 1,
        }

        // The next run into the same target removes the leftovers, says so, and succeeds.
        let checked = t0.elapsed();
        // Reruns after a named point, and every fourth after a random kill, run exactly as the
        // killed runs did and their results are verified; the others skip fsync and
        // verification (the staging is the same with -N; this keeps the trials within their
        // budget: on a busy machine the fsyncs of a rerun dominate a trial).
        let full = named.is_some() || tally.kills.is_multiple_of(4);
        let (took, err) = succeed(s, full);
        if full {
            measured = measured.min(took);
        }
        eprintln!(
            "crash trials: {}: killed at {at} with {} leftover(s); checked after {checked:?}, rerun took {took:?}",
            s.what,
            staged.len()
        );
        for d in &staged {
            assert!(
                err.contains(&format!("removed \"{}\"", d.display())),
                "{}: {at}: the rerun did not report {}: {err}",
                s.what,
                d.display()
            );
        }
        if ts_claimed && !is_empty_or_absent(&s.ts_target) {
            assert!(err.contains(&format!("removed \"{}\"", s.ts_target.display())));
        }
        assert!(hidden(&s.target).is_empty() && hidden(&s.ts_target).is_empty());
        clean(s);
    }
    measured
}

/// SIGINT or SIGTERM at a random moment: the run stops, exits non-zero and leaves nothing.
#[allow(unsafe_code)] // kill(2) on our own child
fn signal_trials(s: &Subject, rng: &mut Rng, measured: Duration, count: usize) -> usize {
    let mut cancelled = 0;
    for k in 0..count {
        let sig = if k % 2 == 0 {
            libc::SIGINT
        } else {
            libc::SIGTERM
        };
        let child = (s.command)(false)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Not in the first 50 ms, before the handlers are installed (the default action
        // then ends the process before it has made anything, which proves nothing).
        let delay = Duration::from_millis(50)
            + Duration::from_micros(rng.below(measured.as_micros() as u64 * 8 / 10));
        std::thread::sleep(delay);
        // SAFETY: signalling our own child, which has not been waited for.
        unsafe { libc::kill(child.id() as i32, sig) };
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.success() {
            clean(s);
            continue;
        }
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}: signal {sig} after {delay:?}: {}: {err}",
            s.what,
            o.status
        );
        assert!(err.contains("cancel"), "{}: {err}", s.what);
        assert!(
            is_empty_or_absent(&s.target) && is_empty_or_absent(&s.ts_target),
            "{}: signal {sig} after {delay:?} left files",
            s.what
        );
        assert!(
            hidden(&s.target).is_empty() && hidden(&s.ts_target).is_empty(),
            "{}: signal {sig} after {delay:?} left {:?}",
            s.what,
            hidden(&s.target)
        );
        cancelled += 1;
        clean(s);
    }
    cancelled
}

fn run_trials(s: &Subject, rng: &mut Rng) {
    let (measured, _) = succeed(s, true);
    clean(s);
    let started = Instant::now();
    let mut tally = Tally::default();
    let measured = kill_trials(s, rng, measured, &mut tally);
    let cancelled = signal_trials(s, rng, measured, 4);
    eprintln!(
        "crash trials: {}: one run {measured:?}; {tally:?}; {cancelled} of 4 SIGINT/SIGTERM cancelled cleanly; {:?} in all",
        s.what,
        started.elapsed()
    );
    assert!(tally.kills >= trials().max(POINTS.len()), "{tally:?}");
    // Each signal comes within 80% of the shortest run: most land before the end.
    assert!(cancelled >= 1, "{}: no signal landed during a run", s.what);
}

fn crash_trials(major: Major) {
    let Some(c) = Cluster::start(major) else {
        return;
    };
    let mut rng = Rng::new();
    let scratch = pgincr_testkit::scratch("pgincr-crash-");
    let s = scratch.path();
    let ts = c.create_tablespace("tsc");
    c.pgbench(&["-i", "-s", "1", "-q"]);
    c.sql("CREATE TABLE t TABLESPACE tsc AS SELECT g, md5(g::text) m FROM generate_series(1, 20000) g");
    let bin = env!("CARGO_BIN_EXE_pgincr");
    let backup = |dir: &Path, ts_dir: &Path| {
        let mut cmd = c.client(bin);
        cmd.arg("backup")
            .arg("-D")
            .arg(dir)
            // WAL inside base.tar: one connection, no slot, so each run (and each trial) is
            // shorter; the staging is the same as with -X stream.
            .args(["-c", "fast", "-X", "fetch"])
            .arg("-T")
            .arg(format!("{}={}", ts.display(), ts_dir.display()));
        cmd
    };

    let b = Subject {
        what: "backup",
        c: &c,
        target: s.join("bt"),
        ts_target: s.join("bt-ts"),
        command: Box::new(|no_sync| {
            let mut cmd = backup(&s.join("bt"), &s.join("bt-ts"));
            if no_sync {
                cmd.arg("-N");
            }
            cmd
        }),
    };
    run_trials(&b, &mut rng);

    // A chain to combine: a full backup and an incremental on top.
    let (full, inc) = (s.join("full"), s.join("inc"));
    c.run(&mut backup(&full, &s.join("ts-full")));
    c.pgbench(&["-t", "200"]);
    c.sql("UPDATE t SET m = md5(m) WHERE g % 10 = 0");
    c.summarize();
    let mut cmd = backup(&inc, &s.join("ts-inc"));
    cmd.arg("-i").arg(full.join("backup_manifest"));
    c.run(&mut cmd);
    let combine = |out: &Path, ts_out: &Path| {
        let mut cmd = Command::new(bin);
        cmd.args(["combine", "-o"])
            .arg(out)
            .arg("-T")
            .arg(format!(
                "{}={}",
                s.join("ts-inc").display(),
                ts_out.display()
            ))
            .arg(&full)
            .arg(&inc);
        cmd
    };
    let cb = Subject {
        what: "combine",
        c: &c,
        target: s.join("ct"),
        ts_target: s.join("ct-ts"),
        command: Box::new(|no_sync| {
            let mut cmd = combine(&s.join("ct"), &s.join("ct-ts"));
            if no_sync {
                cmd.arg("-N");
            }
            cmd
        }),
    };
    run_trials(&cb, &mut rng);

    // -T into -o: the tablespace is built inside the output's staging directory, so the
    // output appears whole, with the tablespace inside...
    let nest = s.join("nest");
    c.run(&mut combine(&nest, &nest.join("ts")));
    // The tablespace's files are then in the directory but (rightly) not in the manifest.
    let o = output(c.pg.tool("pg_verifybackup").args(["-i", "ts"]).arg(&nest));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(nest.join("ts").read_dir().unwrap().next().is_some());
    std::fs::remove_dir_all(&nest).unwrap();
    // ...and a failure leaves nothing, neither the output nor its tablespace.
    let bad = s.join("inc-bad");
    pgincr_testkit::run(Command::new("cp").arg("-a").arg(&inc).arg(&bad));
    // Listed in the manifest, checked only once the output directories are staged.
    std::fs::remove_file(bad.join("pg_hba.conf")).unwrap();
    let o = output(
        Command::new(bin)
            .args(["combine", "-o"])
            .arg(&nest)
            .arg("-T")
            .arg(format!(
                "{}={}",
                s.join("ts-inc").display(),
                nest.join("ts").display()
            ))
            .arg(&full)
            .arg(&bad),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(!nest.exists(), "a failed combine left {}", nest.display());
    assert!(hidden(&nest).is_empty());
}

#[test]
fn crash_trials_18() {
    let major = match std::env::var("PGINCR_CRASH_MAJOR").as_deref() {
        Ok("17") => Major::V17,
        _ => Major::V18,
    };
    crash_trials(major);
}
