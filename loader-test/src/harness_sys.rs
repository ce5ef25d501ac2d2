//! The OS calls of `matrix` and `bench`: a private `/run`, CPU pinning, process-group sweeps,
//! and OFD locks for the benchmark's floor; on rustix where it has the call (OFD locks and
//! `sigaction`: `lockmgr_proto::os`, shared with lockmgrd).
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use lockmgr_proto::os::{Disposition, LockKind, set_signal_disposition};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

/// `err` with the call it came from in front ("mount -t tmpfs tmpfs /run: ...").
fn context(what: &str) -> impl FnOnce(rustix::io::Errno) -> io::Error + '_ {
    move |errno| {
        let err = io::Error::from(errno);
        io::Error::new(err.kind(), format!("{what}: {err}"))
    }
}

/// Moves this process into a mount namespace of its own, with nothing propagated back, and
/// mounts an empty tmpfs on `/run`, so a daemon with a fixed socket path (virtlockd's
/// `/run/libvirt/virtlockd-sock`) can run without touching the host's `/run`.
///
/// Call it while the process is single-threaded, before starting any daemon or plugin.
pub fn enter_private_run() -> io::Result<()> {
    // SAFETY: unsharing only the mount namespace changes no memory; this function's contract
    // (single-threaded) keeps every thread of the process in the same namespace.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
        .map_err(context("unshare(CLONE_NEWNS)"))?;
    rustix::mount::mount_change(
        c"/",
        rustix::mount::MountPropagationFlags::REC | rustix::mount::MountPropagationFlags::PRIVATE,
    )
    .map_err(context("mount --make-rprivate /"))?;
    rustix::mount::mount(
        c"tmpfs",
        c"/run",
        c"tmpfs",
        rustix::mount::MountFlags::empty(),
        c"mode=0755",
    )
    .map_err(context("mount -t tmpfs tmpfs /run"))?;
    std::fs::create_dir_all("/run/libvirt")
}

/// Points libsanlock (in this process, and in the pre-exec children it forks) at a sanlock
/// daemon's run directory: `SANLOCK_RUN_DIR` (its socket) and `SANLOCK_PRIVILEGED=0`.
///
/// Call it while the process is single-threaded, before loading the plugin.
pub fn set_sanlock_env(run_dir: &std::path::Path) {
    // SAFETY: called during setup of a cell or bench worker, before any thread is started and
    // before the plugin is loaded, so nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("SANLOCK_RUN_DIR", run_dir);
        std::env::set_var("SANLOCK_PRIVILEGED", "0");
    }
}

/// The CPUs online on this machine (`0..n`).
pub fn online_cpus() -> Vec<usize> {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    (0..usize::try_from(n).unwrap_or(1).max(1)).collect()
}

/// Restricts this thread (and every process it starts from now on) to `cpus`, as `taskset -c`.
pub fn set_affinity(cpus: &[usize]) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    for &cpu in cpus
        .iter()
        .filter(|&&cpu| cpu < rustix::thread::CpuSet::MAX_CPU)
    {
        set.set(cpu);
    }
    rustix::thread::sched_setaffinity(None, &set).map_err(context("sched_setaffinity"))
}

/// Waits up to `timeout` for our child `pid` to exit, **without reaping it**: while the zombie
/// is not reaped its pid (and so its process group id) cannot be reused, which makes a sweep of
/// its process group safe. Returns whether it exited.
pub fn wait_exit_keep_zombie(pid: u32, timeout: Duration) -> io::Result<bool> {
    let what = format!("waitid({pid})");
    // The kernel refuses a pid that is not positive with EINVAL; rustix's Pid cannot hold one.
    let child = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or(rustix::io::Errno::INVAL)
        .map_err(context(&what))?;
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    let deadline = Instant::now() + timeout;
    loop {
        match rustix::process::waitid(WaitId::Pid(child), options) {
            Ok(Some(_)) => return Ok(true),
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(errno) => return Err(context(&what)(errno)),
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends `signal` to every process of the group `pgid` (a group we created for a child of ours).
/// Returns whether any process received it.
pub fn signal_process_group(pgid: u32, signal: Signal) -> bool {
    let Some(pgid) = i32::try_from(pgid).ok().filter(|&pgid| pgid > 1) else {
        return false;
    };
    Pid::from_raw(pgid)
        .is_some_and(|pgid| rustix::process::kill_process_group(pgid, signal).is_ok())
}

/// Sends `signal` to one process of ours.
pub fn signal_pid(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = i32::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    match Pid::from_raw(pid) {
        Some(pid) => rustix::process::kill_process(pid, signal),
        // What kill(0, signal) means.
        None => rustix::process::kill_current_process_group(signal),
    }
    .map_err(context("kill"))
}

/// Takes an OFD lock on byte 0 (length 1) of `fd`, without waiting: a write lock when
/// `exclusive`, else a read lock. Returns `Ok(false)` when another holder conflicts.
pub fn ofd_lock(fd: BorrowedFd<'_>, exclusive: bool) -> io::Result<bool> {
    let kind = if exclusive {
        LockKind::Write
    } else {
        LockKind::Read
    };
    lockmgr_proto::os::ofd_try_lock(fd, kind).map_err(ofd_context)
}

/// Drops the OFD lock on byte 0 of `fd`.
pub fn ofd_unlock(fd: BorrowedFd<'_>) -> io::Result<()> {
    lockmgr_proto::os::ofd_unlock(fd).map_err(ofd_context)
}

fn ofd_context(err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("fcntl(F_OFD_SETLK): {err}"))
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Loads `library` into this process for good (`dlopen(RTLD_NOW | RTLD_LOCAL)`, never closed),
/// as libvirtd always has `libvirt.so.0` loaded. Returns whether it loaded.
pub fn preload(library: &CStr) -> bool {
    // SAFETY: a NUL-terminated name; loading runs the library's initialisers, as in libvirtd.
    // The handle is leaked on purpose: the library stays loaded for the process's life.
    let handle = unsafe { libc::dlopen(library.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    !handle.is_null()
}

/// Process groups of children that must die with this run (matrix cells, bench workers).
static GROUPS: [std::sync::atomic::AtomicI32; 64] =
    [const { std::sync::atomic::AtomicI32::new(0) }; 64];
/// Set once SIGINT, SIGTERM or SIGHUP arrived.
static TERMINATING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Records a child's process group, to be SIGKILLed if this process is interrupted.
pub fn track_group(pgid: u32) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    for slot in &GROUPS {
        if slot
            .compare_exchange(
                0,
                pgid,
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
            )
            .is_ok()
        {
            return;
        }
    }
}

/// Forgets a process group (its leader is about to be reaped).
pub fn untrack_group(pgid: u32) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    for slot in &GROUPS {
        let _ = slot.compare_exchange(
            pgid,
            0,
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
        );
    }
}

/// Whether an interrupting signal arrived (the run should stop and clean up).
pub fn terminating() -> bool {
    TERMINATING.load(std::sync::atomic::Ordering::SeqCst)
}

extern "C" fn on_terminate(_signal: libc::c_int) {
    TERMINATING.store(true, std::sync::atomic::Ordering::SeqCst);
    for slot in &GROUPS {
        let pgid = slot.load(std::sync::atomic::Ordering::SeqCst);
        // A raw kill(2): async-signal-safe. The group's leader is our unreaped child, so the id
        // still names that group.
        if let Some(pgid) = Pid::from_raw(pgid).filter(|_| pgid > 1) {
            let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
        }
    }
}

/// On SIGINT, SIGTERM or SIGHUP: SIGKILL every tracked process group and set
/// [`terminating`], so the run stops, reaps, removes its scratch directories and exits.
pub fn kill_groups_on_interrupt() -> io::Result<()> {
    set_signal_disposition(
        &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP],
        Disposition::Handler(on_terminate),
    )
    .map_err(|err| io::Error::new(err.kind(), format!("sigaction: {err}")))
}
