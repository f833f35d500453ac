//! Reconstruction of full backups from a chain of incremental backups.
