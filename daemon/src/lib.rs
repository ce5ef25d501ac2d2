//! # lockmgrd — the per-host lock daemon of lockmgr's plugins
//!
//! libvirt calls a lock plugin from short-lived contexts in libvirtd and in the pre-exec child of
//! each QEMU, and not at all when QEMU dies. So the locks live here, held on behalf of *owners*
//! (domains: uuid, name, id, QEMU pid): registered from the child, taken and released from
//! libvirtd, freed at once when QEMU exits (pidfd), and kept across libvirtd restarts. One
//! backend per instance: `file` (OFD locks) or `dlm` (cluster-wide DLM locks).
#![deny(unsafe_code)]

pub mod admin_text;
pub mod backend;
#[cfg(feature = "dlm")]
pub mod cluster_status;
#[cfg(feature = "dlm")]
pub mod dlm_backend;
#[cfg(feature = "dlm")]
pub mod doctor;
pub mod failpoint;
#[cfg(feature = "dlm")]
pub mod fencing;
pub mod file_backend;
pub mod health;
pub mod instance;
pub mod notify;
pub mod persist;
pub mod process;
pub mod server;
#[cfg(feature = "failpoints")]
pub mod stall;
#[allow(unsafe_code)]
pub mod sys;
pub mod table;
pub mod watchdog;

/// One log line on stderr: wall-clock seconds with milliseconds (for correlating with other
/// logs of the host) and the pid.
pub fn log(message: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!(
        "{}.{:03} lockmgrd[{}]: {message}",
        now.as_secs(),
        now.subsec_millis(),
        std::process::id()
    );
}
