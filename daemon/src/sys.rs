//! The raw OS calls lockmgrd needs: pidfds, peer credentials, OFD locks, poll, signals.

use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn check(rc: c_int) -> io::Result<c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `pidfd_open(pid, 0)`: a handle on a process that cannot be confused with a later process
/// reusing the pid, and that polls readable when the process exits.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: the pidfd_open syscall takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    check(fd)?;
    // SAFETY: a fresh fd returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal`: signals exactly the process the pidfd was opened on.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: c_int) -> io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, no siginfo, flags 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<u8>(),
            0,
        )
    };
    check(c_int::try_from(rc).unwrap_or(-1)).map(|_| ())
}

/// The uid and pid of a unix socket's peer (`SO_PEERCRED`).
pub fn peer_credentials(socket: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>()).unwrap_or(0);
    // SAFETY: a valid socket fd and a correctly sized out-buffer.
    check(unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::from_mut(&mut cred).cast(),
            &mut len,
        )
    })?;
    Ok((cred.uid, u32::try_from(cred.pid).unwrap_or(0)))
}

/// This process's effective uid.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Sets the process umask, returning the old one.
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask) }
}

/// The kind of OFD lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// `F_WRLCK`: exclusive.
    Write,
    /// `F_RDLCK`: shared.
    Read,
}

fn byte_zero(kind: c_int) -> libc::flock {
    libc::flock {
        l_type: i16::try_from(kind).unwrap_or(0),
        l_whence: i16::try_from(libc::SEEK_SET).unwrap_or(0),
        l_start: 0,
        l_len: 1,
        l_pid: 0,
    }
}

/// Takes an OFD lock on byte 0 without waiting (`F_OFD_SETLK`): `Ok(false)` when someone
/// else holds a conflicting lock (OFD or POSIX — virtlockd's locks conflict with ours).
pub fn ofd_try_lock(file: BorrowedFd<'_>, kind: LockKind) -> io::Result<bool> {
    let mut lock = byte_zero(match kind {
        LockKind::Write => libc::F_WRLCK,
        LockKind::Read => libc::F_RDLCK,
    });
    // SAFETY: a valid fd and a valid flock for F_OFD_SETLK (l_pid must be 0).
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => Ok(false),
        _ => Err(err),
    }
}

/// Drops the OFD lock on byte 0.
pub fn ofd_unlock(file: BorrowedFd<'_>) -> io::Result<()> {
    let mut lock = byte_zero(libc::F_UNLCK);
    // SAFETY: a valid fd and a valid flock for F_OFD_SETLK.
    check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) }).map(|_| ())
}

/// Who holds a lock conflicting with `kind` on byte 0: `Some(Some(pid))` for a POSIX lock
/// (e.g. virtlockd's), `Some(None)` for an OFD lock (no owning pid), `None` when free.
pub fn ofd_conflicting_holder(
    file: BorrowedFd<'_>,
    kind: LockKind,
) -> io::Result<Option<Option<u32>>> {
    let mut lock = byte_zero(match kind {
        LockKind::Write => libc::F_WRLCK,
        LockKind::Read => libc::F_RDLCK,
    });
    // SAFETY: a valid fd and flock for F_OFD_GETLK.
    check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) })?;
    if i32::from(lock.l_type) == libc::F_UNLCK {
        return Ok(None);
    }
    Ok(Some(u32::try_from(lock.l_pid).ok().filter(|&pid| pid > 0)))
}

/// `poll` on `fds` (each with `POLLIN`), returning the indices that are ready.
pub fn poll_readable(fds: &[RawFd], timeout_ms: c_int) -> io::Result<Vec<usize>> {
    let fds: Vec<(RawFd, bool)> = fds.iter().map(|&fd| (fd, false)).collect();
    poll(&fds, timeout_ms)
}

/// `poll` on `fds`, each for reading (`false`: `POLLIN`) or writing (`true`: `POLLOUT`),
/// returning the indices that are ready (or in error: the next call on them says which).
pub fn poll(fds: &[(RawFd, bool)], timeout_ms: c_int) -> io::Result<Vec<usize>> {
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, write)| libc::pollfd {
            fd,
            events: if write { libc::POLLOUT } else { libc::POLLIN },
            revents: 0,
        })
        .collect();
    let count = libc::nfds_t::try_from(pollfds.len()).unwrap_or(0);
    // SAFETY: a valid array of `count` pollfds.
    let rc = unsafe { libc::poll(pollfds.as_mut_ptr(), count, timeout_ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(Vec::new());
        }
        return Err(err);
    }
    Ok(pollfds
        .iter()
        .enumerate()
        .filter(|(_, p)| p.revents != 0)
        .map(|(i, _)| i)
        .collect())
}

/// Whether a pidfd polls readable: its process exited (a zombie not yet reaped included,
/// which still answers signal 0).
pub fn pidfd_exited(pidfd: BorrowedFd<'_>) -> bool {
    let mut pollfd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let rc = unsafe { libc::poll(&mut pollfd, 1, 0) };
    rc > 0 && pollfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (systemd starts services at 1024);
/// returns the soft limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer to an rlimit.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: a valid rlimit, raising the soft limit no higher than the hard one.
        if check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) }).is_ok() {
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}

/// `fsync` of a directory, so a rename in it is durable.
pub fn fsync_dir(dir: &std::path::Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Reaps any exited children (the `virsh suspend` helpers of the pause action).
pub fn reap_children() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid(-1, WNOHANG) with a valid status pointer only reaps our own children.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
    }
}

static STOP_WRITE_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_stop_signal(_signal: c_int) {
    let fd = STOP_WRITE_FD.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; one byte from a static buffer.
        unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
    }
}

/// Turns SIGTERM and SIGINT into a readable pipe (returned: its read end), so the main loop
/// stops cleanly between requests. SIGPIPE is ignored: a vanished client must not kill us.
pub fn install_stop_signals() -> io::Result<RawFd> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for two descriptors.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    STOP_WRITE_FD.store(fds[1], std::sync::atomic::Ordering::Relaxed);
    // SAFETY: a zeroed sigaction with a handler that only calls async-signal-safe write(2).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_stop_signal as extern "C" fn(c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        for signal in [libc::SIGTERM, libc::SIGINT] {
            check(libc::sigaction(signal, &action, std::ptr::null_mut()))?;
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    Ok(fds[0])
}

/// `_IOR('W', 5, int)`: pet the watchdog (linux/watchdog.h).
const WDIOC_KEEPALIVE: libc::c_ulong = ioc(2, 5);
/// `_IOWR('W', 6, int)`: set the timeout in seconds; the driver writes back what it took.
const WDIOC_SETTIMEOUT: libc::c_ulong = ioc(3, 6);

/// `_IOC(dir, 'W', nr, sizeof(int))` of asm-generic/ioctl.h.
const fn ioc(dir: libc::c_ulong, nr: libc::c_ulong) -> libc::c_ulong {
    (dir << 30) | (4 << 16) | ((b'W' as libc::c_ulong) << 8) | nr
}

/// Sets an open watchdog device's timeout; returns the timeout the driver took (it may round).
pub fn watchdog_set_timeout(device: BorrowedFd<'_>, seconds: u32) -> io::Result<u32> {
    let mut value =
        c_int::try_from(seconds).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: WDIOC_SETTIMEOUT reads and writes one int through the valid pointer.
    check(unsafe { libc::ioctl(device.as_raw_fd(), WDIOC_SETTIMEOUT, &mut value) })?;
    u32::try_from(value).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Pets an open watchdog device.
pub fn watchdog_keepalive(device: BorrowedFd<'_>) -> io::Result<()> {
    let mut unused: c_int = 0;
    // SAFETY: WDIOC_KEEPALIVE takes a pointer to an int it does not need; ours is valid.
    check(unsafe { libc::ioctl(device.as_raw_fd(), WDIOC_KEEPALIVE, &mut unused) }).map(|_| ())
}

#[cfg(test)]
mod watchdog_abi {
    #[test]
    fn ioctl_numbers_match_linux_watchdog_h() {
        assert_eq!(super::WDIOC_KEEPALIVE, 0x8004_5705);
        assert_eq!(super::WDIOC_SETTIMEOUT, 0xC004_5706);
    }
}
