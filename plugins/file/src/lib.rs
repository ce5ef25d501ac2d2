//! `file.so`: libvirt disk locks held by `lockmgrd` as OFD locks on byte 0 of
//! `<file_lockspace_dir>/<sha256 of the disk path>` (virtlockd's names), or of the disk itself.
//!
//! Configuration: `/etc/libvirt/qemu-file.conf`, shared with `lockmgrd --backend file`
//! (see docs/lockmgrd.md).
#![forbid(unsafe_code)]

use std::path::Path;

use lockmgr::{Error, Result};
use lockmgr_conf::FilePluginSettings;
use lockmgr_daemon_plugin::{DaemonPlugin, PluginProfile, PluginSettings};

/// file.so's profile.
#[derive(Debug)]
pub struct FileProfile;

impl PluginProfile for FileProfile {
    const NAME: &'static str = "file";
    const BACKEND: &'static str = "file";

    fn load(config_path: &Path) -> Result<PluginSettings> {
        let (settings, warnings) =
            FilePluginSettings::from_file(config_path).map_err(|e| Error::config(e.to_string()))?;
        for warning in warnings {
            eprintln!("lockmgr file.so: warning: {warning}");
        }
        Ok(PluginSettings {
            auto_disk_leases: settings.auto_disk_leases,
            require_lease_for_disks: settings.require_lease_for_disks,
            socket_path: settings.socket_path,
        })
    }
}

/// The file lock driver.
pub type FileDriver = DaemonPlugin<FileProfile>;

lockmgr_daemon_plugin::export_daemon_plugin!(FileProfile);
