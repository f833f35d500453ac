//! Offline verification of PostgreSQL data directories and backups.
//!
//! This crate owns the checks `pgincr verify` runs on files at rest, without a server:
//! [`verify_backup`], what `pg_verifybackup` checks of a plain backup against its manifest,
//! and [`check_vm`], visibility-map bits that the heap contradicts (the corruption that
//! combined PostgreSQL 17 incremental chains carry). [`verify_backup`] reads plain and tar
//! (gzip, lz4, zstd) backups, parses the WAL they need (inside `pg_wal.tar` too), and with
//! data checksums on checks every page of every relation file. Whole chains come next, here
//! too, so that the rotation and restore drills call the same code as the command.

mod manifest_check;
mod page_check;
mod tar_check;
mod tar_read;
mod vm_check;

pub use manifest_check::{
    verify_backup, BackupFormat, PageChecks, Problem, ProblemKind, Progress, VerifyError,
    VerifyOptions, VerifyReport,
};
pub use page_check::{PageDamage, PageProblem};
pub use vm_check::{check_vm, StaleBit, StaleKind, VmCheckError, VmCheckReport};
