//! A small safe layer over libdlm, linked against the light `libdlm_lt` (see `dlm-sys`).
//!
//! A [`Lockspace`] is one open handle on a DLM lockspace of this node. Locks are taken with
//! [`Lockspace::lock`], changed with [`Lockspace::convert`] and released with
//! [`Lockspace::unlock`]; locks taken with [`LockFlags::PERSISTENT`] outlive the handle (and the
//! process) as *orphans* that still block other nodes, and a later process on the same node takes
//! them back with [`Lockspace::adopt_orphan`].
//!
//! Every call returns when the DLM has answered. [`Lockspace::lock_all`] and
//! [`Lockspace::unlock_all`] put many requests in flight at once (each written to the lockspace
//! device, which returns at once; the completions are then read as they come), so requests to
//! other nodes' masters cost about one round trip together. One handle serialises its calls
//! (libdlm_lt reads completions from the handle's fd inside each call), so a request that queues
//! (no [`LockFlags::NOQUEUE`]) blocks the other users of the same handle until it is granted;
//! open a second handle for concurrent waits.
//!
//! ```no_run
//! use lockmgr_dlm::{LockFlags, Lockspace, Mode};
//! let ls = Lockspace::create_or_open("libvirt", 0o600)?;
//! let id = ls.lock(b"disk-1", Mode::Ex, LockFlags::NOQUEUE | LockFlags::PERSISTENT)?;
//! ls.unlock(id)?;
//! # Ok::<(), lockmgr_dlm::Error>(())
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod node;
mod sys;
mod types;
mod validate;

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Mutex, MutexGuard};

pub use error::{Errno, Error, LockOp, Result};
pub use node::{CONFIGFS_CLUSTER, cluster_name, local_node_id, local_node_id_in};
pub use types::{LockFlags, LockId, Mode, ResourceName, UnknownMode};
use validate::{check_flags, validate_lockspace_name, validate_resource};

/// Longest lockspace name the DLM accepts (`DLM_LOCKSPACE_LEN`).
pub const MAX_LOCKSPACE_NAME: usize = dlm_sys::DLM_LOCKSPACE_LEN as usize;
/// Longest resource name the DLM accepts (`DLM_RESNAME_MAXLEN`).
pub const MAX_RESOURCE_NAME: usize = dlm_sys::DLM_RESNAME_MAXLEN as usize;
/// The size of a resource's value block (`DLM_LVB_LEN`).
pub const VALUE_LEN: usize = dlm_sys::DLM_LVB_LEN as usize;

/// One open handle on a DLM lockspace of this node.
///
/// Dropping it closes the handle: the kernel releases the non-PERSISTENT locks taken through it
/// at once, and turns PERSISTENT ones into orphans that stay granted (still refusing other
/// nodes) until a process on this node adopts them ([`Lockspace::adopt_orphan`]) or purges them
/// ([`Lockspace::purge`]). A process that dies has the same effect. The lockspace itself stays
/// joined on this node (it is left with [`Lockspace::release`]).
#[derive(Debug)]
pub struct Lockspace {
    name: String,
    c_name: CString,
    created: bool,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    // Field order matters: the handle is closed before the lksbs it refers to are freed.
    handle: sys::Handle,
    locks: HashMap<u32, HeldLock>,
}

impl Inner {
    /// Remembers a lock just granted (or adopted): its lksb lives as long as the lock.
    fn keep(&mut self, resource: &[u8], mode: Mode, flags: LockFlags, lksb: sys::Lksb) -> LockId {
        let lkid = lksb.lkid();
        self.locks.insert(
            lkid,
            HeldLock {
                resource: resource.to_vec(),
                mode,
                flags,
                lksb,
            },
        );
        LockId(lkid)
    }
}

/// One request of [`Lockspace::lock_all`].
#[derive(Debug, Clone, Copy)]
pub struct LockRequest<'a> {
    /// The resource (at most [`MAX_RESOURCE_NAME`] bytes).
    pub resource: &'a [u8],
    /// The mode asked for.
    pub mode: Mode,
    /// Its flags, as for [`Lockspace::lock`].
    pub flags: LockFlags,
}

/// One release of [`Lockspace::unlock_all`].
#[derive(Debug, Clone, Copy)]
pub struct Unlock {
    /// The lock.
    pub lkid: LockId,
    /// Mark the resource's value block not valid (`LKF_IVVALBLK`, an EX or PW holder's
    /// release), as [`Lockspace::unlock_invalidating_value`].
    pub invalidate_value: bool,
}

/// A request's answer once its dispatch is over: its completion's status, or, still in progress
/// (the lockspace fd failed first), the dispatch's errno.
fn answer(lksb: &sys::Lksb, dispatched: Result<(), i32>) -> Result<(), i32> {
    if lksb.in_progress() {
        Err(dispatched.err().unwrap_or(libc::EIO))
    } else {
        lksb.status()
    }
}

/// Reads completions until none of `lksbs` is in progress; the errno if the lockspace fd fails
/// first.
fn dispatch_until_done(handle: &mut sys::Handle, lksbs: &[&sys::Lksb]) -> Result<(), i32> {
    while lksbs.iter().any(|lksb| lksb.in_progress()) {
        handle.dispatch()?;
    }
    Ok(())
}

/// A lock granted through this handle, with the lksb the kernel reports into.
#[derive(Debug)]
struct HeldLock {
    resource: Vec<u8>,
    mode: Mode,
    /// The flags it was granted with (a conversion must give PERSISTENT again to keep it).
    flags: LockFlags,
    lksb: sys::Lksb,
}

impl Lockspace {
    /// Creates the lockspace on this node (joining it cluster-wide), or opens it when this node
    /// already has it (`EEXIST`). `mode` is the permission of the lockspace device
    /// `/dev/misc/dlm_<name>` when created (e.g. `0o600`; `0o666` lets other users open it).
    /// Creating needs CAP_SYS_ADMIN.
    pub fn create_or_open(name: &str, mode: u32) -> Result<Lockspace> {
        let c_name = validate_lockspace_name(name)?;
        match sys::Handle::create(&c_name, mode, dlm_sys::DLM_LSFL_NEWEXCL) {
            Ok(handle) => Ok(Self::new(name, c_name, handle, true)),
            Err(libc::EEXIST) => Self::open(name),
            Err(errno) => Err(error::lockspace_error("create", name, errno)),
        }
    }

    /// Opens a lockspace that this node already has (any user, within the device permissions).
    pub fn open(name: &str) -> Result<Lockspace> {
        let c_name = validate_lockspace_name(name)?;
        let handle = sys::Handle::open(&c_name)
            .map_err(|errno| error::lockspace_error("open", name, errno))?;
        Ok(Self::new(name, c_name, handle, false))
    }

    fn new(name: &str, c_name: CString, handle: sys::Handle, created: bool) -> Lockspace {
        Lockspace {
            name: name.to_owned(),
            c_name,
            created,
            inner: Mutex::new(Inner {
                handle,
                locks: HashMap::new(),
            }),
        }
    }

    /// The lockspace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this handle created the lockspace on this node (false: it was opened).
    pub fn created(&self) -> bool {
        self.created
    }

    /// Requests a lock on `resource` (at most [`MAX_RESOURCE_NAME`] bytes) and waits until it is
    /// granted. With [`LockFlags::NOQUEUE`] a conflicting lock gives [`Error::Busy`] at once.
    pub fn lock(&self, resource: &[u8], mode: Mode, flags: LockFlags) -> Result<LockId> {
        validate_resource(LockOp::Lock, resource, &self.name)?;
        self.validate_flags(LockOp::Lock, resource, mode, flags)?;
        let mut inner = self.inner();
        let mut lksb = sys::Lksb::new();
        inner
            .handle
            .lock_wait(mode.raw(), &mut lksb, flags.bits(), resource)
            .map_err(|errno| {
                error::request_error(LockOp::Lock, mode, resource, 0, &self.name, errno)
            })?;
        Ok(inner.keep(resource, mode, flags, lksb))
    }

    /// Requests all of `requests` at once and waits until the DLM has answered every one: the
    /// requests are in flight together, so locks mastered on another node cost about one round
    /// trip for all of them, not one each. Each answer (in the order given) is what
    /// [`Lockspace::lock`] would have answered for that request alone.
    pub fn lock_all(&self, requests: &[LockRequest<'_>]) -> Vec<Result<LockId>> {
        let mut inner = self.inner();
        let sent: Vec<Result<sys::Lksb>> = requests
            .iter()
            .map(|request| {
                let LockRequest {
                    resource,
                    mode,
                    flags,
                } = *request;
                validate_resource(LockOp::Lock, resource, &self.name)?;
                self.validate_flags(LockOp::Lock, resource, mode, flags)?;
                let mut lksb = sys::Lksb::new();
                inner
                    .handle
                    .lock_async(mode.raw(), &mut lksb, flags.bits(), resource)
                    .map_err(|errno| {
                        error::request_error(LockOp::Lock, mode, resource, 0, &self.name, errno)
                    })?;
                Ok(lksb)
            })
            .collect();
        let in_flight: Vec<&sys::Lksb> = sent.iter().filter_map(|s| s.as_ref().ok()).collect();
        let dispatched = dispatch_until_done(&mut inner.handle, &in_flight);
        requests
            .iter()
            .zip(sent)
            .map(|(request, sent)| {
                let lksb = sent?;
                let failed = |errno| {
                    let (op, mode, resource) = (LockOp::Lock, request.mode, request.resource);
                    error::request_error(op, mode, resource, 0, &self.name, errno)
                };
                let answered = answer(&lksb, dispatched).map_err(failed);
                if lksb.in_progress() {
                    // Its completion can no longer be read, but may still come: the kernel
                    // keeps the lksb's address, so the memory must stay.
                    lksb.leak();
                    return answered.and(Err(failed(libc::EIO)));
                }
                answered?;
                Ok(inner.keep(request.resource, request.mode, request.flags, lksb))
            })
            .collect()
    }

    /// Releases all of `unlocks` at once (each lock at most once) and waits until the DLM has
    /// answered every one; each answer (in the order given) is what [`Lockspace::unlock`] or
    /// [`Lockspace::unlock_invalidating_value`] would have answered. A lock whose unlock failed
    /// stays held.
    pub fn unlock_all(&self, unlocks: &[Unlock]) -> Vec<Result<()>> {
        let mut inner = self.inner();
        let Inner { handle, locks } = &mut *inner;
        let mut asked = std::collections::HashSet::new();
        let sent: Vec<Result<()>> = unlocks
            .iter()
            .map(|unlock| {
                let lkid = unlock.lkid;
                let held = match locks.get_mut(&lkid.0) {
                    Some(held) if asked.insert(lkid.0) => held,
                    _ => return Err(self.unknown(LockOp::Unlock, lkid)),
                };
                let flags = if unlock.invalidate_value {
                    dlm_sys::LKF_IVVALBLK
                } else {
                    0
                };
                handle
                    .unlock_async(lkid.0, flags, &mut held.lksb)
                    .map_err(|errno| self.unlock_error(held, lkid, errno))
            })
            .collect();
        let in_flight: Vec<&sys::Lksb> = unlocks
            .iter()
            .zip(&sent)
            .filter(|(_, sent)| sent.is_ok())
            .filter_map(|(unlock, _)| locks.get(&unlock.lkid.0).map(|held| &held.lksb))
            .collect();
        let dispatched = dispatch_until_done(handle, &in_flight);
        unlocks
            .iter()
            .zip(sent)
            .map(|(unlock, sent)| {
                sent?;
                let lkid = unlock.lkid;
                let held = locks
                    .get(&lkid.0)
                    .ok_or_else(|| self.unknown(LockOp::Unlock, lkid))?;
                // Still in progress: the lock (and its lksb) stays, known to this handle.
                let status = answer(&held.lksb, dispatched);
                status.map_err(|errno| self.unlock_error(held, lkid, errno))?;
                // Only now may the lksb go: the unlock's completion has been read into it.
                locks.remove(&lkid.0);
                Ok(())
            })
            .collect()
    }

    /// Writes `value` into the resource's value block through a held EX or PW lock (a
    /// conversion to the same mode with `LKF_VALBLK`, which the DLM always grants). Any node
    /// reads it with [`Lockspace::read_value`], until the next holder writes another or
    /// releases with [`Lockspace::unlock_invalidating_value`].
    pub fn publish_value(&self, lkid: LockId, value: &[u8; VALUE_LEN]) -> Result<()> {
        let mut answers = self.publish_all(&[(lkid, *value)]);
        answers.pop().unwrap_or(Ok(()))
    }

    /// [`Lockspace::publish_value`] for many locks at once: every conversion in flight
    /// together, then their completions read as they come. Answers in the order given.
    pub fn publish_all(&self, values: &[(LockId, [u8; VALUE_LEN])]) -> Vec<Result<()>> {
        let mut inner = self.inner();
        let Inner { handle, locks } = &mut *inner;
        let mut asked = std::collections::HashSet::new();
        let sent: Vec<Result<()>> = values
            .iter()
            .map(|(lkid, value)| {
                let held = match locks.get_mut(&lkid.0) {
                    Some(held) if asked.insert(lkid.0) => held,
                    _ => return Err(self.unknown(LockOp::Convert, *lkid)),
                };
                if !matches!(held.mode, Mode::Ex | Mode::Pw) {
                    return Err(Error::InvalidFlags {
                        op: LockOp::Convert,
                        mode: held.mode,
                        resource: ResourceName::from(held.resource.as_slice()),
                        lockspace: self.name.clone(),
                        flags: "VALBLK".into(),
                        reason: "only an EX or PW holder writes the value block",
                    });
                }
                held.lksb.set_value(value);
                let flags = held.flags.bits() | dlm_sys::LKF_VALBLK | dlm_sys::LKF_CONVERT;
                handle
                    .lock_async(held.mode.raw(), &mut held.lksb, flags, &held.resource)
                    .map_err(|errno| self.convert_error(held, *lkid, errno))
            })
            .collect();
        let in_flight: Vec<&sys::Lksb> = values
            .iter()
            .zip(&sent)
            .filter(|(_, sent)| sent.is_ok())
            .filter_map(|((lkid, _), _)| locks.get(&lkid.0).map(|held| &held.lksb))
            .collect();
        let dispatched = dispatch_until_done(handle, &in_flight);
        values
            .iter()
            .zip(sent)
            .map(|((lkid, _), sent)| {
                sent?;
                let held = locks
                    .get(&lkid.0)
                    .ok_or_else(|| self.unknown(LockOp::Convert, *lkid))?;
                // Still in progress: the lock (and its lksb) stays, known to this handle.
                let status = answer(&held.lksb, dispatched);
                status.map_err(|errno| self.convert_error(held, *lkid, errno))
            })
            .collect()
    }

    /// Reads `resource`'s value block with a NL lock (compatible with every holder, so it never
    /// waits for one), then drops the lock. `None` when the DLM marks it not valid (no holder
    /// wrote it since it was created, invalidated, or lost with a failed node) or it is all
    /// zeros.
    pub fn read_value(&self, resource: &[u8]) -> Result<Option<[u8; VALUE_LEN]>> {
        validate_resource(LockOp::Lock, resource, &self.name)?;
        let mut inner = self.inner();
        let mut lksb = sys::Lksb::new();
        let flags = LockFlags::NOQUEUE.bits() | dlm_sys::LKF_VALBLK;
        inner
            .handle
            .lock_wait(Mode::Nl.raw(), &mut lksb, flags, resource)
            .map_err(|errno| {
                error::request_error(LockOp::Lock, Mode::Nl, resource, 0, &self.name, errno)
            })?;
        let value = lksb.value().filter(|v| v.iter().any(|b| *b != 0));
        let lkid = lksb.lkid();
        inner
            .handle
            .unlock_wait(lkid, 0, &mut lksb)
            .map_err(|errno| {
                error::request_error(LockOp::Unlock, Mode::Nl, resource, lkid, &self.name, errno)
            })?;
        Ok(value)
    }

    /// Converts a held lock to `mode`. With [`LockFlags::NOQUEUE`] a conflict gives
    /// [`Error::Busy`] and the lock keeps its current mode. Flags given here replace the lock's
    /// flags (e.g. add or drop PERSISTENT).
    pub fn convert(&self, lkid: LockId, mode: Mode, flags: LockFlags) -> Result<()> {
        let mut inner = self.inner();
        let Inner { handle, locks } = &mut *inner;
        let held = locks
            .get_mut(&lkid.0)
            .ok_or_else(|| self.unknown(LockOp::Convert, lkid))?;
        self.validate_flags(LockOp::Convert, &held.resource, mode, flags)?;
        handle
            .lock_wait(
                mode.raw(),
                &mut held.lksb,
                flags.bits() | dlm_sys::LKF_CONVERT,
                &held.resource,
            )
            .map_err(|errno| {
                error::request_error(
                    LockOp::Convert,
                    mode,
                    &held.resource,
                    lkid.0,
                    &self.name,
                    errno,
                )
            })?;
        held.mode = mode;
        held.flags = flags;
        Ok(())
    }

    /// Releases a held lock (persistent or not).
    pub fn unlock(&self, lkid: LockId) -> Result<()> {
        self.unlock_with(lkid, 0)
    }

    /// Releases a held lock and marks the resource's value block not valid (`LKF_IVVALBLK`; an
    /// EX or PW holder's release), so that a reader no longer finds what this holder wrote.
    pub fn unlock_invalidating_value(&self, lkid: LockId) -> Result<()> {
        self.unlock_with(lkid, dlm_sys::LKF_IVVALBLK)
    }

    fn unlock_with(&self, lkid: LockId, flags: u32) -> Result<()> {
        let mut inner = self.inner();
        let Inner { handle, locks } = &mut *inner;
        let held = locks
            .get_mut(&lkid.0)
            .ok_or_else(|| self.unknown(LockOp::Unlock, lkid))?;
        handle
            .unlock_wait(lkid.0, flags, &mut held.lksb)
            .map_err(|errno| self.unlock_error(held, lkid, errno))?;
        // Only now may the lksb go: the unlock's completion has been read into it.
        locks.remove(&lkid.0);
        Ok(())
    }

    fn convert_error(&self, held: &HeldLock, lkid: LockId, errno: i32) -> Error {
        let (mode, resource) = (held.mode, &held.resource);
        error::request_error(LockOp::Convert, mode, resource, lkid.0, &self.name, errno)
    }

    fn unlock_error(&self, held: &HeldLock, lkid: LockId, errno: i32) -> Error {
        let (mode, resource) = (held.mode, &held.resource);
        error::request_error(LockOp::Unlock, mode, resource, lkid.0, &self.name, errno)
    }

    /// Takes over this node's orphan lock on `resource` (left by a PERSISTENT lock whose holder
    /// closed the lockspace or died). `mode` must equal the orphan's granted mode, else
    /// [`Error::OrphanModeMismatch`]; with no orphan, [`Error::NoOrphan`]. The lock keeps its
    /// original id. `persistent` sets the adopted lock's flags anew: without it the lock is
    /// simply released when this holder goes away. Orphans of other nodes cannot be adopted.
    ///
    /// The kernel looks for the orphan from the head of the node's list of orphans: adopting
    /// them in the order they were orphaned costs the same for each; in another order, each
    /// adoption scans the ones left before it.
    pub fn adopt_orphan(&self, resource: &[u8], mode: Mode, persistent: bool) -> Result<LockId> {
        validate_resource(LockOp::Adopt, resource, &self.name)?;
        let mut flags = dlm_sys::LKF_ORPHAN;
        if persistent {
            flags |= dlm_sys::LKF_PERSISTENT;
        }
        let mut inner = self.inner();
        let mut lksb = sys::Lksb::new();
        // Async call, not waited for: adoption completes inside write() without a completion
        // (a `_wait` would block forever). See the `sys` module.
        inner
            .handle
            .adopt_orphan(mode.raw(), &mut lksb, flags, resource)
            .map_err(|errno| {
                error::request_error(LockOp::Adopt, mode, resource, 0, &self.name, errno)
            })?;
        let flags = if persistent {
            LockFlags::PERSISTENT
        } else {
            LockFlags::NONE
        };
        Ok(inner.keep(resource, mode, flags, lksb))
    }

    /// This handle's file descriptor on the lockspace device. When the process ends, the kernel
    /// turns the PERSISTENT locks of each closed handle into orphans in the order they were
    /// requested through it, one handle after the other: the order in which adopting them finds
    /// each first (see [`Lockspace::adopt_orphan`]).
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.inner().handle.fd()
    }

    /// Removes orphan locks of `nodeid` (this node's: [`local_node_id`]); `pid` 0 removes all of
    /// them, another pid only those its process left.
    pub fn purge(&self, nodeid: u32, pid: u32) -> Result<()> {
        let purge_error = |errno| Error::Purge {
            nodeid,
            pid,
            lockspace: self.name.clone(),
            errno: Errno(errno),
        };
        let raw_nodeid = i32::try_from(nodeid).map_err(|_| purge_error(libc::EINVAL))?;
        let raw_pid = i32::try_from(pid).map_err(|_| purge_error(libc::EINVAL))?;
        self.inner()
            .handle
            .purge(raw_nodeid, raw_pid)
            .map_err(purge_error)
    }

    /// The mode of a lock held through this handle, if it is one.
    pub fn mode_of(&self, lkid: LockId) -> Option<Mode> {
        self.inner().locks.get(&lkid.0).map(|held| held.mode)
    }

    /// Leaves the lockspace on this node (CAP_SYS_ADMIN). Without `force` the kernel keeps it
    /// while locks remain. The handle is closed either way.
    pub fn release(self, force: bool) -> Result<()> {
        let Lockspace {
            name,
            c_name,
            inner,
            ..
        } = self;
        let Inner { handle, locks } = inner
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = handle
            .release(&c_name, force)
            .map_err(|errno| error::lockspace_error("release", &name, errno));
        drop(locks);
        result
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the table inconsistent with the kernel in
        // a way that matters more than refusing every later call would.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn unknown(&self, op: LockOp, lkid: LockId) -> Error {
        Error::UnknownLock {
            op,
            lkid,
            lockspace: self.name.clone(),
        }
    }

    fn validate_flags(
        &self,
        op: LockOp,
        resource: &[u8],
        mode: Mode,
        flags: LockFlags,
    ) -> Result<()> {
        check_flags(op, mode, flags).map_err(|reason| Error::InvalidFlags {
            op,
            mode,
            resource: ResourceName::from(resource),
            lockspace: self.name.clone(),
            flags: flags.to_string(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests;
