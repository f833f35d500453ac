//! Data-page checks of relation files, beyond what `pg_verifybackup` does: with data checksums
//! on, every block of every relation file carries the checksum `pg_checksum_page` computes,
//! as `pg_checksums --check` verifies it, and a header `PageIsVerified` would accept.
//!
//! Which files: those `pg_checksums` scans (`global`, `base/<db>`, and this version's
//! directory in `pg_tblspc/<oid>`), named as relation files (`<relfilenode>[_fork][.segno]`).
//! That naming rule covers `pg_checksums`' skip list (`pg_control`, `pg_filenode.map`,
//! `pg_internal.init*`, `PG_VERSION`, `config_exec_params*`, `pgsql_tmp*`) and leaves out
//! temporary relations (`t3_16384`). In an incremental backup, the block images an
//! `INCREMENTAL.<relation file>` carries are checked too, each with the block number its
//! header gives (a header that does not parse is a problem, and its blocks are not checked).
//!
//! Which pages: as `pg_checksums`, new pages (`pd_upper == 0`) are skipped; as the server's own
//! check during `BASE_BACKUP` (`verify_page_checksum` in basebackup.c), so are pages whose LSN
//! is at or after the backup's start: they may have been written while the backup read them,
//! and the WAL the backup carries replaces them.

use pgincr_types::incremental::{IncrementalHeader, INCREMENTAL_PREFIX};
use pgincr_types::{page, BlockSize, RelFileName, RelGeometry, RelSegSize};

/// What the checks need of the cluster.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PageGeometry {
    pub blcksz: usize,
    /// Blocks per segment file (`RELSEG_SIZE`).
    pub relseg_blocks: u32,
    /// The backup's start LSN: pages at or after it are not checked. `u64::MAX` checks all.
    pub start_lsn: u64,
}

impl PageGeometry {
    pub(crate) const DEFAULT_BLCKSZ: usize = 8192;
    pub(crate) const DEFAULT_RELSEG_BLOCKS: u32 = 131_072;
}

/// What is wrong with one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "what")]
pub enum PageDamage {
    /// `pd_checksum` is not the checksum of the page.
    Checksum { calculated: u16, stored: u16 },
    /// The checksum is right but the header is not one PostgreSQL accepts.
    Header,
    /// The file ends inside this block.
    Partial { len: usize },
    /// An `INCREMENTAL.*` file whose header does not parse (no block of it is checked).
    IncrementalHeader,
}

/// One damaged block of a relation file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PageProblem {
    /// Block number within the file (what `pg_checksums` prints).
    pub block: u32,
    /// Block number within the fork (`segno * RELSEG_SIZE + block`), the one mixed into the
    /// checksum.
    pub fork_block: u64,
    #[serde(flatten)]
    pub damage: PageDamage,
}

impl PageProblem {
    /// The line `pg_checksums` prints (for checksums), or an equivalent.
    pub(crate) fn message(&self, file: &str) -> String {
        match self.damage {
            PageDamage::Checksum { calculated, stored } => format!(
                "checksum verification failed in file \"{file}\", block {}: calculated checksum {calculated:X} but block contains {stored:X}",
                self.block
            ),
            PageDamage::Header => format!(
                "invalid page header in file \"{file}\", block {}",
                self.block
            ),
            PageDamage::Partial { len } => format!(
                "could not read block {} in file \"{file}\": read {len} of a whole block",
                self.block
            ),
            PageDamage::IncrementalHeader => format!(
                "invalid incremental file header in file \"{file}\": its blocks are not checked"
            ),
        }
    }
}

/// A file whose pages the checks read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RelationFile {
    pub segno: u32,
    /// An `INCREMENTAL.*` file: a header, then block images.
    pub incremental: bool,
}

/// What `path` (relative to the data directory, `/`-separated) is, when it is a relation
/// file (or an incremental one) whose pages the checks read.
pub(crate) fn relation_file(path: &str) -> Option<RelationFile> {
    let mut parts = path.split('/');
    let name = match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("global"), Some(name), None, ..) => name,
        (Some("base"), Some(db), Some(name), None, ..) if is_oid(db) => name,
        (Some("pg_tblspc"), Some(spc), Some(version), Some(db), Some(name), None)
            if is_oid(spc) && version.starts_with("PG_") && is_oid(db) =>
        {
            name
        }
        _ => return None,
    };
    let (name, incremental) = match name.strip_prefix(INCREMENTAL_PREFIX) {
        Some(n) => (n, true),
        None => (name, false),
    };
    RelFileName::parse(name).map(|r| RelationFile {
        segno: r.segno,
        incremental,
    })
}

fn is_oid(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Where an incremental file is in its reading.
enum Incremental {
    /// Not one.
    No,
    /// Its header so far, and the file's length.
    Head(Vec<u8>, u64),
    /// The segment-relative block number of each image, and the next image.
    Blocks(Vec<u32>, usize),
    /// The header did not parse: nothing more is checked.
    Bad,
}

/// The blocks of one relation file, fed in order, in chunks of any size.
pub(crate) struct FilePages {
    geom: PageGeometry,
    first_fork_block: u64,
    segno: u32,
    incremental: Incremental,
    next_block: u32,
    /// Bytes of a block split across chunks.
    pending: Vec<u8>,
    pub checked: u64,
    /// Of those, not checked: new pages and pages changed during the backup.
    pub skipped: u64,
    pub problems: Vec<PageProblem>,
    /// Problems beyond `limit`, counted only.
    pub more: u64,
    limit: usize,
}

impl FilePages {
    /// `limit`: how many problems to keep (the rest are counted). `len`: the file's size.
    pub(crate) fn new(geom: PageGeometry, file: RelationFile, len: u64, limit: usize) -> FilePages {
        let segno = file.segno;
        FilePages {
            geom,
            first_fork_block: u64::from(segno) * u64::from(geom.relseg_blocks),
            segno,
            incremental: if file.incremental {
                Incremental::Head(Vec::new(), len)
            } else {
                Incremental::No
            },
            next_block: 0,
            pending: Vec::new(),
            checked: 0,
            skipped: 0,
            problems: Vec::new(),
            more: 0,
            limit,
        }
    }

    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        let bs = self.geom.blcksz;
        if let Incremental::Head(head, len) = &mut self.incremental {
            // 12 bytes, then (count known) the header rounded up to a block.
            let need = |head: &[u8]| -> usize {
                match head.get(4..8).and_then(|c| <[u8; 4]>::try_from(c).ok()) {
                    None => 12,
                    Some(c) => {
                        let n = u32::from_le_bytes(c).min(1 << 20) as usize;
                        let raw = 12 + 4 * n;
                        if n == 0 {
                            raw
                        } else {
                            raw.div_ceil(bs) * bs
                        }
                    }
                }
            };
            while head.len() < need(head) && !data.is_empty() {
                let take = (need(head) - head.len()).min(data.len());
                let (h, rest) = data.split_at(take);
                head.extend_from_slice(h);
                data = rest;
            }
            if head.len() < need(head) {
                return;
            }
            let geom = match (
                BlockSize::new(bs as u32),
                RelSegSize::new(self.geom.relseg_blocks),
            ) {
                (Ok(b), Ok(r)) => Some(RelGeometry::new(b, r)),
                _ => None,
            };
            self.incremental = match geom
                .map(|g| IncrementalHeader::parse_segment_prefix(head, *len, g, self.segno))
            {
                Some(Ok(h)) => Incremental::Blocks(h.blocks, 0),
                _ => {
                    self.push(PageProblem {
                        block: 0,
                        fork_block: self.first_fork_block,
                        damage: PageDamage::IncrementalHeader,
                    });
                    Incremental::Bad
                }
            };
        }
        if matches!(self.incremental, Incremental::Bad) {
            return;
        }
        if !self.pending.is_empty() {
            let want = bs.saturating_sub(self.pending.len()).min(data.len());
            let (head, rest) = data.split_at(want);
            self.pending.extend_from_slice(head);
            data = rest;
            if self.pending.len() < bs {
                return;
            }
            let block = std::mem::take(&mut self.pending);
            self.block(&block);
        }
        let mut blocks = data.chunks_exact(bs);
        for b in &mut blocks {
            self.block(b);
        }
        self.pending.extend_from_slice(blocks.remainder());
    }

    /// Ends the file: a trailing partial block is a problem.
    pub(crate) fn finish(&mut self) {
        if matches!(self.incremental, Incremental::Head(..)) {
            // The file ended inside its header.
            self.incremental = Incremental::Bad;
            self.push(PageProblem {
                block: 0,
                fork_block: self.first_fork_block,
                damage: PageDamage::IncrementalHeader,
            });
        }
        if !self.pending.is_empty() {
            let len = self.pending.len();
            self.pending.clear();
            let p = self.at(PageDamage::Partial { len });
            self.push(p);
        }
    }

    /// The segment-relative number of the block being read.
    fn block_number(&self) -> u32 {
        match &self.incremental {
            Incremental::Blocks(blocks, i) => blocks.get(*i).copied().unwrap_or(u32::MAX),
            _ => self.next_block,
        }
    }

    fn at(&self, damage: PageDamage) -> PageProblem {
        let block = self.block_number();
        PageProblem {
            block,
            fork_block: self.first_fork_block + u64::from(block),
            damage,
        }
    }

    fn push(&mut self, p: PageProblem) {
        if self.problems.len() < self.limit {
            self.problems.push(p);
        } else {
            self.more += 1;
        }
    }

    fn block(&mut self, b: &[u8]) {
        let fork_block = self.first_fork_block + u64::from(self.block_number());
        match check_block(b, fork_block, self.geom.start_lsn) {
            Verdict::Bad(d) => {
                let p = self.at(d);
                self.push(p);
            }
            Verdict::Skipped => self.skipped += 1,
            Verdict::Good => {}
        }
        self.checked += 1;
        self.next_block = self.next_block.wrapping_add(1);
        if let Incremental::Blocks(_, i) = &mut self.incremental {
            *i += 1;
        }
    }
}

/// What the check of one block found.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Good,
    /// New, or changed during the backup: not checked.
    Skipped,
    Bad(PageDamage),
}

fn check_block(b: &[u8], fork_block: u64, start_lsn: u64) -> Verdict {
    if page::is_new(b) || page::lsn(b).is_some_and(|lsn| lsn >= start_lsn) {
        return Verdict::Skipped;
    }
    // The checksum mixes in the low 32 bits of the block number, as BlockNumber is 32-bit.
    let (Some(calculated), Some(stored)) = (
        page::pg_checksum_page(b, fork_block as u32),
        page::checksum(b),
    ) else {
        return Verdict::Good;
    };
    if calculated != stored {
        return Verdict::Bad(PageDamage::Checksum { calculated, stored });
    }
    if !page::header_is_sane(b) {
        return Verdict::Bad(PageDamage::Header);
    }
    Verdict::Good
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_page(lsn: u64, blkno: u32) -> Vec<u8> {
        let mut p = vec![0u8; 8192];
        p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
        p[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
        p[12..14].copy_from_slice(&24u16.to_le_bytes());
        p[14..16].copy_from_slice(&8192u16.to_le_bytes());
        p[16..18].copy_from_slice(&8192u16.to_le_bytes());
        p[18..20].copy_from_slice(&(8192u16 | 4).to_le_bytes());
        assert!(page::set_checksum(&mut p, blkno));
        p
    }

    const GEOM: PageGeometry = PageGeometry {
        blcksz: 8192,
        relseg_blocks: 131_072,
        start_lsn: 0x1000_0000,
    };

    fn seg(path: &str) -> Option<u32> {
        relation_file(path)
            .filter(|r| !r.incremental)
            .map(|r| r.segno)
    }

    fn rel(segno: u32) -> RelationFile {
        RelationFile {
            segno,
            incremental: false,
        }
    }

    #[test]
    fn relation_files() {
        assert_eq!(seg("base/5/16384"), Some(0));
        assert_eq!(seg("base/5/16384_vm"), Some(0));
        assert_eq!(seg("base/5/16384.3"), Some(3));
        assert_eq!(seg("global/1260"), Some(0));
        assert_eq!(seg("pg_tblspc/16390/PG_17_202406281/5/16391.1"), Some(1));
        assert_eq!(
            relation_file("base/5/INCREMENTAL.16384.2"),
            Some(RelationFile {
                segno: 2,
                incremental: true
            })
        );
        for skip in [
            "global/pg_control",
            "global/pg_filenode.map",
            "base/5/pg_internal.init",
            "base/5/PG_VERSION",
            "base/5/t3_16384",
            "base/5/INCREMENTAL.pg_internal.init",
            "base/pgsql_tmp/pgsql_tmp1.0",
            "pg_xact/0000",
            "pg_tblspc/16390/PG_17_202406281/5/pgsql_tmp",
            "16384",
        ] {
            assert_eq!(relation_file(skip), None, "{skip}");
        }
    }

    #[test]
    fn blocks_in_any_chunks() {
        // Segment 1: block 0 of the file is block RELSEG_SIZE of the fork.
        let mut file = Vec::new();
        for b in 0..4u32 {
            file.extend(good_page(0x100, 131_072 + b));
        }
        // Block 2: a flipped byte.
        file[2 * 8192 + 4000] ^= 1;
        // Block 3: written during the backup, damaged but not checked.
        let mut late = good_page(0x2000_0000, 131_075);
        late[5000] ^= 1;
        file[3 * 8192..].copy_from_slice(&late);
        file.extend(vec![0u8; 8192]); // new page
        file.extend(vec![1u8; 100]); // partial
        for chunk in [1usize, 7, 8192, 1 << 20] {
            let mut fp = FilePages::new(GEOM, rel(1), file.len() as u64, 10);
            for c in file.chunks(chunk) {
                fp.feed(c);
            }
            fp.finish();
            assert_eq!((fp.checked, fp.skipped), (5, 2));
            assert_eq!(fp.problems.len(), 2, "{:?}", fp.problems);
            assert_eq!(fp.problems[0].block, 2);
            assert_eq!(fp.problems[0].fork_block, 131_074);
            assert!(matches!(fp.problems[0].damage, PageDamage::Checksum { .. }));
            assert_eq!(fp.problems[1].block, 5);
            assert_eq!(fp.problems[1].damage, PageDamage::Partial { len: 100 });
            assert!(fp.problems[0]
                .message("base/5/16384.1")
                .starts_with("checksum verification failed in file \"base/5/16384.1\", block 2: calculated checksum"));
        }
    }

    #[test]
    fn incremental_blocks_by_their_numbers() {
        // Blocks 3 and 9 of segment 1; block 9 damaged.
        let b3 = good_page(0x100, 131_072 + 3);
        let mut b9 = good_page(0x100, 131_072 + 9);
        b9[700] ^= 1;
        let file = pgincr_types::incremental::build(20, &[(3, b3), (9, b9)], 8192);
        let inc = RelationFile {
            segno: 1,
            incremental: true,
        };
        for chunk in [5usize, 8192, 1 << 20] {
            let mut fp = FilePages::new(GEOM, inc, file.len() as u64, 10);
            for c in file.chunks(chunk) {
                fp.feed(c);
            }
            fp.finish();
            assert_eq!(fp.checked, 2, "chunk {chunk}");
            assert_eq!(fp.problems.len(), 1);
            assert_eq!(fp.problems[0].block, 9);
            assert_eq!(fp.problems[0].fork_block, 131_072 + 9);
        }
        // No blocks at all; and a header that does not parse checks nothing, and says so.
        let empty = pgincr_types::incremental::build(0, &[], 8192);
        let mut fp = FilePages::new(GEOM, inc, empty.len() as u64, 10);
        fp.feed(&empty);
        fp.finish();
        assert_eq!((fp.checked, fp.problems.len()), (0, 0));
        let mut fp = FilePages::new(GEOM, inc, 8192 * 2, 10);
        fp.feed(&[0u8; 8192 * 2]);
        fp.finish();
        assert_eq!(fp.checked, 0);
        assert_eq!(fp.problems.len(), 1);
        assert_eq!(fp.problems[0].damage, PageDamage::IncrementalHeader);
        let mut fp = FilePages::new(GEOM, inc, 7, 10);
        fp.feed(&empty[..7]);
        fp.finish();
        assert_eq!(fp.problems.len(), 1);
    }

    #[test]
    fn wrong_block_number_fails() {
        let p = good_page(0x100, 7);
        assert_eq!(check_block(&p, 7, u64::MAX), Verdict::Good);
        assert!(matches!(check_block(&p, 8, u64::MAX), Verdict::Bad(_)));
        assert_eq!(check_block(&p, 8, 0x100), Verdict::Skipped);
    }

    #[test]
    fn limit_counts_the_rest() {
        let mut fp = FilePages::new(GEOM, rel(0), 16384, 1);
        let mut p = good_page(0x100, 0);
        p[100] ^= 1;
        fp.feed(&p);
        fp.feed(&p);
        fp.finish();
        assert_eq!((fp.problems.len(), fp.more), (1, 1));
    }
}
