//! Output directories that never look complete before they are.
//!
//! Every output directory of a run (a backup's `-D`, a combine's `-o`, their tablespace
//! directories) is built under a hidden sibling name, `.<name>.pgincr-partial-<pid>`, fsynced,
//! and renamed into place only when everything is written. A failure removes what the run
//! made. A crash (SIGKILL, power loss) leaves only hidden directories whose name says which
//! process made them; the next run into the same target finds them, checks that their process
//! is gone, removes them and says so ([`Staging::removed`]). One whose process still runs is
//! refused with the directory and the process named, since two runs into one target would
//! destroy each other's work.
//!
//! A PID alone is not proof: after a crash, a reboot or in a container the same number can
//! belong to another process. Each staging directory therefore holds a small marker file,
//! [`MARKER`], with the owner's PID, its start time (field 22 of `/proc/<pid>/stat`) and the
//! boot id; a live process with that PID but another start time, or a marker from another
//! boot, means the owner is gone. The marker is removed just before the directory gets its
//! final name, so it never ends up in a finished backup.
//!
//! Several targets commit in order: every target but the first (tablespace directories) is
//! renamed into place first, then the first (the data directory). Before a tablespace
//! directory is renamed, its marker moves out beside it as a claim file,
//! `.<name>.pgincr-claim-<pid>`, which goes once the data directory is in place. A crash in
//! between leaves tablespace directories claimed by a dead process: the next run into the
//! same target recognises those as leftovers too and empties them (and a claim whose data
//! directory did get into place is only removed, never acted on). Keeping the claim outside
//! keeps a finished result free of foreign files, which `pg_verifybackup` would reject. A
//! target inside an earlier one (`-T` into `-o`) is built inside that one's staging directory.
//! A target that already exists as an empty mount point cannot be renamed onto; it is filled
//! in place, claimed the same way, and emptied on failure.

use std::ffi::OsString;
use std::fs::{self, DirBuilder};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

/// What a staging directory's name has between the target's name and the PID.
pub const PARTIAL_INFIX: &str = ".pgincr-partial-";

/// What a claim file's name has between the target's name and the PID.
pub const CLAIM_INFIX: &str = ".pgincr-claim-";

/// The owner marker inside a staging directory.
pub const MARKER: &str = ".pgincr-owner";

/// Why an output directory cannot be staged or committed.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("directory \"{}\" exists but is not empty: choose a new directory or empty it first", .0.display())]
    NotEmpty(PathBuf),
    #[error("\"{}\" cannot be an output directory", .0.display())]
    NoName(PathBuf),
    /// A staging directory for the same target belongs to a process that still runs.
    #[error("\"{}\" is being written by pgincr process {pid}, which is still running: wait for it to finish or stop it (if process {pid} is not pgincr, remove the directory and run again)", dir.display())]
    InUse { dir: PathBuf, pid: u32 },
    #[error("{context} \"{}\": {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StagingError {
    let path = path.to_path_buf();
    move |source| StagingError::Io {
        context,
        path,
        source,
    }
}

/// A leftover of a run that was killed, removed by this one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    pub path: PathBuf,
    pub pid: u32,
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "removed \"{}\", left behind by pgincr process {}, which is no longer running",
            self.path.display(),
            self.pid
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Built under the hidden sibling name and renamed into place.
    Renamed,
    /// Inside an earlier target's staging directory: goes with it.
    Nested,
    /// An existing empty directory on a file system of its own, filled where it is.
    InPlace,
}

#[derive(Debug)]
struct Target {
    fin: PathBuf,
    /// Where the run writes until commit.
    work: PathBuf,
    kind: Kind,
    /// `fin` existed (empty) before the run: on failure it is emptied, never removed.
    existed: bool,
    /// Renamed into place already (commit got past it).
    renamed: bool,
}

/// The output directories of one run. Dropped uncommitted, it removes what it made.
#[derive(Debug)]
pub struct Staging {
    targets: Vec<Target>,
    removed: Vec<Leftover>,
    dir_mode: u32,
    dry_run: bool,
    committed: bool,
}

impl Staging {
    /// No targets yet; directories are created with `dir_mode`. In a dry run targets are
    /// checked but nothing is created or removed.
    pub fn new(dir_mode: u32, dry_run: bool) -> Staging {
        Staging {
            targets: Vec::new(),
            removed: Vec::new(),
            dir_mode,
            dry_run,
            committed: false,
        }
    }

    /// Adds the output directory `fin`, which must be absent or empty (apart from a
    /// recognised leftover), removes dead leftovers for it, and returns where to write its
    /// contents until [`Staging::commit`]. The first target added is committed last.
    pub fn add(&mut self, fin: &Path) -> Result<PathBuf, StagingError> {
        let abs = absolute(fin);
        // A target inside an earlier one is written inside that one's staging directory:
        // creating it in place would create the earlier target's final directory, which the
        // last rename could then not replace.
        for t in &self.targets {
            if let Ok(rel) = abs.strip_prefix(absolute(&t.fin)) {
                if rel.as_os_str().is_empty() {
                    return Err(StagingError::NotEmpty(fin.to_path_buf()));
                }
                let work = t.work.join(rel);
                if !self.dry_run {
                    self.mkdir_all(&work)?;
                }
                self.targets.push(Target {
                    fin: fin.to_path_buf(),
                    work: work.clone(),
                    kind: Kind::Nested,
                    existed: false,
                    renamed: false,
                });
                return Ok(work);
            }
        }
        let (parent, name) = split(fin)?;
        let main = self
            .targets
            .first()
            .map_or_else(|| abs.clone(), |t| absolute(&t.fin));
        let existed = self.check_target(fin, &parent, &name)?;
        let staging = staging_path(&parent, &name, std::process::id());
        if self.dry_run {
            self.targets.push(Target {
                fin: fin.to_path_buf(),
                work: staging.clone(),
                kind: Kind::Renamed,
                existed,
                renamed: false,
            });
            return Ok(staging);
        }
        self.mkdir_all(&parent)?;
        self.remove_leftovers(&parent, &name)?;
        if existed && cannot_rename_onto(fin, &parent) {
            // rename(2) cannot replace a mount point (and the staging directory would be on
            // the parent's file system) nor a symlink to a directory: fill it in place,
            // claimed until commit.
            write_owner(&claim_path(&parent, &name, std::process::id()), &main)?;
            self.targets.push(Target {
                fin: fin.to_path_buf(),
                work: fin.to_path_buf(),
                kind: Kind::InPlace,
                existed,
                renamed: false,
            });
            return Ok(fin.to_path_buf());
        }
        DirBuilder::new()
            .mode(self.dir_mode)
            .create(&staging)
            .map_err(io_err("could not create directory", &staging))?;
        self.targets.push(Target {
            fin: fin.to_path_buf(),
            work: staging.clone(),
            kind: Kind::Renamed,
            existed,
            renamed: false,
        });
        write_owner(&staging.join(MARKER), &main)?;
        crash_point("staging-created");
        Ok(staging)
    }

    /// Leftovers of killed runs that [`Staging::add`] removed.
    pub fn removed(&self) -> &[Leftover] {
        &self.removed
    }

    /// One warning line per removed leftover, for a report.
    pub fn warnings(&self) -> Vec<String> {
        self.removed.iter().map(|l| l.to_string()).collect()
    }

    /// Where the contents of the first target go until commit.
    pub fn dir(&self) -> Option<&Path> {
        self.targets.first().map(|t| t.work.as_path())
    }

    /// Fsyncs every file and directory of every target (for engines that do not sync as they
    /// write). The error names the path that failed.
    pub fn sync_trees(&self, threads: usize) -> Result<(), StagingError> {
        crash_point("before-sync");
        for t in self.targets.iter().filter(|t| t.kind != Kind::Nested) {
            crate::fsync_tree(&t.work, threads).map_err(|(p, e)| StagingError::Io {
                context: "could not fsync",
                path: p,
                source: e,
            })?;
        }
        Ok(())
    }

    /// Puts every target in place: the others first, in reverse order of addition, then the
    /// first; then removes the claims. Unless `no_sync`, each step is made durable before the
    /// next (the contents must have been fsynced already). On an error, drop removes what was
    /// made, renamed targets included.
    pub fn commit(mut self, no_sync: bool) -> Result<(), StagingError> {
        if self.dry_run {
            self.committed = true;
            return Ok(());
        }
        crash_point("before-rename");
        for t in self.targets.iter_mut().skip(1).rev() {
            if t.kind == Kind::Renamed {
                // The claim must be on disk before the directory appears under its name.
                let (parent, name) = split(&t.fin)?;
                let claim = claim_path(&parent, &name, std::process::id());
                let marker = t.work.join(MARKER);
                fs::rename(&marker, &claim).map_err(io_err("could not rename", &marker))?;
                if !no_sync {
                    sync_dir(&parent)?;
                }
                put_in_place(t, no_sync)?;
            }
        }
        crash_point("between-renames");
        if let Some(t) = self.targets.first_mut() {
            match t.kind {
                Kind::Renamed => {
                    // The marker goes first: the directory that appears is the result.
                    remove_file(&t.work.join(MARKER), no_sync)?;
                    put_in_place(t, no_sync)?;
                }
                Kind::InPlace => remove_claim(&t.fin, no_sync)?,
                Kind::Nested => {}
            }
        }
        self.committed = true;
        crash_point("after-rename");
        for t in self.targets.iter().skip(1) {
            if t.kind != Kind::Nested {
                remove_claim(&t.fin, no_sync)?;
            }
        }
        Ok(())
    }

    /// Refuses a non-empty target unless a dead run claimed it (a tablespace renamed into
    /// place before that run's data directory, or a directory filled in place), in which case
    /// it is emptied. Returns whether the target exists.
    fn check_target(
        &mut self,
        fin: &Path,
        parent: &Path,
        name: &std::ffi::OsStr,
    ) -> Result<bool, StagingError> {
        let mut it = match fs::read_dir(fin) {
            Ok(it) => it,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err("could not access directory", fin)(e)),
        };
        if it.next().is_none() {
            return Ok(true);
        }
        let mut emptied = false;
        for (claim, pid) in leftovers(parent, name, CLAIM_INFIX)? {
            let owner = Owner::read(&claim).unwrap_or_else(|| Owner::from_pid(pid));
            let owner = Owner { pid, ..owner };
            if owner.alive() {
                return Err(StagingError::InUse {
                    dir: fin.to_path_buf(),
                    pid,
                });
            }
            if self.dry_run {
                continue;
            }
            // A claim outliving its run's data directory commit is stale: that run finished
            // but for removing it, and `fin` belongs to its result.
            let finished = owner.main.as_deref().is_some_and(|m| {
                m != absolute(fin) && m.is_dir() && !claimed(m, owner.pid) && !is_empty_dir(m)
            });
            if !finished && !emptied {
                empty_dir(fin).map_err(io_err("could not empty directory", fin))?;
                emptied = true;
                self.removed.push(Leftover {
                    path: fin.to_path_buf(),
                    pid,
                });
            }
            fs::remove_file(&claim).map_err(io_err("could not remove", &claim))?;
        }
        if emptied || self.dry_run {
            Ok(true)
        } else {
            Err(StagingError::NotEmpty(fin.to_path_buf()))
        }
    }

    /// Removes `.<name>.pgincr-partial-<pid>` siblings and claims whose process is gone;
    /// refuses one whose process runs.
    fn remove_leftovers(
        &mut self,
        parent: &Path,
        name: &std::ffi::OsStr,
    ) -> Result<(), StagingError> {
        for (infix, is_dir) in [(PARTIAL_INFIX, true), (CLAIM_INFIX, false)] {
            for (path, pid) in leftovers(parent, name, infix)? {
                let file = if is_dir {
                    path.join(MARKER)
                } else {
                    path.clone()
                };
                // The name is authoritative for the PID; the marker adds the start time.
                let owner = Owner::read(&file).unwrap_or_else(|| Owner::from_pid(pid));
                let owner = Owner { pid, ..owner };
                if owner.alive() {
                    return Err(StagingError::InUse { dir: path, pid });
                }
                if is_dir {
                    fs::remove_dir_all(&path).map_err(io_err("could not remove", &path))?;
                    self.removed.push(Leftover { path, pid });
                } else {
                    fs::remove_file(&path).map_err(io_err("could not remove", &path))?;
                }
            }
        }
        Ok(())
    }

    fn mkdir_all(&self, dir: &Path) -> Result<(), StagingError> {
        DirBuilder::new()
            .recursive(true)
            .mode(self.dir_mode)
            .create(dir)
            .map_err(io_err("could not create directory", dir))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.committed || self.dry_run {
            return;
        }
        for t in self.targets.iter().rev() {
            let r = match (t.kind, t.renamed) {
                (Kind::Nested, _) => Ok(()),
                (Kind::Renamed, false) => fs::remove_dir_all(&t.work),
                (Kind::Renamed, true) | (Kind::InPlace, _) if t.existed => empty_dir(&t.fin),
                (Kind::Renamed, true) | (Kind::InPlace, _) => fs::remove_dir_all(&t.fin),
            };
            if let Err(e) = r {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::error!("could not remove \"{}\": {e}", t.work.display());
                }
            }
            if t.kind != Kind::Nested {
                let _ = remove_claim(&t.fin, true);
            }
        }
    }
}

/// Renames a staged target into place.
fn put_in_place(t: &mut Target, no_sync: bool) -> Result<(), StagingError> {
    // rename(2) replaces an empty directory, which is all an existing target can be.
    fs::rename(&t.work, &t.fin).map_err(io_err("could not rename into place", &t.fin))?;
    t.renamed = true;
    if !no_sync {
        sync_dir(&split(&t.fin)?.0)?;
    }
    Ok(())
}

/// `.<name>.pgincr-partial-<pid>` in `parent`.
pub fn staging_path(parent: &Path, name: &std::ffi::OsStr, pid: u32) -> PathBuf {
    sibling(parent, name, PARTIAL_INFIX, pid)
}

/// `.<name>.pgincr-claim-<pid>` in `parent`.
fn claim_path(parent: &Path, name: &std::ffi::OsStr, pid: u32) -> PathBuf {
    sibling(parent, name, CLAIM_INFIX, pid)
}

fn sibling(parent: &Path, name: &std::ffi::OsStr, infix: &str, pid: u32) -> PathBuf {
    let mut n = OsString::from(".");
    n.push(name);
    n.push(infix);
    n.push(pid.to_string());
    parent.join(n)
}

/// Whether process `pid` still claims `dir` (it was filled in place and not committed).
fn claimed(dir: &Path, pid: u32) -> bool {
    match split(dir) {
        Ok((parent, name)) => claim_path(&parent, &name, pid).exists(),
        Err(_) => false,
    }
}

fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut it| it.next().is_none())
}

fn sync_dir(dir: &Path) -> Result<(), StagingError> {
    crate::fsync_dir(dir).map_err(io_err("could not fsync directory", dir))
}

/// Removes this process's claim on `fin`, if any.
fn remove_claim(fin: &Path, no_sync: bool) -> Result<(), StagingError> {
    let (parent, name) = split(fin)?;
    remove_file(&claim_path(&parent, &name, std::process::id()), no_sync)
}

/// A private scratch directory next to `target`, `.<name>.pgincr-<kind>-<pid>`, for data that
/// never becomes part of the result (the caller creates it when first needed). Leftovers of
/// dead runs are removed first and returned; there is no marker, so a leftover with this
/// process's own PID counts as dead too (its number was reused, or this process abandoned
/// it), and one of another live process is left alone.
pub fn scratch_dir(target: &Path, kind: &str) -> Result<(PathBuf, Vec<Leftover>), StagingError> {
    let (parent, name) = split(target)?;
    let infix = format!(".pgincr-{kind}-");
    let mut removed = Vec::new();
    if parent.is_dir() {
        for (path, pid) in leftovers(&parent, &name, &infix)? {
            if pid == std::process::id() || !Owner::from_pid(pid).alive() {
                fs::remove_dir_all(&path).map_err(io_err("could not remove", &path))?;
                removed.push(Leftover { path, pid });
            }
        }
    }
    let mut n = OsString::from(".");
    n.push(&name);
    n.push(&infix);
    n.push(std::process::id().to_string());
    Ok((parent.join(n), removed))
}

/// Removes every leftover of a killed run directly in `parent`, whatever target it was for:
/// staging directories (`.<name>.pgincr-partial-<pid>`), claim files and scratch directories
/// (`.<name>.pgincr-<kind>-<pid>`) whose process is gone. Those of live processes are left
/// alone. For a directory that receives many targets under different names (a repository's
/// `backups/`, one name per backup), where the run after a killed one writes another name and
/// [`Staging::add`] would never see the leftover.
pub fn sweep_leftovers(parent: &Path) -> Result<Vec<Leftover>, StagingError> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(io_err("could not read directory", parent)(e)),
    };
    for e in entries {
        let e = e.map_err(io_err("could not read directory", parent))?;
        let file_name = e.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        let Some((_, tail)) = name
            .strip_prefix('.')
            .and_then(|n| n.rsplit_once(".pgincr-"))
        else {
            continue;
        };
        let Some((kind, pid)) = tail.rsplit_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_lowercase()) {
            continue;
        }
        let path = e.path();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        let marker = if is_dir {
            path.join(MARKER)
        } else {
            path.clone()
        };
        let owner = Owner::read(&marker).unwrap_or_else(|| Owner::from_pid(pid));
        let owner = Owner { pid, ..owner };
        if owner.alive() {
            continue;
        }
        if is_dir {
            fs::remove_dir_all(&path).map_err(io_err("could not remove", &path))?;
        } else {
            fs::remove_file(&path).map_err(io_err("could not remove", &path))?;
        }
        removed.push(Leftover { path, pid });
    }
    if !removed.is_empty() {
        sync_dir(parent)?;
    }
    Ok(removed)
}

/// The directories `.<name><infix><pid>` in `parent`, with the PID in each name.
fn leftovers(
    parent: &Path,
    name: &std::ffi::OsStr,
    infix: &str,
) -> Result<Vec<(PathBuf, u32)>, StagingError> {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(infix);
    let prefix = prefix.as_encoded_bytes().to_vec();
    let mut out = Vec::new();
    for e in fs::read_dir(parent).map_err(io_err("could not read directory", parent))? {
        let e = e.map_err(io_err("could not read directory", parent))?;
        let file_name = e.file_name();
        let Some(rest) = file_name.as_encoded_bytes().strip_prefix(prefix.as_slice()) else {
            continue;
        };
        let pid = std::str::from_utf8(rest)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u32>().ok());
        if let Some(pid) = pid {
            out.push((e.path(), pid));
        }
    }
    Ok(out)
}

/// Who made a staging directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    pid: u32,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22).
    start: Option<u64>,
    boot: Option<String>,
    /// The run's first target (absolute), by which a claim's commit is recognised.
    main: Option<PathBuf>,
}

impl Owner {
    fn me(main: &Path) -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            start: proc_start_time(pid),
            boot: boot_id(),
            main: Some(main.to_path_buf()),
        }
    }

    /// What the name alone tells, when the marker is missing or unreadable.
    fn from_pid(pid: u32) -> Owner {
        Owner {
            pid,
            start: None,
            boot: None,
            main: None,
        }
    }

    fn read(marker: &Path) -> Option<Owner> {
        let text = fs::read_to_string(marker).ok()?;
        let mut o = Owner::from_pid(0);
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("pid", v)) => o.pid = v.trim().parse().ok()?,
                Some(("start", v)) => o.start = v.trim().parse().ok(),
                Some(("boot", v)) => o.boot = Some(v.trim().to_string()),
                Some(("target", v)) => o.main = Some(PathBuf::from(v)),
                _ => {}
            }
        }
        (o.pid != 0).then_some(o)
    }

    fn text(&self) -> String {
        let mut s = format!(
            "pgincr staging directory: incomplete, never use it\npid {}\n",
            self.pid
        );
        if let Some(t) = self.start {
            s.push_str(&format!("start {t}\n"));
        }
        if let Some(b) = &self.boot {
            s.push_str(&format!("boot {b}\n"));
        }
        // Last, and to the end of the line: a path may contain spaces.
        if let Some(m) = &self.main {
            s.push_str(&format!("target {}\n", m.display()));
        }
        s
    }

    /// Whether the process that made the directory may still be writing it.
    #[allow(unsafe_code)] // kill(2) with signal 0
    fn alive(&self) -> bool {
        let Ok(pid) = i32::try_from(self.pid) else {
            return false;
        };
        if pid <= 0 {
            return false;
        }
        if let (Some(then), Some(now)) = (&self.boot, boot_id()) {
            if *then != now {
                return false;
            }
        }
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        {
            return false;
        }
        // A process with that PID exists (EPERM: it belongs to another user). It is the owner
        // unless its start time says the PID was reused.
        match (self.start, proc_start_time(self.pid)) {
            (Some(then), Some(now)) => then == now,
            _ => true,
        }
    }
}

fn write_owner(path: &Path, main: &Path) -> Result<(), StagingError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("could not create file", path))?;
    f.write_all(Owner::me(main).text().as_bytes())
        .map_err(io_err("could not write file", path))
}

/// Removes `path` if it exists, and (unless `no_sync`) makes that durable.
fn remove_file(path: &Path, no_sync: bool) -> Result<(), StagingError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("could not remove file", path)(e)),
    }
    if !no_sync {
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
    }
    Ok(())
}

/// Field 22 of `/proc/<pid>/stat`: the process's start time in clock ticks after boot.
fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself contain spaces and ')'.
    let (_, after) = stat.rsplit_once(')')?;
    after.split_whitespace().nth(19)?.parse().ok()
}

fn boot_id() -> Option<String> {
    static BOOT: OnceLock<Option<String>> = OnceLock::new();
    BOOT.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
    .clone()
}

/// Whether an existing directory is a mount point or a symlink, which a directory cannot be
/// renamed onto.
fn cannot_rename_onto(dir: &Path, parent: &Path) -> bool {
    if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return true;
    }
    match (fs::metadata(dir), fs::metadata(parent)) {
        (Ok(d), Ok(p)) => d.dev() != p.dev(),
        _ => false,
    }
}

/// Removes everything inside `dir`, keeping `dir`.
fn empty_dir(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            fs::remove_dir_all(&p)?;
        } else {
            fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// The parent (`.` for a bare name) and the name of a target.
fn split(fin: &Path) -> Result<(PathBuf, OsString), StagingError> {
    let name = fin
        .file_name()
        .filter(|_| !matches!(fin.components().next_back(), Some(Component::ParentDir)))
        .ok_or_else(|| StagingError::NoName(fin.to_path_buf()))?;
    let parent = match fin.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_os_string()))
}

/// `p` made absolute against the working directory and lexically normalised (no symlinks
/// resolved: a target need not exist), for comparing targets.
fn absolute(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map_or_else(|_| p.to_path_buf(), |d| d.join(p))
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c.as_os_str()),
        }
    }
    out
}

/// Testing aid, documented in the README: with `PGINCR_CRASH_POINT=NAME` in the environment,
/// the process kills itself with SIGKILL on reaching the point called `NAME`
/// (`staging-created`, `before-sync`, `before-rename`, `between-renames`, `after-rename`),
/// so that crash tests can hit exact moments. Without the variable this is one comparison.
#[allow(unsafe_code)] // kill(2) on ourselves
pub fn crash_point(name: &str) {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("PGINCR_CRASH_POINT").ok());
    if point.as_deref() == Some(name) {
        // SAFETY: signalling ourselves; SIGKILL cannot be caught, which is the point: no
        // destructor or handler runs, exactly as when the machine or an operator kills us.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_dead_leftovers_of_any_target() {
        let d = tempfile::tempdir().unwrap();
        let dead = d
            .path()
            .join(".2025-01-23-050002_INCR_3.pgincr-partial-3000000000");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("base"), b"x").unwrap();
        let scratch = d.path().join(".b.pgincr-wal-3000000001");
        fs::create_dir(&scratch).unwrap();
        let claim = d.path().join(".ts.pgincr-claim-3000000002");
        fs::write(&claim, b"pid 3000000002\n").unwrap();
        let live = d
            .path()
            .join(format!(".c.pgincr-partial-{}", std::process::id()));
        fs::create_dir(&live).unwrap();
        fs::create_dir(d.path().join("2025-01-23-050002_FULL_0")).unwrap();
        fs::create_dir(d.path().join(".hidden-but-ours")).unwrap();
        let removed = sweep_leftovers(d.path()).unwrap();
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(!dead.exists() && !scratch.exists() && !claim.exists());
        assert!(live.exists());
        assert!(d.path().join("2025-01-23-050002_FULL_0").exists());
        assert!(d.path().join(".hidden-but-ours").exists());
        assert!(sweep_leftovers(&d.path().join("missing"))
            .unwrap()
            .is_empty());
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A PID that no process has (near pid_max, which the kernel reaches only after wrapping).
    #[allow(unsafe_code)] // kill(2) with signal 0
    fn dead_pid() -> u32 {
        let max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4_194_304);
        (2..1000)
            .map(|k| max - k)
            // SAFETY: signal 0 only checks whether the process exists.
            .find(|&p| unsafe { libc::kill(p as i32, 0) } != 0)
            .unwrap()
    }

    #[test]
    fn commit_renames_in_order_and_drops_markers() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let ts = d.path().join("ts");
        fs::create_dir(&ts).unwrap(); // pre-existing, empty
        let mut s = Staging::new(0o700, false);
        let w = s.add(&out).unwrap();
        assert_eq!(
            w,
            staging_path(d.path(), "out".as_ref(), std::process::id())
        );
        assert!(w.join(MARKER).exists());
        let wt = s.add(&ts).unwrap();
        assert_ne!(wt, ts);
        fs::write(w.join("a"), b"a").unwrap();
        fs::write(wt.join("b"), b"b").unwrap();
        s.sync_trees(2).unwrap();
        s.commit(false).unwrap();
        assert_eq!(names(&out), vec!["a"]);
        assert_eq!(names(&ts), vec!["b"]);
        assert_eq!(
            names(d.path()),
            vec!["out", "ts"],
            "no marker, claim or staging left"
        );
        let mut s = Staging::new(0o700, false);
        assert!(matches!(s.add(&out), Err(StagingError::NotEmpty(_))));
    }

    #[test]
    fn failure_removes_and_restores() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("sub/out");
        let ts = d.path().join("ts");
        fs::create_dir(&ts).unwrap();
        let nested = out.join("inner");
        let mut s = Staging::new(0o700, false);
        let w = s.add(&out).unwrap();
        let wt = s.add(&ts).unwrap();
        let wn = s.add(&nested).unwrap();
        assert_eq!(
            wn,
            w.join("inner"),
            "a target inside another is built inside it"
        );
        assert!(!out.exists());
        fs::write(wt.join("b"), b"b").unwrap();
        fs::write(wn.join("c"), b"c").unwrap();
        drop(s);
        assert_eq!(names(&d.path().join("sub")), Vec::<String>::new());
        assert_eq!(
            names(&ts),
            Vec::<String>::new(),
            "pre-existing target kept, empty"
        );
    }

    #[test]
    fn leftovers_of_dead_runs_are_removed_live_ones_refused() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let pid = dead_pid();
        let dead = staging_path(d.path(), "out".as_ref(), pid);
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("junk"), b"x").unwrap();
        // Another target's leftover is not ours to touch.
        let other = staging_path(d.path(), "other".as_ref(), pid);
        fs::create_dir(&other).unwrap();
        let mut s = Staging::new(0o700, false);
        s.add(&out).unwrap();
        assert_eq!(
            s.removed(),
            &[Leftover {
                path: dead.clone(),
                pid
            }]
        );
        assert!(s.warnings()[0].contains(&pid.to_string()));
        assert!(!dead.exists() && other.exists());
        drop(s);

        // A live process (our parent) with a matching marker: refused, untouched.
        let ppid = std::os::unix::process::parent_id();
        let live = staging_path(d.path(), "out".as_ref(), ppid);
        fs::create_dir(&live).unwrap();
        let owner = Owner {
            pid: ppid,
            start: proc_start_time(ppid),
            boot: boot_id(),
            main: Some(out.clone()),
        };
        fs::write(live.join(MARKER), owner.text()).unwrap();
        let mut s = Staging::new(0o700, false);
        match s.add(&out) {
            Err(e @ StagingError::InUse { .. }) => {
                let m = e.to_string();
                assert!(
                    m.contains(&ppid.to_string()) && m.contains(&*live.to_string_lossy()),
                    "{m}"
                );
            }
            r => panic!("expected InUse, got {r:?}"),
        }
        assert!(live.exists());

        // The same PID with another start time is a reused PID: the owner is gone.
        let reused = Owner {
            start: owner.start.map(|t| t + 1),
            ..owner.clone()
        };
        fs::write(live.join(MARKER), reused.text()).unwrap();
        let mut s = Staging::new(0o700, false);
        s.add(&out).unwrap();
        assert!(!live.exists());
        assert_eq!(s.removed().len(), 1);
    }

    #[test]
    fn tablespace_put_in_place_by_a_dead_run_is_emptied() {
        let d = tempfile::tempdir().unwrap();
        let (out, ts) = (d.path().join("out"), d.path().join("ts"));
        fs::create_dir(&ts).unwrap();
        fs::write(ts.join("PG_18_1"), b"x").unwrap();
        let pid = dead_pid();
        let dead = Owner {
            pid,
            start: Some(1),
            boot: boot_id(),
            main: Some(out.clone()),
        };
        let claim = claim_path(d.path(), "ts".as_ref(), pid);
        fs::write(&claim, dead.text()).unwrap();
        let mut s = Staging::new(0o700, false);
        s.add(&out).unwrap();
        s.add(&ts).unwrap();
        assert_eq!(s.removed().len(), 1);
        assert_eq!(names(&ts), Vec::<String>::new());
        assert!(!claim.exists());
        drop(s);

        // Without a claim, a non-empty directory is never touched.
        fs::write(ts.join("mine"), b"x").unwrap();
        let mut s = Staging::new(0o700, false);
        assert!(matches!(s.add(&ts), Err(StagingError::NotEmpty(_))));
        assert!(ts.join("mine").exists());

        // A claim whose run got its data directory into place is stale: removed, and the
        // tablespace (part of that finished result) is kept.
        fs::create_dir(&out).unwrap();
        fs::write(out.join("backup_manifest"), b"m").unwrap();
        fs::write(&claim, dead.text()).unwrap();
        let mut s = Staging::new(0o700, false);
        assert!(matches!(s.add(&ts), Err(StagingError::NotEmpty(_))));
        assert!(ts.join("mine").exists() && !claim.exists());
    }

    #[test]
    fn crash_between_renames_is_recovered() {
        // What a kill at "between-renames" leaves: the tablespace in place and claimed, the
        // data directory still staged.
        let d = tempfile::tempdir().unwrap();
        let (out, ts) = (d.path().join("out"), d.path().join("ts"));
        let mut s = Staging::new(0o700, false);
        let w = s.add(&out).unwrap();
        let wt = s.add(&ts).unwrap();
        fs::write(w.join("a"), b"a").unwrap();
        fs::write(wt.join("b"), b"b").unwrap();
        let (parent, name) = split(&ts).unwrap();
        let claim = claim_path(&parent, &name, std::process::id());
        fs::rename(wt.join(MARKER), &claim).unwrap();
        fs::rename(&wt, &ts).unwrap();
        // Pretend the process died: the files now name a dead PID.
        std::mem::forget(s);
        let pid = dead_pid();
        let text = fs::read_to_string(&claim).unwrap();
        let text = text.replace(
            &format!("pid {}\n", std::process::id()),
            &format!("pid {pid}\n"),
        );
        fs::remove_file(&claim).unwrap();
        fs::write(claim_path(&parent, &name, pid), text).unwrap();
        fs::rename(&w, staging_path(&parent, "out".as_ref(), pid)).unwrap();

        let mut s = Staging::new(0o700, false);
        s.add(&out).unwrap();
        s.add(&ts).unwrap();
        assert_eq!(s.removed().len(), 2, "{:?}", s.removed());
        s.commit(true).unwrap();
        assert_eq!(names(d.path()), vec!["out", "ts"]);
        assert!(names(&ts).is_empty());
    }

    #[test]
    fn scratch_leftovers_of_dead_runs_go() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let dead = d.path().join(format!(".out.pgincr-spill-{}", dead_pid()));
        fs::create_dir(&dead).unwrap();
        let ppid = std::os::unix::process::parent_id();
        let live = d.path().join(format!(".out.pgincr-spill-{ppid}"));
        fs::create_dir(&live).unwrap();
        let (p, removed) = scratch_dir(&out, "spill").unwrap();
        assert_eq!(
            p,
            d.path()
                .join(format!(".out.pgincr-spill-{}", std::process::id()))
        );
        assert_eq!(removed.len(), 1);
        assert!(!dead.exists() && live.exists());
    }

    #[test]
    fn a_symlinked_target_is_filled_in_place() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut s = Staging::new(0o700, false);
        let w = s.add(&link).unwrap();
        assert_eq!(w, link);
        fs::write(w.join("f"), b"f").unwrap();
        drop(s);
        assert!(names(&real).is_empty(), "emptied on failure");
        let mut s = Staging::new(0o700, false);
        let w = s.add(&link).unwrap();
        fs::write(w.join("f"), b"f").unwrap();
        s.commit(false).unwrap();
        assert_eq!(names(&real), vec!["f"]);
        assert_eq!(names(d.path()), vec!["link", "real"], "claim removed");
    }

    #[test]
    fn dry_run_creates_nothing() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let mut s = Staging::new(0o700, true);
        s.add(&out).unwrap();
        s.add(&out.join("ts")).unwrap();
        s.commit(false).unwrap();
        assert!(names(d.path()).is_empty());
    }

    #[test]
    fn reads_start_time_of_a_process_with_odd_name() {
        let me = proc_start_time(std::process::id()).unwrap();
        assert!(me > 0);
        let me = Owner::me(Path::new("/some dir/out"));
        assert!(me.alive());
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(MARKER), me.text()).unwrap();
        assert_eq!(Owner::read(&d.path().join(MARKER)), Some(me));
    }
}
