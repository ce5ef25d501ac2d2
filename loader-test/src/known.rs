//! What loader-test knows about plugins that need a daemon of their own to lock anything.

use std::os::unix::net::UnixStream;
use std::path::Path;

/// A lock daemon a plugin talks to.
#[derive(Debug, Clone, Copy)]
pub struct DaemonNeed {
    /// The daemon's name, as an operator knows it.
    pub daemon: &'static str,
    /// The socket the plugin connects to.
    pub socket: &'static str,
    /// How to get it running.
    pub hint: &'static str,
}

/// libvirt's own plugins, by file name.
pub fn daemon_for(plugin: &Path) -> Option<DaemonNeed> {
    match plugin.file_stem()?.to_str()? {
        "lockd" => Some(DaemonNeed {
            daemon: "virtlockd",
            socket: "/run/libvirt/virtlockd-sock",
            hint: "start virtlockd (package libvirt-daemon-lock) before validating lockd.so",
        }),
        "sanlock" => Some(DaemonNeed {
            daemon: "sanlock",
            socket: "/run/sanlock/sanlock.sock",
            hint: "start the sanlock daemon and configure leases (or auto_disk_leases + host_id) \
                   in qemu-sanlock.conf",
        }),
        _ => None,
    }
}

impl DaemonNeed {
    /// Whether something accepts connections on the daemon's socket now.
    pub fn is_running(&self) -> bool {
        UnixStream::connect(self.socket).is_ok()
    }
}

/// Messages by which a plugin says it could not reach its daemon.
pub fn mentions_unreachable_daemon(message: &str) -> bool {
    [
        "Failed to connect socket",
        "Failed to open socket to sanlock daemon",
        "sanlock daemon",
        // lockmgr's file.so and dlm.so
        "is lockmgrd running?",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}
