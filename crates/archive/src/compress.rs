//! Archive outputs: plain, or compressed on the client with several threads.
//!
//! gzip and lz4 split the input into blocks compressed in parallel and written in order:
//! gzip as one member of raw-deflate pieces (each ended by a sync flush, the last by a final
//! block, like pigz), lz4 as one frame of independent blocks. zstd uses libzstd's own workers.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::compression::Compression;
use pgincr_io::SeqWriter;

/// Where an archive's bytes go.
pub trait ArchiveOut: Send {
    fn write(&mut self, data: &[u8]) -> io::Result<()>;
    /// Flushes and ends the stream (trailers) and returns the file; it is not fsynced here.
    fn finish(self: Box<Self>) -> io::Result<File>;
}

/// Uncompressed: each received chunk goes to the file's writer as it is.
struct PlainOut(SeqWriter);

impl ArchiveOut for PlainOut {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }
    fn finish(self: Box<Self>) -> io::Result<File> {
        self.0.finish()
    }
}

struct ZstdOut(zstd::stream::write::Encoder<'static, SeqWriter>);

impl ArchiveOut for ZstdOut {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }
    fn finish(self: Box<Self>) -> io::Result<File> {
        self.0.finish()?.finish()
    }
}

/// lz4 frame on one thread (liblz4's streaming API, 256 KB linked blocks, as pg_basebackup).
struct Lz4Out(lz4::Encoder<SeqWriter>);

impl ArchiveOut for Lz4Out {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }
    fn finish(self: Box<Self>) -> io::Result<File> {
        let (w, r) = self.0.finish();
        r?;
        w.finish()
    }
}

/// Opens the output for one archive. `out` gathers small writes itself (it stages aligned
/// blocks for direct I/O), so no further buffering is needed.
pub fn open(
    out: SeqWriter,
    compression: Compression,
    threads: usize,
) -> io::Result<Box<dyn ArchiveOut>> {
    let w = out;
    let threads = threads.max(1);
    Ok(match compression {
        Compression::None => Box::new(PlainOut(w)),
        Compression::Zstd(level) => {
            let mut e = zstd::stream::write::Encoder::new(w, level.unwrap_or(3))?;
            if threads > 1 {
                e.multithread(threads as u32)?;
            }
            Box::new(ZstdOut(e))
        }
        Compression::Gzip(level) => {
            let codec = Gzip {
                level: level.unwrap_or(6) as u32,
            };
            Box::new(Parallel::new(w, Arc::new(codec), threads, 1 << 20)?)
        }
        // With two threads or fewer, lz4 is never the bottleneck (the server needs a core),
        // and the parallel form costs a copy into its blocks: stream instead, like upstream.
        Compression::Lz4(level) if threads <= 2 => Box::new(Lz4Out(
            lz4::EncoderBuilder::new()
                .block_size(lz4::BlockSize::Max256KB)
                .block_mode(lz4::BlockMode::Linked)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .block_checksum(lz4::liblz4::BlockChecksum::NoBlockChecksum)
                .level(level.unwrap_or(0).max(0) as u32)
                .build(w)?,
        )),
        Compression::Lz4(level) => {
            let codec = Lz4 {
                level: level.unwrap_or(0),
            };
            Box::new(Parallel::new(w, Arc::new(codec), threads, LZ4_BLOCK)?)
        }
    })
}

/// A block codec for [`Parallel`].
trait Codec: Send + Sync + 'static {
    fn header(&self) -> Vec<u8>;
    fn block(&self, data: &[u8], last: bool) -> io::Result<Vec<u8>>;
    /// `crc` and `len` cover all input.
    fn trailer(&self, crc: u32, len: u64) -> Vec<u8>;
    fn needs_crc(&self) -> bool;
}

struct Gzip {
    level: u32,
}

impl Codec for Gzip {
    fn header(&self) -> Vec<u8> {
        // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=unix
        vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]
    }
    fn block(&self, data: &[u8], last: bool) -> io::Result<Vec<u8>> {
        use flate2::{Compress, FlushCompress, Status};
        let mut c = Compress::new(flate2::Compression::new(self.level), false);
        let flush = if last {
            FlushCompress::Finish
        } else {
            FlushCompress::Sync
        };
        let mut out = Vec::with_capacity(data.len() / 2 + 1024);
        loop {
            if out.capacity() - out.len() < 16 * 1024 {
                out.reserve(out.capacity().max(64 * 1024));
            }
            let consumed = c.total_in() as usize;
            let st = c
                .compress_vec(data.get(consumed..).unwrap_or_default(), &mut out, flush)
                .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
            let all_in = c.total_in() as usize == data.len();
            match st {
                Status::StreamEnd => break,
                // A sync flush is complete once the output was not the limit.
                _ if !last && all_in && out.len() < out.capacity() => break,
                _ => {}
            }
        }
        Ok(out)
    }
    fn trailer(&self, crc: u32, len: u64) -> Vec<u8> {
        let mut t = crc.to_le_bytes().to_vec();
        t.extend_from_slice(&(len as u32).to_le_bytes());
        t
    }
    fn needs_crc(&self) -> bool {
        true
    }
}

const LZ4_BLOCK: usize = 4 << 20;

/// liblz4 block compression; levels as LZ4F reads them: up to 2 fast, 3 and up high-compression.
struct Lz4 {
    level: i32,
}

impl Codec for Lz4 {
    fn header(&self) -> Vec<u8> {
        // Version 01, independent blocks, no checksums; 4 MB maximum block size.
        let (flg, bd) = (0x60u8, 0x70u8);
        let hc = ((xxh32(&[flg, bd], 0) >> 8) & 0xff) as u8;
        vec![0x04, 0x22, 0x4d, 0x18, flg, bd, hc]
    }
    fn block(&self, data: &[u8], _last: bool) -> io::Result<Vec<u8>> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let mode = if self.level >= 3 {
            lz4::block::CompressionMode::HIGHCOMPRESSION(self.level)
        } else {
            lz4::block::CompressionMode::DEFAULT
        };
        let c = lz4::block::compress(data, Some(mode), false)?;
        let mut out = Vec::with_capacity(c.len().min(data.len()) + 4);
        if c.len() < data.len() {
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(&c);
        } else {
            out.extend_from_slice(&(data.len() as u32 | 0x8000_0000).to_le_bytes());
            out.extend_from_slice(data);
        }
        Ok(out)
    }
    fn trailer(&self, _crc: u32, _len: u64) -> Vec<u8> {
        vec![0, 0, 0, 0]
    }
    fn needs_crc(&self) -> bool {
        false
    }
}

/// XXH32, for the lz4 frame descriptor checksum.
fn xxh32(data: &[u8], seed: u32) -> u32 {
    const P1: u32 = 0x9E37_79B1;
    const P2: u32 = 0x85EB_CA77;
    const P3: u32 = 0xC2B2_AE3D;
    const P4: u32 = 0x27D4_EB2F;
    const P5: u32 = 0x1656_67B1;
    let round = |acc: u32, lane: u32| {
        acc.wrapping_add(lane.wrapping_mul(P2))
            .rotate_left(13)
            .wrapping_mul(P1)
    };
    let word = |b: &[u8]| b.first_chunk::<4>().map_or(0, |w| u32::from_le_bytes(*w));
    let mut rest = data;
    let mut h = if data.len() >= 16 {
        let mut v = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        let mut stripes = data.chunks_exact(16);
        for stripe in &mut stripes {
            for (v, lane) in v.iter_mut().zip(stripe.chunks_exact(4)) {
                *v = round(*v, word(lane));
            }
        }
        rest = stripes.remainder();
        v[0].rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18))
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(data.len() as u32);
    let mut words = rest.chunks_exact(4);
    for w in &mut words {
        h = h
            .wrapping_add(word(w).wrapping_mul(P3))
            .rotate_left(17)
            .wrapping_mul(P4);
    }
    for &b in words.remainder() {
        h = h
            .wrapping_add(u32::from(b).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 15;
    h = h.wrapping_mul(P2);
    h ^= h >> 13;
    h = h.wrapping_mul(P3);
    h ^ (h >> 16)
}

type Job = (u64, Vec<u8>, bool);

/// Compresses fixed-size blocks on worker threads and writes them in order. At most
/// `2 × threads` blocks are in flight, which bounds memory.
struct Parallel {
    out: SeqWriter,
    codec: Arc<dyn Codec>,
    buf: Vec<u8>,
    block: usize,
    jobs: Option<mpsc::SyncSender<Job>>,
    results: mpsc::Receiver<(u64, io::Result<Vec<u8>>)>,
    pending: BTreeMap<u64, Vec<u8>>,
    next_seq: u64,
    next_write: u64,
    max_in_flight: u64,
    workers: Vec<JoinHandle<()>>,
    crc: flate2::Crc,
    len: u64,
}

impl Parallel {
    fn new(
        mut out: SeqWriter,
        codec: Arc<dyn Codec>,
        threads: usize,
        block: usize,
    ) -> io::Result<Parallel> {
        out.write_all(&codec.header())?;
        let (jtx, jrx) = mpsc::sync_channel::<Job>(threads * 2);
        let jrx = Arc::new(Mutex::new(jrx));
        let (rtx, rrx) = mpsc::channel();
        let workers = (0..threads)
            .map(|_| {
                let (jrx, rtx, codec) = (jrx.clone(), rtx.clone(), codec.clone());
                std::thread::spawn(move || loop {
                    let job = match jrx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, data, last)) = job else { return };
                    if rtx.send((seq, codec.block(&data, last))).is_err() {
                        return;
                    }
                })
            })
            .collect();
        Ok(Parallel {
            out,
            codec,
            buf: Vec::with_capacity(block),
            block,
            jobs: Some(jtx),
            results: rrx,
            pending: BTreeMap::new(),
            next_seq: 0,
            next_write: 0,
            max_in_flight: (threads * 2) as u64,
            workers,
            crc: flate2::Crc::new(),
            len: 0,
        })
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(
            &mut self.buf,
            if last {
                Vec::new()
            } else {
                Vec::with_capacity(self.block)
            },
        );
        let gone = || io::Error::other("compression worker stopped");
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send((self.next_seq, data, last))
            .map_err(|_| gone())?;
        self.next_seq += 1;
        while self.next_seq - self.next_write > self.max_in_flight {
            self.collect_one()?;
        }
        Ok(())
    }

    fn collect_one(&mut self) -> io::Result<()> {
        let (seq, res) = self
            .results
            .recv()
            .map_err(|_| io::Error::other("compression worker stopped"))?;
        self.pending.insert(seq, res?);
        while let Some(b) = self.pending.remove(&self.next_write) {
            self.out.write_all(&b)?;
            self.next_write += 1;
        }
        Ok(())
    }
}

impl ArchiveOut for Parallel {
    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        if self.codec.needs_crc() {
            self.crc.update(data);
        }
        self.len += data.len() as u64;
        while !data.is_empty() {
            let n = (self.block - self.buf.len()).min(data.len());
            let (head, rest) = data.split_at_checked(n).unwrap_or((data, &[]));
            self.buf.extend_from_slice(head);
            data = rest;
            if self.buf.len() == self.block {
                self.submit(false)?;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> io::Result<File> {
        self.submit(true)?;
        while self.next_write < self.next_seq {
            self.collect_one()?;
        }
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let t = self.codec.trailer(self.crc.sum(), self.len);
        let mut out = self.out;
        out.write_all(&t)?;
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn roundtrip(alg: Compression, threads: usize) -> Vec<u8> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        let data: Vec<u8> = (0..5_000_000u32)
            .flat_map(|i| ((i / 7) as u16).to_le_bytes())
            .collect();
        let mut o = open(SeqWriter::create(&p, 0o600, true).unwrap(), alg, threads).unwrap();
        for c in data.chunks(32768) {
            o.write(c).unwrap();
        }
        o.finish().unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let mut back = Vec::new();
        match alg {
            Compression::Gzip(_) => flate2::read::GzDecoder::new(f)
                .read_to_end(&mut back)
                .unwrap(),
            Compression::Lz4(_) => lz4::Decoder::new(f)
                .unwrap()
                .read_to_end(&mut back)
                .unwrap(),
            Compression::Zstd(_) => zstd::stream::read::Decoder::new(f)
                .unwrap()
                .read_to_end(&mut back)
                .unwrap(),
            Compression::None => std::io::copy(&mut { f }, &mut back).unwrap() as usize,
        };
        assert!(
            back == data,
            "{alg:?} with {threads} threads did not round-trip"
        );
        back
    }

    #[test]
    fn codecs_round_trip() {
        for alg in [
            Compression::None,
            Compression::Gzip(None),
            Compression::Lz4(None),
            Compression::Zstd(None),
        ] {
            roundtrip(alg, 1);
            roundtrip(alg, 3);
        }
        // lz4 with 2 threads takes the streaming path.
        roundtrip(Compression::Lz4(None), 2);
        roundtrip(Compression::Lz4(Some(9)), 3);
    }

    #[test]
    fn xxh32_known_values() {
        assert_eq!(xxh32(b"", 0), 0x02CC_5D05);
        assert_eq!(xxh32(b"abc", 0), 0x32D1_53FF);
        assert_eq!(
            xxh32(b"Nobody inspects the spammish repetition", 0),
            0xE229_3B2F
        );
    }
}
