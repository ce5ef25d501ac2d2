//! The one raw call a daemon plugin makes: let QEMU inherit the daemon connection.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

/// Clears `FD_CLOEXEC`, so the fd survives libvirt's `exec` of QEMU.
pub fn clear_close_on_exec(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD on a valid fd we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
