//! Facts about owner processes, and the `<on_lockfailure>` actions applied to them.

use std::os::fd::{AsFd, OwnedFd};

use lockmgr_proto::{FailureAction, OwnerInfo};

use crate::sys;

/// `PF_KTHREAD` in the flags of `/proc/PID/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Numeric field `field` (1-based, as proc(5) counts) of `/proc/PID/stat`, from field 3 on.
fn stat_field(pid: u32, field: usize) -> std::io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let after_comm = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    after_comm
        .split_whitespace()
        .nth(field.saturating_sub(3))
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unexpected /proc/{pid}/stat format"),
            )
        })
}

/// The process start time (field 22 of `/proc/PID/stat`, clock ticks since boot): with the
/// pid, it names one process even after the pid is reused.
pub fn start_time(pid: u32) -> std::io::Result<u64> {
    stat_field(pid, 22)
}

/// Whether the process behind `pidfd` still runs. A pidfd polls readable once its process
/// exited, zombies included (signal 0 still reaches a zombie).
pub fn is_alive(pidfd: &OwnedFd) -> bool {
    !sys::pidfd_exited(pidfd.as_fd())
}

/// The pids of the processes whose command name (`/proc/PID/comm`) is `name`.
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .collect()
}

/// Whether a process whose command name is `name` runs on this host.
pub fn running_named(name: &str) -> bool {
    !pids_named(name).is_empty()
}

/// Why `pid` can never be a domain's QEMU, if it cannot: a process that outlives this daemon
/// (init, the daemon itself or one of its ancestors) or a kernel thread would hold its locks
/// forever.
pub fn never_an_owner(pid: u32) -> Option<String> {
    if pid == 1 {
        return Some("pid 1 is init".into());
    }
    if pid == std::process::id() {
        return Some(format!("pid {pid} is lockmgrd itself"));
    }
    if stat_field(pid, 9).is_ok_and(|flags| flags & PF_KTHREAD != 0) {
        return Some(format!("pid {pid} is a kernel thread"));
    }
    let mut ancestor = std::process::id();
    for _ in 0..64 {
        match stat_field(ancestor, 4)
            .ok()
            .and_then(|p| u32::try_from(p).ok())
        {
            Some(parent) if parent > 1 => {
                if parent == pid {
                    return Some(format!("pid {pid} is an ancestor of lockmgrd"));
                }
                ancestor = parent;
            }
            _ => break,
        }
    }
    None
}

/// Applies a domain's `<on_lockfailure>` after it lost a lock; returns what was done.
pub fn apply_failure_action(pidfd: &OwnedFd, owner: &OwnerInfo, action: FailureAction) -> String {
    match action {
        FailureAction::Default | FailureAction::Poweroff => {
            match sys::pidfd_send_signal(pidfd.as_fd(), rustix::process::Signal::KILL) {
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
    fn a_running_process_is_found_by_name() {
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert!(running_named(comm.trim_end()));
        assert!(!running_named("no-such-daemon"));
    }

    #[test]
    fn start_time_identifies_this_process() {
        let me = std::process::id();
        let first = start_time(me).unwrap();
        assert_eq!(first, start_time(me).unwrap());
        assert!(start_time(u32::MAX).is_err());
    }

    #[test]
    fn processes_that_outlive_the_daemon_are_never_owners() {
        assert!(never_an_owner(1).unwrap().contains("init"));
        assert!(
            never_an_owner(std::process::id())
                .unwrap()
                .contains("itself")
        );
        let parent = u32::try_from(stat_field(std::process::id(), 4).unwrap()).unwrap();
        if parent > 1 {
            assert!(never_an_owner(parent).unwrap().contains("ancestor"));
        }
        if stat_field(2, 9).is_ok_and(|flags| flags & PF_KTHREAD != 0) {
            assert!(never_an_owner(2).unwrap().contains("kernel thread"));
        }
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert_eq!(never_an_owner(child.id()), None);
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pidfd = sys::pidfd_open(child.id()).unwrap();
        // Not reaped yet: a zombie, which signal 0 still reaches.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while is_alive(&pidfd) {
            assert!(std::time::Instant::now() < deadline, "true never exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
        assert!(
            rustix::process::test_kill_process(pid).is_ok(),
            "still a zombie"
        );
        child.wait().unwrap();
    }
}
