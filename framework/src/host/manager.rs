//! One short-lived lock manager context: New → AddResource… → an operation → Free, and no Free
//! after a failed New.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::abi::{self, virLockManager, virLockManagerParam, virLockManagerParamValue};
use crate::host::capture;
use crate::host::error::{HostError, HostResult};
use crate::host::load::{Plugin, check};
use crate::types::{AcquireFlags, LockFailureAction, Resource};

/// A param value for [`Plugin::new_manager_raw`].
#[derive(Debug, Clone)]
pub enum RawParam {
    /// STRING
    String(String),
    /// CSTRING (NULL when `None`)
    CString(Option<String>),
    /// UINT
    UInt(u32),
    /// ULONG
    ULong(u64),
    /// UUID
    Uuid([u8; 16]),
    /// A type number libvirt never uses.
    UnknownType(i32),
}

/// Params and the C strings they point to, kept alive together.
pub(super) struct OwnedParams {
    strings: Vec<CString>,
    entries: Vec<(usize, c_int, virLockManagerParamValue, bool)>,
}

impl OwnedParams {
    pub(super) fn new(params: &[(String, RawParam)]) -> HostResult<Self> {
        let mut owned = OwnedParams {
            strings: Vec::new(),
            entries: Vec::new(),
        };
        for (key, value) in params {
            let key_index = owned.push_str(key.as_bytes())?;
            let zero = virLockManagerParamValue { ul: 0 };
            let (type_, value, string_value) = match value {
                RawParam::String(s) => {
                    let i = owned.push_str(s.as_bytes())?;
                    (
                        abi::VIR_LOCK_MANAGER_PARAM_TYPE_STRING,
                        virLockManagerParamValue { ul: i as u64 },
                        true,
                    )
                }
                RawParam::CString(Some(s)) => {
                    let i = owned.push_str(s.as_bytes())?;
                    (
                        abi::VIR_LOCK_MANAGER_PARAM_TYPE_CSTRING,
                        virLockManagerParamValue { ul: i as u64 },
                        true,
                    )
                }
                RawParam::CString(None) => (abi::VIR_LOCK_MANAGER_PARAM_TYPE_CSTRING, zero, false),
                RawParam::UInt(v) => (
                    abi::VIR_LOCK_MANAGER_PARAM_TYPE_UINT,
                    virLockManagerParamValue { ui: *v },
                    false,
                ),
                RawParam::ULong(v) => (
                    abi::VIR_LOCK_MANAGER_PARAM_TYPE_ULONG,
                    virLockManagerParamValue { ul: *v },
                    false,
                ),
                RawParam::Uuid(bytes) => (
                    abi::VIR_LOCK_MANAGER_PARAM_TYPE_UUID,
                    virLockManagerParamValue { uuid: *bytes },
                    false,
                ),
                RawParam::UnknownType(t) => (*t, zero, false),
            };
            owned.entries.push((key_index, type_, value, string_value));
        }
        Ok(owned)
    }

    fn push_str(&mut self, bytes: &[u8]) -> HostResult<usize> {
        let s = CString::new(bytes)
            .map_err(|_| HostError::Host("param string has a NUL byte".into()))?;
        self.strings.push(s);
        Ok(self.strings.len() - 1)
    }

    /// The C array; string members point into `self.strings`, so keep `self` alive meanwhile.
    #[allow(unsafe_code)]
    pub(super) fn raw(&self) -> Vec<virLockManagerParam> {
        self.entries
            .iter()
            .map(|&(key, type_, value, string_value)| {
                let value = if string_value {
                    // SAFETY: for string entries `ul` holds the index stored by `new`.
                    let index = usize::try_from(unsafe { value.ul }).unwrap_or(usize::MAX);
                    virLockManagerParamValue {
                        cstr: self.strings[index].as_ptr(),
                    }
                } else {
                    value
                };
                virLockManagerParam {
                    type_,
                    key: self.strings[key].as_ptr(),
                    value,
                }
            })
            .collect()
    }
}

/// A state string a plugin allocated for the host to `free()`.
#[derive(Debug)]
pub struct ForeignString {
    ptr: *mut c_char,
}

impl ForeignString {
    /// The text (lossy for non-UTF-8).
    #[allow(unsafe_code)]
    pub fn text(&self) -> String {
        // SAFETY: a non-NULL NUL-terminated string from the plugin, alive until drop.
        unsafe { CStr::from_ptr(self.ptr) }
            .to_string_lossy()
            .into_owned()
    }

    /// The raw pointer, e.g. to prove in a child process that `free()` accepts it.
    pub fn as_ptr(&self) -> *mut c_char {
        self.ptr
    }
}

impl Drop for ForeignString {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the plugin contract: state strings come from the C allocator, and libvirt
        // frees them with free(); we own this one.
        unsafe { libc::free(self.ptr.cast::<c_void>()) };
    }
}

/// One lock manager context (New … Free).
#[derive(Debug)]
pub struct Manager<'p> {
    pub(super) plugin: &'p Plugin,
    pub(super) raw: Box<virLockManager>,
}

impl Manager<'_> {
    /// `drvAddResource` for a typed resource.
    pub fn add_resource(&mut self, resource: &Resource) -> HostResult<()> {
        match resource {
            Resource::Disk { path, access } => self.add_resource_raw(
                abi::VIR_LOCK_MANAGER_RESOURCE_TYPE_DISK,
                path.as_os_str().as_bytes(),
                &[],
                access.to_flags(),
            ),
            Resource::Lease { lease, access } => {
                let mut params = Vec::new();
                if let Some(path) = &lease.path {
                    params.push((
                        "path".to_owned(),
                        RawParam::String(path.to_string_lossy().into_owned()),
                    ));
                }
                if let Some(offset) = lease.offset {
                    params.push(("offset".to_owned(), RawParam::ULong(offset)));
                }
                if let Some(lockspace) = &lease.lockspace {
                    params.push(("lockspace".to_owned(), RawParam::String(lockspace.clone())));
                }
                self.add_resource_raw(
                    abi::VIR_LOCK_MANAGER_RESOURCE_TYPE_LEASE,
                    lease.key.as_bytes(),
                    &params,
                    access.to_flags(),
                )
            }
        }
    }

    /// `drvAddResource` with raw values.
    #[allow(unsafe_code)]
    pub fn add_resource_raw(
        &mut self,
        resource_type: u32,
        name: &[u8],
        params: &[(String, RawParam)],
        flags: u32,
    ) -> HostResult<()> {
        let add = self
            .plugin
            .table()
            .drvAddResource
            .ok_or(HostError::NullCallback {
                slot: "drvAddResource",
            })?;
        let name = CString::new(name)
            .map_err(|_| HostError::Host("resource name has a NUL byte".into()))?;
        let owned = OwnedParams::new(params)?;
        let mut raw_params = owned.raw();
        let params_ptr = if raw_params.is_empty() {
            std::ptr::null_mut()
        } else {
            raw_params.as_mut_ptr()
        };
        capture::clear();
        // SAFETY: a manager from a successful New, a valid name and params for the call.
        let rc = unsafe {
            add(
                &mut *self.raw,
                resource_type,
                name.as_ptr(),
                raw_params.len(),
                params_ptr,
                flags,
            )
        };
        check("drvAddResource", rc)
    }

    /// `drvAcquire(state, flags, action, want_fd ? &fd : NULL)`; returns the fd the plugin
    /// handed back for QEMU, if any.
    pub fn acquire(
        &mut self,
        state: Option<&str>,
        flags: AcquireFlags,
        action: LockFailureAction,
        want_fd: bool,
    ) -> HostResult<Option<OwnedFd>> {
        self.acquire_raw(state, flags.to_raw(), action.to_raw(), want_fd)
    }

    /// `drvAcquire` with raw flags and action.
    #[allow(unsafe_code)]
    pub fn acquire_raw(
        &mut self,
        state: Option<&str>,
        flags: u32,
        action: i32,
        want_fd: bool,
    ) -> HostResult<Option<OwnedFd>> {
        let acquire = self
            .plugin
            .table()
            .drvAcquire
            .ok_or(HostError::NullCallback { slot: "drvAcquire" })?;
        let state = state
            .map(CString::new)
            .transpose()
            .map_err(|_| HostError::Host("state string has a NUL byte".into()))?;
        let state_ptr = state.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        let mut fd: c_int = -1;
        let fd_ptr: *mut c_int = if want_fd {
            &mut fd
        } else {
            std::ptr::null_mut()
        };
        capture::clear();
        // SAFETY: a manager from a successful New; state NULL or valid; fd NULL or pointing at -1.
        let rc = unsafe { acquire(&mut *self.raw, state_ptr, flags as c_uint, action, fd_ptr) };
        check("drvAcquire", rc)?;
        // SAFETY: a non-negative fd the plugin handed over to us.
        Ok((fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// `drvRelease(want_state ? &state : NULL, 0)`, returning the string as allocated.
    #[allow(unsafe_code)]
    pub fn release_raw(&mut self, want_state: bool) -> HostResult<Option<ForeignString>> {
        let release = self
            .plugin
            .table()
            .drvRelease
            .ok_or(HostError::NullCallback { slot: "drvRelease" })?;
        let mut state: *mut c_char = std::ptr::null_mut();
        let state_ptr: *mut *mut c_char = if want_state {
            &mut state
        } else {
            std::ptr::null_mut()
        };
        capture::clear();
        // SAFETY: a manager from a successful New; state NULL or writable.
        let rc = unsafe { release(&mut *self.raw, state_ptr, 0) };
        let result = check("drvRelease", rc);
        let owned = (!state.is_null()).then_some(ForeignString { ptr: state });
        result.map(|()| owned)
    }

    /// `drvRelease`, returning the state text.
    pub fn release(&mut self, want_state: bool) -> HostResult<Option<String>> {
        Ok(self.release_raw(want_state)?.map(|s| s.text()))
    }

    /// `drvInquire(&state, 0)`, returning the string as allocated.
    #[allow(unsafe_code)]
    pub fn inquire_raw(&mut self) -> HostResult<Option<ForeignString>> {
        let inquire = self
            .plugin
            .table()
            .drvInquire
            .ok_or(HostError::NullCallback { slot: "drvInquire" })?;
        let mut state: *mut c_char = std::ptr::null_mut();
        capture::clear();
        // SAFETY: a manager from a successful New and a writable state pointer.
        let rc = unsafe { inquire(&mut *self.raw, &mut state, 0) };
        let result = check("drvInquire", rc);
        let owned = (!state.is_null()).then_some(ForeignString { ptr: state });
        result.map(|()| owned)
    }

    /// `drvInquire`, returning the state text.
    pub fn inquire(&mut self) -> HostResult<Option<String>> {
        Ok(self.inquire_raw()?.map(|s| s.text()))
    }
}

impl Drop for Manager<'_> {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        if let Some(free) = self.plugin.table().drvFree {
            // SAFETY: a manager on which New succeeded, freed exactly once.
            unsafe { free(&mut *self.raw) };
        }
    }
}
