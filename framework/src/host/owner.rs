//! libvirt's pre-exec child, replayed in a real `fork()`ed process that then `exec`s a stand-in
//! for QEMU keeping the returned fd, as QEMU would.

use std::ffi::{CString, c_char, c_int, c_void};
use std::io::Read;
use std::os::fd::{FromRawFd, RawFd};
use std::path::Path;

use crate::host::error::{HostError, HostResult, ReportedError};
use crate::host::load::Plugin;
use crate::types::{AcquireFlags, Domain, LockFailureAction, NewFlags, Resource};

/// What the forked "pre-exec child" did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// New + AddResource + Acquire(REGISTER_ONLY|RESTRICT) succeeded, and the child exec'd the
    /// QEMU stand-in.
    Registered {
        /// The fd number the plugin returned in `*fd`, if any.
        fd: Option<RawFd>,
        /// Whether that fd is still open in the stand-in after `exec` (no close-on-exec).
        fd_survived_exec: bool,
    },
    /// A step failed in the child; the child exited.
    Failed {
        /// The failing call and its reported error, as text.
        error: String,
        /// The error the plugin reported, if any.
        reported: Option<ReportedError>,
    },
}

/// A process standing in for QEMU: forked, registered with the plugin, then exec'd.
#[derive(Debug)]
pub struct ForkedOwner {
    pid: libc::pid_t,
    reaped: bool,
    /// What the child reported.
    pub outcome: RegisterOutcome,
}

impl ForkedOwner {
    /// The owner's pid (the `pid` param the plugin was given, as QEMU's pid in libvirt).
    pub fn pid(&self) -> u32 {
        u32::try_from(self.pid).unwrap_or(0)
    }

    /// Sends `signal`.
    #[allow(unsafe_code)]
    pub fn signal(&self, signal: c_int) -> HostResult<()> {
        if self.reaped {
            return Err(HostError::Host(format!(
                "owner {} already reaped",
                self.pid
            )));
        }
        // SAFETY: our own child, not yet reaped, so the pid cannot have been reused.
        if unsafe { libc::kill(self.pid, signal) } != 0 {
            return Err(HostError::Host(format!(
                "kill({}, {signal}): {}",
                self.pid,
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// Leaves the owner running after this handle is gone (it is reparented when this process
    /// exits), for tools that register an owner in one process and act on it from others.
    pub fn detach(mut self) -> u32 {
        self.reaped = true;
        self.pid()
    }

    /// SIGKILLs the owner and reaps it (as `kill -9` of QEMU).
    pub fn kill(&mut self) -> HostResult<()> {
        self.signal(libc::SIGKILL)?;
        self.wait().map(|_| ())
    }

    /// Waits for the owner to exit; returns the raw wait status.
    #[allow(unsafe_code)]
    pub fn wait(&mut self) -> HostResult<c_int> {
        let mut status = 0;
        loop {
            // SAFETY: our own child; `status` is writable.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if rc == self.pid {
                self.reaped = true;
                return Ok(status);
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(HostError::Host(format!("waitpid({}): {err}", self.pid)));
            }
        }
    }
}

impl Drop for ForkedOwner {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.kill();
        }
    }
}

/// The stand-in for QEMU that the child execs after registering: it sleeps until killed.
pub const QEMU_STANDIN: [&str; 2] = ["/bin/sleep", "infinity"];

#[allow(unsafe_code)]
fn write_all_raw(fd: RawFd, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: a valid fd and buffer.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast::<c_void>(), rest.len()) };
        match usize::try_from(n) {
            Ok(n) if n > 0 => rest = &rest[n..],
            _ => return,
        }
    }
}

/// Replays libvirt's pre-exec child: `fork()`; in the child, New(NEW_STARTED, uri) with the
/// child's own pid, AddResource for each resource, `Acquire(NULL, REGISTER_ONLY|RESTRICT,
/// action, &fd)`, Free; then `exec` of [`QEMU_STANDIN`], keeping the fd as QEMU would.
///
/// `domain.pid` is ignored: the owner's pid is the child's.
#[allow(unsafe_code)]
pub fn start_owner(
    plugin: &Plugin,
    domain: &Domain,
    resources: &[Resource],
    action: LockFailureAction,
) -> HostResult<ForkedOwner> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(HostError::Host(format!(
            "pipe2: {}",
            std::io::Error::last_os_error()
        )));
    }
    let (read_end, write_end) = (fds[0], fds[1]);
    let argv: Vec<CString> = QEMU_STANDIN
        .iter()
        .map(|a| CString::new(*a).unwrap_or_default())
        .collect();
    let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());

    // SAFETY: fork() has no preconditions. The child only runs the plugin's callbacks (as
    // libvirt's child does), writes to the pipe, and execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(HostError::Host(format!(
            "fork: {}",
            std::io::Error::last_os_error()
        )));
    }
    if pid == 0 {
        // SAFETY: the child closes its copy of the read end.
        unsafe { libc::close(read_end) };
        // SAFETY: getpid has no preconditions.
        let own_pid = u32::try_from(unsafe { libc::getpid() }).unwrap_or(0);
        let mut domain = domain.clone();
        domain.pid = own_pid;
        let result = (|| {
            let mut manager = plugin.new_manager(&domain, NewFlags { started: true })?;
            for resource in resources {
                manager.add_resource(resource)?;
            }
            let flags = AcquireFlags {
                register_only: true,
                restrict: true,
            };
            let fd = manager.acquire(None, flags, action, true)?;
            drop(manager);
            Ok::<_, HostError>(fd.map(std::os::fd::IntoRawFd::into_raw_fd))
        })();
        match result {
            Ok(fd) => {
                write_all_raw(write_end, format!("OK {}\n", fd.unwrap_or(-1)).as_bytes());
                // Like libvirt's QEMU, the stand-in gets its own stdio, not the caller's: a
                // detached owner must not keep a caller's pipe open.
                // SAFETY: open/dup2/close on fds of this single-threaded child.
                unsafe {
                    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                    if null >= 0 {
                        for std_fd in 0..3 {
                            if Some(std_fd) != fd {
                                libc::dup2(null, std_fd);
                            }
                        }
                        if null > 2 {
                            libc::close(null);
                        }
                    }
                }
                // SAFETY: argv is a NULL-terminated array of valid strings; on success this never
                // returns, and the CLOEXEC pipe closes, which tells the parent the exec happened.
                unsafe { libc::execv(argv_ptrs[0], argv_ptrs.as_ptr()) };
                write_all_raw(
                    write_end,
                    format!("EXEC {}\n", std::io::Error::last_os_error()).as_bytes(),
                );
                // SAFETY: leave the forked child without running the parent's atexit handlers.
                unsafe { libc::_exit(127) };
            }
            Err(err) => {
                let (domain, code, message) = match &err {
                    HostError::Callback {
                        reported: Some(r), ..
                    } => (r.domain, r.code, r.message.clone()),
                    _ => (0, 0, String::new()),
                };
                let line = format!(
                    "ERR {domain} {code} {}\t{}\n",
                    err.to_string().replace(['\n', '\t'], " "),
                    message.replace(['\n', '\t'], " ")
                );
                write_all_raw(write_end, line.as_bytes());
                // SAFETY: as above.
                unsafe { libc::_exit(1) };
            }
        }
    }
    // SAFETY: the parent closes its copy of the write end; the read end becomes a File.
    unsafe { libc::close(write_end) };
    // SAFETY: `read_end` is an open fd we own.
    let mut reader = unsafe { std::fs::File::from_raw_fd(read_end) };
    let mut report = String::new();
    let _ = reader.read_to_string(&mut report);
    let mut owner = ForkedOwner {
        pid,
        reaped: false,
        outcome: RegisterOutcome::Failed {
            error: "child reported nothing".into(),
            reported: None,
        },
    };
    owner.outcome = parse_child_report(&report, pid);
    if matches!(owner.outcome, RegisterOutcome::Failed { .. }) {
        // The child exits by itself after a failure; reap it.
        let _ = owner.wait();
    }
    Ok(owner)
}

fn parse_child_report(report: &str, pid: libc::pid_t) -> RegisterOutcome {
    let mut lines = report.lines();
    let first = lines.next().unwrap_or("");
    if let Some(rest) = first.strip_prefix("OK ") {
        if let Some(exec_err) = lines.next() {
            return RegisterOutcome::Failed {
                error: format!("exec of QEMU stand-in failed: {exec_err}"),
                reported: None,
            };
        }
        let fd: RawFd = rest.trim().parse().unwrap_or(-1);
        let fd_survived_exec = fd >= 0 && Path::new(&format!("/proc/{pid}/fd/{fd}")).exists();
        return RegisterOutcome::Registered {
            fd: (fd >= 0).then_some(fd),
            fd_survived_exec,
        };
    }
    if let Some(rest) = first.strip_prefix("ERR ") {
        let mut parts = rest.splitn(3, ' ');
        let domain = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let code = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let (error, message) = parts
            .next()
            .unwrap_or("")
            .split_once('\t')
            .unwrap_or(("", ""));
        let reported = (code != 0).then(|| ReportedError {
            domain,
            code,
            message: message.to_owned(),
        });
        return RegisterOutcome::Failed {
            error: error.to_owned(),
            reported,
        };
    }
    RegisterOutcome::Failed {
        error: format!("the child died before reporting (report: {first:?})"),
        reported: None,
    }
}
