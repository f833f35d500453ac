//! Reader: the semantic state machine of `parse_manifest.c`.

use indexmap::IndexMap;

use super::error::parse_err;
use super::gmt::parse_gmt;
use super::{Manifest, ManifestErrorKind, ManifestFile, WalRange};
use crate::checksum::{hex_decode, ChecksumType};
use crate::lsn::{Lsn, TimeLineId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
/// The parser's position; each variant names what is expected next.
pub(super) enum State {
    #[default]
    ToplevelStart,
    ToplevelEnd,
    ToplevelField,
    VersionValue,
    SystemIdentifierValue,
    FilesStart,
    FilesNext,
    ThisFileField,
    ThisFileValue,
    WalRangesStart,
    WalRangesNext,
    ThisWalRangeField,
    ThisWalRangeValue,
    ManifestChecksumValue,
    Eof,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum FileField {
    #[default]
    Path,
    EncodedPath,
    Size,
    LastModified,
    Algorithm,
    Checksum,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum WalField {
    #[default]
    Timeline,
    StartLsn,
    EndLsn,
}

#[derive(Default)]
pub(super) struct Semantic {
    pub(super) state: State,
    saw_version: bool,
    file_field: FileField,
    path: Option<Vec<u8>>,
    encoded_path: Option<Vec<u8>>,
    size: Option<Vec<u8>>,
    last_modified: Option<Vec<u8>>,
    algorithm: Option<Vec<u8>>,
    checksum: Option<Vec<u8>>,
    wal_field: WalField,
    timeline: Option<Vec<u8>>,
    start_lsn: Option<Vec<u8>>,
    end_lsn: Option<Vec<u8>>,
    manifest_checksum: Option<Vec<u8>>,
    pub(super) manifest: Manifest,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            version: 0,
            system_identifier: None,
            files: IndexMap::new(),
            wal_ranges: Vec::new(),
        }
    }
}

impl Semantic {
    pub(super) fn object_start(&mut self) -> Result<(), ManifestErrorKind> {
        self.state = match self.state {
            State::ToplevelStart => State::ToplevelField,
            State::FilesNext => {
                self.path = None;
                self.encoded_path = None;
                self.size = None;
                self.last_modified = None;
                self.algorithm = None;
                self.checksum = None;
                State::ThisFileField
            }
            State::WalRangesNext => {
                self.timeline = None;
                self.start_lsn = None;
                self.end_lsn = None;
                State::ThisWalRangeField
            }
            _ => return parse_err("unexpected object start"),
        };
        Ok(())
    }

    pub(super) fn object_end(&mut self) -> Result<(), ManifestErrorKind> {
        self.state = match self.state {
            State::ToplevelEnd => State::Eof,
            State::ThisFileField => {
                self.finalize_file()?;
                State::FilesNext
            }
            State::ThisWalRangeField => {
                self.finalize_wal_range()?;
                State::WalRangesNext
            }
            _ => return parse_err("unexpected object end"),
        };
        Ok(())
    }

    pub(super) fn array_start(&mut self) -> Result<(), ManifestErrorKind> {
        self.state = match self.state {
            State::FilesStart => State::FilesNext,
            State::WalRangesStart => State::WalRangesNext,
            _ => return parse_err("unexpected array start"),
        };
        Ok(())
    }

    pub(super) fn array_end(&mut self) -> Result<(), ManifestErrorKind> {
        self.state = match self.state {
            State::FilesNext | State::WalRangesNext => State::ToplevelField,
            _ => return parse_err("unexpected array end"),
        };
        Ok(())
    }

    pub(super) fn field(&mut self, name: &[u8]) -> Result<(), ManifestErrorKind> {
        match self.state {
            State::ToplevelField => {
                if !self.saw_version {
                    if name != b"PostgreSQL-Backup-Manifest-Version" {
                        return parse_err("expected version indicator");
                    }
                    self.saw_version = true;
                    self.state = State::VersionValue;
                    return Ok(());
                }
                self.state = match name {
                    b"System-Identifier" => State::SystemIdentifierValue,
                    b"Files" => State::FilesStart,
                    b"WAL-Ranges" => State::WalRangesStart,
                    b"Manifest-Checksum" => State::ManifestChecksumValue,
                    _ => return parse_err("unrecognized top-level field"),
                };
            }
            State::ThisFileField => {
                self.file_field = match name {
                    b"Path" => FileField::Path,
                    b"Encoded-Path" => FileField::EncodedPath,
                    b"Size" => FileField::Size,
                    b"Last-Modified" => FileField::LastModified,
                    b"Checksum-Algorithm" => FileField::Algorithm,
                    b"Checksum" => FileField::Checksum,
                    _ => return parse_err("unexpected file field"),
                };
                self.state = State::ThisFileValue;
            }
            State::ThisWalRangeField => {
                self.wal_field = match name {
                    b"Timeline" => WalField::Timeline,
                    b"Start-LSN" => WalField::StartLsn,
                    b"End-LSN" => WalField::EndLsn,
                    _ => return parse_err("unexpected WAL range field"),
                };
                self.state = State::ThisWalRangeValue;
            }
            _ => return parse_err("unexpected object field"),
        }
        Ok(())
    }

    pub(super) fn scalar(&mut self, token: Vec<u8>) -> Result<(), ManifestErrorKind> {
        match self.state {
            State::VersionValue => {
                let v = parse_i64(&token).ok_or_else(|| {
                    ManifestErrorKind::Parse("manifest version not an integer".into())
                })?;
                if v != 1 && v != 2 {
                    return parse_err("unexpected manifest version");
                }
                self.manifest.version = v as u32;
                self.state = State::ToplevelField;
            }
            State::SystemIdentifierValue => {
                let v = parse_u64(&token).ok_or_else(|| {
                    ManifestErrorKind::Parse("manifest system identifier not an integer".into())
                })?;
                self.manifest.system_identifier = Some(v);
                self.state = State::ToplevelField;
            }
            State::ThisFileValue => {
                let slot = match self.file_field {
                    FileField::Path => &mut self.path,
                    FileField::EncodedPath => &mut self.encoded_path,
                    FileField::Size => &mut self.size,
                    FileField::LastModified => &mut self.last_modified,
                    FileField::Algorithm => &mut self.algorithm,
                    FileField::Checksum => &mut self.checksum,
                };
                *slot = Some(token);
                self.state = State::ThisFileField;
            }
            State::ThisWalRangeValue => {
                let slot = match self.wal_field {
                    WalField::Timeline => &mut self.timeline,
                    WalField::StartLsn => &mut self.start_lsn,
                    WalField::EndLsn => &mut self.end_lsn,
                };
                *slot = Some(token);
                self.state = State::ThisWalRangeField;
            }
            State::ManifestChecksumValue => {
                self.manifest_checksum = Some(token);
                self.state = State::ToplevelEnd;
            }
            _ => return parse_err("unexpected scalar"),
        }
        Ok(())
    }

    fn finalize_file(&mut self) -> Result<(), ManifestErrorKind> {
        let path = match (self.path.take(), self.encoded_path.take()) {
            (None, None) => return parse_err("missing path name"),
            (Some(_), Some(_)) => return parse_err("both path name and encoded path name"),
            (Some(p), None) => p,
            // PostgreSQL keeps paths as C strings, so a decoded NUL cannot be a real path.
            (None, Some(e)) => hex_decode(&e)
                .filter(|p| !p.contains(&0))
                .ok_or_else(|| ManifestErrorKind::Parse("could not decode file name".into()))?,
        };
        let Some(size) = self.size.take() else {
            return parse_err("missing size");
        };
        let (algorithm, checksum) = (self.algorithm.take(), self.checksum.take());
        if algorithm.is_none() && checksum.is_some() {
            return parse_err("checksum without algorithm");
        }
        let size = parse_u64(&size)
            .ok_or_else(|| ManifestErrorKind::Parse("file size is not an integer".into()))?;
        let checksum_type = match &algorithm {
            None => ChecksumType::None,
            Some(a) => std::str::from_utf8(a)
                .ok()
                .and_then(ChecksumType::parse)
                .ok_or_else(|| {
                    ManifestErrorKind::UnknownAlgorithm(String::from_utf8_lossy(a).into_owned())
                })?,
        };
        let checksum: Box<[u8]> = match checksum {
            None => Box::default(),
            Some(c) if c.is_empty() => Box::default(),
            Some(c) => hex_decode(&c)
                .ok_or_else(|| ManifestErrorKind::BadFileChecksum {
                    path: String::from_utf8_lossy(&path).into_owned(),
                    checksum: String::from_utf8_lossy(&c).into_owned(),
                })?
                .into(),
        };
        let last_modified = self.last_modified.take().and_then(|t| parse_gmt(&t));
        let entry = ManifestFile {
            size,
            last_modified,
            checksum_type,
            checksum,
        };
        match self.manifest.files.entry(path.into_boxed_slice()) {
            indexmap::map::Entry::Occupied(o) => Err(ManifestErrorKind::DuplicatePath(
                String::from_utf8_lossy(o.key()).into_owned(),
            )),
            indexmap::map::Entry::Vacant(v) => {
                v.insert(entry);
                Ok(())
            }
        }
    }

    fn finalize_wal_range(&mut self) -> Result<(), ManifestErrorKind> {
        let Some(tli) = self.timeline.take() else {
            return parse_err("missing timeline");
        };
        let Some(start) = self.start_lsn.take() else {
            return parse_err("missing start LSN");
        };
        let Some(end) = self.end_lsn.take() else {
            return parse_err("missing end LSN");
        };
        let tli = parse_u64(&tli)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| ManifestErrorKind::Parse("timeline is not an integer".into()))?;
        let lsn = |t: &[u8], what: &str| {
            std::str::from_utf8(t)
                .ok()
                .and_then(|s| s.parse::<Lsn>().ok())
                .ok_or_else(|| ManifestErrorKind::Parse(format!("could not parse {what}")))
        };
        self.manifest.wal_ranges.push(WalRange {
            tli: TimeLineId(tli),
            start: lsn(&start, "start LSN")?,
            end: lsn(&end, "end LSN")?,
        });
        Ok(())
    }

    pub(super) fn verify_checksum(&self, actual: &[u8; 32]) -> Result<(), ManifestErrorKind> {
        let Some(text) = &self.manifest_checksum else {
            return Err(ManifestErrorKind::NoChecksum);
        };
        let expected = (text.len() == 64).then(|| hex_decode(text)).flatten();
        let Some(expected) = expected else {
            return Err(ManifestErrorKind::BadChecksumText(
                String::from_utf8_lossy(text).into_owned(),
            ));
        };
        if expected != actual {
            return Err(ManifestErrorKind::ChecksumMismatch);
        }
        Ok(())
    }
}

/// Strict decimal: digits only (PostgreSQL's strtoul would also take signs and blanks; no
/// manifest writer produces them).
fn parse_u64(t: &[u8]) -> Option<u64> {
    if t.is_empty() || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(t).ok()?.parse().ok()
}

fn parse_i64(t: &[u8]) -> Option<i64> {
    std::str::from_utf8(t).ok()?.parse().ok()
}
