//! The few raw OS calls loader-test makes outside the framework's host module.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_void};
use std::fs::File;
use std::os::fd::FromRawFd;

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

/// Proves in a forked child that `free(ptr)` accepts a string a plugin handed over, so that a
/// string from the wrong allocator is reported instead of crashing loader-test.
pub fn free_in_child(ptr: *mut c_char) -> Result<(), String> {
    // SAFETY: fork has no preconditions; the child only calls free and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: in the child, on the copy of the pointer; a bad pointer kills only the child.
        unsafe {
            libc::free(ptr.cast::<c_void>());
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: our own child; `status` is writable.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else if libc::WIFSIGNALED(status) {
        Err(format!(
            "free() killed the process with {}",
            signal_name(libc::WTERMSIG(status))
        ))
    } else {
        Err(format!("free() test exited with wait status {status}"))
    }
}

/// Moves stdout aside for loader-test's own events and points fd 1 at stderr, so a plugin that
/// prints to stdout cannot corrupt the event stream.
pub fn take_stdout_for_events() -> std::io::Result<File> {
    // SAFETY: dup of our own stdout.
    let events = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
    if events < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd 2 and fd 1 are ours; dup2 atomically replaces fd 1.
    if unsafe { libc::dup2(2, 1) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `events` is a fresh fd we own.
    Ok(unsafe { File::from_raw_fd(events) })
}
