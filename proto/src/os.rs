//! The two OS calls lockmgrd and loader-test share that rustix cannot make (feature `os`).
//!
//! - Byte-0 OFD locks: rustix's `fcntl_lock` takes process-associated POSIX locks on the whole
//!   file and its `fcntl_getlk` asks `F_GETLK`; lockmgr needs `F_OFD_SETLK` / `F_OFD_GETLK` on
//!   byte 0, the byte virtlockd locks, so that the two conflict.
//! - Installing a signal handler: rustix has no `sigaction`. Both programs handle signals the
//!   same way: an `SA_RESTART` handler, with an empty mask, that makes only async-signal-safe
//!   calls (lockmgrd writes to a self-pipe; loader-test sets a flag and kills process groups).
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The kind of OFD lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// `F_WRLCK`: exclusive.
    Write,
    /// `F_RDLCK`: shared.
    Read,
}

impl LockKind {
    fn raw(self) -> c_int {
        match self {
            LockKind::Write => libc::F_WRLCK,
            LockKind::Read => libc::F_RDLCK,
        }
    }
}

fn byte_zero(kind: c_int) -> libc::flock {
    libc::flock {
        l_type: i16::try_from(kind).unwrap_or(0),
        l_whence: i16::try_from(libc::SEEK_SET).unwrap_or(0),
        l_start: 0,
        l_len: 1,
        // l_pid must be 0 for OFD locks.
        l_pid: 0,
    }
}

/// `fcntl(fd, cmd, lock)` for the OFD commands.
fn ofd_fcntl(file: BorrowedFd<'_>, cmd: c_int, lock: &mut libc::flock) -> io::Result<()> {
    // SAFETY: a valid fd and a valid, writable flock, which F_OFD_SETLK reads and F_OFD_GETLK
    // overwrites.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, std::ptr::from_mut(lock)) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Takes an OFD lock on byte 0 without waiting (`F_OFD_SETLK`): `Ok(false)` when someone
/// else holds a conflicting lock (OFD or POSIX — virtlockd's locks conflict with ours).
pub fn ofd_try_lock(file: BorrowedFd<'_>, kind: LockKind) -> io::Result<bool> {
    match ofd_fcntl(file, libc::F_OFD_SETLK, &mut byte_zero(kind.raw())) {
        Ok(()) => Ok(true),
        Err(err) if matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Drops the OFD lock on byte 0.
pub fn ofd_unlock(file: BorrowedFd<'_>) -> io::Result<()> {
    ofd_fcntl(file, libc::F_OFD_SETLK, &mut byte_zero(libc::F_UNLCK))
}

/// Who holds a lock conflicting with `kind` on byte 0: `Some(Some(pid))` for a POSIX lock
/// (e.g. virtlockd's), `Some(None)` for an OFD lock (no owning pid), `None` when free.
pub fn ofd_conflicting_holder(
    file: BorrowedFd<'_>,
    kind: LockKind,
) -> io::Result<Option<Option<u32>>> {
    let mut lock = byte_zero(kind.raw());
    ofd_fcntl(file, libc::F_OFD_GETLK, &mut lock)?;
    if i32::from(lock.l_type) == libc::F_UNLCK {
        return Ok(None);
    }
    Ok(Some(u32::try_from(lock.l_pid).ok().filter(|&pid| pid > 0)))
}

/// What a signal is to do: run a handler, or be ignored.
#[derive(Debug, Clone, Copy)]
pub enum Disposition {
    /// An `SA_RESTART` handler with an empty mask. It must make only async-signal-safe calls
    /// and atomic operations.
    Handler(extern "C" fn(c_int)),
    /// `SIG_IGN`.
    Ignore,
}

/// Installs `disposition` for each of `signals` (`sigaction`, the old action dropped).
pub fn set_signal_disposition(signals: &[c_int], disposition: Disposition) -> io::Result<()> {
    let handler = match disposition {
        Disposition::Handler(handler) => handler as libc::sighandler_t,
        Disposition::Ignore => libc::SIG_IGN,
    };
    for &signal in signals {
        // SAFETY: an all-zero sigaction is valid (empty mask, no flags); the fields that matter
        // are set below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = handler;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: a valid action whose handler, by this function's contract, only makes
        // async-signal-safe calls; the old action is not needed.
        if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
