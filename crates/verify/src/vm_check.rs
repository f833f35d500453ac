//! Visibility map against heap, offline: every all-visible bit must belong to a heap page with
//! `PD_ALL_VISIBLE`, and every all-frozen bit to a page whose tuples are all frozen.
//!
//! PostgreSQL keeps `PD_ALL_VISIBLE` right on every page (each change that clears the map bit
//! clears the flag in the same WAL record), while the map bit itself is not WAL-logged when it
//! is cleared. A map bit that the page contradicts is stale: index-only scans trust it and
//! return rows that are dead. That is what combined chains of PostgreSQL 17.0–17.10 and
//! 18.0–18.4 servers carry (see `pgincr-combine`'s `vm_repair`), and `amcheck` does not notice.
//!
//! In a backup, pages the server changed while the backup ran (page LSN at or after the
//! backup's start, from `backup_label`) may disagree with the map as copied; WAL replay makes
//! them agree, so they are counted as in flux, not as stale. In a cleanly shut down data
//! directory (no `backup_label`) every page counts.

use pgincr_types::relfile::{ForkNumber, RelFileName};
use pgincr_types::visibility_map::{VmLayout, ALL_FROZEN, ALL_VISIBLE};
use pgincr_types::{heap_page, page, BackupLabel, ControlFile};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Why the check could not run.
#[derive(Debug, thiserror::Error)]
pub enum VmCheckError {
    #[error(transparent)]
    Control(#[from] pgincr_types::control::ControlFileError),
    #[error("\"{path}\": {message}")]
    BackupLabel { path: PathBuf, message: String },
    #[error("{context} \"{path}\": {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "\"{0}\" holds tar archives: the visibility-map check reads plain data directories and \
         plain backups; extract the archives (or combine with -F p) first"
    )]
    TarBackup(PathBuf),
}

fn io(context: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VmCheckError {
    let path = path.to_path_buf();
    move |source| VmCheckError::Io {
        context,
        path,
        source,
    }
}

/// What is wrong with one heap block's bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StaleKind {
    /// All-visible set, but the heap page lacks `PD_ALL_VISIBLE` (or is not a valid page).
    AllVisibleNotOnPage,
    /// All-frozen set on an all-visible page with a tuple that is not frozen.
    AllFrozenNotFrozen,
    /// A bit set for a heap block past the end of the relation.
    PastEndOfHeap,
}

impl StaleKind {
    pub fn describe(self) -> &'static str {
        match self {
            Self::AllVisibleNotOnPage => {
                "all-visible bit set but the heap page is not marked PD_ALL_VISIBLE"
            }
            Self::AllFrozenNotFrozen => "all-frozen bit set but a tuple on the page is not frozen",
            Self::PastEndOfHeap => "bit set for a heap block past the end of the relation",
        }
    }
}

/// One stale bit pair.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StaleBit {
    /// The relation's main fork, relative to the directory checked (`base/5/16384`).
    pub relation: String,
    pub heap_block: u32,
    pub vm_block: u32,
    pub kind: StaleKind,
}

/// The outcome of [`check_vm`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VmCheckReport {
    pub directory: PathBuf,
    /// From `backup_label`, when the directory is a backup: pages at or after it are in flux.
    pub backup_start_lsn: Option<String>,
    pub relations: u64,
    pub vm_pages: u64,
    pub all_visible_bits: u64,
    pub all_frozen_bits: u64,
    pub heap_pages_read: u64,
    /// Set bits whose heap page changed during the backup (WAL replay settles them).
    pub in_flux: u64,
    pub stale: Vec<StaleBit>,
}

impl VmCheckReport {
    pub fn is_clean(&self) -> bool {
        self.stale.is_empty()
    }
}

/// One relation's files: heap segments by number, and its map.
#[derive(Default)]
struct RelFiles {
    heap: BTreeMap<u32, PathBuf>,
    vm: Option<PathBuf>,
}

/// Checks every visibility map under `dir`, a plain data directory or plain backup.
pub fn check_vm(dir: &Path) -> Result<VmCheckReport, VmCheckError> {
    if crate::manifest_check::is_tar_backup(dir) {
        return Err(VmCheckError::TarBackup(dir.to_path_buf()));
    }
    let control = ControlFile::read(&dir.join("global/pg_control"))?;
    let geometry = control.geometry();
    let (blcksz, relseg) = (geometry.blcksz.get(), geometry.relseg_size.get());
    let Some(layout) = VmLayout::new(blcksz) else {
        return Ok(VmCheckReport::default());
    };
    let label_path = dir.join("backup_label");
    let start_lsn = match std::fs::read(&label_path) {
        Ok(text) => Some(
            BackupLabel::parse(&text)
                .map_err(|e| VmCheckError::BackupLabel {
                    path: label_path.clone(),
                    message: e.to_string(),
                })?
                .start_lsn,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("could not read", &label_path)(e)),
    };
    let mut report = VmCheckReport {
        directory: dir.to_path_buf(),
        backup_start_lsn: start_lsn.map(|l| l.to_string()),
        ..VmCheckReport::default()
    };
    for db_dir in relation_directories(dir)? {
        for (rel_prefix, files) in relations_in(&db_dir)? {
            let Some(vm) = &files.vm else { continue };
            report.relations += 1;
            let relation = db_dir
                .strip_prefix(dir)
                .unwrap_or(&db_dir)
                .join(&rel_prefix)
                .to_string_lossy()
                .into_owned();
            let ctx = Relation {
                name: relation,
                files: &files,
                layout,
                blcksz,
                relseg,
                start_lsn: start_lsn.map(|l| l.0),
            };
            ctx.check(vm, &mut report)?;
        }
    }
    report
        .stale
        .sort_by(|a, b| (&a.relation, a.heap_block).cmp(&(&b.relation, b.heap_block)));
    Ok(report)
}

/// `global`, `base/<db>` and `pg_tblspc/<oid>/<version dir>/<db>` below `root`.
fn relation_directories(root: &Path) -> Result<Vec<PathBuf>, VmCheckError> {
    let mut dirs = vec![root.join("global")];
    dirs.extend(subdirectories(&root.join("base"))?);
    for ts in subdirectories(&root.join("pg_tblspc"))? {
        for version in subdirectories(&ts)? {
            if version
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("PG_"))
            {
                dirs.extend(subdirectories(&version)?);
            }
        }
    }
    Ok(dirs)
}

/// The directories (following symbolic links, as tablespace links are) in `dir`; none if
/// `dir` does not exist.
fn subdirectories(dir: &Path) -> Result<Vec<PathBuf>, VmCheckError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("could not open directory", dir)(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(io("could not read directory", dir))?;
        if e.path().is_dir() {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The relations of one database directory, by relation number as text.
fn relations_in(dir: &Path) -> Result<BTreeMap<String, RelFiles>, VmCheckError> {
    let mut rels: BTreeMap<String, RelFiles> = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(rels),
        Err(e) => return Err(io("could not open directory", dir)(e)),
    };
    for e in entries {
        let e = e.map_err(io("could not read directory", dir))?;
        let name = e.file_name();
        let Some(f) = name.to_str().and_then(RelFileName::parse) else {
            continue;
        };
        let rel = rels.entry(f.rel_number.to_string()).or_default();
        match f.fork {
            ForkNumber::Main => {
                rel.heap.insert(f.segno, e.path());
            }
            ForkNumber::VisibilityMap if f.segno == 0 => rel.vm = Some(e.path()),
            _ => {}
        }
    }
    Ok(rels)
}

struct Relation<'a> {
    name: String,
    files: &'a RelFiles,
    layout: VmLayout,
    blcksz: u32,
    relseg: u32,
    start_lsn: Option<u64>,
}

impl Relation<'_> {
    fn heap_blocks(&self) -> Result<u64, VmCheckError> {
        let Some((&segno, path)) = self.files.heap.iter().next_back() else {
            return Ok(0);
        };
        let len = std::fs::metadata(path)
            .map_err(io("could not stat", path))?
            .len();
        Ok(u64::from(segno) * u64::from(self.relseg) + len / u64::from(self.blcksz))
    }

    fn check(&self, vm_path: &Path, report: &mut VmCheckReport) -> Result<(), VmCheckError> {
        let bs = self.blcksz as usize;
        // A map covers at most 2^32 heap blocks: far less than a segment of map pages.
        let limit = u64::from(self.blcksz) * u64::from(self.relseg);
        let vm = read_limited(vm_path, limit)?;
        let nheap = self.heap_blocks()?;
        let per_page = u64::from(self.layout.heap_blocks_per_page());
        for (b, page) in vm.chunks_exact(bs).enumerate() {
            report.vm_pages += 1;
            if page::is_new(page) {
                continue;
            }
            let first = b as u64 * per_page;
            let mut suspects: Vec<(u32, u8)> = Vec::new();
            for i in 0..per_page {
                let h = first + i;
                let Ok(h32) = u32::try_from(h) else { break };
                let bits = self.layout.bits(page, h32);
                if bits == 0 {
                    continue;
                }
                report.all_visible_bits += u64::from(bits & ALL_VISIBLE != 0);
                report.all_frozen_bits += u64::from(bits & ALL_FROZEN != 0);
                if h >= nheap {
                    self.stale(report, h32, b as u32, StaleKind::PastEndOfHeap);
                } else {
                    suspects.push((h32, bits));
                }
            }
            self.check_heap_pages(&suspects, b as u32, report)?;
        }
        Ok(())
    }

    fn stale(&self, report: &mut VmCheckReport, heap_block: u32, vm_block: u32, kind: StaleKind) {
        report.stale.push(StaleBit {
            relation: self.name.clone(),
            heap_block,
            vm_block,
            kind,
        });
    }

    /// Reads the heap pages of `suspects` (sorted) a window at a time and judges them.
    fn check_heap_pages(
        &self,
        suspects: &[(u32, u8)],
        vm_block: u32,
        report: &mut VmCheckReport,
    ) -> Result<(), VmCheckError> {
        const WINDOW: u32 = 128;
        let bs = self.blcksz as usize;
        let mut buf = vec![0u8; WINDOW as usize * bs];
        let mut open: Option<(u32, File)> = None;
        let mut i = 0;
        while let Some(&(first, _)) = suspects.get(i) {
            let segno = first / self.relseg;
            let local_first = first % self.relseg;
            let mut j = i;
            while suspects.get(j).is_some_and(|&(h, _)| {
                h / self.relseg == segno && h % self.relseg < local_first + WINDOW
            }) {
                j += 1;
            }
            let local_last = suspects
                .get(j - 1)
                .map_or(local_first, |&(h, _)| h % self.relseg);
            let span = (local_last - local_first + 1) as usize * bs;
            if open.as_ref().is_none_or(|(s, _)| *s != segno) {
                open = match self.files.heap.get(&segno) {
                    Some(p) => Some((segno, File::open(p).map_err(io("could not open", p))?)),
                    None => None,
                };
            }
            let read = match (&open, self.files.heap.get(&segno)) {
                // `span` is at most WINDOW pages, the size of `buf`.
                (Some((_, f)), Some(p)) => match buf.get_mut(..span) {
                    Some(window) => {
                        match f.read_exact_at(window, u64::from(local_first) * bs as u64) {
                            Ok(()) => true,
                            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
                            Err(e) => return Err(io("could not read", p)(e)),
                        }
                    }
                    None => false,
                },
                _ => false,
            };
            for &(h, bits) in suspects.get(i..j).unwrap_or_default() {
                report.heap_pages_read += 1;
                let off = (h % self.relseg - local_first) as usize * bs;
                let page = buf.get(off..off + bs).filter(|_| read);
                let Some(page) = page.filter(|p| page::header_is_sane(p)) else {
                    self.stale(report, h, vm_block, StaleKind::AllVisibleNotOnPage);
                    continue;
                };
                if self
                    .start_lsn
                    .is_some_and(|start| page::lsn(page).is_some_and(|l| l >= start))
                {
                    report.in_flux += 1;
                    continue;
                }
                if !page::is_all_visible(page) {
                    self.stale(report, h, vm_block, StaleKind::AllVisibleNotOnPage);
                } else if bits & ALL_FROZEN != 0 && heap_page::may_be_all_frozen(page) != Ok(true) {
                    self.stale(report, h, vm_block, StaleKind::AllFrozenNotFrozen);
                }
            }
            i = j;
        }
        Ok(())
    }
}

/// Reads a whole file that must not exceed `limit` bytes.
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, VmCheckError> {
    let f = File::open(path).map_err(io("could not open", path))?;
    let meta = f.metadata().map_err(io("could not stat", path))?;
    if !meta.is_file() || meta.len() > limit {
        return Err(VmCheckError::Io {
            context: "not a visibility map of plausible size",
            path: path.to_path_buf(),
            source: std::io::Error::other(format!("{} bytes", meta.len())),
        });
    }
    let mut buf = vec![0u8; meta.len() as usize];
    f.read_exact_at(&mut buf, 0)
        .map_err(io("could not read", path))?;
    Ok(buf)
}
