//! Error capture: what a plugin reports through the host binary's exported
//! `virReportErrorHelper` (`csrc/error_capture.c`) and, for plugins linked to libvirt, through
//! libvirt's own `virGetLastError`.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::host::error::ReportedError;

unsafe extern "C" {
    fn lockmgr_host_take_error(
        domain: *mut c_int,
        code: *mut c_int,
        buf: *mut c_char,
        len: usize,
    ) -> c_int;
}

/// libvirt's `virError`, up to the fields read here (virterror.h).
#[repr(C)]
struct VirErrorHead {
    code: c_int,
    domain: c_int,
    message: *const c_char,
}

type GetLastError = unsafe extern "C" fn() -> *const VirErrorHead;
type ResetLastError = unsafe extern "C" fn();

/// `virGetLastError` / `virResetLastError` of libvirt.so.0, as addresses (0: not loaded).
/// Atomics rather than a lock: the forked owner child reads them too.
static LIBVIRT_GET: AtomicUsize = AtomicUsize::new(0);
static LIBVIRT_RESET: AtomicUsize = AtomicUsize::new(0);

/// Looks libvirt.so.0 up once a plugin that links it is loaded (lockd.so, sanlock.so):
/// called after each dlopen, not per call (a failed RTLD_NOLOAD lookup searches the library
/// path, ~50 µs).
pub(super) fn refresh_libvirt() {
    if LIBVIRT_GET.load(Ordering::Acquire) != 0 {
        return;
    }
    // SAFETY: RTLD_NOLOAD only returns a handle when the library is already loaded; the
    // handle is leaked on purpose (a refcount on a library we never unload).
    let handle = unsafe {
        libc::dlopen(
            c"libvirt.so.0".as_ptr(),
            libc::RTLD_NOLOAD | libc::RTLD_LAZY,
        )
    };
    if handle.is_null() {
        return;
    }
    // SAFETY: valid handle and NUL-terminated names.
    let (get, reset, init) = unsafe {
        (
            libc::dlsym(handle, c"virGetLastError".as_ptr()),
            libc::dlsym(handle, c"virResetLastError".as_ptr()),
            libc::dlsym(handle, c"virInitialize".as_ptr()),
        )
    };
    if get.is_null() || reset.is_null() {
        return;
    }
    // libvirtd calls virInitialize() before loading any plugin; its error storage is a
    // thread-local that does not exist until then.
    if !init.is_null() {
        // SAFETY: the public `int virInitialize(void)`, idempotent.
        let init =
            unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> c_int>(init) };
        // SAFETY: no arguments; safe to call at any time.
        unsafe { init() };
    }
    LIBVIRT_RESET.store(reset as usize, Ordering::Release);
    LIBVIRT_GET.store(get as usize, Ordering::Release);
}

fn libvirt_error_fns() -> Option<(GetLastError, ResetLastError)> {
    let (get, reset) = (
        LIBVIRT_GET.load(Ordering::Acquire),
        LIBVIRT_RESET.load(Ordering::Acquire),
    );
    if get == 0 || reset == 0 {
        return None;
    }
    // SAFETY: addresses stored by refresh_libvirt from dlsym of the public libvirt API:
    // `virErrorPtr virGetLastError(void)` and `void virResetLastError(void)`.
    unsafe {
        Some((
            std::mem::transmute::<usize, GetLastError>(get),
            std::mem::transmute::<usize, ResetLastError>(reset),
        ))
    }
}

/// Clears any error left from earlier calls on this thread.
pub(super) fn clear() {
    let _ = take();
}

/// Takes this thread's last reported error, from our stand-in first, then libvirt's.
pub(super) fn take() -> Option<ReportedError> {
    let mut buf = [0 as c_char; 2048];
    let (mut domain, mut code) = (0, 0);
    // SAFETY: valid out-pointers and a buffer of the stated length.
    let ours =
        unsafe { lockmgr_host_take_error(&mut domain, &mut code, buf.as_mut_ptr(), buf.len()) };
    let libvirt = libvirt_error_fns().and_then(|(get, reset)| {
        // SAFETY: public libvirt API; the returned pointer is valid until reset.
        let head = unsafe { get() };
        // SAFETY: NULL or a valid virError.
        let found = unsafe { head.as_ref() }
            .filter(|err| err.code != 0)
            .map(|err| ReportedError {
                domain: err.domain,
                code: err.code,
                message: if err.message.is_null() {
                    String::new()
                } else {
                    // SAFETY: libvirt's message is a NUL-terminated string.
                    unsafe { CStr::from_ptr(err.message) }
                        .to_string_lossy()
                        .into_owned()
                },
            });
        // SAFETY: public libvirt API.
        unsafe { reset() };
        found
    });
    if ours == 1 {
        // SAFETY: the C side NUL-terminated the buffer.
        let message = unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        return Some(ReportedError {
            domain,
            code,
            message,
        });
    }
    libvirt
}
