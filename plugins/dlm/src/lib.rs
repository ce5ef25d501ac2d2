//! `dlm.so`: cluster-wide disk locks through the Linux DLM (corosync + dlm_controld + dlm.ko),
//! held by `lockmgrd --backend dlm` as persistent locks that survive a daemon crash as orphans.
//!
//! The plugin itself never opens the DLM (QEMU must never hold a lockspace handle); it talks to
//! the daemon. Configuration: `/etc/libvirt/qemu-dlm.conf`, shared with the daemon.
#![forbid(unsafe_code)]

use std::path::Path;

use lockmgr::{Error, Result};
use lockmgr_conf::DlmPluginSettings;
use lockmgr_daemon_plugin::{DaemonPlugin, PluginProfile, PluginSettings};

/// Where dlm_controld publishes the cluster it joined.
const CLUSTER_NAME_FILE: &str = "/sys/kernel/config/dlm/cluster/cluster_name";

/// dlm.so's profile.
#[derive(Debug)]
pub struct DlmProfile;

impl PluginProfile for DlmProfile {
    const NAME: &'static str = "dlm";
    const BACKEND: &'static str = "dlm";

    fn load(config_path: &Path) -> Result<PluginSettings> {
        let (settings, warnings) =
            DlmPluginSettings::from_file(config_path).map_err(|e| Error::config(e.to_string()))?;
        for warning in warnings {
            eprintln!("lockmgr dlm.so: warning: {warning}");
        }
        Ok(PluginSettings {
            auto_disk_leases: settings.auto_disk_leases,
            require_lease_for_disks: settings.require_lease_for_disks,
            socket_path: settings.socket_path,
        })
    }

    fn check_environment() -> Result<()> {
        match std::fs::read_to_string(CLUSTER_NAME_FILE) {
            Ok(name) if !name.trim().is_empty() => Ok(()),
            Ok(_) => Err(Error::config(format!(
                "{CLUSTER_NAME_FILE} is empty: dlm_controld has not configured a cluster"
            ))),
            Err(err) => Err(Error::config(format!(
                "no DLM cluster on this host ({CLUSTER_NAME_FILE}: {err}); start corosync, \
                 dlm_controld and lockmgrd --backend dlm before libvirtd"
            ))),
        }
    }
}

/// The DLM lock driver.
pub type DlmDriver = DaemonPlugin<DlmProfile>;

lockmgr_daemon_plugin::export_daemon_plugin!(DlmProfile);
