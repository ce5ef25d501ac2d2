//! A small safe layer over corosync's votequorum client library: is this node part of a quorate
//! cluster, and how is quorum configured (two_node, a quorum device)? And over its cpg library:
//! one closed process group ([`ProcessGroup`]).
//!
//! ```no_run
//! let mut quorum = lockmgr_quorum::Votequorum::connect()?;
//! quorum.track_changes()?;
//! let info = quorum.info()?;
//! println!("node {} quorate: {}", info.node_id, info.quorate);
//! # Ok::<(), lockmgr_quorum::Error>(())
//! ```
//!
//! A call on a handle whose corosync is stopped (SIGSTOP, a frozen host) can block: callers that
//! must keep a deadline ask from a thread of their own.

#![warn(missing_docs)]

use std::fmt;
use std::os::fd::RawFd;

use corosync_sys as sys;

mod cpg;
mod nodelist;

pub use cpg::{Delivered, Member, ProcessGroup};
pub use nodelist::{COROSYNC_CONF, node_name, node_names};

/// A votequorum call that failed, with corosync's `cs_error_t`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The library call.
    pub call: &'static str,
    /// corosync's error code (`cs_error_t`, 1 is `CS_OK`).
    pub code: u32,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The names of corotypes.h for the codes a client meets; 2 is what a missing corosync gives.
        let name = match self.code {
            2 => "CS_ERR_LIBRARY: corosync is not running or refused the connection",
            6 => "CS_ERR_TRY_AGAIN",
            7 => "CS_ERR_INVALID_PARAM",
            9 => "CS_ERR_BAD_HANDLE",
            11 => "CS_ERR_ACCESS",
            12 => "CS_ERR_NOT_EXIST",
            _ => "",
        };
        write!(f, "{} failed: cs_error_t {}", self.call, self.code)?;
        if !name.is_empty() {
            write!(f, " ({name})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// A result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

fn check(call: &'static str, code: sys::cs_error_t) -> Result<()> {
    if code == sys::CS_OK {
        Ok(())
    } else {
        Err(Error { call, code })
    }
}

/// What votequorum says about this node and the cluster it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumInfo {
    /// This node's corosync node id.
    pub node_id: u32,
    /// Whether the partition this node is in has quorum.
    pub quorate: bool,
    /// `quorum { two_node: 1 }`: both halves of a split of two nodes stay quorate.
    pub two_node: bool,
    /// A quorum device (corosync-qdevice) is registered on this node.
    pub qdevice_registered: bool,
    /// Votes expected in the whole cluster.
    pub expected_votes: u32,
    /// Votes of the members this node sees.
    pub total_votes: u32,
    /// Votes needed for quorum.
    pub quorum: u32,
}

impl QuorumInfo {
    fn from_raw(raw: &sys::votequorum_info) -> QuorumInfo {
        QuorumInfo {
            node_id: raw.node_id,
            quorate: raw.flags & sys::VOTEQUORUM_INFO_QUORATE != 0,
            two_node: raw.flags & sys::VOTEQUORUM_INFO_TWONODE != 0,
            qdevice_registered: raw.flags & sys::VOTEQUORUM_INFO_QDEVICE_REGISTERED != 0,
            expected_votes: raw.highest_expected,
            total_votes: raw.total_votes,
            quorum: raw.quorum,
        }
    }
}

/// An open votequorum connection (closed on drop).
#[derive(Debug)]
pub struct Votequorum {
    handle: sys::votequorum_handle_t,
}

/// Notifications only wake the caller's poll: it asks [`Votequorum::info`] afterwards.
unsafe extern "C" fn ignore_quorum_notification(
    _handle: sys::votequorum_handle_t,
    _context: u64,
    _quorate: u32,
    _entries: u32,
    _nodes: *mut sys::votequorum_node_t,
) {
}

impl Votequorum {
    /// Connects to the local corosync's votequorum service.
    pub fn connect() -> Result<Votequorum> {
        let mut handle: sys::votequorum_handle_t = 0;
        let mut callbacks = sys::votequorum_callbacks_t {
            votequorum_quorum_notify_fn: Some(ignore_quorum_notification),
            votequorum_expectedvotes_notify_fn: None,
            votequorum_nodelist_notify_fn: None,
        };
        // SAFETY: both pointers are valid for the call; the library copies the callbacks.
        let code = unsafe { sys::votequorum_initialize(&mut handle, &mut callbacks) };
        check("votequorum_initialize", code)?;
        Ok(Votequorum { handle })
    }

    /// Asks corosync to notify quorum changes on [`Votequorum::fd`].
    pub fn track_changes(&mut self) -> Result<()> {
        // SAFETY: the handle is open (it is closed only in drop).
        let code = unsafe { sys::votequorum_trackstart(self.handle, 0, sys::CS_TRACK_CHANGES) };
        check("votequorum_trackstart", code)
    }

    /// The descriptor that becomes readable when a notification waits: poll it, then
    /// [`Votequorum::dispatch`].
    pub fn fd(&self) -> Result<RawFd> {
        let mut fd: libc::c_int = -1;
        // SAFETY: the handle is open; `fd` is valid for the write.
        let code = unsafe { sys::votequorum_fd_get(self.handle, &mut fd) };
        check("votequorum_fd_get", code)?;
        Ok(fd)
    }

    /// Handles the notifications waiting on [`Votequorum::fd`] without blocking.
    pub fn dispatch(&mut self) -> Result<()> {
        // SAFETY: the handle is open; the only callback does nothing.
        let code = unsafe { sys::votequorum_dispatch(self.handle, sys::CS_DISPATCH_ALL) };
        check("votequorum_dispatch", code)
    }

    /// This node's quorum information, asked from corosync now.
    pub fn info(&self) -> Result<QuorumInfo> {
        // SAFETY: votequorum_info is plain data (integers and a char array): all zeroes is valid.
        let mut raw: sys::votequorum_info = unsafe { std::mem::zeroed() };
        // SAFETY: the handle is open; node id 0 asks about this node; `raw` is valid for the
        // write of one votequorum_info.
        let code = unsafe { sys::votequorum_getinfo(self.handle, 0, &mut raw) };
        check("votequorum_getinfo", code)?;
        Ok(QuorumInfo::from_raw(&raw))
    }
}

impl Drop for Votequorum {
    fn drop(&mut self) {
        // SAFETY: the handle is open and never used again.
        unsafe { sys::votequorum_finalize(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_decoded() {
        // SAFETY: plain data, as in `info`.
        let mut raw: sys::votequorum_info = unsafe { std::mem::zeroed() };
        raw.node_id = 2;
        raw.flags = sys::VOTEQUORUM_INFO_QUORATE | sys::VOTEQUORUM_INFO_TWONODE;
        raw.highest_expected = 2;
        raw.total_votes = 1;
        raw.quorum = 1;
        let info = QuorumInfo::from_raw(&raw);
        assert!(info.quorate && info.two_node && !info.qdevice_registered);
        assert_eq!((info.node_id, info.expected_votes, info.quorum), (2, 2, 1));
    }

    #[test]
    fn no_corosync_is_a_clear_error() {
        // The build host runs no corosync (the cluster runs in the test bed's VMs).
        let err = Votequorum::connect()
            .expect_err("this test expects no corosync on the build host, yet votequorum answered");
        assert_eq!(err.call, "votequorum_initialize");
        assert!(
            err.to_string().contains("votequorum_initialize failed"),
            "{err}"
        );
    }
}
