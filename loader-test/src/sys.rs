//! The few OS calls loader-test makes outside the framework's host module.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_void};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use rustix::process::WaitOptions;

/// `strsignal`-like short name, e.g. "SIGSEGV".
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        _ => {
            // SAFETY: strsignal returns a pointer to a static or thread-local string.
            let text = unsafe { libc::strsignal(signal) };
            if text.is_null() {
                return format!("signal {signal}");
            }
            // SAFETY: non-NULL, NUL-terminated.
            return unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned();
        }
    };
    name.to_owned()
}

/// Why [`free_in_child`] could not prove a string freeable.
#[derive(Debug)]
pub enum FreeError {
    /// `fork` failed.
    Fork(io::Error),
    /// `waitpid` on the child failed.
    Wait(io::Error),
    /// `free()` killed the child with this signal.
    Killed(i32),
    /// The child ended otherwise, with this raw wait status.
    Status(i32),
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreeError::Fork(err) => write!(f, "fork: {err}"),
            FreeError::Wait(err) => write!(f, "waitpid: {err}"),
            FreeError::Killed(signal) => {
                write!(f, "free() killed the process with {}", signal_name(*signal))
            }
            FreeError::Status(status) => write!(f, "free() test exited with wait status {status}"),
        }
    }
}

impl std::error::Error for FreeError {}

/// Proves in a forked child that `free(ptr)` accepts a string a plugin handed over, so that a
/// string from the wrong allocator is reported instead of crashing loader-test.
pub fn free_in_child(ptr: *mut c_char) -> Result<(), FreeError> {
    // SAFETY: fork has no preconditions; the child only calls free and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(FreeError::Fork(io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: in the child, on the copy of the pointer; a bad pointer kills only the child.
        unsafe {
            libc::free(ptr.cast::<c_void>());
            libc::_exit(0);
        }
    }
    let child = rustix::process::Pid::from_raw(pid);
    let status = match rustix::process::waitpid(child, WaitOptions::empty()) {
        Ok(Some((_, status))) => status,
        // Without WNOHANG, waitpid only returns once the child changed state.
        Ok(None) => return Err(FreeError::Wait(io::Error::other("no status"))),
        Err(errno) => return Err(FreeError::Wait(errno.into())),
    };
    if status.exit_status() == Some(0) {
        Ok(())
    } else if let Some(signal) = status.terminating_signal() {
        Err(FreeError::Killed(signal))
    } else {
        Err(FreeError::Status(status.as_raw()))
    }
}

/// Moves stdout aside for loader-test's own events and points fd 1 at stderr, so a plugin that
/// prints to stdout cannot corrupt the event stream.
pub fn take_stdout_for_events() -> io::Result<File> {
    let events = rustix::io::fcntl_dupfd_cloexec(io::stdout().as_fd(), 3)?;
    rustix::stdio::dup2_stdout(io::stderr().as_fd())?;
    Ok(File::from(events))
}
