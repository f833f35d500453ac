//! The validating WAL reader: `xlogreader.c`'s `XLogFindNextRecord`, `XLogDecodeNextRecord`,
//! `ReadPageInternal`, `XLogReaderValidatePageHeader`, `ValidXLogRecordHeader`,
//! `ValidXLogRecord` and `DecodeXLogRecord`, over a [`WalSource`].

use crate::decode::{XLOG_OVERWRITE_CONTRECORD, XLOG_SWITCH};
use crate::error::{WalError, WalErrorKind};
use crate::page::{PageHeader, WalMagic, XLP_ALL_FLAGS};
use crate::record::{parse_fragments, record_crc, Record, RecordHeader};
use crate::rmgr::{self, RM_XLOG_ID};
use crate::segment_name::{is_valid_segment_size, segment_file_name};
use crate::source::{SegmentId, WalSource};
use crate::{le_u32, le_u64, maxalign, SIZE_OF_XLOG_RECORD, XLOG_BLCKSZ, XLOG_RECORD_MAX_SIZE};
use pgincr_types::{Lsn, TimeLineId};

const PAGE: u64 = XLOG_BLCKSZ as u64;
/// Bytes read from a source at once.
const CHUNK: u64 = 256 * 1024;

/// What to read and what to expect.
#[derive(Clone, Debug)]
pub struct ReaderOptions {
    /// The timeline whose segment files are read; pages may carry older timelines (the start of
    /// a timeline's first segment) but never a newer one, and never go backwards.
    pub timeline: TimeLineId,
    /// Where to start. As in `pg_waldump --start`, the first record starting at or after it is
    /// the first returned (records from the start of its page are read and checked first).
    pub start: Lsn,
    /// Stop before the first record that does not end at or before this LSN (`pg_waldump
    /// --end`). WAL that ends earlier is an error. `None`: read to the end of WAL.
    pub end: Option<Lsn>,
    /// The WAL segment size; `None`: from the long page header of a segment in the source.
    pub segment_size: Option<u64>,
    /// The system identifier every long header must carry; `None`: that of the first segment
    /// read (so WAL of two clusters is still never mixed).
    pub system_identifier: Option<u64>,
    /// The page magic (major version) expected; `None`: that of the first page read (17 or 18).
    pub magic: Option<WalMagic>,
    /// Without `end`: whether damage (a bad CRC, a broken `xl_prev` chain, a torn continuation)
    /// is an error (`true`, the default) or, as in crash recovery, the end of WAL. WAL that
    /// looks never written (zeroed space, a missing or recycled segment) always ends WAL.
    pub strict: bool,
}

impl ReaderOptions {
    pub fn new(timeline: TimeLineId, start: Lsn) -> ReaderOptions {
        ReaderOptions {
            timeline,
            start,
            end: None,
            segment_size: None,
            system_identifier: None,
            magic: None,
            strict: true,
        }
    }
}

/// Why reading stopped.
#[derive(Debug)]
pub struct EndOfWal {
    /// Where the next record would have started.
    pub lsn: Lsn,
    /// `None` when the requested end was reached; otherwise what xlogreader would have
    /// reported at this point (zeroed space, a missing segment, ...).
    pub reason: Option<WalError>,
}

struct Chunk {
    segno: u64,
    offset: u64,
    data: Vec<u8>,
}

enum Step {
    Record(Box<Record>),
    End,
}

/// Reads and validates records one after another.
pub struct WalReader<S: WalSource> {
    src: S,
    opts: ReaderOptions,
    seg_size: u64,
    magic: Option<WalMagic>,
    sysid: Option<u64>,
    /// `NextRecPtr`.
    next: Lsn,
    /// `DecodeRecPtr` of the previous record, for the prev-link check.
    prev: Lsn,
    /// The next record is the first after positioning: only `xl_prev < lsn` can be checked.
    rand_access: bool,
    positioned: bool,
    latest_page: Lsn,
    latest_tli: u32,
    validated_seg: Option<u64>,
    chunk: Option<Chunk>,
    /// Where the current page starts in `chunk`.
    page_at: usize,
    /// The page in `page`, validated (`ReadPageInternal`'s cache).
    cur_page: Option<(Lsn, PageHeader)>,
    /// A record abandoned at an `XLP_FIRST_IS_OVERWRITE_CONTRECORD` page.
    overwritten: Option<Lsn>,
    finished: Option<EndOfWal>,
    failed: bool,
}

impl<S: WalSource> WalReader<S> {
    pub fn new(mut src: S, opts: ReaderOptions) -> Result<WalReader<S>, WalError> {
        let bad = |m: String| WalError {
            segment: String::new(),
            offset: 0,
            lsn: opts.start,
            kind: WalErrorKind::Options(m),
        };
        let seg_size = match opts.segment_size {
            Some(s) => s,
            None => {
                let head = src
                    .any_segment_header(opts.timeline)
                    .map_err(|e| WalError {
                        segment: String::new(),
                        offset: 0,
                        lsn: opts.start,
                        kind: WalErrorKind::Io(e),
                    })?
                    .ok_or_else(|| {
                        bad(format!(
                            "no WAL segment size given and no segment of timeline {} to read it from",
                            opts.timeline
                        ))
                    })?;
                let h = PageHeader::parse(&head).and_then(|h| h.long).ok_or_else(|| {
                    bad("no WAL segment size given and the first segment has no long page header".into())
                })?;
                u64::from(h.seg_size)
            }
        };
        if !is_valid_segment_size(seg_size) {
            return Err(bad(format!(
                "WAL segment size {seg_size} is not a power of two from 1 MiB to 1 GiB"
            )));
        }
        if let Some(end) = opts.end {
            if end < opts.start {
                return Err(bad(format!("end {end} is before start {}", opts.start)));
            }
        }
        // Keeps all position arithmetic far from u64::MAX (no overflow, in any build).
        let limit = u64::MAX / 2;
        if opts.start.0 > limit || opts.end.is_some_and(|e| e.0 > limit) {
            return Err(bad(format!("start or end LSN beyond {}", Lsn(limit))));
        }
        if !opts.start.is_valid() {
            return Err(bad("start LSN 0/0 is invalid".into()));
        }
        Ok(WalReader {
            src,
            magic: opts.magic,
            sysid: opts.system_identifier,
            next: opts.start,
            prev: Lsn::INVALID,
            rand_access: true,
            positioned: false,
            latest_page: Lsn::INVALID,
            latest_tli: 0,
            validated_seg: None,
            chunk: None,
            page_at: 0,
            cur_page: None,
            overwritten: None,
            finished: None,
            failed: false,
            seg_size,
            opts,
        })
    }

    /// The WAL segment size in use.
    pub fn segment_size(&self) -> u64 {
        self.seg_size
    }

    /// The page magic seen (or expected).
    pub fn magic(&self) -> Option<WalMagic> {
        self.magic
    }

    /// The system identifier of the long headers read.
    pub fn system_identifier(&self) -> Option<u64> {
        self.sysid
    }

    /// Why reading stopped, once [`WalReader::next_record`] has returned `Ok(None)`.
    pub fn end_of_wal(&self) -> Option<&EndOfWal> {
        self.finished.as_ref()
    }

    /// Where the next record starts (`EndRecPtr` of the last one returned).
    pub fn next_lsn(&self) -> Lsn {
        self.next
    }

    pub fn into_source(self) -> S {
        self.src
    }

    /// The next record, `Ok(None)` at the requested end or the end of WAL (see
    /// [`WalReader::end_of_wal`]), or the first failure. After `None` or an error it keeps
    /// returning `None`.
    pub fn next_record(&mut self) -> Result<Option<Record>, WalError> {
        if self.finished.is_some() || self.failed {
            return Ok(None);
        }
        loop {
            let step = if self.positioned {
                self.read_record()
            } else {
                self.position().map(|()| Step::End).and_then(|_| {
                    self.positioned = true;
                    self.read_record()
                })
            };
            match step {
                Ok(Step::Record(r)) => {
                    if r.lsn < self.opts.start {
                        continue;
                    }
                    return Ok(Some(*r));
                }
                Ok(Step::End) => {
                    self.finished = Some(EndOfWal {
                        lsn: self.next,
                        reason: None,
                    });
                    return Ok(None);
                }
                Err(e) => {
                    let ends = self.opts.end.is_none()
                        && !matches!(e.kind, WalErrorKind::Io(_))
                        && (e.is_clean_end() || !self.opts.strict);
                    if ends {
                        self.finished = Some(EndOfWal {
                            lsn: self.next,
                            reason: Some(e),
                        });
                        return Ok(None);
                    }
                    self.failed = true;
                    if let (Some(end), true) = (self.opts.end, e.is_clean_end()) {
                        let at = self.next;
                        return Err(WalError {
                            kind: WalErrorKind::EndNotReached {
                                end,
                                at,
                                why: e.kind.to_string(),
                            },
                            ..e
                        });
                    }
                    return Err(e);
                }
            }
        }
    }

    fn err(&self, lsn: Lsn, kind: WalErrorKind) -> WalError {
        WalError {
            segment: segment_file_name(
                self.opts.timeline,
                lsn.segment(self.seg_size),
                self.seg_size,
            ),
            offset: lsn.segment_offset(self.seg_size),
            lsn,
            kind,
        }
    }

    /// `XLogFindNextRecord`'s first half: skip continuation data at the start page.
    fn position(&mut self) -> Result<(), WalError> {
        let mut p = self.opts.start.0;
        loop {
            let page_lsn = p - p % PAGE;
            if self.past_end(Lsn(page_lsn)) {
                // Nothing to read: the end is reached before the first page.
                self.next = Lsn(page_lsn);
                return Ok(());
            }
            let h = self.load_page(Lsn(page_lsn))?;
            let hs = h.size() as u64;
            if h.is_contrecord() {
                if maxalign(u64::from(h.rem_len)) >= PAGE - hs {
                    p = page_lsn + PAGE;
                    continue;
                }
                p = page_lsn + hs + maxalign(u64::from(h.rem_len));
            } else {
                p = page_lsn + hs;
            }
            self.next = Lsn(p);
            return Ok(());
        }
    }

    fn past_end(&self, lsn: Lsn) -> bool {
        self.opts.end.is_some_and(|e| lsn >= e)
    }

    /// Makes sure `self.chunk` holds the page at `page_lsn` (or as much of it as exists) and
    /// points `self.page()` at it; returns how many bytes of the page are present.
    fn fetch_page(&mut self, page_lsn: Lsn) -> Result<usize, WalError> {
        let segno = page_lsn.segment(self.seg_size);
        let off = page_lsn.segment_offset(self.seg_size);
        let hit = self
            .chunk
            .as_ref()
            .is_some_and(|c| c.segno == segno && off >= c.offset && off < c.offset + CHUNK);
        if !hit {
            let chunk_off = off - off % CHUNK;
            let want = CHUNK.min(self.seg_size - chunk_off) as usize;
            let mut data = self.chunk.take().map(|c| c.data).unwrap_or_default();
            data.resize(want, 0);
            let seg = SegmentId::new(self.opts.timeline, segno, self.seg_size);
            let got = match self.src.read_at(&seg, chunk_off, &mut data) {
                Ok(Some(n)) => n.min(want),
                Ok(None) => return Err(self.err(page_lsn, WalErrorKind::SegmentMissing)),
                Err(e) => return Err(self.err(page_lsn, WalErrorKind::Io(e))),
            };
            data.truncate(got);
            self.chunk = Some(Chunk {
                segno,
                offset: chunk_off,
                data,
            });
        }
        let Some(c) = self.chunk.as_ref() else {
            return Ok(0);
        };
        let start = (off - c.offset) as usize;
        let avail = c.data.get(start..).unwrap_or(&[]);
        let n = avail.len().min(XLOG_BLCKSZ);
        self.page_at = start;
        Ok(n)
    }

    /// The current page (whole once `load_one` accepted it).
    fn page(&self) -> &[u8] {
        self.chunk
            .as_ref()
            .and_then(|c| c.data.get(self.page_at..self.page_at + XLOG_BLCKSZ))
            .unwrap_or(&[])
    }

    /// `ReadPageInternal` + `XLogReaderValidatePageHeader`: loads and checks the page at
    /// `page_lsn`, first checking its segment's first page when entering a new segment.
    fn load_page(&mut self, page_lsn: Lsn) -> Result<PageHeader, WalError> {
        if let Some((p, h)) = self.cur_page {
            if p == page_lsn {
                return Ok(h);
            }
        }
        let segno = page_lsn.segment(self.seg_size);
        if self.validated_seg != Some(segno) && page_lsn.segment_offset(self.seg_size) != 0 {
            let seg_start = Lsn(page_lsn.0 - page_lsn.segment_offset(self.seg_size));
            self.load_one(seg_start)?;
        }
        let h = self.load_one(page_lsn)?;
        self.validated_seg = Some(segno);
        self.cur_page = Some((page_lsn, h));
        Ok(h)
    }

    fn load_one(&mut self, page_lsn: Lsn) -> Result<PageHeader, WalError> {
        self.cur_page = None;
        let n = self.fetch_page(page_lsn)?;
        if n < XLOG_BLCKSZ {
            return Err(self.err(
                page_lsn,
                WalErrorKind::Truncated {
                    got: n,
                    want: XLOG_BLCKSZ,
                },
            ));
        }
        let Some(h) = PageHeader::parse(self.page()) else {
            return Err(self.err(
                page_lsn,
                WalErrorKind::Truncated {
                    got: n,
                    want: XLOG_BLCKSZ,
                },
            ));
        };
        let magic_ok = match self.magic {
            Some(m) => h.magic == m.value(),
            None => WalMagic::from_value(h.magic).is_some(),
        };
        if !magic_ok {
            if self.page().iter().all(|&b| b == 0) {
                return Err(self.err(page_lsn, WalErrorKind::ZeroedPage));
            }
            let expected = match self.magic {
                Some(m) => format!("{:04X}", m.value()),
                None => "D116 (17) or D118 (18)".to_string(),
            };
            return Err(self.err(
                page_lsn,
                WalErrorKind::BadMagic {
                    found: h.magic,
                    expected,
                },
            ));
        }
        if self.magic.is_none() {
            self.magic = WalMagic::from_value(h.magic);
        }
        if h.info & !XLP_ALL_FLAGS != 0 {
            return Err(self.err(page_lsn, WalErrorKind::BadInfoBits(h.info)));
        }
        let off = page_lsn.segment_offset(self.seg_size);
        if let Some(l) = h.long {
            match self.sysid {
                Some(s) if s != l.sysid => {
                    return Err(self.err(
                        page_lsn,
                        WalErrorKind::SystemIdMismatch {
                            found: l.sysid,
                            expected: s,
                        },
                    ))
                }
                Some(_) => {}
                None => self.sysid = Some(l.sysid),
            }
            if u64::from(l.seg_size) != self.seg_size {
                return Err(self.err(
                    page_lsn,
                    WalErrorKind::SegmentSizeMismatch {
                        found: l.seg_size,
                        expected: self.seg_size,
                    },
                ));
            }
            if l.xlog_blcksz as usize != XLOG_BLCKSZ {
                return Err(self.err(page_lsn, WalErrorKind::BadBlockSize(l.xlog_blcksz)));
            }
        } else if off == 0 {
            return Err(self.err(page_lsn, WalErrorKind::NoLongHeader(h.info)));
        }
        if h.pageaddr != page_lsn {
            return Err(self.err(
                page_lsn,
                WalErrorKind::UnexpectedPageAddr {
                    found: h.pageaddr,
                    expected: page_lsn,
                },
            ));
        }
        if page_lsn > self.latest_page && h.tli.0 < self.latest_tli {
            return Err(self.err(
                page_lsn,
                WalErrorKind::TimelineOutOfSequence {
                    found: h.tli.0,
                    after: self.latest_tli,
                },
            ));
        }
        if h.tli > self.opts.timeline {
            return Err(self.err(
                page_lsn,
                WalErrorKind::TimelineTooNew {
                    found: h.tli.0,
                    reading: self.opts.timeline.0,
                },
            ));
        }
        self.latest_page = page_lsn;
        self.latest_tli = h.tli.0;
        Ok(h)
    }

    /// `ValidXLogRecordHeader`.
    fn check_header(&self, rec_ptr: Lsn, head: &[u8]) -> Result<RecordHeader, WalError> {
        let Some(h) = RecordHeader::parse(head) else {
            return Err(self.err(rec_ptr, WalErrorKind::RecordTooShort(0)));
        };
        if (h.tot_len as usize) < SIZE_OF_XLOG_RECORD {
            let kind = if h.tot_len == 0 && head.iter().take(SIZE_OF_XLOG_RECORD).all(|&b| b == 0) {
                WalErrorKind::ZeroedRecord
            } else {
                WalErrorKind::RecordTooShort(h.tot_len)
            };
            return Err(self.err(rec_ptr, kind));
        }
        if !rmgr::is_valid(h.rmid) {
            return Err(self.err(rec_ptr, WalErrorKind::BadRmgr(h.rmid)));
        }
        if self.rand_access {
            if h.prev >= rec_ptr {
                return Err(self.err(
                    rec_ptr,
                    WalErrorKind::BadPrevLink {
                        found: h.prev,
                        expected: format!("below {rec_ptr}"),
                    },
                ));
            }
        } else if h.prev != self.prev {
            return Err(self.err(
                rec_ptr,
                WalErrorKind::BadPrevLink {
                    found: h.prev,
                    expected: self.prev.to_string(),
                },
            ));
        }
        Ok(h)
    }

    /// `XLogDecodeNextRecord` at `self.next`.
    fn read_record(&mut self) -> Result<Step, WalError> {
        let mut rec_ptr = self.next.0;
        'restart: loop {
            let page_lsn = rec_ptr - rec_ptr % PAGE;
            let mut off = (rec_ptr % PAGE) as usize;
            if self.past_end(Lsn(rec_ptr)) {
                return Ok(Step::End);
            }
            let h = self.load_page(Lsn(page_lsn))?;
            let hs = h.size();
            if off == 0 {
                rec_ptr += hs as u64;
                off = hs;
                self.next = Lsn(rec_ptr);
            } else if off < hs {
                return Err(self.err(
                    Lsn(rec_ptr),
                    WalErrorKind::BadRecordOffset {
                        expected: hs as u32,
                        got: off as u32,
                    },
                ));
            }
            if h.is_contrecord() && off == hs {
                return Err(self.err(
                    Lsn(rec_ptr),
                    WalErrorKind::ContrecordRequested(Lsn(rec_ptr)),
                ));
            }
            if self.past_end(Lsn(rec_ptr)) {
                return Ok(Step::End);
            }
            let lsn = Lsn(rec_ptr);
            let first = self.page().get(off..).unwrap_or(&[]);
            let tot_len = le_u32(first, 0).unwrap_or(0);
            let mut header = None;
            if off <= XLOG_BLCKSZ - SIZE_OF_XLOG_RECORD {
                header = Some(self.check_header(lsn, first)?);
            } else if (tot_len as usize) < SIZE_OF_XLOG_RECORD {
                let kind = if tot_len == 0 && first.iter().all(|&b| b == 0) {
                    WalErrorKind::ZeroedRecord
                } else {
                    WalErrorKind::RecordTooShort(tot_len)
                };
                return Err(self.err(lsn, kind));
            }
            if tot_len > XLOG_RECORD_MAX_SIZE {
                return Err(self.err(lsn, WalErrorKind::RecordTooLong(tot_len)));
            }
            let tot = tot_len as usize;
            let avail = XLOG_BLCKSZ - off;
            // Allocate only what this page holds; the rest grows as pages arrive.
            let mut buf: Vec<u8> = Vec::with_capacity(tot.min(avail));
            let next;
            let raw_end;
            if tot <= avail {
                buf.extend_from_slice(first.get(..tot).unwrap_or(&[]));
                next = rec_ptr + maxalign(tot as u64);
                raw_end = rec_ptr + tot as u64;
            } else {
                buf.extend_from_slice(first);
                let mut tpage = page_lsn;
                let mut last = (0u64, 0usize, 0u32);
                while buf.len() < tot {
                    tpage += PAGE;
                    if self.past_end(Lsn(tpage)) {
                        return Ok(Step::End);
                    }
                    let ph = self.load_page(Lsn(tpage))?;
                    if ph.is_overwrite_contrecord() {
                        self.overwritten = Some(lsn);
                        rec_ptr = tpage;
                        self.next = Lsn(tpage);
                        continue 'restart;
                    }
                    if !ph.is_contrecord() {
                        return Err(self.err(Lsn(tpage), WalErrorKind::NoContrecordFlag(lsn)));
                    }
                    let got = buf.len();
                    if ph.rem_len == 0 || tot as u64 != u64::from(ph.rem_len) + got as u64 {
                        return Err(self.err(
                            Lsn(tpage),
                            WalErrorKind::BadContrecordLength {
                                found: ph.rem_len,
                                expected: tot as i64 - got as i64,
                                record: lsn,
                            },
                        ));
                    }
                    let phs = ph.size();
                    let len = (XLOG_BLCKSZ - phs).min(ph.rem_len as usize);
                    buf.extend_from_slice(self.page().get(phs..phs + len).unwrap_or(&[]));
                    if header.is_none() && buf.len() >= SIZE_OF_XLOG_RECORD {
                        header = Some(self.check_header(lsn, &buf)?);
                    }
                    last = (tpage, phs, ph.rem_len);
                }
                next = last.0 + last.1 as u64 + maxalign(u64::from(last.2));
                raw_end = last.0 + last.1 as u64 + u64::from(last.2);
            }
            if self.opts.end.is_some_and(|e| raw_end > e.0) {
                return Ok(Step::End);
            }
            let Some(hdr) = header else {
                return Err(self.err(lsn, WalErrorKind::RecordTooShort(tot_len)));
            };
            let computed = record_crc(&buf);
            if computed != hdr.crc {
                return Err(self.err(
                    lsn,
                    WalErrorKind::BadCrc {
                        record: lsn,
                        stored: hdr.crc,
                        computed,
                    },
                ));
            }
            let mut next = next;
            let is_xlog = hdr.rmid == RM_XLOG_ID;
            if is_xlog && hdr.info & 0xF0 == XLOG_SWITCH {
                next = next.saturating_add(self.seg_size - 1);
                next -= next % self.seg_size;
            }
            let frags = parse_fragments(&buf)
                .map_err(|what| self.err(lsn, WalErrorKind::BadBody { record: lsn, what }))?;
            if let Some(ow) = self.overwritten.take() {
                // xlogrecovery.c VerifyOverwriteContrecord: the first record on the page must be
                // XLOG_OVERWRITE_CONTRECORD naming the abandoned record.
                let main = buf.get(frags.main_data.clone()).unwrap_or(&[]);
                let named = le_u64(main, 0).map(Lsn);
                if !(is_xlog && hdr.info & 0xF0 == XLOG_OVERWRITE_CONTRECORD && named == Some(ow)) {
                    return Err(self.err(lsn, WalErrorKind::Overwritten { record: ow }));
                }
            }
            let magic = self.magic.unwrap_or(WalMagic::V18);
            self.prev = lsn;
            self.rand_access = false;
            self.next = Lsn(next);
            return Ok(Step::Record(Box::new(Record {
                lsn,
                end_lsn: Lsn(next),
                total_len: hdr.tot_len,
                xid: hdr.xid,
                prev: hdr.prev,
                info: hdr.info,
                rmid: hdr.rmid,
                crc: hdr.crc,
                magic,
                blocks: frags.blocks,
                origin: frags.origin,
                toplevel_xid: frags.toplevel_xid,
                main_data: frags.main_data,
                bytes: buf,
            })));
        }
    }
}

impl<S: WalSource> Iterator for WalReader<S> {
    type Item = Result<Record, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::RecordBody;
    use crate::source::MemorySource;
    use crate::testwal::{main_only, Builder, SEG};
    use proptest::prelude::*;

    fn opts(start: u64, end: Option<u64>) -> ReaderOptions {
        let mut o = ReaderOptions::new(TimeLineId(1), Lsn(start));
        o.end = end.map(Lsn);
        o.segment_size = Some(SEG);
        o
    }

    fn read_all(
        src: MemorySource,
        o: ReaderOptions,
    ) -> (Vec<Record>, Result<(), WalError>, Option<EndOfWal>) {
        let mut r = WalReader::new(src, o).unwrap();
        let mut out = Vec::new();
        loop {
            match r.next_record() {
                Ok(Some(rec)) => out.push(rec),
                Ok(None) => return (out, Ok(()), r.finished.take()),
                Err(e) => return (out, Err(e), None),
            }
        }
    }

    fn sample() -> (Builder, Vec<u64>) {
        let mut b = Builder::new(1);
        let mut lsns = Vec::new();
        let mut rp = vec![0u8; 72];
        rp[8..12].copy_from_slice(b"rp1\0");
        lsns.push(b.record(0, 0x70, 0, &main_only(&rp)));
        lsns.push(b.record(10, 0x00, 740, &main_only(&[1, 2, 3])));
        // Spans two page boundaries.
        lsns.push(b.record(10, 0x00, 741, &main_only(&vec![7u8; 10_000])));
        lsns.push(b.record(1, 0x00, 741, &main_only(&1234i64.to_le_bytes())));
        (b, lsns)
    }

    #[test]
    fn reads_records_and_continuations() {
        let (b, lsns) = sample();
        let (recs, res, end) = read_all(b.source(), opts(SEG, None));
        res.unwrap();
        assert_eq!(recs.iter().map(|r| r.lsn.0).collect::<Vec<_>>(), lsns);
        assert_eq!(recs[0].lsn, Lsn(SEG + 40));
        assert_eq!(recs[1].prev, recs[0].lsn);
        assert_eq!(recs[2].total_len, 24 + 5 + 10_000);
        assert_eq!(recs[2].main_data(), &vec![7u8; 10_000][..]);
        assert_eq!(
            recs[0].decode().unwrap(),
            RecordBody::RestorePoint {
                time: 0,
                name: "rp1".into()
            }
        );
        assert_eq!(recs[3].rmgr_name(), "Transaction");
        let end = end.unwrap();
        assert_eq!(end.lsn, recs[3].end_lsn);
        assert!(matches!(
            end.reason.unwrap().kind,
            WalErrorKind::ZeroedRecord
        ));
        // Starting inside the continued record finds the next record.
        let (recs2, res2, _) = read_all(b.source(), opts(SEG + 8192, None));
        res2.unwrap();
        assert_eq!(recs2.first().map(|r| r.lsn.0), Some(lsns[3]));
        // The end LSN stops before records that do not end by it.
        let (recs3, res3, end3) = read_all(b.source(), opts(SEG, Some(recs[2].end_lsn.0 - 8)));
        res3.unwrap();
        assert_eq!(recs3.len(), 2);
        assert!(end3.unwrap().reason.is_none());
        // Segment size from the long header.
        let mut o = opts(SEG, None);
        o.segment_size = None;
        let r = WalReader::new(b.source(), o).unwrap();
        assert_eq!(r.segment_size(), SEG);
    }

    #[test]
    fn switch_and_segment_crossing() {
        let mut b = Builder::new(1);
        b.record(0, 0x20, 0, &main_only(&[0; 8]));
        let sw = b.switch();
        let after = b.record(10, 0x00, 9, &main_only(&[1; 8]));
        assert_eq!(after, 2 * SEG + 40);
        // Fill up to the end of segment 2 and cross into 3.
        while b.pos < 3 * SEG - 4000 {
            b.record(10, 0x00, 9, &main_only(&[2; 3000]));
        }
        let crossing = b.record(10, 0x00, 9, &main_only(&[3; 9000]));
        let last = b.record(1, 0x00, 9, &main_only(&5i64.to_le_bytes()));
        let (recs, res, _) = read_all(b.source(), opts(SEG, Some(b.pos)));
        res.unwrap();
        let sw_rec = recs.iter().find(|r| r.lsn.0 == sw).unwrap();
        assert_eq!(sw_rec.end_lsn, Lsn(2 * SEG));
        assert!(recs
            .iter()
            .any(|r| r.lsn.0 == crossing && r.end_lsn.0 > 3 * SEG));
        assert_eq!(recs.last().unwrap().lsn.0, last);
    }

    #[test]
    fn bad_crc_names_segment_and_offset() {
        let (mut b, lsns) = sample();
        let i = (lsns[1] - b.start) as usize + 26;
        b.data[i] ^= 0xFF;
        let (recs, res, _) = read_all(b.source(), opts(SEG, Some(b.pos)));
        assert_eq!(recs.len(), 1);
        let e = res.unwrap_err();
        assert!(matches!(e.kind, WalErrorKind::BadCrc { .. }), "{e}");
        assert_eq!(e.segment, "000000010000000000000001");
        assert_eq!(e.offset, lsns[1] - SEG);
        assert!(
            e.to_string().contains("000000010000000000000001, offset"),
            "{e}"
        );
        // Without an end: still an error by default, end of WAL when not strict.
        let (_, res, _) = read_all(b.source(), opts(SEG, None));
        assert!(res.is_err());
        let mut o = opts(SEG, None);
        o.strict = false;
        let (recs, res, end) = read_all(b.source(), o);
        res.unwrap();
        assert_eq!(recs.len(), 1);
        assert!(matches!(
            end.unwrap().reason.unwrap().kind,
            WalErrorKind::BadCrc { .. }
        ));
    }

    #[test]
    fn bad_prev_link() {
        let mut b = Builder::new(1);
        let a = b.record(10, 0, 1, &main_only(&[1; 4]));
        b.record_with_prev(10, 0, 1, &main_only(&[1; 4]), a + 8);
        let (recs, res, _) = read_all(b.source(), opts(SEG, None));
        assert_eq!(recs.len(), 1);
        let e = res.unwrap_err();
        assert!(matches!(e.kind, WalErrorKind::BadPrevLink { .. }), "{e}");
    }

    #[test]
    fn zeroed_page_and_truncation() {
        let (b, lsns) = sample();
        // A zeroed continuation page: the end LSN cannot be reached.
        let mut z = Builder {
            data: b.data.clone(),
            ..Builder::new(1)
        };
        z.pos = b.pos;
        let page = (lsns[2] - SEG) / 8192 * 8192 + 8192;
        z.data[page as usize..page as usize + 8192].fill(0);
        let (recs, res, _) = read_all(z.source(), opts(SEG, Some(b.pos)));
        assert_eq!(recs.len(), 2);
        let e = res.unwrap_err();
        assert!(matches!(e.kind, WalErrorKind::EndNotReached { .. }), "{e}");
        assert_eq!(e.offset, page);
        // A truncated segment.
        let mut src = MemorySource::new();
        let (name, mut seg) = b.segments().remove(0);
        seg.truncate(8192 + 100);
        src.insert(name, seg);
        let (_, res, _) = read_all(src, opts(SEG, Some(b.pos)));
        let e = res.unwrap_err();
        assert!(
            matches!(e.kind, WalErrorKind::Truncated { got: 100, .. }),
            "{e}"
        );
        assert_eq!(e.offset, 8192);
    }

    #[test]
    fn page_header_checks() {
        let (b, _) = sample();
        let mut wrong = Builder {
            data: b.data.clone(),
            ..Builder::new(1)
        };
        wrong.data[8192 + 8] ^= 0x01; // pageaddr of page 1
        let (_, res, _) = read_all(wrong.source(), opts(SEG, Some(b.pos)));
        assert!(matches!(
            res.unwrap_err().kind,
            WalErrorKind::EndNotReached { .. }
        ));
        let mut magic = Builder {
            data: b.data.clone(),
            ..Builder::new(1)
        };
        magic.data[0] = 0x17;
        let (_, res, _) = read_all(magic.source(), opts(SEG, None));
        assert!(matches!(
            res.unwrap_err().kind,
            WalErrorKind::BadMagic { .. }
        ));
        let mut o = opts(SEG, None);
        o.magic = Some(WalMagic::V17);
        let (_, res, _) = read_all(b.source(), o);
        assert!(matches!(
            res.unwrap_err().kind,
            WalErrorKind::BadMagic { found: 0xD118, .. }
        ));
        let mut o = opts(SEG, None);
        o.system_identifier = Some(1);
        let (_, res, _) = read_all(b.source(), o);
        assert!(matches!(
            res.unwrap_err().kind,
            WalErrorKind::SystemIdMismatch { .. }
        ));
        let mut info = Builder {
            data: b.data.clone(),
            ..Builder::new(1)
        };
        info.data[2] |= 0x10;
        let (_, res, _) = read_all(info.source(), opts(SEG, None));
        assert!(matches!(
            res.unwrap_err().kind,
            WalErrorKind::BadInfoBits(_)
        ));
        // A missing first segment ends WAL without an end, fails with one.
        let (recs, res, end) = read_all(MemorySource::new(), opts(SEG, None));
        assert!(recs.is_empty() && res.is_ok());
        assert!(matches!(
            end.unwrap().reason.unwrap().kind,
            WalErrorKind::SegmentMissing
        ));
        assert!(read_all(MemorySource::new(), opts(SEG, Some(2 * SEG)))
            .1
            .is_err());
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let (mut b, lsns) = sample();
        let i = (lsns[1] - b.start) as usize;
        b.data[i..i + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let (_, res, _) = read_all(b.source(), opts(SEG, Some(b.pos)));
        assert!(matches!(
            res.unwrap_err().kind,
            WalErrorKind::RecordTooLong(u32::MAX)
        ));
    }

    fn overwritten_wal(named: u64) -> (Builder, u64, u64) {
        let mut b = Builder::new(1);
        let r0 = b.record(10, 0, 1, &main_only(&[1; 16]));
        let aborted = b.record(10, 0, 1, &main_only(&[9; 10_000]));
        // Crash recovery cut the record off: the next page restarts with an
        // XLOG_OVERWRITE_CONTRECORD record on an XLP_FIRST_IS_OVERWRITE_CONTRECORD page.
        let page = (aborted / 8192 + 1) * 8192;
        let i = (page - b.start) as usize;
        b.data.truncate(i);
        b.pos = page;
        b.prev = r0;
        let mut body = named.to_le_bytes().to_vec();
        body.extend_from_slice(&5i64.to_le_bytes());
        let ow = b.record(0, 0xD0, 0, &main_only(&body));
        b.data[i + 2] |= 0x08;
        b.record(10, 0, 2, &main_only(&[2; 8]));
        (b, aborted, ow)
    }

    #[test]
    fn overwrite_contrecord() {
        // The layout does not depend on the LSN named: learn it, then build the real thing.
        let (_, aborted, _) = overwritten_wal(0);
        let (b, _, ow) = overwritten_wal(aborted);
        let (recs, res, _) = read_all(b.source(), opts(SEG, Some(b.pos)));
        res.unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].lsn.0, ow);
        assert_eq!(
            recs[1].decode().unwrap(),
            RecordBody::OverwriteContrecord {
                overwritten: Lsn(aborted),
                time: 5
            }
        );
        assert!(recs.iter().all(|r| r.lsn.0 != aborted));
        // An overwrite record naming another LSN is refused.
        let (bad, _, _) = overwritten_wal(aborted + 8);
        let (recs, res, _) = read_all(bad.source(), opts(SEG, Some(bad.pos)));
        assert_eq!(recs.len(), 1);
        let e = res.unwrap_err();
        assert!(matches!(e.kind, WalErrorKind::Overwritten { .. }), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..20_000), start in 0u64..20_000) {
            let mut src = MemorySource::new();
            let mut seg = bytes.clone();
            seg.resize(SEG as usize, 0);
            src.insert("000000010000000000000001", seg);
            src.insert("000000010000000000000002", bytes);
            let mut o = opts(SEG + start, None);
            o.strict = false;
            let mut r = WalReader::new(src, o).unwrap();
            for _ in 0..1000 {
                if !matches!(r.next_record(), Ok(Some(_))) { break; }
            }
        }

        #[test]
        fn mutated_wal_never_panics(flips in proptest::collection::vec((0usize..40_000, any::<u8>()), 1..8)) {
            let (mut b, _) = sample();
            for (at, v) in flips {
                let n = b.data.len();
                b.data[at % n] = v;
            }
            let mut r = WalReader::new(b.source(), opts(SEG, Some(b.pos))).unwrap();
            for _ in 0..1000 {
                match r.next_record() {
                    Ok(Some(rec)) => { let _ = rec.decode(); }
                    _ => break,
                }
            }
        }
    }
}
