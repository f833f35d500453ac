//! Bytes as a server sends them: message framing, the backend message decoder, ErrorResponse
//! fields, the WAL stream's CopyData (XLogData, keepalive) and the `BASE_BACKUP` event state
//! machine, `SHOW wal_segment_size` values. Nothing may panic or allocate beyond what the input holds; framing must account
//! for every byte, and what can be written back (DataRow, XLogData, keepalive) round-trips.
#![no_main]
use bytes::{BufMut, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use pgincr_protocol::fuzzing::{
    decode, parse_copy_data, parse_db_error, split_message, Backend, BackupDecoder, Split, Step,
    MAX_MESSAGE_LEN,
};
use pgincr_protocol::{parse_wal_segment_size, WalEvent};

fn wal_round_trip(ev: &WalEvent) {
    let mut b = BytesMut::new();
    match ev {
        WalEvent::Data {
            start,
            wal_end,
            data,
        } => {
            b.put_u8(b'w');
            b.put_u64(start.0);
            b.put_u64(wal_end.0);
            b.put_i64(0);
            b.put_slice(data);
            match parse_copy_data(b.freeze()).expect("re-encoded XLogData") {
                WalEvent::Data {
                    start: s,
                    wal_end: e,
                    data: d,
                } => assert!(s == *start && e == *wal_end && d == *data),
                other => panic!("XLogData came back as {other:?}"),
            }
        }
        WalEvent::Keepalive {
            wal_end,
            reply_requested,
        } => {
            b.put_u8(b'k');
            b.put_u64(wal_end.0);
            b.put_i64(0);
            b.put_u8(u8::from(*reply_requested));
            match parse_copy_data(b.freeze()).expect("re-encoded keepalive") {
                WalEvent::Keepalive {
                    wal_end: e,
                    reply_requested: r,
                } => assert!(e == *wal_end && r == *reply_requested),
                other => panic!("keepalive came back as {other:?}"),
            }
        }
        WalEvent::ServerDone => unreachable!("not from CopyData"),
    }
}

fn data_row_round_trip(cols: &[Option<Bytes>]) {
    let mut b = BytesMut::new();
    b.put_i16(cols.len() as i16);
    for c in cols {
        match c {
            None => b.put_i32(-1),
            Some(v) => {
                b.put_i32(v.len() as i32);
                b.put_slice(v);
            }
        }
    }
    match decode(b'D', b.freeze()).expect("re-encoded DataRow") {
        Backend::DataRow(again) => assert_eq!(again, cols),
        other => panic!("DataRow came back as {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut backup = Some(BackupDecoder::default());
    let mut consumed = 0usize;
    loop {
        let before = buf.len();
        match split_message(&mut buf) {
            Split::Message(tag, body) => {
                assert_eq!(before - buf.len(), body.len() + 5);
                assert!(body.len() + 4 <= MAX_MESSAGE_LEN);
                consumed += body.len() + 5;
                if tag == b'E' || tag == b'N' {
                    let _ = parse_db_error(&body);
                }
                if tag == b'd' {
                    if let Ok(ev) = parse_copy_data(body.clone()) {
                        wal_round_trip(&ev);
                    }
                }
                let msg = match decode(tag, body) {
                    Ok(m) => m,
                    Err(_) => break, // the connection gives up here too
                };
                let _ = msg.name();
                if let Backend::DataRow(cols) = &msg {
                    data_row_round_trip(cols);
                    // SHOW wal_segment_size answers with one text column.
                    if let Some(Some(v)) = cols.first() {
                        if let Ok(size) = std::str::from_utf8(v).map(parse_wal_segment_size) {
                            if let Ok(size) = size {
                                assert!(
                                    size.is_power_of_two() && (1 << 20..=1 << 30).contains(&size)
                                );
                            }
                        }
                    }
                }
                if let Some(dec) = backup.as_mut() {
                    match dec.on_message(msg) {
                        Ok(Step::Continue | Step::Event(_)) => {}
                        Ok(Step::Finished | Step::ServerError(_)) | Err(_) => backup = None,
                    }
                }
            }
            Split::Need(n) => {
                assert!(n > 0);
                if buf.len() >= 5 {
                    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                    assert_eq!(buf.len() + n, len + 1);
                } else {
                    assert_eq!(buf.len() + n, 5);
                }
                break;
            }
            Split::BadLength(_, len) => {
                assert!(!(4..=MAX_MESSAGE_LEN).contains(&len));
                break;
            }
        }
    }
    assert_eq!(consumed + buf.len(), data.len());
});
