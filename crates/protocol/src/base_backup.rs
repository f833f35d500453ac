//! `BASE_BACKUP` as a typed stream of events.

use bytes::{Buf, Bytes};
use pgincr_types::{Lsn, TimeLineId};
use postgres_protocol::message::frontend;

use crate::connection::{Connection, ResultSet};
use crate::error::{DbError, Error, Result};
use crate::message::Backend;
use crate::replication::quote_literal;

/// `CHECKPOINT 'fast' | 'spread'`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    Fast,
    Spread,
}

/// The options of `BASE_BACKUP`; `None`/`false` leaves the server default.
#[derive(Clone, Debug, Default)]
pub struct BaseBackupOptions {
    /// `INCREMENTAL`: needs a prior `UPLOAD_MANIFEST` on the same connection.
    pub incremental: bool,
    pub label: Option<String>,
    pub progress: bool,
    pub checkpoint: Option<Checkpoint>,
    /// `WAL`: append the needed WAL to base.tar (pg_basebackup `-X fetch`).
    pub wal: bool,
    pub wait: Option<bool>,
    pub manifest: bool,
    pub manifest_checksums: Option<String>,
    pub tablespace_map: bool,
    /// `MAX_RATE` in kB/s (32..=1048576).
    pub max_rate: Option<u32>,
    pub verify_checksums: Option<bool>,
}

impl BaseBackupOptions {
    /// The command text, with options in pg_basebackup's order (`INCREMENTAL` first).
    pub fn command(&self) -> Result<String> {
        let mut o: Vec<String> = Vec::new();
        if self.incremental {
            o.push("INCREMENTAL".into());
        }
        if let Some(l) = &self.label {
            if l.contains('\n') || l.len() > 1024 {
                return Err(Error::Config(
                    "backup label must be at most 1024 bytes with no newline".into(),
                ));
            }
            o.push(format!("LABEL {}", quote_literal(l)));
        }
        if self.progress {
            o.push("PROGRESS".into());
        }
        match self.checkpoint {
            Some(Checkpoint::Fast) => o.push("CHECKPOINT 'fast'".into()),
            Some(Checkpoint::Spread) => o.push("CHECKPOINT 'spread'".into()),
            None => {}
        }
        if self.wal {
            o.push("WAL".into());
        }
        if let Some(w) = self.wait {
            o.push(format!("WAIT {}", w as u8));
        }
        if self.manifest {
            o.push("MANIFEST 'yes'".into());
            if let Some(c) = &self.manifest_checksums {
                let c = c.to_ascii_uppercase();
                if !["NONE", "CRC32C", "SHA224", "SHA256", "SHA384", "SHA512"].contains(&c.as_str())
                {
                    return Err(Error::Config(format!(
                        "invalid manifest checksum algorithm \"{c}\": use NONE, CRC32C, SHA224, SHA256, SHA384 or SHA512"
                    )));
                }
                o.push(format!("MANIFEST_CHECKSUMS {}", quote_literal(&c)));
            }
        }
        if self.tablespace_map {
            o.push("TABLESPACE_MAP".into());
        }
        if let Some(r) = self.max_rate {
            if !(32..=1_048_576).contains(&r) {
                return Err(Error::Config(format!(
                    "transfer rate {r} kB/s is out of range: use 32 kB/s to 1 GB/s"
                )));
            }
            o.push(format!("MAX_RATE {r}"));
        }
        if let Some(v) = self.verify_checksums {
            o.push(format!("VERIFY_CHECKSUMS {}", v as u8));
        }
        o.push("TARGET 'client'".into());
        Ok(format!("BASE_BACKUP ( {})", o.join(", ")))
    }
}

/// One tablespace row of result set 2. The data directory is the last row, with no OID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablespaceInfo {
    pub oid: Option<u32>,
    /// Symlink target (absolute), or `pg_tblspc/<oid>` for an in-place tablespace.
    pub location: Option<String>,
    /// Estimated size in kB, with `PROGRESS`.
    pub size_kb: Option<u64>,
}

/// What the server sends during `BASE_BACKUP`, in order.
#[derive(Debug)]
pub enum BackupEvent {
    /// Result set 1: backup start LSN and timeline.
    Start {
        lsn: Lsn,
        tli: TimeLineId,
    },
    /// Result set 2: the archives that will follow, in order.
    Tablespaces(Vec<TablespaceInfo>),
    /// A new archive (`base.tar`, `<oid>.tar`); `location` is `None` for the data directory.
    ArchiveStart {
        name: String,
        location: Option<String>,
    },
    /// Archive bytes (a slice of the received message, not a copy).
    ArchiveData(Bytes),
    /// Cumulative uncompressed archive bytes so far.
    Progress(u64),
    ManifestStart,
    ManifestData(Bytes),
    /// Result set 3: backup end LSN and timeline. The stream ends after it.
    End {
        lsn: Lsn,
        tli: TimeLineId,
    },
}

/// The event stream of one `BASE_BACKUP`. Read it to the end (`Ok(None)`); dropping it earlier
/// leaves the connection unusable (close it).
pub struct BaseBackupStream<'a> {
    conn: &'a mut Connection,
    dec: BackupDecoder,
    done: bool,
}

/// What [`BackupDecoder::on_message`] made of one backend message.
#[derive(Debug)]
pub enum Step {
    /// An event for the caller.
    Event(BackupEvent),
    /// Nothing to report yet: read the next message.
    Continue,
    /// The server reported an error; the connection must be drained to ReadyForQuery.
    ServerError(Box<DbError>),
    /// The server reported the command complete after all three result sets.
    Finished,
}

/// The `BASE_BACKUP` message sequence as a state machine without I/O: result sets, archive
/// and manifest CopyData. [`BaseBackupStream`] feeds it what the connection receives.
#[derive(Debug, Default)]
pub struct BackupDecoder {
    sets: usize,
    cur: Option<ResultSet>,
    in_archive: bool,
    in_manifest: bool,
}

impl Connection {
    /// Starts `BASE_BACKUP`.
    pub async fn base_backup(&mut self, opts: &BaseBackupOptions) -> Result<BaseBackupStream<'_>> {
        let cmd = opts.command()?;
        tracing::debug!(%cmd, "starting base backup");
        frontend::query(&cmd, &mut self.wbuf)?;
        self.flush().await?;
        Ok(BaseBackupStream {
            conn: self,
            dec: BackupDecoder::default(),
            done: false,
        })
    }
}

fn lsn_tli(set: &ResultSet, what: &str) -> Result<(Lsn, TimeLineId)> {
    if set.rows.len() != 1 || set.columns.len() < 2 {
        return Err(Error::protocol(format!(
            "{what}: expected 1 row of 2 columns"
        )));
    }
    let lsn = set.text(0, 0).and_then(|t| t.parse().ok());
    let tli = set.text(0, 1).and_then(|t| t.parse().ok());
    match (lsn, tli) {
        (Some(l), Some(t)) => Ok((l, TimeLineId(t))),
        _ => Err(Error::protocol(format!(
            "{what}: unreadable LSN or timeline"
        ))),
    }
}

impl BaseBackupStream<'_> {
    /// The next event; `Ok(None)` once the server reported the command complete.
    pub async fn next(&mut self) -> Result<Option<BackupEvent>> {
        if self.done {
            return Ok(None);
        }
        loop {
            let step = match self.conn.recv().await {
                Ok(m) => self.dec.on_message(m),
                Err(e) => Err(e),
            };
            match step {
                Ok(Step::Continue) => {}
                Ok(Step::Event(ev)) => return Ok(Some(ev)),
                Ok(Step::ServerError(e)) => {
                    self.done = true;
                    let _ = self.conn.drain_to_ready().await;
                    return Err(Error::Db(e));
                }
                Ok(Step::Finished) => {
                    self.done = true;
                    return Ok(None);
                }
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            }
        }
    }
}

impl BackupDecoder {
    /// Takes the next backend message of the `BASE_BACKUP` exchange. After an error, or
    /// `Finished` or `ServerError`, the exchange is over and nothing more should be fed.
    pub fn on_message(&mut self, msg: Backend) -> Result<Step> {
        Ok(match msg {
            Backend::RowDescription(columns) => {
                self.cur = Some(ResultSet {
                    columns,
                    ..Default::default()
                });
                Step::Continue
            }
            Backend::DataRow(r) => match self.cur.as_mut() {
                Some(c) => {
                    c.rows.push(r);
                    Step::Continue
                }
                None => return Err(Error::protocol("DataRow without RowDescription")),
            },
            Backend::CommandComplete(tag) => {
                let Some(set) = self.cur.take() else {
                    return Ok(Step::Continue); // "BASE_BACKUP"
                };
                self.sets += 1;
                Step::Event(match self.sets {
                    1 => {
                        let (lsn, tli) = lsn_tli(&set, "backup start")?;
                        BackupEvent::Start { lsn, tli }
                    }
                    2 => BackupEvent::Tablespaces(tablespaces(&set)?),
                    3 => {
                        let (lsn, tli) = lsn_tli(&set, "backup end")?;
                        BackupEvent::End { lsn, tli }
                    }
                    _ => return Err(Error::protocol(format!("unexpected result set ({tag})"))),
                })
            }
            Backend::CopyOutResponse | Backend::CopyDone => Step::Continue,
            Backend::CopyData(b) => Step::Event(self.copy_data(b)?),
            Backend::Error(e) => Step::ServerError(e),
            Backend::ReadyForQuery(_) => {
                if self.sets < 3 {
                    return Err(Error::protocol(
                        "BASE_BACKUP ended before the end position was sent",
                    ));
                }
                Step::Finished
            }
            m => {
                return Err(Error::protocol(format!(
                    "unexpected {} during BASE_BACKUP",
                    m.name()
                )))
            }
        })
    }

    fn copy_data(&mut self, mut b: Bytes) -> Result<BackupEvent> {
        if b.is_empty() {
            return Err(Error::protocol("empty CopyData during BASE_BACKUP"));
        }
        let kind = b.get_u8();
        Ok(match kind {
            b'n' => {
                if self.in_manifest {
                    return Err(Error::protocol("archives must precede the manifest"));
                }
                let mut parts = b.split(|&c| c == 0);
                let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                let loc = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                if name.is_empty()
                    || name.starts_with('.')
                    || name.contains('/')
                    || name.contains('\\')
                {
                    return Err(Error::protocol(format!("invalid archive name \"{name}\"")));
                }
                self.in_archive = true;
                BackupEvent::ArchiveStart {
                    name,
                    location: (!loc.is_empty()).then_some(loc),
                }
            }
            b'd' if self.in_manifest => BackupEvent::ManifestData(b),
            b'd' if self.in_archive => BackupEvent::ArchiveData(b),
            b'd' => return Err(Error::protocol("archive data before any archive started")),
            b'p' => {
                if b.len() != 8 {
                    return Err(Error::protocol("progress message must be 8 bytes"));
                }
                BackupEvent::Progress(b.get_u64())
            }
            b'm' => {
                if !b.is_empty() {
                    return Err(Error::protocol("manifest start message has a payload"));
                }
                self.in_manifest = true;
                BackupEvent::ManifestStart
            }
            other => {
                return Err(Error::protocol(format!(
                    "unknown BASE_BACKUP message type 0x{other:02x}"
                )))
            }
        })
    }
}

fn tablespaces(set: &ResultSet) -> Result<Vec<TablespaceInfo>> {
    if set.rows.is_empty() || set.columns.len() < 3 {
        return Err(Error::protocol(
            "tablespace list: expected at least 1 row of 3 columns",
        ));
    }
    (0..set.rows.len())
        .map(|r| {
            let oid = match set.text(r, 0) {
                None => None,
                Some(t) => Some(
                    t.parse()
                        .map_err(|_| Error::protocol(format!("bad tablespace OID \"{t}\"")))?,
                ),
            };
            Ok(TablespaceInfo {
                oid,
                location: set.text(r, 1).map(str::to_string),
                size_kb: set.text(r, 2).and_then(|t| t.parse().ok()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_text() {
        let o = BaseBackupOptions {
            incremental: true,
            label: Some("it's".into()),
            progress: true,
            checkpoint: Some(Checkpoint::Fast),
            wait: Some(false),
            manifest: true,
            manifest_checksums: Some("sha256".into()),
            ..Default::default()
        };
        assert_eq!(
            o.command().unwrap(),
            "BASE_BACKUP ( INCREMENTAL, LABEL 'it''s', PROGRESS, CHECKPOINT 'fast', WAIT 0, MANIFEST 'yes', MANIFEST_CHECKSUMS 'SHA256', TARGET 'client')"
        );
        let bad = BaseBackupOptions {
            max_rate: Some(5),
            ..Default::default()
        };
        assert!(bad.command().is_err());
    }

    fn set(cols: &[&str], rows: &[&[Option<&str>]]) -> Vec<Backend> {
        let mut v = vec![Backend::RowDescription(
            cols.iter()
                .map(|c| crate::message::Column {
                    name: c.to_string(),
                    type_oid: 25,
                })
                .collect(),
        )];
        for r in rows {
            v.push(Backend::DataRow(
                r.iter()
                    .map(|c| c.map(|t| Bytes::copy_from_slice(t.as_bytes())))
                    .collect(),
            ));
        }
        v.push(Backend::CommandComplete("SELECT".into()));
        v
    }

    fn copy(b: &[u8]) -> Backend {
        Backend::CopyData(Bytes::copy_from_slice(b))
    }

    /// Feeds `msgs`; the events, then how it ended (`Ok(true)`: Finished).
    fn run(msgs: Vec<Backend>) -> (Vec<BackupEvent>, Result<bool>) {
        let mut d = BackupDecoder::default();
        let mut events = Vec::new();
        for m in msgs {
            match d.on_message(m) {
                Ok(Step::Event(e)) => events.push(e),
                Ok(Step::Continue) => {}
                Ok(Step::Finished) => return (events, Ok(true)),
                Ok(Step::ServerError(e)) => return (events, Err(Error::Db(e))),
                Err(e) => return (events, Err(e)),
            }
        }
        (events, Ok(false))
    }

    #[test]
    fn decodes_a_whole_exchange() {
        let mut m = set(&["recptr", "tli"], &[&[Some("0/8000028"), Some("1")]]);
        m.extend(set(
            &["spcoid", "spclocation", "size"],
            &[
                &[Some("16384"), Some("/ts"), Some("12")],
                &[None, None, Some("2300")],
            ],
        ));
        m.push(Backend::CopyOutResponse);
        m.push(copy(b"n16384.tar\0/ts\0"));
        m.push(copy(b"dabc"));
        m.push(copy(b"nbase.tar\0\0"));
        m.push(copy(&[b'p', 0, 0, 0, 0, 0, 0, 2, 0]));
        m.push(copy(b"m"));
        m.push(copy(b"d{}"));
        m.push(Backend::CopyDone);
        m.extend(set(&["recptr", "tli"], &[&[Some("0/8000120"), Some("1")]]));
        m.push(Backend::CommandComplete("BASE_BACKUP".into()));
        m.push(Backend::ReadyForQuery(b'I'));
        let (ev, end) = run(m);
        assert!(end.unwrap());
        let names: Vec<String> = ev.iter().map(|e| format!("{e:?}")).collect();
        assert_eq!(ev.len(), 9, "{names:#?}");
        assert!(matches!(
            ev[0],
            BackupEvent::Start {
                lsn: Lsn(0x8000028),
                tli: TimeLineId(1)
            }
        ));
        match &ev[1] {
            BackupEvent::Tablespaces(t) => {
                assert_eq!(t[0].oid, Some(16384));
                assert_eq!(t[1].location, None);
                assert_eq!(t[1].size_kb, Some(2300));
            }
            e => panic!("{e:?}"),
        }
        assert!(
            matches!(&ev[2], BackupEvent::ArchiveStart { location: Some(l), .. } if l == "/ts")
        );
        assert!(matches!(&ev[3], BackupEvent::ArchiveData(d) if &d[..] == b"abc"));
        assert!(
            matches!(&ev[4], BackupEvent::ArchiveStart { name, location: None } if name == "base.tar")
        );
        assert!(matches!(ev[5], BackupEvent::Progress(512)));
        assert!(matches!(ev[6], BackupEvent::ManifestStart));
        assert!(matches!(&ev[7], BackupEvent::ManifestData(d) if &d[..] == b"{}"));
        assert!(matches!(
            ev[8],
            BackupEvent::End {
                lsn: Lsn(0x8000120),
                ..
            }
        ));
    }

    #[test]
    fn refuses_what_the_server_never_sends() {
        for bad in [
            vec![copy(b"dx")],
            vec![copy(b"n../x\0")],
            vec![copy(b"n\0")],
            vec![copy(b"")],
            vec![copy(b"p123")],
            vec![copy(b"mx")],
            vec![copy(b"m"), copy(b"nbase.tar\0")],
            vec![copy(b"?")],
            vec![Backend::DataRow(vec![])],
            vec![Backend::ReadyForQuery(b'I')],
            vec![Backend::CopyBothResponse],
        ] {
            assert!(run(bad).1.is_err());
        }
        // Result sets that cannot be read.
        assert!(run(set(&["recptr"], &[&[Some("0/1")]])).1.is_err());
        assert!(run(set(&["recptr", "tli"], &[&[Some("zz"), Some("1")]]))
            .1
            .is_err());
        let mut m = set(&["recptr", "tli"], &[&[Some("0/1"), Some("1")]]);
        m.extend(set(&["a", "b", "c"], &[&[Some("x"), None, None]]));
        assert!(run(m).1.is_err());
        let err = run(vec![Backend::Error(Box::default())]).1.unwrap_err();
        assert!(matches!(err, Error::Db(_)));
    }
}
