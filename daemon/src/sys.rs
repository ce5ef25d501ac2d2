//! The OS calls lockmgrd needs: pidfds, peer credentials, OFD locks, poll, signals, on rustix
//! where it has the call (OFD locks and `sigaction`: `lockmgr_proto::os`).

use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags, Resource, Rlimit, Signal, WaitOptions};

pub use lockmgr_proto::os::{LockKind, ofd_conflicting_holder, ofd_try_lock, ofd_unlock};

/// `pidfd_open(pid, 0)`: a handle on a process that cannot be confused with a later process
/// reusing the pid, and that polls readable when the process exits.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // The kernel refuses pid 0 with EINVAL; rustix's Pid cannot even hold it.
    let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(rustix::process::pidfd_open(pid, PidfdFlags::empty())?)
}

/// `pidfd_send_signal`: signals exactly the process the pidfd was opened on.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: Signal) -> io::Result<()> {
    Ok(rustix::process::pidfd_send_signal(pidfd, signal)?)
}

/// The uid and pid of a unix socket's peer (`SO_PEERCRED`).
///
/// On libc, not rustix: rustix's `UCred` holds a non-zero `Pid`, and the kernel reports pid 0
/// for a peer outside this process's pid namespace.
pub fn peer_credentials(socket: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>()).unwrap_or(0);
    // SAFETY: a valid socket fd and a correctly sized out-buffer.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::from_mut(&mut cred).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((cred.uid, u32::try_from(cred.pid).unwrap_or(0)))
}

/// This process's effective uid.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Sets the process umask, returning the old one.
pub fn set_umask(mask: u32) -> u32 {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask)).as_raw_mode()
}

/// `poll` on `fds` (each with `POLLIN`), returning the indices that are ready.
pub fn poll_readable(fds: &[RawFd], timeout_ms: c_int) -> io::Result<Vec<usize>> {
    let fds: Vec<(RawFd, bool)> = fds.iter().map(|&fd| (fd, false)).collect();
    poll(&fds, timeout_ms)
}

/// `poll` on `fds`, each for reading (`false`: `POLLIN`) or writing (`true`: `POLLOUT`),
/// returning the indices that are ready (or in error: the next call on them says which).
/// A negative timeout waits for ever.
pub fn poll(fds: &[(RawFd, bool)], timeout_ms: c_int) -> io::Result<Vec<usize>> {
    let mut pollfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|&(fd, write)| {
            // SAFETY: the descriptor is only polled, never read, written or closed, and only
            // for the length of this call; one that is not open polls as POLLNVAL.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let events = if write { PollFlags::OUT } else { PollFlags::IN };
            PollFd::from_borrowed_fd(fd, events)
        })
        .collect();
    let timeout = u64::try_from(timeout_ms).ok().map(|ms| Timespec {
        tv_sec: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        tv_nsec: i64::try_from(ms % 1000 * 1_000_000).unwrap_or(0),
    });
    match rustix::event::poll(&mut pollfds, timeout.as_ref()) {
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => return Ok(Vec::new()),
        Err(err) => return Err(err.into()),
    }
    Ok(pollfds
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.revents().is_empty())
        .map(|(i, _)| i)
        .collect())
}

/// Whether a pidfd polls readable: its process exited (a zombie not yet reaped included,
/// which still answers signal 0).
pub fn pidfd_exited(pidfd: BorrowedFd<'_>) -> bool {
    let mut pollfd = [PollFd::from_borrowed_fd(pidfd, PollFlags::IN)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut pollfd, Some(&now)).is_ok_and(|ready| ready > 0)
        && pollfd[0]
            .revents()
            .intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (systemd starts services at 1024);
/// returns the soft limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    // rustix spells RLIM_INFINITY (u64::MAX) as None.
    let raw = |limit: Option<u64>| limit.unwrap_or(u64::MAX);
    let limit = rustix::process::getrlimit(Resource::Nofile);
    let (current, maximum) = (raw(limit.current), raw(limit.maximum));
    if current < maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if rustix::process::setrlimit(Resource::Nofile, raised).is_ok() {
            return Ok(maximum);
        }
    }
    Ok(current)
}

/// `fsync` of a directory, so a rename in it is durable.
pub fn fsync_dir(dir: &std::path::Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Reaps any exited children (the `virsh suspend` helpers of the pause action).
pub fn reap_children() {
    while let Ok(Some(_)) = rustix::process::waitpid(None, WaitOptions::NOHANG) {}
}

static STOP_WRITE_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_stop_signal(_signal: c_int) {
    let fd = STOP_WRITE_FD.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: the pipe's write end, open for the rest of the process's life.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        // A raw write(2): async-signal-safe, and it leaves errno alone.
        let _ = rustix::io::write(fd, b"x");
    }
}

/// Turns SIGTERM and SIGINT into a readable pipe (returned: its read end), so the main loop
/// stops cleanly between requests. SIGPIPE is ignored: a vanished client must not kill us.
pub fn install_stop_signals() -> io::Result<RawFd> {
    use lockmgr_proto::os::{Disposition, set_signal_disposition};
    let (read, write) = rustix::pipe::pipe_with(
        rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
    )?;
    STOP_WRITE_FD.store(write.into_raw_fd(), std::sync::atomic::Ordering::Relaxed);
    set_signal_disposition(
        &[libc::SIGTERM, libc::SIGINT],
        Disposition::Handler(on_stop_signal),
    )?;
    let _ = set_signal_disposition(&[libc::SIGPIPE], Disposition::Ignore);
    Ok(read.into_raw_fd())
}

/// `_IOR('W', 5, int)`: pet the watchdog (linux/watchdog.h).
const WDIOC_KEEPALIVE: rustix::ioctl::Opcode = rustix::ioctl::opcode::read::<c_int>(b'W', 5);
/// `_IOWR('W', 6, int)`: set the timeout in seconds; the driver writes back what it took.
const WDIOC_SETTIMEOUT: rustix::ioctl::Opcode = rustix::ioctl::opcode::read_write::<c_int>(b'W', 6);

/// Sets an open watchdog device's timeout; returns the timeout the driver took (it may round).
pub fn watchdog_set_timeout(device: BorrowedFd<'_>, seconds: u32) -> io::Result<u32> {
    let mut value =
        c_int::try_from(seconds).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: WDIOC_SETTIMEOUT reads and writes one int, which `value` is.
    let ioctl = unsafe { rustix::ioctl::Updater::<WDIOC_SETTIMEOUT, c_int>::new(&mut value) };
    // SAFETY: the opcode and its argument match (above); `device` is open.
    unsafe { rustix::ioctl::ioctl(device, ioctl) }?;
    u32::try_from(value).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Pets an open watchdog device.
pub fn watchdog_keepalive(device: BorrowedFd<'_>) -> io::Result<()> {
    let mut unused: c_int = 0;
    // SAFETY: WDIOC_KEEPALIVE takes a pointer to an int it does not need; ours is valid.
    let ioctl = unsafe { rustix::ioctl::Updater::<WDIOC_KEEPALIVE, c_int>::new(&mut unused) };
    // SAFETY: the opcode and its argument match (above); `device` is open.
    Ok(unsafe { rustix::ioctl::ioctl(device, ioctl) }?)
}

#[cfg(test)]
mod watchdog_abi {
    #[test]
    fn ioctl_numbers_match_linux_watchdog_h() {
        assert_eq!(u64::from(super::WDIOC_KEEPALIVE), 0x8004_5705);
        assert_eq!(u64::from(super::WDIOC_SETTIMEOUT), 0xC004_5706);
    }
}
