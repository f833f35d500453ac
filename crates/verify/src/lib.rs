//! Offline verification of PostgreSQL data directories and backups.
//!
//! This crate owns the checks `pgincr verify` runs on files at rest, without a server:
//! [`verify_backup`], what `pg_verifybackup` checks of a plain backup against its manifest,
//! and [`check_vm`], visibility-map bits that the heap contradicts (the corruption that
//! combined PostgreSQL 17 incremental chains carry). WAL parsing, tar backups, page checksums
//! and whole chains come next, here too, so that the rotation and restore drills call the
//! same code as the command.

mod manifest_check;
mod vm_check;

pub use manifest_check::{
    verify_backup, Problem, ProblemKind, VerifyError, VerifyOptions, VerifyReport,
};
pub use vm_check::{check_vm, StaleBit, StaleKind, VmCheckError, VmCheckReport};
