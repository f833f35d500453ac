//! Main data of the records backup and recovery need: `XLOG` checkpoints, switches, backup
//! ends, restore points, end of recovery, parameter changes, and transaction commit/abort
//! (`pg_control.h`, `xlog_internal.h`, `xact.h`; parsed as `xlogdesc.c`/`xactdesc.c` do).

use crate::page::WalMagic;
use crate::record::Record;
use crate::rmgr::{RM_XACT_ID, RM_XLOG_ID};
use crate::{le_u32, le_u64};
use pgincr_types::{Lsn, RelFileLocator, TimeLineId};

pub const XLOG_CHECKPOINT_SHUTDOWN: u8 = 0x00;
pub const XLOG_CHECKPOINT_ONLINE: u8 = 0x10;
pub const XLOG_NOOP: u8 = 0x20;
pub const XLOG_NEXTOID: u8 = 0x30;
pub const XLOG_SWITCH: u8 = 0x40;
pub const XLOG_BACKUP_END: u8 = 0x50;
pub const XLOG_PARAMETER_CHANGE: u8 = 0x60;
pub const XLOG_RESTORE_POINT: u8 = 0x70;
pub const XLOG_FPW_CHANGE: u8 = 0x80;
pub const XLOG_END_OF_RECOVERY: u8 = 0x90;
pub const XLOG_FPI_FOR_HINT: u8 = 0xA0;
pub const XLOG_FPI: u8 = 0xB0;
pub const XLOG_OVERWRITE_CONTRECORD: u8 = 0xD0;
pub const XLOG_CHECKPOINT_REDO: u8 = 0xE0;

pub const XLOG_XACT_COMMIT: u8 = 0x00;
pub const XLOG_XACT_PREPARE: u8 = 0x10;
pub const XLOG_XACT_ABORT: u8 = 0x20;
pub const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
pub const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
pub const XLOG_XACT_ASSIGNMENT: u8 = 0x50;
pub const XLOG_XACT_INVALIDATIONS: u8 = 0x60;
pub const XLOG_XACT_OPMASK: u8 = 0x70;
pub const XLOG_XACT_HAS_INFO: u8 = 0x80;

pub const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
pub const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
pub const XACT_XINFO_HAS_RELFILELOCATORS: u32 = 1 << 2;
pub const XACT_XINFO_HAS_INVALS: u32 = 1 << 3;
pub const XACT_XINFO_HAS_TWOPHASE: u32 = 1 << 4;
pub const XACT_XINFO_HAS_ORIGIN: u32 = 1 << 5;
pub const XACT_XINFO_HAS_AE_LOCKS: u32 = 1 << 6;
pub const XACT_XINFO_HAS_GID: u32 = 1 << 7;
pub const XACT_XINFO_HAS_DROPPED_STATS: u32 = 1 << 8;

/// Microseconds from the Unix epoch to 2000-01-01 (PostgreSQL's `TimestampTz` epoch).
pub const POSTGRES_EPOCH_UNIX_USECS: i64 = 946_684_800_000_000;

/// Main data that does not fit its record kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record at {lsn} ({rmgr} info {info:02X}): {what}")]
pub struct DecodeError {
    pub lsn: Lsn,
    pub rmgr: String,
    pub info: u8,
    pub what: String,
}

/// `CheckPoint` (88 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub redo: Lsn,
    pub tli: TimeLineId,
    pub prev_tli: TimeLineId,
    pub full_page_writes: bool,
    pub wal_level: i32,
    /// `nextXid` as a full transaction ID (epoch in the high 32 bits).
    pub next_xid: u64,
    pub next_oid: u32,
    pub next_multi: u32,
    pub next_multi_offset: u32,
    pub oldest_xid: u32,
    pub oldest_xid_db: u32,
    pub oldest_multi: u32,
    pub oldest_multi_db: u32,
    /// `pg_time_t`: Unix seconds.
    pub time: i64,
    pub oldest_commit_ts_xid: u32,
    pub newest_commit_ts_xid: u32,
    pub oldest_active_xid: u32,
}

/// Transaction record kinds (`xl_info & XLOG_XACT_OPMASK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XactKind {
    Commit,
    Abort,
    CommitPrepared,
    AbortPrepared,
}

/// A parsed commit or abort (`ParseCommitRecord` / `ParseAbortRecord`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XactBody {
    pub kind: XactKind,
    /// `xact_time`: microseconds since 2000-01-01 UTC; what `recovery_target_time` compares.
    pub time: i64,
    pub xinfo: u32,
    pub db_id: Option<u32>,
    pub ts_id: Option<u32>,
    pub subxacts: Vec<u32>,
    pub rels: Vec<RelFileLocator>,
    pub dropped_stats: u32,
    pub invals: u32,
    /// The prepared transaction's XID (`XACT_XINFO_HAS_TWOPHASE`).
    pub twophase_xid: Option<u32>,
    pub gid: Option<String>,
    pub origin_lsn: Option<Lsn>,
    pub origin_time: Option<i64>,
}

impl XactBody {
    /// The XID `recovery_target_xid` matches: the header's for COMMIT/ABORT, the two-phase XID
    /// for the PREPARED variants.
    pub fn target_xid(&self, header_xid: u32) -> u32 {
        match self.kind {
            XactKind::Commit | XactKind::Abort => header_xid,
            XactKind::CommitPrepared | XactKind::AbortPrepared => {
                self.twophase_xid.unwrap_or(header_xid)
            }
        }
    }
}

/// What a record means to backup and recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordBody {
    CheckpointShutdown(Checkpoint),
    CheckpointOnline(Checkpoint),
    /// 17+: the redo point of an online checkpoint.
    CheckpointRedo {
        wal_level: i32,
    },
    Switch,
    /// The start (redo) LSN of the backup that ended.
    BackupEnd {
        start: Lsn,
    },
    RestorePoint {
        time: i64,
        name: String,
    },
    EndOfRecovery {
        time: i64,
        tli: TimeLineId,
        prev_tli: TimeLineId,
        wal_level: i32,
    },
    ParameterChange {
        max_connections: i32,
        max_worker_processes: i32,
        max_wal_senders: i32,
        max_prepared_xacts: i32,
        max_locks_per_xact: i32,
        wal_level: i32,
        wal_log_hints: bool,
        track_commit_timestamp: bool,
    },
    OverwriteContrecord {
        overwritten: Lsn,
        time: i64,
    },
    Xact(XactBody),
    /// Any other record: its header and block references are all there is to know here.
    Other,
}

/// `wal_level` names as `pg_waldump` prints them.
pub fn wal_level_name(level: i32) -> &'static str {
    match level {
        0 => "minimal",
        1 => "replica",
        2 => "logical",
        _ => "?",
    }
}

/// Formats a `TimestampTz` as `pg_waldump` does with `TZ=UTC`:
/// `YYYY-MM-DD HH:MM:SS.ffffff UTC`.
pub fn format_timestamptz(ts: i64) -> String {
    let usecs = ts.rem_euclid(1_000_000);
    let secs = ts.div_euclid(1_000_000) + pgincr_types::time::POSTGRES_EPOCH_UNIX_SECS;
    format_unix(secs, Some(usecs))
}

/// Formats Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_unix(secs: i64, usecs: Option<i64>) -> String {
    pgincr_types::time::format_utc(secs, usecs, "UTC")
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| format!("{what}: length overflows"))?;
        let s = self.b.get(self.pos..end).ok_or_else(|| {
            format!(
                "main data too short for {what}: need {n} bytes at offset {}, have {}",
                self.pos,
                self.b.len()
            )
        })?;
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let s = self.take(4, what)?;
        le_u32(s, 0).ok_or_else(|| what.to_string())
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let s = self.take(8, what)?;
        le_u64(s, 0).ok_or_else(|| what.to_string())
    }
    fn count(&mut self, what: &str) -> Result<usize, String> {
        let n = self.u32(what)? as i32;
        usize::try_from(n).map_err(|_| format!("negative {what} count {n}"))
    }
    /// Skips `n` items of `size` bytes, refusing counts the data cannot hold.
    fn skip_items(&mut self, n: usize, size: usize, what: &str) -> Result<(), String> {
        let len = n
            .checked_mul(size)
            .ok_or_else(|| format!("{what}: count overflows"))?;
        self.take(len, what).map(|_| ())
    }
}

fn need(d: &[u8], n: usize, what: &str) -> Result<(), String> {
    if d.len() < n {
        Err(format!("main data of {} bytes, {what} needs {n}", d.len()))
    } else {
        Ok(())
    }
}

fn i32_at(d: &[u8], at: usize) -> Result<i32, String> {
    le_u32(d, at)
        .map(|v| v as i32)
        .ok_or_else(|| format!("no i32 at {at}"))
}
fn u32_at(d: &[u8], at: usize) -> Result<u32, String> {
    le_u32(d, at).ok_or_else(|| format!("no u32 at {at}"))
}
fn u64_at(d: &[u8], at: usize) -> Result<u64, String> {
    le_u64(d, at).ok_or_else(|| format!("no u64 at {at}"))
}

fn checkpoint(d: &[u8]) -> Result<Checkpoint, String> {
    need(d, 88, "CheckPoint")?;
    Ok(Checkpoint {
        redo: Lsn(u64_at(d, 0)?),
        tli: TimeLineId(u32_at(d, 8)?),
        prev_tli: TimeLineId(u32_at(d, 12)?),
        full_page_writes: d.get(16).copied().unwrap_or(0) != 0,
        wal_level: i32_at(d, 20)?,
        next_xid: u64_at(d, 24)?,
        next_oid: u32_at(d, 32)?,
        next_multi: u32_at(d, 36)?,
        next_multi_offset: u32_at(d, 40)?,
        oldest_xid: u32_at(d, 44)?,
        oldest_xid_db: u32_at(d, 48)?,
        oldest_multi: u32_at(d, 52)?,
        oldest_multi_db: u32_at(d, 56)?,
        time: u64_at(d, 64)? as i64,
        oldest_commit_ts_xid: u32_at(d, 72)?,
        newest_commit_ts_xid: u32_at(d, 76)?,
        oldest_active_xid: u32_at(d, 80)?,
    })
}

fn xlog(info: u8, d: &[u8]) -> Result<RecordBody, String> {
    Ok(match info {
        XLOG_CHECKPOINT_SHUTDOWN => RecordBody::CheckpointShutdown(checkpoint(d)?),
        XLOG_CHECKPOINT_ONLINE => RecordBody::CheckpointOnline(checkpoint(d)?),
        XLOG_CHECKPOINT_REDO => {
            need(d, 4, "CHECKPOINT_REDO")?;
            RecordBody::CheckpointRedo {
                wal_level: i32_at(d, 0)?,
            }
        }
        XLOG_SWITCH => RecordBody::Switch,
        XLOG_BACKUP_END => {
            need(d, 8, "BACKUP_END")?;
            RecordBody::BackupEnd {
                start: Lsn(u64_at(d, 0)?),
            }
        }
        XLOG_RESTORE_POINT => {
            need(d, 8 + 64, "xl_restore_point")?;
            let raw = d.get(8..72).unwrap_or(&[]);
            let name = raw.split(|&b| b == 0).next().unwrap_or(&[]);
            RecordBody::RestorePoint {
                time: u64_at(d, 0)? as i64,
                name: String::from_utf8_lossy(name).into_owned(),
            }
        }
        XLOG_END_OF_RECOVERY => {
            need(d, 20, "xl_end_of_recovery")?;
            RecordBody::EndOfRecovery {
                time: u64_at(d, 0)? as i64,
                tli: TimeLineId(u32_at(d, 8)?),
                prev_tli: TimeLineId(u32_at(d, 12)?),
                wal_level: i32_at(d, 16)?,
            }
        }
        XLOG_PARAMETER_CHANGE => {
            need(d, 26, "xl_parameter_change")?;
            RecordBody::ParameterChange {
                max_connections: i32_at(d, 0)?,
                max_worker_processes: i32_at(d, 4)?,
                max_wal_senders: i32_at(d, 8)?,
                max_prepared_xacts: i32_at(d, 12)?,
                max_locks_per_xact: i32_at(d, 16)?,
                wal_level: i32_at(d, 20)?,
                wal_log_hints: d.get(24).copied().unwrap_or(0) != 0,
                track_commit_timestamp: d.get(25).copied().unwrap_or(0) != 0,
            }
        }
        XLOG_OVERWRITE_CONTRECORD => {
            need(d, 16, "xl_overwrite_contrecord")?;
            RecordBody::OverwriteContrecord {
                overwritten: Lsn(u64_at(d, 0)?),
                time: u64_at(d, 8)? as i64,
            }
        }
        _ => RecordBody::Other,
    })
}

fn xact(info: u8, d: &[u8], magic: WalMagic) -> Result<RecordBody, String> {
    let kind = match info & XLOG_XACT_OPMASK {
        XLOG_XACT_COMMIT => XactKind::Commit,
        XLOG_XACT_ABORT => XactKind::Abort,
        XLOG_XACT_COMMIT_PREPARED => XactKind::CommitPrepared,
        XLOG_XACT_ABORT_PREPARED => XactKind::AbortPrepared,
        _ => return Ok(RecordBody::Other),
    };
    let is_commit = matches!(kind, XactKind::Commit | XactKind::CommitPrepared);
    let mut c = Cursor { b: d, pos: 0 };
    let time = c.u64("xact_time")? as i64;
    let xinfo = if info & XLOG_XACT_HAS_INFO != 0 {
        c.u32("xinfo")?
    } else {
        0
    };
    let mut body = XactBody {
        kind,
        time,
        xinfo,
        db_id: None,
        ts_id: None,
        subxacts: Vec::new(),
        rels: Vec::new(),
        dropped_stats: 0,
        invals: 0,
        twophase_xid: None,
        gid: None,
        origin_lsn: None,
        origin_time: None,
    };
    if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
        body.db_id = Some(c.u32("dbinfo")?);
        body.ts_id = Some(c.u32("dbinfo")?);
    }
    if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
        let n = c.count("subxacts")?;
        let s = c.take(
            n.checked_mul(4).ok_or("subxacts: count overflows")?,
            "subxacts",
        )?;
        body.subxacts = s.chunks_exact(4).filter_map(|x| le_u32(x, 0)).collect();
    }
    if xinfo & XACT_XINFO_HAS_RELFILELOCATORS != 0 {
        let n = c.count("relfilelocators")?;
        let s = c.take(
            n.checked_mul(12)
                .ok_or("relfilelocators: count overflows")?,
            "relfilelocators",
        )?;
        body.rels = s
            .chunks_exact(12)
            .filter_map(|x| {
                Some(RelFileLocator {
                    spc_oid: le_u32(x, 0)?,
                    db_oid: le_u32(x, 4)?,
                    rel_number: le_u32(x, 8)?,
                })
            })
            .collect();
    }
    if xinfo & XACT_XINFO_HAS_DROPPED_STATS != 0 {
        let n = c.count("dropped stats")?;
        // xl_xact_stats_item: {kind, dboid, objoid} in 17, {kind, dboid, objid_lo, objid_hi} in 18.
        let size = match magic {
            WalMagic::V17 => 12,
            WalMagic::V18 => 16,
        };
        c.skip_items(n, size, "dropped stats")?;
        body.dropped_stats = n as u32;
    }
    if is_commit && xinfo & XACT_XINFO_HAS_INVALS != 0 {
        let n = c.count("invalidation messages")?;
        c.skip_items(n, 16, "invalidation messages")?;
        body.invals = n as u32;
    }
    if xinfo & XACT_XINFO_HAS_TWOPHASE != 0 {
        body.twophase_xid = Some(c.u32("twophase xid")?);
        if xinfo & XACT_XINFO_HAS_GID != 0 {
            let rest = d.get(c.pos..).unwrap_or(&[]);
            let nul = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or("GID is not NUL-terminated")?;
            let g = c.take(nul + 1, "GID")?;
            body.gid = Some(String::from_utf8_lossy(g.get(..nul).unwrap_or(&[])).into_owned());
        }
    }
    if xinfo & XACT_XINFO_HAS_ORIGIN != 0 {
        body.origin_lsn = Some(Lsn(c.u64("origin lsn")?));
        body.origin_time = Some(c.u64("origin timestamp")? as i64);
    }
    Ok(RecordBody::Xact(body))
}

/// Decodes `rec`'s main data (see [`RecordBody`]).
pub fn decode(rec: &Record) -> Result<RecordBody, DecodeError> {
    let info = rec.rmgr_info();
    let d = rec.main_data();
    let r = match rec.rmid {
        RM_XLOG_ID => xlog(info, d),
        RM_XACT_ID => xact(info, d, rec.magic),
        _ => Ok(RecordBody::Other),
    };
    r.map_err(|what| DecodeError {
        lsn: rec.lsn,
        rmgr: rec.rmgr_name().into_owned(),
        info: rec.info,
        what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timestamps() {
        assert_eq!(format_timestamptz(0), "2000-01-01 00:00:00.000000 UTC");
        // 2026-12-02 17:30:00.5 UTC
        let unix = 1_796_232_600i64;
        let ts = (unix - 946_684_800) * 1_000_000 + 500_000;
        assert_eq!(format_timestamptz(ts), "2026-12-02 17:30:00.500000 UTC");
        assert_eq!(format_unix(0, None), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_timestamptz(-1), "1999-12-31 23:59:59.999999 UTC");
    }

    #[test]
    fn xlog_bodies() {
        let mut rp = vec![0u8; 72];
        rp[0..8].copy_from_slice(&77i64.to_le_bytes());
        rp[8..12].copy_from_slice(b"abc\0");
        rp[12] = 0xFF; // garbage after the NUL is ignored
        assert_eq!(
            xlog(XLOG_RESTORE_POINT, &rp).unwrap(),
            RecordBody::RestorePoint {
                time: 77,
                name: "abc".into()
            }
        );
        assert!(xlog(XLOG_RESTORE_POINT, &rp[..40]).is_err());
        assert!(xlog(XLOG_CHECKPOINT_ONLINE, &[0u8; 87]).is_err());
        let mut cp = vec![0u8; 88];
        cp[0..8].copy_from_slice(&0x1000028u64.to_le_bytes());
        cp[8..12].copy_from_slice(&1u32.to_le_bytes());
        cp[20..24].copy_from_slice(&1i32.to_le_bytes());
        cp[24..32].copy_from_slice(&((1u64 << 32) | 745).to_le_bytes());
        let RecordBody::CheckpointOnline(c) = xlog(XLOG_CHECKPOINT_ONLINE, &cp).unwrap() else {
            panic!()
        };
        assert_eq!(
            (c.redo, c.tli, c.wal_level, c.next_xid),
            (Lsn(0x1000028), TimeLineId(1), 1, (1 << 32) | 745)
        );
    }

    #[test]
    fn recovery_bodies() {
        let mut eor = vec![0u8; 24];
        eor[0..8].copy_from_slice(&99i64.to_le_bytes());
        eor[8..12].copy_from_slice(&3u32.to_le_bytes());
        eor[12..16].copy_from_slice(&2u32.to_le_bytes());
        eor[16..20].copy_from_slice(&1i32.to_le_bytes());
        assert_eq!(
            xlog(XLOG_END_OF_RECOVERY, &eor).unwrap(),
            RecordBody::EndOfRecovery {
                time: 99,
                tli: TimeLineId(3),
                prev_tli: TimeLineId(2),
                wal_level: 1
            }
        );
        assert_eq!(
            xlog(XLOG_BACKUP_END, &0x2000028u64.to_le_bytes()).unwrap(),
            RecordBody::BackupEnd {
                start: Lsn(0x2000028)
            }
        );
        let mut pc = vec![0u8; 28];
        pc[20..24].copy_from_slice(&2i32.to_le_bytes());
        pc[24] = 1;
        let RecordBody::ParameterChange {
            wal_level,
            wal_log_hints,
            track_commit_timestamp,
            ..
        } = xlog(XLOG_PARAMETER_CHANGE, &pc).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (wal_level, wal_log_hints, track_commit_timestamp),
            (2, true, false)
        );
        assert_eq!(
            xlog(XLOG_CHECKPOINT_REDO, &1i32.to_le_bytes()).unwrap(),
            RecordBody::CheckpointRedo { wal_level: 1 }
        );
        assert!(xlog(XLOG_END_OF_RECOVERY, &eor[..19]).is_err());
    }

    #[test]
    fn xact_commit_with_info() {
        let mut d = Vec::new();
        d.extend_from_slice(&1000i64.to_le_bytes());
        let xinfo = XACT_XINFO_HAS_DBINFO
            | XACT_XINFO_HAS_SUBXACTS
            | XACT_XINFO_HAS_INVALS
            | XACT_XINFO_HAS_ORIGIN;
        d.extend_from_slice(&xinfo.to_le_bytes());
        d.extend_from_slice(&5u32.to_le_bytes());
        d.extend_from_slice(&1663u32.to_le_bytes());
        d.extend_from_slice(&2i32.to_le_bytes());
        d.extend_from_slice(&801u32.to_le_bytes());
        d.extend_from_slice(&802u32.to_le_bytes());
        d.extend_from_slice(&1i32.to_le_bytes());
        d.extend_from_slice(&[0u8; 16]);
        d.extend_from_slice(&0x55u64.to_le_bytes());
        d.extend_from_slice(&9i64.to_le_bytes());
        let RecordBody::Xact(x) =
            xact(XLOG_XACT_COMMIT | XLOG_XACT_HAS_INFO, &d, WalMagic::V18).unwrap()
        else {
            panic!()
        };
        assert_eq!(x.time, 1000);
        assert_eq!(x.db_id, Some(5));
        assert_eq!(x.subxacts, vec![801, 802]);
        assert_eq!(x.invals, 1);
        assert_eq!(x.origin_lsn, Some(Lsn(0x55)));
        assert_eq!(x.target_xid(800), 800);
        // A count the data cannot hold is an error, not an allocation.
        let mut huge = d.clone();
        huge[20..24].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(xact(XLOG_XACT_COMMIT | XLOG_XACT_HAS_INFO, &huge, WalMagic::V18).is_err());
        assert!(xact(XLOG_XACT_ABORT, &d[..4], WalMagic::V17).is_err());
    }

    proptest! {
        #[test]
        fn bodies_never_panic(info in any::<u8>(), d in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = xlog(info & 0xF0, &d);
            let _ = xact(info, &d, WalMagic::V17);
            let _ = xact(info, &d, WalMagic::V18);
        }
    }
}
