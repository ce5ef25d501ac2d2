//! libvirt's own `qemu-lockd.conf`, read the way `lock_driver_lockd.c` reads it (for interop tests
//! that run libvirt's `lockd.so` next to lockmgr's plugins).

use std::path::{Path, PathBuf};

use crate::error::ConfError;
use crate::syntax::ConfFile;
use crate::warning::Warning;

use super::{check_keys, disk_lease_keys, settings_from_file};

/// The settings of libvirt's `lockd` plugin, from `/etc/libvirt/qemu-lockd.conf`.
///
/// Mirrors libvirt exactly, quirks included: [`Default`] (the file is missing) is lockd's own
/// start-up state, `auto_disk_leases = 1` **and** `require_lease_for_disks = 1`; only when the file
/// exists does `require_lease_for_disks` default to the opposite of `auto_disk_leases`. Paths are
/// taken as written, relative or empty, because lockd does not check them either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockdSettings {
    /// `auto_disk_leases`: lock every disk automatically.
    pub auto_disk_leases: bool,
    /// `require_lease_for_disks`: refuse domains with writable exclusive disks and no lease.
    pub require_lease_for_disks: bool,
    /// `file_lockspace_dir`: lock `<dir>/<sha256 hex of the path>` instead of the disk itself.
    pub file_lockspace_dir: Option<PathBuf>,
    /// `lvm_lockspace_dir`: lock `/dev` paths by the UUID of their LVM logical volume.
    pub lvm_lockspace_dir: Option<PathBuf>,
    /// `scsi_lockspace_dir`: lock `/dev` paths by their SCSI ID.
    pub scsi_lockspace_dir: Option<PathBuf>,
}

impl LockdSettings {
    /// The file libvirt passes to `lockd.so` for the QEMU driver.
    pub const PATH: &'static str = "/etc/libvirt/qemu-lockd.conf";
    /// Every key lockd reads.
    pub const KEYS: &'static [&'static str] = &[
        "auto_disk_leases",
        "require_lease_for_disks",
        "file_lockspace_dir",
        "lvm_lockspace_dir",
        "scsi_lockspace_dir",
    ];

    /// Reads the settings from a parsed file. lockd ignores unknown keys silently; this warns.
    pub fn from_conf(conf: &ConfFile) -> Result<(Self, Vec<Warning>), ConfError> {
        let mut warnings = Vec::new();
        check_keys(conf, Self::KEYS, &mut warnings);
        let (auto_disk_leases, require_lease_for_disks) = disk_lease_keys(conf)?;
        let path = |key| conf.get_string(key).map(|path| path.map(PathBuf::from));
        let settings = LockdSettings {
            auto_disk_leases,
            require_lease_for_disks,
            file_lockspace_dir: path("file_lockspace_dir")?,
            lvm_lockspace_dir: path("lvm_lockspace_dir")?,
            scsi_lockspace_dir: path("scsi_lockspace_dir")?,
        };
        Ok((settings, warnings))
    }

    /// Reads the file at `path`; a missing file gives lockd's start-up state (see the type).
    pub fn from_file(path: &Path) -> Result<(Self, Vec<Warning>), ConfError> {
        settings_from_file(path, Self::from_conf)
    }
}

impl Default for LockdSettings {
    fn default() -> Self {
        LockdSettings {
            auto_disk_leases: true,
            require_lease_for_disks: true,
            file_lockspace_dir: None,
            lvm_lockspace_dir: None,
            scsi_lockspace_dir: None,
        }
    }
}
