//! # lockmgrd — the per-host lock daemon of lockmgr's plugins
//!
//! libvirt calls a lock plugin from short-lived contexts in libvirtd and in the pre-exec child of
//! each QEMU, and not at all when QEMU dies. So the locks live here, held on behalf of *owners*
//! (domains: uuid, name, id, QEMU pid): registered from the child, taken and released from
//! libvirtd, freed at once when QEMU exits (pidfd), and kept across libvirtd restarts. One
//! backend per instance: `file` (OFD locks) now, `dlm` later.
#![deny(unsafe_code)]

pub mod backend;
#[cfg(feature = "dlm")]
pub mod dlm_backend;
pub mod file_backend;
pub mod persist;
pub mod process;
pub mod server;
#[allow(unsafe_code)]
pub mod sys;
pub mod table;

/// One log line on stderr, prefixed for a shared journal.
pub fn log(message: &str) {
    eprintln!("lockmgrd[{}]: {message}", std::process::id());
}
