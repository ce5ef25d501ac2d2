//! The one OS call a daemon plugin makes: let QEMU inherit the daemon connection.

use std::os::fd::BorrowedFd;

use rustix::io::FdFlags;

/// Clears `FD_CLOEXEC`, so the fd survives libvirt's `exec` of QEMU.
pub fn clear_close_on_exec(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let flags = rustix::io::fcntl_getfd(fd)?;
    rustix::io::fcntl_setfd(fd, flags - FdFlags::CLOEXEC)?;
    Ok(())
}
