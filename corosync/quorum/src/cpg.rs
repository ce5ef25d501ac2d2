//! A closed process group (corosync's cpg): every member receives every message sent to the
//! group, in the same order on every node. The lockmgrd daemons of a cluster join one, so that
//! `lockmgr status --cluster` can ask all of them at once.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use corosync_sys as sys;

use crate::{Error, Result, check};

/// A message delivered to the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The sender's corosync node id.
    pub node_id: u32,
    /// The sender's pid on its node.
    pub pid: u32,
    /// What it sent.
    pub data: Vec<u8>,
}

/// A member of the group: one process on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    /// Its corosync node id.
    pub node_id: u32,
    /// Its pid on that node.
    pub pid: u32,
}

/// Where the deliver callback puts messages; lives in a Box so its address is stable.
#[derive(Debug, Default)]
struct Inbox {
    messages: Vec<Delivered>,
}

/// A joined process group (left and closed on drop).
#[derive(Debug)]
pub struct ProcessGroup {
    handle: sys::cpg_handle_t,
    inbox: Box<Inbox>,
}

/// How long a call that corosync answers with CS_ERR_TRY_AGAIN (flow control, a membership
/// change in progress) is retried.
const TRY_AGAIN_FOR: Duration = Duration::from_secs(2);
const CS_ERR_TRY_AGAIN: sys::cs_error_t = 6;
/// The most members [`ProcessGroup::members`] reports (corosync's own limit is 128 nodes).
const MAX_MEMBERS: usize = 1024;
const MAX_MEMBERS_C: libc::c_int = 1024;

fn group_name(name: &str) -> Result<sys::cpg_name> {
    let mut raw = sys::cpg_name {
        length: 0,
        value: [0; 128],
    };
    if name.len() > raw.value.len() {
        return Err(Error {
            call: "cpg_join (group name longer than 128 bytes)",
            code: 7,
        });
    }
    for (slot, byte) in raw.value.iter_mut().zip(name.bytes()) {
        *slot = libc::c_char::from_ne_bytes([byte]);
    }
    raw.length = u32::try_from(name.len()).unwrap_or(u32::MAX);
    Ok(raw)
}

/// Retries `call` while corosync says CS_ERR_TRY_AGAIN, for up to [`TRY_AGAIN_FOR`].
fn retrying(name: &'static str, mut call: impl FnMut() -> sys::cs_error_t) -> Result<()> {
    let deadline = Instant::now() + TRY_AGAIN_FOR;
    loop {
        let code = call();
        if code != CS_ERR_TRY_AGAIN || Instant::now() >= deadline {
            return check(name, code);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

unsafe extern "C" fn deliver(
    handle: sys::cpg_handle_t,
    _group: *const sys::cpg_name,
    node_id: u32,
    pid: u32,
    message: *mut libc::c_void,
    length: usize,
) {
    let mut context: *mut libc::c_void = std::ptr::null_mut();
    // SAFETY: corosync calls this only from cpg_dispatch on an open handle; `context` is valid
    // for the write.
    if unsafe { sys::cpg_context_get(handle, &mut context) } != sys::CS_OK || context.is_null() {
        return;
    }
    // SAFETY: the context is the group's boxed Inbox, set before the join and alive until
    // finalize; dispatch runs with `&mut ProcessGroup`, so nothing else touches it meanwhile.
    let inbox = unsafe { &mut *context.cast::<Inbox>() };
    let data = if message.is_null() || length == 0 {
        Vec::new()
    } else {
        // SAFETY: corosync hands a message of `length` bytes, valid for this call.
        unsafe { std::slice::from_raw_parts(message.cast::<u8>(), length) }.to_vec()
    };
    inbox.messages.push(Delivered { node_id, pid, data });
}

/// Membership changes are read with [`ProcessGroup::members`] when needed.
unsafe extern "C" fn ignore_membership_change(
    _handle: sys::cpg_handle_t,
    _group: *const sys::cpg_name,
    _members: *const sys::cpg_address,
    _members_len: usize,
    _left: *const sys::cpg_address,
    _left_len: usize,
    _joined: *const sys::cpg_address,
    _joined_len: usize,
) {
}

impl ProcessGroup {
    /// Connects to the local corosync and joins the group `name` (at most 128 bytes).
    pub fn join(name: &str) -> Result<ProcessGroup> {
        let raw_name = group_name(name)?;
        let mut handle: sys::cpg_handle_t = 0;
        let mut callbacks = sys::cpg_callbacks_t {
            cpg_deliver_fn: Some(deliver),
            cpg_confchg_fn: Some(ignore_membership_change),
        };
        // SAFETY: both pointers are valid for the call; the library copies the callbacks.
        let code = unsafe { sys::cpg_initialize(&mut handle, &mut callbacks) };
        check("cpg_initialize", code)?;
        let mut group = ProcessGroup {
            handle,
            inbox: Box::default(),
        };
        let context: *mut Inbox = &mut *group.inbox;
        // SAFETY: the handle is open; the Inbox outlives it (it is dropped after finalize).
        let code = unsafe { sys::cpg_context_set(handle, context.cast()) };
        check("cpg_context_set", code)?;
        // SAFETY: the handle is open and `raw_name` is valid for the call.
        retrying("cpg_join", || unsafe { sys::cpg_join(handle, &raw_name) })?;
        Ok(group)
    }

    /// The descriptor that becomes readable when messages wait: poll it, then
    /// [`ProcessGroup::dispatch`].
    pub fn fd(&self) -> Result<RawFd> {
        let mut fd: libc::c_int = -1;
        // SAFETY: the handle is open; `fd` is valid for the write.
        let code = unsafe { sys::cpg_fd_get(self.handle, &mut fd) };
        check("cpg_fd_get", code)?;
        Ok(fd)
    }

    /// Receives what waits on [`ProcessGroup::fd`] without blocking and returns the messages
    /// delivered so far.
    pub fn dispatch(&mut self) -> Result<Vec<Delivered>> {
        // SAFETY: the handle is open; the deliver callback writes only the Inbox, which
        // `&mut self` keeps to this call.
        let code = unsafe { sys::cpg_dispatch(self.handle, sys::CS_DISPATCH_ALL) };
        check("cpg_dispatch", code)?;
        Ok(std::mem::take(&mut self.inbox.messages))
    }

    /// Sends `data` to every member, this one included (agreed order).
    pub fn send(&self, data: &[u8]) -> Result<()> {
        let iov = sys::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        };
        // SAFETY: the handle is open; the one iovec points at `data`, which corosync only reads
        // during the call.
        retrying("cpg_mcast_joined", || unsafe {
            sys::cpg_mcast_joined(self.handle, sys::CPG_TYPE_AGREED, &iov, 1)
        })
    }

    /// The group's members now.
    pub fn members(&self, name: &str) -> Result<Vec<Member>> {
        let mut raw_name = group_name(name)?;
        let mut raw = vec![
            sys::cpg_address {
                nodeid: 0,
                pid: 0,
                reason: 0,
            };
            MAX_MEMBERS
        ];
        let mut count = MAX_MEMBERS_C;
        // SAFETY: the handle is open; the list has room for `count` entries, which corosync
        // overwrites with the number it wrote.
        retrying("cpg_membership_get", || unsafe {
            sys::cpg_membership_get(self.handle, &mut raw_name, raw.as_mut_ptr(), &mut count)
        })?;
        let count = usize::try_from(count).unwrap_or(0).min(MAX_MEMBERS);
        Ok(raw[..count]
            .iter()
            .map(|a| Member {
                node_id: a.nodeid,
                pid: a.pid,
            })
            .collect())
    }

    /// This node's corosync node id.
    pub fn local_node_id(&self) -> Result<u32> {
        let mut node_id: libc::c_uint = 0;
        // SAFETY: the handle is open; `node_id` is valid for the write.
        let code = unsafe { sys::cpg_local_get(self.handle, &mut node_id) };
        check("cpg_local_get", code)?;
        Ok(node_id)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: the handle is open and never used again; finalize leaves the group, and no
        // callback runs after it, so the Inbox may go after this.
        unsafe { sys::cpg_finalize(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_are_checked() {
        let name = group_name("lockmgrd-status").expect("a short name");
        assert_eq!(name.length, 15);
        assert_eq!(name.value[0], libc::c_char::from_ne_bytes([b'l']));
        assert!(group_name(&"x".repeat(129)).is_err());
    }

    #[test]
    fn no_corosync_is_a_clear_error() {
        let err = ProcessGroup::join("lockmgrd-test")
            .expect_err("this test expects no corosync on the build host, yet cpg answered");
        assert_eq!(err.call, "cpg_initialize");
    }
}
