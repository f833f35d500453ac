//! `START_REPLICATION PHYSICAL`: WAL data, keepalives and standby status updates.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes};
use pgincr_types::{Lsn, TimeLineId};
use postgres_protocol::message::frontend;

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::message::Backend;
use crate::replication::quote_ident;

/// One message of the WAL stream.
#[derive(Debug)]
pub enum WalEvent {
    /// XLogData: `data` is WAL starting at `start`; `wal_end` is the server's end of WAL.
    Data {
        start: Lsn,
        wal_end: Lsn,
        data: Bytes,
    },
    /// Primary keepalive; answer with a status update when `reply_requested`.
    Keepalive { wal_end: Lsn, reply_requested: bool },
    /// The server ended the stream (end of a historic timeline); call [`WalStream::finish`].
    ServerDone,
}

/// An open physical replication stream (COPY both mode).
pub struct WalStream<'a> {
    conn: &'a mut Connection,
    server_done: bool,
}

/// Microseconds since 2000-01-01 UTC (PostgreSQL's `TimestampTz`).
fn now_pg() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    unix - 946_684_800_000_000
}

impl Connection {
    /// `START_REPLICATION [SLOT s] PHYSICAL start [TIMELINE tli]`. `start` should be at a
    /// segment boundary when the caller writes segment files.
    pub async fn start_replication(
        &mut self,
        slot: Option<&str>,
        start: Lsn,
        tli: Option<TimeLineId>,
    ) -> Result<WalStream<'_>> {
        let mut q = String::from("START_REPLICATION ");
        if let Some(s) = slot {
            q.push_str(&format!("SLOT {} ", quote_ident(s)?));
        }
        q.push_str(&format!("PHYSICAL {start}"));
        if let Some(t) = tli {
            q.push_str(&format!(" TIMELINE {}", t.0));
        }
        frontend::query(&q, &mut self.wbuf)?;
        self.flush().await?;
        loop {
            match self.recv().await? {
                Backend::CopyBothResponse => {
                    return Ok(WalStream {
                        conn: self,
                        server_done: false,
                    })
                }
                Backend::Error(e) => {
                    self.drain_to_ready().await?;
                    return Err(Error::Db(e));
                }
                // Nothing to stream on a historic timeline: the end-of-timeline result comes
                // straight away.
                Backend::RowDescription(_) | Backend::DataRow(_) | Backend::CommandComplete(_) => {}
                Backend::ReadyForQuery(_) => {
                    return Err(Error::protocol(format!(
                        "{q}: the server had no WAL to stream"
                    )));
                }
                m => return Err(Error::protocol(format!("{q}: unexpected {}", m.name()))),
            }
        }
    }
}

/// Decodes one CopyData payload of the WAL stream (XLogData or primary keepalive).
pub fn parse_copy_data(mut b: Bytes) -> Result<WalEvent> {
    if b.is_empty() {
        return Err(Error::protocol("empty CopyData in WAL stream"));
    }
    match b.get_u8() {
        b'w' => {
            if b.len() < 24 {
                return Err(Error::protocol("truncated XLogData message"));
            }
            let start = Lsn(b.get_u64());
            let wal_end = Lsn(b.get_u64());
            let _send_time = b.get_i64();
            Ok(WalEvent::Data {
                start,
                wal_end,
                data: b,
            })
        }
        b'k' => {
            if b.len() < 17 {
                return Err(Error::protocol("truncated keepalive message"));
            }
            let wal_end = Lsn(b.get_u64());
            let _send_time = b.get_i64();
            let reply_requested = b.get_u8() != 0;
            Ok(WalEvent::Keepalive {
                wal_end,
                reply_requested,
            })
        }
        t => Err(Error::protocol(format!(
            "unknown WAL stream message 0x{t:02x}"
        ))),
    }
}

impl WalStream<'_> {
    /// The next message. Cancel-safe, so it can sit in a `select!` with a timer.
    pub async fn next(&mut self) -> Result<WalEvent> {
        match self.conn.recv().await? {
            Backend::CopyData(b) => parse_copy_data(b),
            Backend::CopyDone => {
                self.server_done = true;
                Ok(WalEvent::ServerDone)
            }
            Backend::Error(e) => {
                let _ = self.conn.drain_to_ready().await;
                Err(Error::Db(e))
            }
            m => Err(Error::protocol(format!(
                "unexpected {} in WAL stream",
                m.name()
            ))),
        }
    }

    /// Sends a standby status update (`'r'`).
    pub async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply: bool,
    ) -> Result<()> {
        let mut m = Vec::with_capacity(34);
        m.put_u8(b'r');
        m.put_u64(write.0);
        m.put_u64(flush.0);
        m.put_u64(apply.0);
        m.put_i64(now_pg());
        m.put_u8(reply as u8);
        frontend::CopyData::new(&m[..])?.write(&mut self.conn.wbuf);
        self.conn.flush().await
    }

    /// Ends the stream: sends CopyDone, skips remaining WAL, and reads the closing results.
    /// Returns the next timeline and its start when the server reported one.
    pub async fn finish(self) -> Result<Option<(TimeLineId, Lsn)>> {
        frontend::copy_done(&mut self.conn.wbuf);
        self.conn.flush().await?;
        let mut next = None;
        let mut row: Option<Vec<Option<Bytes>>> = None;
        let mut err = None;
        loop {
            match self.conn.recv().await? {
                Backend::CopyData(_) | Backend::CopyDone | Backend::RowDescription(_) => {}
                Backend::DataRow(r) => row = Some(r),
                Backend::CommandComplete(_) => {
                    if let Some(r) = row.take() {
                        let text = |i: usize| {
                            r.get(i)
                                .cloned()
                                .flatten()
                                .and_then(|b| String::from_utf8(b.to_vec()).ok())
                        };
                        if let (Some(t), Some(l)) = (text(0), text(1)) {
                            if let (Ok(t), Ok(l)) = (t.parse(), l.parse()) {
                                next = Some((TimeLineId(t), l));
                            }
                        }
                    }
                }
                Backend::Error(e) => err = Some(e),
                Backend::ReadyForQuery(_) => break,
                m => {
                    return Err(Error::protocol(format!(
                        "unexpected {} ending the WAL stream",
                        m.name()
                    )))
                }
            }
        }
        let _ = self.server_done;
        match err {
            Some(e) => Err(Error::Db(e)),
            None => Ok(next),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stream_messages() {
        let mut w = vec![b'w'];
        w.extend_from_slice(&0x100u64.to_be_bytes());
        w.extend_from_slice(&0x200u64.to_be_bytes());
        w.extend_from_slice(&0i64.to_be_bytes());
        w.extend_from_slice(b"wal");
        match parse_copy_data(Bytes::from(w)).unwrap() {
            WalEvent::Data { start, data, .. } => {
                assert_eq!((start, &data[..]), (Lsn(0x100), &b"wal"[..]))
            }
            e => panic!("{e:?}"),
        }
        let mut k = vec![b'k'];
        k.extend_from_slice(&[0; 16]);
        k.push(1);
        assert!(matches!(
            parse_copy_data(Bytes::from(k)).unwrap(),
            WalEvent::Keepalive {
                reply_requested: true,
                ..
            }
        ));
        assert!(parse_copy_data(Bytes::from_static(b"w123")).is_err());
        assert!(parse_copy_data(Bytes::from_static(b"z")).is_err());
    }
}
