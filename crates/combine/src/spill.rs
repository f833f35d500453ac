//! Adopting spilled members: a file of the final backup that was decompressed from a
//! compressed tar archive (see [`crate::archive`]) is already a private copy in the spill
//! directory next to the output, so it is moved into place instead of being copied again.

use crate::archive;
use crate::chain::{Chain, Layout};
use crate::copy;
use crate::error::{CombineError, Result};
use crate::options::CombineOptions;
use crate::walk::FileRef;
use pgincr_types::checksum::{ChecksumType, Checksummer};
use std::path::Path;

/// The spill file holding a member of the final backup, if it was decompressed.
pub(crate) fn spilled_member<'c>(chain: &'c Chain, source: &FileRef) -> Option<&'c Path> {
    let (FileRef::Member(i), Layout::Tar(index)) = (source, &chain.last().layout) else {
        return None;
    };
    match &index.members.get(*i)?.location {
        archive::Location::Spilled(p) => Some(p),
        _ => None,
    }
}

/// Moves a spilled file into the output; copies it when the output is on another file system.
pub(crate) fn adopt(
    spilled: &Path,
    dst: &Path,
    file_mode: u32,
    opts: &CombineOptions,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::rename(spilled, dst) {
        Ok(()) => std::fs::set_permissions(dst, std::fs::Permissions::from_mode(file_mode))
            .map_err(CombineError::io("could not set permissions of", dst)),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let src = copy::Source::open(spilled)
                .map_err(CombineError::io("could not open file", spilled))?;
            copy::copy_whole(
                &src,
                dst,
                opts.copy_mode,
                file_mode,
                opts.direct_io,
                &mut Checksummer::new(ChecksumType::None),
            )
        }
        Err(e) => Err(CombineError::io("could not move file into place", dst)(e)),
    }
}
