//! Offline verification of PostgreSQL data directories and backups.
//!
//! This crate owns the checks `pgincr verify` runs on files at rest, without a server. Today
//! that is [`vm_check`]: visibility-map bits that the heap contradicts, the corruption that
//! combined PostgreSQL 17 incremental chains carry. The manifest, WAL and page-checksum checks
//! of `pg_verifybackup` and beyond will live here too, so that the rotation and restore drills
//! call the same code as the command.

mod vm_check;

pub use vm_check::{check_vm, StaleBit, StaleKind, VmCheckError, VmCheckReport};
