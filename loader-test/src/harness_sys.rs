//! The raw OS calls of `matrix` and `bench`: a private `/run`, CPU pinning, process-group
//! sweeps, and OFD locks for the benchmark's floor.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("{what}: {err}")));
    }
    Ok(())
}

/// Moves this process into a mount namespace of its own, with nothing propagated back, and
/// mounts an empty tmpfs on `/run`, so a daemon with a fixed socket path (virtlockd's
/// `/run/libvirt/virtlockd-sock`) can run without touching the host's `/run`.
///
/// Call it while the process is single-threaded, before starting any daemon or plugin.
pub fn enter_private_run() -> io::Result<()> {
    // SAFETY: unshare has no memory preconditions; it only changes this process's namespaces.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    check(rc, "unshare(CLONE_NEWNS)")?;
    // SAFETY: a valid NUL-terminated target; NULL source, type and data are allowed when only
    // the propagation flags change.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    check(rc, "mount --make-rprivate /")?;
    mount_tmpfs(c"/run")?;
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

fn mount_tmpfs(target: &CStr) -> io::Result<()> {
    let options = c"mode=0755";
    // SAFETY: valid NUL-terminated strings for source, target, type and data.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    check(rc, "mount -t tmpfs tmpfs /run")
}

fn cpu_set_size() -> usize {
    usize::try_from(libc::CPU_SETSIZE).unwrap_or(1024)
}

/// The CPUs online on this machine (`0..n`).
pub fn online_cpus() -> Vec<usize> {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    (0..usize::try_from(n).unwrap_or(1).max(1)).collect()
}

/// Restricts this thread (and every process it starts from now on) to `cpus`, as `taskset -c`.
pub fn set_affinity(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.iter().filter(|&&cpu| cpu < cpu_set_size()) {
        // SAFETY: CPU_SET writes the set we own, with an index below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: a valid set and its size.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    check(rc, "sched_setaffinity")
}

/// Waits up to `timeout` for our child `pid` to exit, **without reaping it**: while the zombie
/// is not reaped its pid (and so its process group id) cannot be reused, which makes a sweep of
/// its process group safe. Returns whether it exited.
pub fn wait_exit_keep_zombie(pid: u32, timeout: Duration) -> io::Result<bool> {
    let pid = libc::id_t::from(pid);
    let deadline = Instant::now() + timeout;
    loop {
        // SAFETY: an all-zero siginfo_t is valid storage for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: our own child; `info` is writable.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io::Error::new(err.kind(), format!("waitid({pid}): {err}")));
        }
        // SAFETY: waitid filled `info`; si_pid is 0 when no child changed state (WNOHANG).
        if unsafe { info.si_pid() } != 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends `signal` to every process of the group `pgid` (a group we created for a child of ours).
/// Returns whether any process received it.
pub fn signal_process_group(pgid: u32, signal: libc::c_int) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill has no memory preconditions; a negative pid addresses the group.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

/// Sends `signal` to one process of ours.
pub fn signal_pid(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill has no memory preconditions.
    let rc = unsafe { libc::kill(pid, signal) };
    check(rc, "kill")
}

/// Takes an OFD lock on byte 0 (length 1) of `fd`, without waiting: a write lock when
/// `exclusive`, else a read lock. Returns `Ok(false)` when another holder conflicts.
pub fn ofd_lock(fd: BorrowedFd<'_>, exclusive: bool) -> io::Result<bool> {
    let kind = if exclusive {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    };
    ofd_setlk(fd, kind)
}

/// Drops the OFD lock on byte 0 of `fd`.
pub fn ofd_unlock(fd: BorrowedFd<'_>) -> io::Result<()> {
    ofd_setlk(fd, libc::F_UNLCK).map(|_| ())
}

fn ofd_setlk(fd: BorrowedFd<'_>, kind: libc::c_int) -> io::Result<bool> {
    // SAFETY: an all-zero flock is valid; the fields that matter are set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::c_short::try_from(kind).unwrap_or(0);
    lock.l_whence = libc::c_short::try_from(libc::SEEK_SET).unwrap_or(0);
    lock.l_start = 0;
    lock.l_len = 1;
    // l_pid must be 0 for OFD locks.
    lock.l_pid = 0;
    // SAFETY: a valid open fd and a valid flock for F_OFD_SETLK.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => Ok(false),
        _ => Err(io::Error::new(
            err.kind(),
            format!("fcntl(F_OFD_SETLK): {err}"),
        )),
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
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
        if pgid > 1 {
            // SAFETY: kill is async-signal-safe; the group's leader is our unreaped child, so
            // the id still names that group.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

/// On SIGINT, SIGTERM or SIGHUP: SIGKILL every tracked process group and set
/// [`terminating`], so the run stops, reaps, removes its scratch directories and exits.
pub fn kill_groups_on_interrupt() -> io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: an all-zero sigaction is valid; the fields that matter are set below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_terminate as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: a valid action whose handler only makes async-signal-safe calls and atomic
        // stores; the old action is not needed.
        let rc = unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) };
        check(rc, "sigaction")?;
    }
    Ok(())
}
