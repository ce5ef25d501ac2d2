//! Facts about owner processes, and the `<on_lockfailure>` actions applied to them.

use std::os::fd::{AsFd, OwnedFd};

use lockmgr::proto::{FailureAction, OwnerInfo};

use crate::sys;

/// The process start time (field 22 of `/proc/PID/stat`, clock ticks since boot): with the
/// pid, it names one process even after the pid is reused.
pub fn start_time(pid: u32) -> std::io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let after_comm = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    after_comm
        .split_whitespace()
        .nth(19)
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unexpected /proc/{pid}/stat format"),
            )
        })
}

/// Whether the process behind `pidfd` still runs (signal 0 through the pidfd).
pub fn is_alive(pidfd: &OwnedFd) -> bool {
    sys::pidfd_send_signal(pidfd.as_fd(), 0).is_ok()
}

/// Applies a domain's `<on_lockfailure>` after it lost a lock; returns what was done.
pub fn apply_failure_action(pidfd: &OwnedFd, owner: &OwnerInfo, action: FailureAction) -> String {
    match action {
        FailureAction::Default | FailureAction::Poweroff => {
            match sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL) {
                Ok(()) => format!(
                    "domain '{}' powered off (SIGKILL to pid {})",
                    owner.name, owner.pid
                ),
                Err(err) => format!(
                    "could not power off domain '{}' (pid {}): {err}",
                    owner.name, owner.pid
                ),
            }
        }
        FailureAction::Pause => {
            let uri = owner.uri.as_deref().unwrap_or("qemu:///system");
            match std::process::Command::new("virsh")
                .args(["-c", uri, "suspend", &owner.uuid])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn()
            {
                // Reaped by the main loop's periodic waitpid(-1, WNOHANG).
                Ok(child) => format!(
                    "asked libvirt ({uri}) to pause domain '{}' (virsh pid {})",
                    owner.name,
                    child.id()
                ),
                Err(err) => format!(
                    "could not ask libvirt to pause domain '{}': {err}",
                    owner.name
                ),
            }
        }
        FailureAction::Ignore => format!(
            "domain '{}' keeps running without its lock (on_lockfailure=ignore)",
            owner.name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_identifies_this_process() {
        let me = std::process::id();
        let first = start_time(me).unwrap();
        assert_eq!(first, start_time(me).unwrap());
        assert!(start_time(u32::MAX).is_err());
    }
}
