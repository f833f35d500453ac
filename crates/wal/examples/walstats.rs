//! `walstats DIR START [END]`: reads WAL like `pg_waldump --stats` and prints per resource
//! manager record counts and sizes. Used by `benches/wal.sh`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use pgincr_types::{Lsn, TimeLineId};
use pgincr_wal::{DirectorySource, ReaderOptions, WalReader};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(start)) = (args.first(), args.get(1)) else {
        eprintln!("usage: walstats DIR START [END]");
        return ExitCode::from(2);
    };
    let parse = |s: &str| s.parse::<Lsn>().map_err(|e| e.to_string());
    let mut opts = match parse(start) {
        Ok(l) => ReaderOptions::new(TimeLineId(1), l),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(end) = args.get(2) {
        match parse(end) {
            Ok(l) => opts.end = Some(l),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
    }
    let mut reader = match WalReader::new(DirectorySource::new(dir), opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("walstats: {e}");
            return ExitCode::from(1);
        }
    };
    // rmgr -> (records, record bytes, fpi bytes, blocks)
    let mut stats: BTreeMap<u8, (u64, u64, u64, u64)> = BTreeMap::new();
    loop {
        match reader.next_record() {
            Ok(Some(r)) => {
                let e = stats.entry(r.rmid).or_default();
                e.0 += 1;
                e.1 += u64::from(r.rec_len());
                e.2 += u64::from(r.fpi_len());
                e.3 += r.blocks.len() as u64;
            }
            Ok(None) => break,
            Err(e) => {
                eprintln!("walstats: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let total: (u64, u64, u64) = stats
        .values()
        .fold((0, 0, 0), |a, v| (a.0 + v.0, a.1 + v.1, a.2 + v.2));
    println!(
        "{:<20} {:>10} {:>14} {:>14} {:>10}",
        "Type", "N", "Record size", "FPI size", "Blocks"
    );
    for (rmid, (n, rec, fpi, blocks)) in &stats {
        println!(
            "{:<20} {:>10} {:>14} {:>14} {:>10}",
            pgincr_wal::rmgr::name(*rmid),
            n,
            rec,
            fpi,
            blocks
        );
    }
    println!(
        "{:<20} {:>10} {:>14} {:>14}",
        "Total", total.0, total.1, total.2
    );
    ExitCode::SUCCESS
}
