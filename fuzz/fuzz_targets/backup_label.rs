//! `backup_label` as pg_combinebackup reads it: never a panic; an accepted label keeps its
//! text, its LSNs round-trip through their `%X/%X` form, and the combined backup's label
//! (without the INCREMENTAL lines) parses again as a full backup's label with the same start.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgincr_types::backup_label::BackupLabel;
use pgincr_types::Lsn;

fuzz_target!(|data: &[u8]| {
    // The LSN parser on its own, on the first line.
    if let Some(line) = data.split(|&b| b == b'\n').next() {
        if let Ok(Ok(lsn)) = std::str::from_utf8(line).map(str::parse::<Lsn>) {
            assert_eq!(lsn.to_string().parse::<Lsn>().ok(), Some(lsn));
        }
    }
    let Ok(label) = BackupLabel::parse(data) else {
        return;
    };
    assert_eq!(label.text, data);
    assert_eq!(
        label.start_lsn.to_string().parse::<Lsn>().ok(),
        Some(label.start_lsn)
    );
    if let Some((lsn, _)) = label.incremental_from {
        assert_eq!(lsn.to_string().parse::<Lsn>().ok(), Some(lsn));
    }
    let combined = label.without_incremental_lines();
    assert!(combined.len() <= data.len());
    let again = BackupLabel::parse(&combined).expect("the combined label parses");
    assert_eq!(again.start_lsn, label.start_lsn);
    assert_eq!(again.start_tli, label.start_tli);
    assert_eq!(again.incremental_from, None);
    assert_eq!(again.without_incremental_lines(), combined);
});
