//! Host-side helpers: commands, process checks by pid, preconditions.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions, kill_process, waitpid};

use crate::error::{Error, IoContext, Result};

/// Runs a host command to completion; its stdout on success, an error with stderr otherwise.
/// Reads a log of one JSON record a line (empty when the file does not exist yet).
pub(crate) fn read_json_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).at(path, "read"),
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .map_err(|err| Error::Usage(format!("{}: {err}: {line}", path.display())))
        })
        .collect()
}

pub(crate) fn run(command: &mut Command) -> Result<String> {
    let line = describe(command);
    let output = command.output().map_err(|err| Error::Command {
        command: line.clone(),
        detail: format!("cannot start: {err}"),
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: line,
            detail: format!(
                "{}: {}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                String::from_utf8_lossy(&output.stdout).trim()
            ),
        })
    }
}

/// The command line as a shell would show it (for messages).
pub(crate) fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Fields of `/proc/PID/stat` after the `(comm)` field: state is [0], starttime is [19].
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    Some(after_comm.split_whitespace().map(str::to_owned).collect())
}

/// Whether the process exists and is not a zombie (a killed daemonized QEMU may stay a zombie
/// when this machine's init does not reap it; it is dead all the same).
pub(crate) fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|fields| fields.first().is_some_and(|state| state != "Z"))
}

/// The process's start time in clock ticks since boot (tells a reused pid apart).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Whether `pid` is the QEMU we started as `-name qemu_name` (guards every signal we send
/// against pid reuse; other QEMU processes on this machine are never touched).
pub(crate) fn is_our_qemu(pid: u32, qemu_name: &str) -> bool {
    let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = raw.split(|byte| *byte == 0).collect();
    args.len() > 2
        && args[0].ends_with(b"qemu-system-x86_64")
        && args[1] == b"-name"
        && args[2] == qemu_name.as_bytes()
}

/// Sends `signal` to our QEMU `pid` if it is still that QEMU. Returns whether it was sent.
pub(crate) fn signal_qemu(pid: u32, qemu_name: &str, signal: Signal) -> bool {
    if !alive(pid) || !is_our_qemu(pid, qemu_name) {
        return false;
    }
    let Some(target) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    kill_process(target, signal).is_ok()
}

/// Whether `pid` is the `lockmgr-testbed fencer` serving cluster `name`, started at `start`.
pub(crate) fn is_our_fencer(pid: u32, start: Option<u64>, name: &str) -> bool {
    let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = raw.split(|byte| *byte == 0).collect();
    owner_alive(pid, start)
        && args.contains(&b"fencer".as_slice())
        && args.contains(&name.as_bytes())
}

/// Stops the fencer process of cluster `name` (SIGTERM, SIGKILL after 2 s) if `pid` is still it.
pub(crate) fn stop_fencer(pid: u32, start: Option<u64>, name: &str) -> Result<(), String> {
    let Some(target) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Ok(());
    };
    for signal in [Signal::TERM, Signal::KILL] {
        if !is_our_fencer(pid, start, name) {
            return Ok(());
        }
        let _ = kill_process(target, signal);
        if wait_gone(&[pid], Duration::from_secs(2)).is_empty() {
            return Ok(());
        }
    }
    Err(format!("the fencer of {name} (pid {pid}) survived SIGKILL"))
}

/// Makes this process the reaper of its orphaned descendants: a `-daemonize`d QEMU is then
/// re-parented to us (not to init, which on some machines never reaps) and [`reap`]ed here.
pub(crate) fn become_subreaper() {
    // Any pid sets the attribute (the kernel reads a boolean); `None` would clear it.
    if let Err(err) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        eprintln!(
            "[cluster] PR_SET_CHILD_SUBREAPER failed ({err}); stopped QEMUs may linger as zombies"
        );
    }
}

/// Collects the exit status of `pid` if it is our (zombie) child; a no-op otherwise.
pub(crate) fn reap(pid: u32) {
    gone(pid);
}

/// Whether `pid` is gone. Our own child (a QEMU re-parented to us as subreaper) is gone once
/// reaped: its `/proc` state reads Z as soon as its main thread exits, while other threads may
/// still run and it cannot be reaped yet. Anyone else's process is gone once dead or a zombie.
pub(crate) fn gone(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return true;
    };
    // Pid 0 is no process (`waitpid(None)` would take any child of our process group).
    let Some(child) = Pid::from_raw(raw) else {
        return !alive(pid);
    };
    match waitpid(Some(child), WaitOptions::NOHANG) {
        Ok(None) => false,
        Ok(Some(_)) => true,
        Err(_) => !alive(pid),
    }
}

/// Reaps zombie `qemu-system-x86` processes whose parent is this process: the intermediate
/// processes of QEMU's `-daemonize` double fork, re-parented to us as subreaper. Only zombies of
/// that name are touched, so no other child's exit status is taken from its waiter.
pub(crate) fn reap_qemu_zombies() {
    let me = std::process::id().to_string();
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let comm = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map(|(comm, _)| comm);
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        if comm == Some("qemu-system-x86")
            && fields.first() == Some(&"Z")
            && fields.get(1) == Some(&me.as_str())
        {
            reap(pid);
        }
    }
}

/// Waits until all of `pids` are [`gone`] (reaping our children), up to `timeout`. Returns those
/// still there.
pub(crate) fn wait_gone(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    let mut left: Vec<u32> = pids.to_vec();
    loop {
        left.retain(|pid| !gone(*pid));
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the owner of a run dir (pid + start time) is still the same live process.
pub(crate) fn owner_alive(pid: u32, start: Option<u64>) -> bool {
    alive(pid) && (start.is_none() || start_time(pid) == start)
}

/// Checks what every cluster needs on this host, and says what to do about what is missing.
pub(crate) fn check_cluster_host() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Err(Error::Precondition(
            "not root: network namespaces, tap devices and the image build need root".to_owned(),
        ));
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err(Error::Precondition(
            "/dev/net/tun is missing: QEMU cannot create tap devices".to_owned(),
        ));
    }
    for (tool, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("ip", "iproute2"),
    ] {
        if !on_path(tool) {
            return Err(Error::Precondition(format!(
                "`{tool}` is not installed (Debian package {package})"
            )));
        }
    }
    Ok(())
}

/// Whether an executable named `tool` is on `$PATH` (or the sbin directories root uses).
pub(crate) fn on_path(tool: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .any(|dir| Path::new(dir).join(tool).is_file())
}

/// The accelerator §1 of the reference allows: KVM only with a real kvm_intel/kvm_amd module
/// and a writable /dev/kvm (stock kernels do not run under PVM's KVM), else TCG.
pub(crate) fn accelerator() -> &'static [&'static str] {
    let real_kvm =
        Path::new("/sys/module/kvm_intel").exists() || Path::new("/sys/module/kvm_amd").exists();
    let writable = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if real_kvm && writable {
        &["-accel", "kvm", "-cpu", "host"]
    } else {
        &["-accel", "tcg,tb-size=128"]
    }
}

/// Reads the last `lines` lines of a text file (for consoles in error messages).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("({}: {err})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_alive_and_not_a_qemu() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(start_time(me).is_some());
        assert!(owner_alive(me, start_time(me)));
        assert!(
            !owner_alive(me, start_time(me).map(|start| start + 1)),
            "a reused pid must not count"
        );
        assert!(!is_our_qemu(me, "anything"));
        assert!(
            !signal_qemu(me, "anything", Signal::KILL),
            "only our QEMU may be signalled"
        );
    }

    #[test]
    fn a_reaped_child_is_gone() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!alive(pid));
        assert!(wait_gone(&[pid], Duration::from_millis(10)).is_empty());
    }

    #[test]
    fn a_failing_command_reports_its_line_and_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo oops >&2; exit 3"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("`sh -c echo oops >&2; exit 3` failed"),
            "{err}"
        );
        assert!(err.contains("oops") && err.contains('3'), "{err}");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("console");
        fs::write(&file, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail(&file, 2), "c\nd");
        assert!(tail(&dir.path().join("missing"), 2).contains("missing"));
    }
}
