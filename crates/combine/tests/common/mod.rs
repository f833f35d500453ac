//! Hand-built backups for the synthetic chain tests: labels, manifests and control files as
//! `pg_basebackup` writes them, around whatever relation files a test needs.

#![allow(dead_code)]

use pgincr_types::checksum::{ChecksumType, Checksummer};
use pgincr_types::manifest::{ManifestWriter, WalRange};
use pgincr_types::{Lsn, TimeLineId};
use std::path::Path;

pub const BLCKSZ: usize = 8192;
pub const SYSID: u64 = 7_400_000_000_000_000_001;

/// A PostgreSQL 18 pg_control with a valid CRC, the given block and segment sizes and data
/// checksums on or off (8 KiB WAL pages and 16 MiB WAL segments, which every real control
/// file has and pgincr checks).
pub fn control_with(blcksz: u32, relseg_size: u32, data_checksums: bool) -> Vec<u8> {
    let mut b = vec![0u8; 8192];
    b[0..8].copy_from_slice(&SYSID.to_le_bytes());
    b[8..12].copy_from_slice(&1800u32.to_le_bytes());
    b[216..220].copy_from_slice(&blcksz.to_le_bytes());
    b[220..224].copy_from_slice(&relseg_size.to_le_bytes());
    b[224..228].copy_from_slice(&8192u32.to_le_bytes());
    b[228..232].copy_from_slice(&(16u32 << 20).to_le_bytes());
    b[252..256].copy_from_slice(&u32::from(data_checksums).to_le_bytes());
    let crc = crc32c::crc32c(&b[..292]);
    b[292..296].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Writes a backup with the given files (path, content), a label chaining it to `from`, the
/// control file `control`, and a manifest listing everything.
pub fn make_backup(
    dir: &Path,
    start: u64,
    from: Option<u64>,
    control: &[u8],
    files: &[(&str, Vec<u8>)],
) {
    let mut label = format!(
        "START WAL LOCATION: 0/{start:X} (file 000000010000000000000001)\nCHECKPOINT LOCATION: 0/{start:X}\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-01-01 00:00:00 UTC\nLABEL: synthetic\nSTART TIMELINE: 1\n"
    );
    if let Some(f) = from {
        label.push_str(&format!(
            "INCREMENTAL FROM LSN: 0/{f:X}\nINCREMENTAL FROM TLI: 1\n"
        ));
    }
    let mut all: Vec<(String, Vec<u8>)> = vec![
        ("backup_label".into(), label.into_bytes()),
        ("PG_VERSION".into(), b"18\n".to_vec()),
        ("global/pg_control".into(), control.to_vec()),
    ];
    all.extend(files.iter().map(|(p, c)| (p.to_string(), c.clone())));
    std::fs::create_dir_all(dir.join("pg_tblspc")).unwrap();
    let mut w = ManifestWriter::new(Vec::new(), SYSID).unwrap();
    for (p, c) in &all {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, c).unwrap();
        let mut sum = Checksummer::new(ChecksumType::Crc32c);
        sum.update(c);
        w.add_file(p.as_bytes(), c.len() as u64, 0, sum.finish().as_ref())
            .unwrap();
    }
    let m = w
        .finish(&[WalRange {
            tli: TimeLineId(1),
            start: Lsn(start),
            end: Lsn(start + 0x100),
        }])
        .unwrap();
    std::fs::write(dir.join("backup_manifest"), m).unwrap();
}
