//! Errors: each names the operation, the lockspace, the resource (or lock id) and the errno.

use std::fmt;
use std::path::PathBuf;

use crate::types::{LockId, Mode, ResourceName};

/// What was being done when an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOp {
    /// A new lock request.
    Lock,
    /// A conversion of a held lock.
    Convert,
    /// An unlock.
    Unlock,
    /// An `LKF_ORPHAN` adoption.
    Adopt,
}

impl fmt::Display for LockOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockOp::Lock => "lock",
            LockOp::Convert => "convert",
            LockOp::Unlock => "unlock",
            LockOp::Adopt => "adopt orphan",
        })
    }
}

/// An errno value (or one of libdlm's own status codes), printed with its symbolic name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The symbolic name (`EAGAIN`, `EUNLOCK`, ...), when known.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::EINTR => "EINTR",
            libc::EIO => "EIO",
            libc::ENXIO => "ENXIO",
            libc::EBADF => "EBADF",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::ENODEV => "ENODEV",
            libc::EINVAL => "EINVAL",
            libc::ENOSPC => "ENOSPC",
            libc::EDEADLK => "EDEADLK",
            libc::ENOSYS => "ENOSYS",
            libc::ENOTCONN => "ENOTCONN",
            libc::ETIMEDOUT => "ETIMEDOUT",
            libc::EPROTO => "EPROTO",
            dlm_sys::ECANCEL => "ECANCEL",
            dlm_sys::EUNLOCK => "EUNLOCK",
            dlm_sys::EINPROG => "EINPROG",
            _ => return None,
        })
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let description = match self.0 {
            dlm_sys::ECANCEL => "request cancelled".to_owned(),
            dlm_sys::EUNLOCK => "unlocked".to_owned(),
            dlm_sys::EINPROG => "operation in progress".to_owned(),
            code => {
                // "Resource temporarily unavailable (os error 11)" -> without the suffix
                let text = std::io::Error::from_raw_os_error(code).to_string();
                text.split(" (os error")
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            }
        };
        match self.name() {
            Some(name) => write!(f, "{name}: {description}"),
            None => write!(f, "errno {}: {description}", self.0),
        }
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lockspace name cannot be used (checked before any call into libdlm).
    #[error("lockspace name {name:?} is invalid: {reason}")]
    InvalidLockspaceName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The resource name cannot be used (checked before any call into libdlm).
    #[error(
        "{op} on resource {resource} in lockspace {lockspace:?}: invalid resource name: {reason}"
    )]
    InvalidResourceName {
        /// The operation.
        op: LockOp,
        /// The resource.
        resource: ResourceName,
        /// The lockspace.
        lockspace: String,
        /// What is wrong with the name.
        reason: String,
    },

    /// The flags cannot be used for this request (checked before any call into libdlm).
    #[error(
        "{op} {mode} on {resource} in lockspace {lockspace:?}: invalid flags {flags}: {reason}"
    )]
    InvalidFlags {
        /// The operation.
        op: LockOp,
        /// The requested mode.
        mode: Mode,
        /// The resource.
        resource: ResourceName,
        /// The lockspace.
        lockspace: String,
        /// The flags as given (printed by name).
        flags: String,
        /// Why they are refused.
        reason: &'static str,
    },

    /// Creating, opening or releasing the lockspace failed.
    #[error("{op} lockspace {lockspace:?} failed: {errno}{hint}")]
    Lockspace {
        /// `create`, `open` or `release`.
        op: &'static str,
        /// The lockspace.
        lockspace: String,
        /// The errno libdlm reported.
        errno: Errno,
        /// A hint on the likely cause, or empty.
        hint: &'static str,
    },

    /// `EAGAIN`: an incompatible lock is held, and the request asked not to queue
    /// (`NOQUEUE`), so it was refused at once. A failed conversion keeps its old mode.
    #[error(
        "{op} {mode} on {resource} in lockspace {lockspace:?}: busy, an incompatible lock is held (EAGAIN)"
    )]
    Busy {
        /// The operation.
        op: LockOp,
        /// The requested mode.
        mode: Mode,
        /// The resource.
        resource: ResourceName,
        /// The lockspace.
        lockspace: String,
    },

    /// `ENOENT` on adoption: this node has no orphan lock on the resource.
    #[error(
        "adopt orphan {mode} on {resource} in lockspace {lockspace:?}: no orphan lock on this node (ENOENT)"
    )]
    NoOrphan {
        /// The requested mode.
        mode: Mode,
        /// The resource.
        resource: ResourceName,
        /// The lockspace.
        lockspace: String,
    },

    /// `EAGAIN` on adoption: the orphan exists but is granted in another mode (adoption
    /// must ask for exactly the orphan's mode).
    #[error(
        "adopt orphan {mode} on {resource} in lockspace {lockspace:?}: the orphan is held in another mode (EAGAIN)"
    )]
    OrphanModeMismatch {
        /// The requested mode.
        mode: Mode,
        /// The resource.
        resource: ResourceName,
        /// The lockspace.
        lockspace: String,
    },

    /// Any other failure of a lock, convert, unlock or adopt.
    #[error("{op} {mode} on {resource} (lock {lkid}) in lockspace {lockspace:?} failed: {errno}")]
    Lock {
        /// The operation.
        op: LockOp,
        /// The requested mode (for an unlock, the mode that was held).
        mode: Mode,
        /// The resource.
        resource: ResourceName,
        /// The lock id, or `0x0` for a new request.
        lkid: u32,
        /// The lockspace.
        lockspace: String,
        /// The errno or DLM status.
        errno: Errno,
    },

    /// The lock id is not held through this handle.
    #[error("{op} of lock {lkid} in lockspace {lockspace:?}: not a lock held through this handle")]
    UnknownLock {
        /// The operation.
        op: LockOp,
        /// The lock id given.
        lkid: LockId,
        /// The lockspace.
        lockspace: String,
    },

    /// `dlm_ls_purge` failed.
    #[error(
        "purge of orphans of node {nodeid} pid {pid} in lockspace {lockspace:?} failed: {errno}"
    )]
    Purge {
        /// The node.
        nodeid: u32,
        /// The pid (0: every orphan of the node).
        pid: u32,
        /// The lockspace.
        lockspace: String,
        /// The errno.
        errno: Errno,
    },

    /// The local node id could not be read from configfs.
    #[error("local DLM node id from {path}: {reason}")]
    NodeId {
        /// The file or directory at fault.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps the errno of a failed lock/convert/adopt request to the error the caller can act on.
pub(crate) fn request_error(
    op: LockOp,
    mode: Mode,
    resource: &[u8],
    lkid: u32,
    lockspace: &str,
    errno: i32,
) -> Error {
    let resource = ResourceName::from(resource);
    let lockspace = lockspace.to_owned();
    match (op, errno) {
        (LockOp::Adopt, libc::ENOENT) => Error::NoOrphan {
            mode,
            resource,
            lockspace,
        },
        (LockOp::Adopt, libc::EAGAIN) => Error::OrphanModeMismatch {
            mode,
            resource,
            lockspace,
        },
        (_, libc::EAGAIN) => Error::Busy {
            op,
            mode,
            resource,
            lockspace,
        },
        _ => Error::Lock {
            op,
            mode,
            resource,
            lkid,
            lockspace,
            errno: Errno(errno),
        },
    }
}

/// Maps the errno of a failed create/open/release to an error with a hint on the usual cause.
pub(crate) fn lockspace_error(op: &'static str, lockspace: &str, errno: i32) -> Error {
    let hint = match errno {
        libc::EPERM => " (creating or releasing a lockspace needs CAP_SYS_ADMIN)",
        libc::EACCES => " (the lockspace device /dev/misc/dlm_<name> does not allow this user)",
        libc::ENOENT | libc::ENXIO | libc::ENODEV => {
            " (is dlm.ko loaded, dlm_controld running, /dev/misc/dlm-control present?)"
        }
        libc::ENOTCONN => " (dlm_controld has not configured the cluster yet, or no quorum)",
        _ => "",
    };
    Error::Lockspace {
        op,
        lockspace: lockspace.to_owned(),
        errno: Errno(errno),
        hint,
    }
}
