//! The only module with `unsafe`: thin wrappers over the libdlm_lt calls this crate uses.
//!
//! How the libdlm pitfalls are handled (reference: dlm-cluster-on-this-machine.md §10):
//! - We link the light `libdlm_lt`: its `*_wait` calls read completions from the lockspace fd
//!   themselves, so there is no AST thread to start (`dlm_ls_pthread_init` is neither needed
//!   nor exported) and no `_wait` hang after an adoption (pitfall 3): they poll `sb_status`.
//! - ORPHAN adoption queues no completion (pitfall 2), so [`Handle::adopt_orphan`] uses the
//!   async `dlm_ls_lock` with a no-op AST and does not wait: return 0 means adopted. The kernel
//!   keeps that AST *address* for every later completion of the lock; it is a no-op `extern "C"`
//!   function with static lifetime, so later completions (read by the `_wait` calls) are harmless.
//! - Every completion libdlm reads is copied into the `dlm_lksb` the kernel recorded for that
//!   lock. A lock's [`Lksb`] therefore lives on the heap, owned by the caller's lock table, until
//!   the lock is unlocked or the handle is closed; and a handle is never used by two threads at
//!   once (`&mut self`), since one `_wait` call may read another's completion.
//! - The async calls ([`Handle::lock_async`], [`Handle::unlock_async`]) return once the request
//!   is written; [`Handle::dispatch`] reads the completions. Until a request's completion has
//!   been read its lksb must stay alive; one whose completion can no longer be read is leaked
//!   ([`Lksb::leak`]), never freed.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_void};
use std::io;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::Mutex;

use dlm_sys as raw;

/// libdlm keeps the control-device fd and the kernel interface version in globals that it fills
/// lazily without locking; lockspace create/open/release go through it one at a time.
static LIBDLM_GLOBALS: Mutex<()> = Mutex::new(());

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// A lockspace handle from `dlm_new_lockspace`/`dlm_open_lockspace`; closed on drop.
#[derive(Debug)]
pub(crate) struct Handle(NonNull<c_void>);

// SAFETY: the handle is a malloc'ed struct holding the lockspace fd (no thread affinity, no
// thread-local state in libdlm_lt); `&mut self` on every call keeps it to one thread at a time.
unsafe impl Send for Handle {}

impl Handle {
    /// `dlm_new_lockspace(name, mode, flags)`: needs CAP_SYS_ADMIN; `EEXIST` with
    /// `DLM_LSFL_NEWEXCL` when the lockspace already exists on this node.
    pub(crate) fn create(name: &CStr, mode: u32, flags: u32) -> Result<Self, i32> {
        let _globals = LIBDLM_GLOBALS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
        let handle = unsafe { raw::dlm_new_lockspace(name.as_ptr(), mode, flags) };
        NonNull::new(handle).map(Self).ok_or_else(last_errno)
    }

    /// `dlm_open_lockspace(name)`: any user, within the permissions of `/dev/misc/dlm_<name>`.
    pub(crate) fn open(name: &CStr) -> Result<Self, i32> {
        let _globals = LIBDLM_GLOBALS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
        let handle = unsafe { raw::dlm_open_lockspace(name.as_ptr()) };
        NonNull::new(handle).map(Self).ok_or_else(last_errno)
    }

    /// `dlm_release_lockspace(name, ls, force)`; the handle is closed by libdlm either way.
    pub(crate) fn release(self, name: &CStr, force: bool) -> Result<(), i32> {
        let _globals = LIBDLM_GLOBALS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // libdlm closes and frees the handle inside release: never close it again.
        let this = ManuallyDrop::new(self);
        // SAFETY: the handle is valid (owned, not yet closed) and `name` is NUL-terminated.
        let rv =
            unsafe { raw::dlm_release_lockspace(name.as_ptr(), this.0.as_ptr(), i32::from(force)) };
        if rv == 0 { Ok(()) } else { Err(last_errno()) }
    }

    /// `dlm_ls_lock_wait`: request (or convert, with `LKF_CONVERT` and `lksb.sb_lkid` set) and
    /// wait for the completion. `name` must be at most `DLM_RESNAME_MAXLEN` bytes.
    pub(crate) fn lock_wait(
        &mut self,
        mode: u32,
        lksb: &mut Lksb,
        flags: u32,
        name: &[u8],
    ) -> Result<(), i32> {
        let namelen = u32::try_from(name.len()).map_err(|_| libc::EINVAL)?;
        // SAFETY: the handle is valid; `lksb` is a live heap lksb that outlives the lock (see the
        // module docs); `name` is valid for `namelen` bytes and only read during the call.
        let rv = unsafe {
            raw::dlm_ls_lock_wait(
                self.0.as_ptr(),
                mode,
                lksb.as_mut_ptr(),
                flags,
                name.as_ptr().cast(),
                namelen,
                0,
                std::ptr::null_mut(),
                None,
                std::ptr::null_mut(),
            )
        };
        completion(rv, lksb)
    }

    /// ORPHAN adoption: the async `dlm_ls_lock` with a no-op AST, not waited for (the kernel
    /// completes it inside `write()` and queues no completion). On success `lksb.sb_lkid` holds
    /// the orphan's original lock id.
    pub(crate) fn adopt_orphan(
        &mut self,
        mode: u32,
        lksb: &mut Lksb,
        flags: u32,
        name: &[u8],
    ) -> Result<(), i32> {
        self.lock_async(mode, lksb, flags, name)?;
        // libdlm set EINPROG before the write and no completion will ever overwrite it.
        lksb.set_status(0);
        Ok(())
    }

    /// The async `dlm_ls_lock`: writes the request and returns; its completion is read into
    /// `lksb` by a later [`Handle::dispatch`] (until then `lksb` reports
    /// [`Lksb::in_progress`] and must stay alive: the kernel holds its address).
    pub(crate) fn lock_async(
        &mut self,
        mode: u32,
        lksb: &mut Lksb,
        flags: u32,
        name: &[u8],
    ) -> Result<(), i32> {
        let namelen = u32::try_from(name.len()).map_err(|_| libc::EINVAL)?;
        // SAFETY: as in `lock_wait`; the AST is a static no-op function (the kernel rejects a
        // NULL one; completions are read from `sb_status`), its argument is never dereferenced,
        // and the caller keeps `lksb` alive until its completion was dispatched.
        let rv = unsafe {
            raw::dlm_ls_lock(
                self.0.as_ptr(),
                mode,
                lksb.as_mut_ptr(),
                flags,
                name.as_ptr().cast(),
                namelen,
                0,
                Some(ignore_completion),
                std::ptr::null_mut(),
                None,
                std::ptr::null_mut(),
            )
        };
        if rv == 0 { Ok(()) } else { Err(last_errno()) }
    }

    /// The async `dlm_ls_unlock` of a lock held through this handle; its completion is read
    /// into the lock's own `lksb` by a later [`Handle::dispatch`].
    pub(crate) fn unlock_async(
        &mut self,
        lkid: u32,
        flags: u32,
        lksb: &mut Lksb,
    ) -> Result<(), i32> {
        // SAFETY: the handle is valid and `lksb` is the lock's own live heap lksb, kept by the
        // caller until the completion was dispatched.
        let rv = unsafe {
            raw::dlm_ls_unlock(
                self.0.as_ptr(),
                lkid,
                flags,
                lksb.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        if rv == 0 { Ok(()) } else { Err(last_errno()) }
    }

    /// The lockspace device's fd of this handle.
    pub(crate) fn fd(&self) -> i32 {
        // SAFETY: the handle is valid; `dlm_ls_get_fd` only reads its fd field.
        unsafe { raw::dlm_ls_get_fd(self.0.as_ptr()) }
    }

    /// Waits until the lockspace fd has completions, then reads all there are (`dlm_dispatch`),
    /// each into the lksb its request named.
    pub(crate) fn dispatch(&mut self) -> Result<(), i32> {
        let fd = self.fd();
        let mut pollfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        let ready = unsafe { libc::poll(&raw mut pollfd, 1, -1) };
        if ready < 0 {
            let errno = last_errno();
            return if errno == libc::EINTR {
                Ok(())
            } else {
                Err(errno)
            };
        }
        // SAFETY: `fd` is this handle's lockspace fd; every completion it reads is copied into
        // an lksb the kernel recorded for a request of this handle, all of which are alive (the
        // callers keep them until their completion has been read).
        let rv = unsafe { raw::dlm_dispatch(fd) };
        if rv < 0 { Err(last_errno()) } else { Ok(()) }
    }

    /// `dlm_ls_unlock_wait` (`flags`: 0 or `LKF_IVVALBLK`); a successful unlock reports
    /// `EUNLOCK`, which counts as success.
    pub(crate) fn unlock_wait(
        &mut self,
        lkid: u32,
        flags: u32,
        lksb: &mut Lksb,
    ) -> Result<(), i32> {
        // SAFETY: the handle is valid and `lksb` is the lock's own live heap lksb.
        let rv =
            unsafe { raw::dlm_ls_unlock_wait(self.0.as_ptr(), lkid, flags, lksb.as_mut_ptr()) };
        completion(rv, lksb)
    }

    /// `dlm_ls_purge(ls, nodeid, pid)`: drops orphan locks of `nodeid` (all of them when pid 0).
    pub(crate) fn purge(&mut self, nodeid: i32, pid: i32) -> Result<(), i32> {
        // SAFETY: the handle is valid; the call only writes a request to the lockspace fd.
        let rv = unsafe { raw::dlm_ls_purge(self.0.as_ptr(), nodeid, pid) };
        if rv == 0 { Ok(()) } else { Err(last_errno()) }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle is valid and owned; after this nothing uses it. Closing releases
        // this process's non-PERSISTENT locks; PERSISTENT ones become orphans.
        unsafe { raw::dlm_close_lockspace(self.0.as_ptr()) };
    }
}

/// The AST given when adopting an orphan: the completion result is read from `sb_status`.
extern "C" fn ignore_completion(_arg: *mut c_void) {}

/// Result of a libdlm_lt `_wait` call: -1 with errno = the status, or 0 with the status in the
/// lksb (checked too, in case a library variant reports it only there).
fn completion(rv: i32, lksb: &Lksb) -> Result<(), i32> {
    if rv != 0 {
        return Err(last_errno());
    }
    lksb.status()
}

/// A lock status block and its value block, on the heap: their addresses are what the kernel
/// records for the lock (`sb_lvbptr` points into the same allocation). Owned through a raw
/// pointer, not a `Box`: libdlm writes completions into the block behind Rust's back (during
/// any later dispatch on the handle), so nothing may assume unique access to it.
pub(crate) struct Lksb(NonNull<Block>);

struct Block {
    sb: raw::dlm_lksb,
    value: [u8; raw::DLM_LVB_LEN as usize],
}

// SAFETY: the block is plain data plus `sb_lvbptr`, which points into the same heap block; the
// Lksb owns it alone, and it is only read or written by the thread using the handle.
unsafe impl Send for Lksb {}

impl std::fmt::Debug for Lksb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lksb")
            .field("status", &self.block().sb.sb_status)
            .field("lkid", &self.block().sb.sb_lkid)
            .finish()
    }
}

impl Drop for Lksb {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `Box::into_raw` in `new` and is freed only here.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

impl Lksb {
    pub(crate) fn new() -> Self {
        let block = NonNull::from(Box::leak(Box::new(Block {
            sb: raw::dlm_lksb {
                sb_status: 0,
                sb_lkid: 0,
                sb_flags: 0,
                sb_lvbptr: std::ptr::null_mut(),
            },
            value: [0; raw::DLM_LVB_LEN as usize],
        })));
        // SAFETY: the block was just allocated and nothing else refers to it yet. The value
        // block is read and written only for requests with LKF_VALBLK.
        unsafe {
            let block = block.as_ptr();
            (*block).sb.sb_lvbptr = (&raw mut (*block).value).cast();
        }
        Self(block)
    }

    fn set_status(&mut self, status: i32) {
        // SAFETY: `&mut self`: no other borrow of the block.
        unsafe { (*self.0.as_ptr()).sb.sb_status = status };
    }

    /// Gives up the block for good: the kernel may still write a completion into it (a request
    /// whose completion can no longer be read), so it must never be freed.
    pub(crate) fn leak(self) {
        std::mem::forget(self);
    }

    fn block(&self) -> &Block {
        // SAFETY: the block lives as long as `self`; libdlm writes into it only inside calls on
        // the handle, which take `&mut Handle`, never while this shared borrow is in use.
        unsafe { self.0.as_ref() }
    }

    pub(crate) fn lkid(&self) -> u32 {
        self.block().sb.sb_lkid
    }

    /// Whether the request's completion has not been read yet.
    pub(crate) fn in_progress(&self) -> bool {
        self.block().sb.sb_status == raw::EINPROG
    }

    /// The completion's status: granted (or unlocked), or the errno the DLM answered.
    pub(crate) fn status(&self) -> Result<(), i32> {
        match self.block().sb.sb_status {
            0 | raw::EUNLOCK => Ok(()),
            status => Err(status),
        }
    }

    /// The value block as the last completion left it, unless the DLM marked it not valid.
    pub(crate) fn value(&self) -> Option<[u8; raw::DLM_LVB_LEN as usize]> {
        let invalid = i32::try_from(raw::DLM_SBF_VALNOTVALID).unwrap_or(i32::MAX);
        let block = self.block();
        (i32::from(block.sb.sb_flags) & invalid == 0).then_some(block.value)
    }

    /// Sets the value block a conversion with LKF_VALBLK writes.
    pub(crate) fn set_value(&mut self, value: &[u8; raw::DLM_LVB_LEN as usize]) {
        // SAFETY: `&mut self`: no other borrow of the block; libdlm reads it only inside a
        // later call on the handle.
        unsafe { (*self.0.as_ptr()).value = *value };
    }

    fn as_mut_ptr(&mut self) -> *mut raw::dlm_lksb {
        // SAFETY: a field address within the live block, no reference created.
        unsafe { &raw mut (*self.0.as_ptr()).sb }
    }
}
