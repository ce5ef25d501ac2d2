//! The `extern "C"` side of a plugin: one guard around every callback, the ref-counted driver
//! holder, and the table that [`crate::export_lock_driver!`] exports.
#![allow(unsafe_code)]

use std::any::Any;
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::abi::{self, virLockDriver, virLockManager, virLockManagerParam};
use crate::driver::LockDriver;
use crate::error::{Error, Result};
use crate::raw;
use crate::report;
use crate::types::{
    Access, AcquireFlags, AcquireRequest, InitArgs, LockFailureAction, NewFlags, Resource,
    check_state_string,
};

/// Holds the one initialised driver of a plugin and its `drvInit` reference count.
#[derive(Debug)]
pub struct DriverHolder<D> {
    /// Read lock-free by every callback; written only by init/deinit under `refs`.
    driver: AtomicPtr<D>,
    refs: Mutex<usize>,
}

impl<D> DriverHolder<D> {
    /// An empty holder, for the `static` the export macro declares.
    pub const fn new() -> Self {
        DriverHolder {
            driver: AtomicPtr::new(std::ptr::null_mut()),
            refs: Mutex::new(0),
        }
    }
}

impl<D> Default for DriverHolder<D> {
    fn default() -> Self {
        Self::new()
    }
}

/// Implemented by [`crate::export_lock_driver!`]: ties a driver type to its holder.
pub trait ExportedDriver: LockDriver {
    /// The holder declared in the plugin crate.
    fn holder() -> &'static DriverHolder<Self>;
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// Runs one callback body: catches panics, reports errors into libvirt, maps to 0 / -1.
fn guard(op: &'static str, body: impl FnOnce() -> Result<()>) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => 0,
        Ok(Err(err)) => {
            report::report(op, &err);
            -1
        }
        Err(payload) => {
            let err = Error::internal(format!("panic in {op}: {}", panic_message(&*payload)));
            report::report(op, &err);
            -1
        }
    }
}

fn driver<D: ExportedDriver>() -> Result<&'static D> {
    let ptr = D::holder().driver.load(Ordering::Acquire);
    // SAFETY: a non-NULL pointer was made by Box::into_raw in init and stays valid until the
    // last deinit, which libvirt calls only once no lock manager context is left.
    unsafe { ptr.as_ref() }.ok_or_else(|| Error::internal("lock driver used before drvInit"))
}

struct ManagerBox<D: LockDriver> {
    manager: D::Manager,
}

/// # Safety
/// `man` is NULL or a `virLockManager` libvirt allocated and is not freeing concurrently.
unsafe fn manager_mut<'a, D: LockDriver>(man: *mut virLockManager) -> Result<&'a mut D::Manager> {
    // SAFETY: NULL or valid per the contract.
    let man = unsafe { man.as_mut() }.ok_or_else(|| Error::invalid_arg("lock manager is NULL"))?;
    let private = man.privateData.cast::<ManagerBox<D>>();
    // SAFETY: privateData is NULL or the ManagerBox<D> that drv_new stored there.
    let boxed = unsafe { private.as_mut() }
        .ok_or_else(|| Error::invalid_arg("lock manager has no private data (New not called?)"))?;
    Ok(&mut boxed.manager)
}

fn check_flags(op: &str, flags: c_uint, known: c_uint) -> Result<()> {
    if flags & !known != 0 {
        return Err(Error::invalid_arg(format!(
            "{op}: unsupported flags {:#x}",
            flags & !known
        )));
    }
    Ok(())
}

/// `drvInit`.
///
/// # Safety
/// `config_file` is NULL or a NUL-terminated string valid for the call.
pub unsafe extern "C" fn drv_init<D: ExportedDriver>(
    version: c_uint,
    config_file: *const c_char,
    flags: c_uint,
) -> c_int {
    guard("drvInit", || {
        report::resolve();
        if version / 1_000_000 != abi::VIR_LOCK_MANAGER_VERSION_MAJOR {
            return Err(Error::config(format!(
                "lock driver ABI version {version} is not supported (this plugin implements {})",
                abi::VIR_LOCK_MANAGER_VERSION
            )));
        }
        check_flags("drvInit", flags, 0)?;
        // SAFETY: NULL or valid per the contract.
        let config_path = unsafe { raw::copy_cstr(config_file) }
            .map(|bytes| PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)));
        let holder = D::holder();
        let mut refs = holder
            .refs
            .lock()
            .map_err(|_| Error::internal("driver lock poisoned"))?;
        if *refs == 0 {
            let driver = D::init(&InitArgs {
                version,
                config_path,
            })?;
            holder
                .driver
                .store(Box::into_raw(Box::new(driver)), Ordering::Release);
        }
        *refs += 1;
        Ok(())
    })
}

/// `drvDeinit`.
///
/// # Safety
/// Called by libvirt at the last unref of the plugin, when no context is left.
pub unsafe extern "C" fn drv_deinit<D: ExportedDriver>() -> c_int {
    guard("drvDeinit", || {
        let holder = D::holder();
        let mut refs = holder
            .refs
            .lock()
            .map_err(|_| Error::internal("driver lock poisoned"))?;
        match *refs {
            0 => Err(Error::internal(
                "drvDeinit called without a matching drvInit",
            )),
            1 => {
                *refs = 0;
                let ptr = holder.driver.swap(std::ptr::null_mut(), Ordering::AcqRel);
                if ptr.is_null() {
                    return Ok(());
                }
                // SAFETY: made by Box::into_raw in drv_init; swapped out, so freed exactly once.
                let driver = unsafe { Box::from_raw(ptr) };
                driver.deinit()
            }
            _ => {
                *refs -= 1;
                Ok(())
            }
        }
    })
}

/// `drvNew`.
///
/// # Safety
/// libvirt's contract: `man` zeroed and owned by libvirt; `params` holds `nparams` params.
pub unsafe extern "C" fn drv_new<D: ExportedDriver>(
    man: *mut virLockManager,
    object_type: c_uint,
    nparams: usize,
    params: *mut virLockManagerParam,
    flags: c_uint,
) -> c_int {
    guard("drvNew", || {
        // SAFETY: NULL or valid per the contract.
        let man =
            unsafe { man.as_mut() }.ok_or_else(|| Error::invalid_arg("lock manager is NULL"))?;
        if !man.privateData.is_null() {
            return Err(Error::invalid_arg("lock manager already initialised"));
        }
        if object_type != abi::VIR_LOCK_MANAGER_OBJECT_TYPE_DOMAIN {
            return Err(Error::invalid_arg(format!(
                "unknown lock manager object type {object_type}"
            )));
        }
        check_flags("drvNew", flags, abi::VIR_LOCK_MANAGER_NEW_STARTED)?;
        // SAFETY: `params` holds `nparams` params valid for the call (libvirt's contract).
        let params = unsafe { raw::decode_params(nparams, params) }?;
        let domain = raw::domain_from_params(&params)?;
        let new_flags = NewFlags {
            started: flags & abi::VIR_LOCK_MANAGER_NEW_STARTED != 0,
        };
        let manager = driver::<D>()?.new_manager(domain, new_flags)?;
        // Only set privateData on success: libvirt never calls Free after a failed New.
        man.privateData = Box::into_raw(Box::new(ManagerBox::<D> { manager })).cast::<c_void>();
        Ok(())
    })
}

/// `drvFree`.
///
/// # Safety
/// `man` is NULL or a context on which `drv_new` succeeded.
pub unsafe extern "C" fn drv_free<D: ExportedDriver>(man: *mut virLockManager) {
    guard("drvFree", || {
        // SAFETY: NULL or valid per the contract.
        let Some(man) = (unsafe { man.as_mut() }) else {
            return Ok(());
        };
        let private = std::mem::replace(&mut man.privateData, std::ptr::null_mut());
        if !private.is_null() {
            // SAFETY: made by Box::into_raw in drv_new and cleared above, so freed once.
            drop(unsafe { Box::from_raw(private.cast::<ManagerBox<D>>()) });
        }
        Ok(())
    });
}

/// `drvAddResource`.
///
/// # Safety
/// libvirt's contract: `man` from a successful New; `name` and `params` valid for the call.
pub unsafe extern "C" fn drv_add_resource<D: ExportedDriver>(
    man: *mut virLockManager,
    resource_type: c_uint,
    name: *const c_char,
    nparams: usize,
    params: *mut virLockManagerParam,
    flags: c_uint,
) -> c_int {
    guard("drvAddResource", || {
        // SAFETY: per the contract.
        let manager = unsafe { manager_mut::<D>(man) }?;
        // SAFETY: NULL or valid per the contract.
        let name = unsafe { raw::copy_cstr(name) }
            .ok_or_else(|| Error::invalid_arg("resource name is NULL"))?;
        if name.is_empty() {
            return Err(Error::invalid_arg("resource name is empty"));
        }
        let access = Access::from_flags(flags)?;
        // SAFETY: `params` holds `nparams` params valid for the call (libvirt's contract).
        let params = unsafe { raw::decode_params(nparams, params) }?;
        let resource = match resource_type {
            abi::VIR_LOCK_MANAGER_RESOURCE_TYPE_DISK => {
                let path = PathBuf::from(std::ffi::OsStr::from_bytes(&name));
                if !params.is_empty() {
                    return Err(Error::invalid_arg(format!(
                        "unexpected parameters for disk resource {}",
                        path.display()
                    )));
                }
                Resource::Disk { path, access }
            }
            abi::VIR_LOCK_MANAGER_RESOURCE_TYPE_LEASE => {
                let key = String::from_utf8(name)
                    .map_err(|_| Error::invalid_arg("lease key is not UTF-8"))?;
                Resource::Lease {
                    lease: raw::lease_from_params(key, &params)?,
                    access,
                }
            }
            other => return Err(Error::invalid_arg(format!("unknown resource type {other}"))),
        };
        driver::<D>()?.add_resource(manager, resource)
    })
}

/// `drvAcquire`.
///
/// # Safety
/// libvirt's contract: `man` from a successful New; `state` NULL or valid for the call; `fd`
/// NULL or writable.
pub unsafe extern "C" fn drv_acquire<D: ExportedDriver>(
    man: *mut virLockManager,
    state: *const c_char,
    flags: c_uint,
    action: c_int,
    fd: *mut c_int,
) -> c_int {
    guard("drvAcquire", || {
        // SAFETY: per the contract.
        let manager = unsafe { manager_mut::<D>(man) }?;
        let state = if state.is_null() {
            None
        } else {
            // SAFETY: non-NULL and NUL-terminated per the contract.
            let state = unsafe { CStr::from_ptr(state) };
            Some(
                state
                    .to_str()
                    .map_err(|_| Error::invalid_arg("state string is not UTF-8"))?,
            )
        };
        let request = AcquireRequest {
            state,
            flags: AcquireFlags::from_raw(flags)?,
            action: LockFailureAction::from_raw(action)?,
            wants_fd: !fd.is_null(),
        };
        let acquired = driver::<D>()?.acquire(manager, &request)?;
        if let (Some(owned), false) = (acquired.fd, fd.is_null()) {
            // SAFETY: `fd` is non-NULL and writable per the contract; the fd is handed over to
            // libvirt (and QEMU) and deliberately leaked from Rust's point of view.
            unsafe { *fd = owned.into_raw_fd() };
        }
        Ok(())
    })
}

/// Stores `value` in `*out` as a malloc'd string for libvirt to free.
///
/// # Safety
/// `out` is non-NULL and writable.
unsafe fn store_state(out: *mut *mut c_char, value: Option<String>) -> Result<()> {
    let ptr = match value {
        Some(text) => {
            check_state_string(&text)?;
            raw::malloc_string(&text)?
        }
        None => std::ptr::null_mut(),
    };
    // SAFETY: non-NULL and writable per the contract.
    unsafe { *out = ptr };
    Ok(())
}

/// `drvRelease`.
///
/// # Safety
/// libvirt's contract: `man` from a successful New; `state` NULL or writable.
pub unsafe extern "C" fn drv_release<D: ExportedDriver>(
    man: *mut virLockManager,
    state: *mut *mut c_char,
    flags: c_uint,
) -> c_int {
    guard("drvRelease", || {
        if !state.is_null() {
            // SAFETY: non-NULL and writable per the contract; NULL until we have a string.
            unsafe { *state = std::ptr::null_mut() };
        }
        check_flags("drvRelease", flags, 0)?;
        // SAFETY: per the contract.
        let manager = unsafe { manager_mut::<D>(man) }?;
        let new_state = driver::<D>()?.release(manager, !state.is_null())?;
        if state.is_null() {
            return Ok(());
        }
        // SAFETY: non-NULL and writable.
        unsafe { store_state(state, if D::USES_STATE { new_state } else { None }) }
    })
}

/// `drvInquire`.
///
/// # Safety
/// libvirt's contract: `man` from a successful New; `state` writable.
pub unsafe extern "C" fn drv_inquire<D: ExportedDriver>(
    man: *mut virLockManager,
    state: *mut *mut c_char,
    flags: c_uint,
) -> c_int {
    guard("drvInquire", || {
        if state.is_null() {
            return Err(Error::invalid_arg("drvInquire: state pointer is NULL"));
        }
        // SAFETY: non-NULL and writable per the contract.
        unsafe { *state = std::ptr::null_mut() };
        check_flags("drvInquire", flags, 0)?;
        // SAFETY: per the contract.
        let manager = unsafe { manager_mut::<D>(man) }?;
        let current = driver::<D>()?.inquire(manager)?;
        // SAFETY: non-NULL and writable.
        unsafe { store_state(state, if D::USES_STATE { current } else { None }) }
    })
}

/// The table for driver `D`, every slot filled.
pub const fn driver_table<D: ExportedDriver>() -> virLockDriver {
    virLockDriver {
        version: abi::VIR_LOCK_MANAGER_VERSION,
        flags: if D::USES_STATE {
            abi::VIR_LOCK_MANAGER_USES_STATE
        } else {
            0
        },
        drvInit: Some(drv_init::<D>),
        drvDeinit: Some(drv_deinit::<D>),
        drvNew: Some(drv_new::<D>),
        drvFree: Some(drv_free::<D>),
        drvAddResource: Some(drv_add_resource::<D>),
        drvAcquire: Some(drv_acquire::<D>),
        drvRelease: Some(drv_release::<D>),
        drvInquire: Some(drv_inquire::<D>),
    }
}

/// Exports `$driver` (a [`LockDriver`](crate::LockDriver)) as the plugin's `virLockDriverImpl`,
/// the only symbol libvirt looks up. Use it once, at the end of the plugin crate's `lib.rs`.
#[macro_export]
macro_rules! export_lock_driver {
    ($driver:ty) => {
        const _: () = {
            static HOLDER: $crate::export::DriverHolder<$driver> =
                $crate::export::DriverHolder::new();
            impl $crate::export::ExportedDriver for $driver {
                fn holder() -> &'static $crate::export::DriverHolder<Self> {
                    &HOLDER
                }
            }
        };

        /// The lock driver table libvirt loads with `dlsym(handle, "virLockDriverImpl")`.
        #[unsafe(no_mangle)]
        #[allow(non_upper_case_globals)]
        pub static virLockDriverImpl: $crate::abi::virLockDriver =
            $crate::export::driver_table::<$driver>();
    };
}
