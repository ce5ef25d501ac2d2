//! Reporting errors into libvirt through its private `virReportErrorHelper`.
//!
//! The plugin never links libvirt: the helper is looked up at run time with
//! `dlsym(RTLD_DEFAULT, ..)`, which finds it in libvirtd, in libvirt's pre-exec child and in
//! lockmgr's loader-test (which exports one of its own). Without it, errors go to stderr.
#![allow(unsafe_code)]

use std::ffi::{CString, c_char, c_int};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::abi::VIR_FROM_LOCKING;
use crate::error::Error;

type ReportErrorHelper = unsafe extern "C" fn(
    domcode: c_int,
    errcode: c_int,
    filename: *const c_char,
    funcname: *const c_char,
    linenr: usize,
    fmt: *const c_char,
    ...
);

const UNRESOLVED: usize = 0;
const ABSENT: usize = 1;

/// The helper's address, or [`UNRESOLVED`] / [`ABSENT`]. An atomic, not a lock: the pre-exec
/// child is a fork of a multi-threaded daemon and must never wait on a lock another thread held.
static HELPER: AtomicUsize = AtomicUsize::new(UNRESOLVED);

/// Looks the helper up now (called from drvInit, before libvirt forks any child).
pub(crate) fn resolve() {
    let _ = helper();
}

fn helper() -> Option<ReportErrorHelper> {
    let mut addr = HELPER.load(Ordering::Acquire);
    if addr == UNRESOLVED {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name has no other preconditions.
        let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"virReportErrorHelper".as_ptr()) };
        addr = if sym.is_null() { ABSENT } else { sym as usize };
        HELPER.store(addr, Ordering::Release);
    }
    if addr == ABSENT {
        return None;
    }
    // SAFETY: `addr` came from dlsym of `virReportErrorHelper`, whose C signature is
    // `void (int, int, const char *, const char *, size_t, const char *, ...)` (virerror.h).
    Some(unsafe { std::mem::transmute::<usize, ReportErrorHelper>(addr) })
}

/// Reports `err`, raised in callback `op`, into libvirt (or stderr without libvirt).
pub(crate) fn report(op: &str, err: &Error) {
    let message = CString::new(err.message().replace('\0', "\\0")).unwrap_or_default();
    let funcname = CString::new(op).unwrap_or_default();
    match helper() {
        // SAFETY: all pointers are valid NUL-terminated strings for the call, and the format is
        // the constant "%s" with exactly one string argument, as libvirt's own plugins do.
        Some(helper) => unsafe {
            helper(
                VIR_FROM_LOCKING,
                err.code().as_raw(),
                c"lockmgr".as_ptr(),
                funcname.as_ptr(),
                0,
                c"%s".as_ptr(),
                message.as_ptr(),
            );
        },
        None => eprintln!("lockmgr: {op}: {}", err.message()),
    }
}
