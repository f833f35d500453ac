//! Test-only: builds WAL segments byte by byte as the server lays them out.

use crate::page::{XLP_FIRST_IS_CONTRECORD, XLP_LONG_HEADER};
use crate::record::XLR_BLOCK_ID_DATA_LONG;
use crate::source::MemorySource;
use crate::{maxalign, segment_name, XLOG_BLCKSZ};
use pgincr_types::TimeLineId;

pub const SEG: u64 = 1 << 20;
pub const SYSID: u64 = 7_000_000_000_000_000_001;
const PAGE: u64 = XLOG_BLCKSZ as u64;

pub struct Builder {
    pub start: u64,
    pub data: Vec<u8>,
    pub pos: u64,
    pub prev: u64,
    pub magic: u16,
}

/// Main data only, with the short or long data header.
pub fn main_only(d: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    if d.len() < 256 {
        v.push(255);
        v.push(d.len() as u8);
    } else {
        v.push(XLR_BLOCK_ID_DATA_LONG);
        v.extend_from_slice(&(d.len() as u32).to_le_bytes());
    }
    v.extend_from_slice(d);
    v
}

impl Builder {
    pub fn new(segno: u64) -> Builder {
        let start = segno * SEG;
        Builder {
            start,
            data: Vec::new(),
            pos: start,
            prev: 0,
            magic: 0xD118,
        }
    }

    fn at(&mut self, lsn: u64) -> usize {
        let i = (lsn - self.start) as usize;
        let page_end = ((lsn - self.start) / PAGE + 1) * PAGE;
        if self.data.len() < page_end as usize {
            self.data.resize(page_end as usize, 0);
        }
        i
    }

    fn page_header(&mut self, page: u64, info: u16, rem: u32) -> u64 {
        let long = page.is_multiple_of(SEG);
        let i = self.at(page);
        let info = info | if long { XLP_LONG_HEADER } else { 0 };
        let d = &mut self.data;
        d[i..i + 2].copy_from_slice(&self.magic.to_le_bytes());
        d[i + 2..i + 4].copy_from_slice(&info.to_le_bytes());
        d[i + 4..i + 8].copy_from_slice(&1u32.to_le_bytes());
        d[i + 8..i + 16].copy_from_slice(&page.to_le_bytes());
        d[i + 16..i + 20].copy_from_slice(&rem.to_le_bytes());
        if long {
            d[i + 24..i + 32].copy_from_slice(&SYSID.to_le_bytes());
            d[i + 32..i + 36].copy_from_slice(&(SEG as u32).to_le_bytes());
            d[i + 36..i + 40].copy_from_slice(&8192u32.to_le_bytes());
            40
        } else {
            24
        }
    }

    /// Appends a record; returns its LSN.
    pub fn record(&mut self, rmid: u8, info: u8, xid: u32, body: &[u8]) -> u64 {
        let prev = self.prev;
        self.record_with_prev(rmid, info, xid, body, prev)
    }

    pub fn record_with_prev(
        &mut self,
        rmid: u8,
        info: u8,
        xid: u32,
        body: &[u8],
        prev: u64,
    ) -> u64 {
        let tot = 24 + body.len();
        let mut rec = vec![0u8; 24];
        rec[0..4].copy_from_slice(&(tot as u32).to_le_bytes());
        rec[4..8].copy_from_slice(&xid.to_le_bytes());
        rec[8..16].copy_from_slice(&prev.to_le_bytes());
        rec[16] = info;
        rec[17] = rmid;
        rec.extend_from_slice(body);
        let crc = crate::record::record_crc(&rec);
        rec[20..24].copy_from_slice(&crc.to_le_bytes());
        if self.pos.is_multiple_of(PAGE) {
            let page = self.pos;
            self.pos += self.page_header(page, 0, 0);
        }
        let lsn = self.pos;
        let mut written = 0;
        while written < tot {
            if self.pos.is_multiple_of(PAGE) {
                let page = self.pos;
                self.pos += self.page_header(page, XLP_FIRST_IS_CONTRECORD, (tot - written) as u32);
            }
            let i = self.at(self.pos);
            let room = (PAGE - self.pos % PAGE) as usize;
            let n = room.min(tot - written);
            self.data[i..i + n].copy_from_slice(&rec[written..written + n]);
            self.pos += n as u64;
            written += n;
        }
        self.pos = maxalign(self.pos);
        self.prev = lsn;
        lsn
    }

    /// An XLOG_SWITCH: the rest of the segment stays zero.
    pub fn switch(&mut self) -> u64 {
        let lsn = self.record(0, 0x40, 0, &[]);
        self.pos = self.pos.div_ceil(SEG) * SEG;
        lsn
    }

    /// The segments, zero-padded to full size.
    pub fn segments(&self) -> Vec<(String, Vec<u8>)> {
        let mut d = self.data.clone();
        let full = d.len().div_ceil(SEG as usize) * SEG as usize;
        d.resize(full.max(SEG as usize), 0);
        d.chunks(SEG as usize)
            .enumerate()
            .map(|(i, c)| {
                let segno = self.start / SEG + i as u64;
                (
                    segment_name::segment_file_name(TimeLineId(1), segno, SEG),
                    c.to_vec(),
                )
            })
            .collect()
    }

    pub fn source(&self) -> MemorySource {
        let mut s = MemorySource::new();
        for (n, d) in self.segments() {
            s.insert(n, d);
        }
        s
    }
}
