//! A scratch file system that can clone files.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::scratch;

/// A scratch XFS file system with reflinks, on a loop device, for testing `--clone`: the
/// machine's own file systems (ext4 here) cannot clone. Needs root, loop devices and
/// `mkfs.xfs` (`scripts/install-test-tools` installs xfsprogs). Unmounted and removed on drop.
pub struct ReflinkScratch {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl ReflinkScratch {
    /// Mounts a fresh file system of `size_mb` MB; `Err` says why this machine cannot.
    pub fn mount(prefix: &str, size_mb: u64) -> Result<ReflinkScratch, String> {
        if !pgincr_server::running_as_root() {
            return Err("not running as root (mounting needs it)".into());
        }
        let dir = scratch(prefix);
        let image = dir.path().join("xfs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| format!("mkdir: {e}"))?;
        let file = std::fs::File::create(&image).map_err(|e| format!("image: {e}"))?;
        file.set_len(size_mb << 20)
            .map_err(|e| format!("image: {e}"))?;
        let try_run = |cmd: &mut Command| -> Result<(), String> {
            let o = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if o.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
        };
        try_run(
            Command::new("mkfs.xfs")
                .args(["-q", "-m", "reflink=1"])
                .arg(&image),
        )?;
        try_run(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&mount),
        )?;
        std::fs::set_permissions(&mount, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod: {e}"))?;
        Ok(ReflinkScratch { mount, _dir: dir })
    }

    pub fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for ReflinkScratch {
    fn drop(&mut self) {
        // Lazy, so a file still open somewhere cannot leave the mount behind.
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}
