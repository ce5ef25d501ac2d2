//! The host side: load any lock manager plugin exactly as libvirt 11.x does and call it.
//!
//! - [`Plugin::open`] follows `lock_manager.c`: `access(R_OK)`, `dlopen(RTLD_NOW | RTLD_LOCAL)`,
//!   `dlsym("virLockDriverImpl")`; [`Plugin::init`] / [`Plugin::deinit`] keep libvirt's refcount
//!   and `dlclose` only when the last `drvDeinit` returned ≥ 0.
//! - [`Manager`] is one short-lived context: New → AddResource… → an operation → Free, and no
//!   Free after a failed New.
//! - [`start_owner`] replays libvirt's pre-exec child in a real `fork()`ed process, which then
//!   `exec`s a stand-in for QEMU that keeps the returned fd, as QEMU would.
//!
//! Errors a plugin reports are captured through the host binary's exported
//! `virReportErrorHelper` (see `csrc/error_capture.c`) and, for plugins linked to libvirt, through
//! libvirt's own `virGetLastError`.
//!
//! One module per responsibility: `load` (dlopen, symbol lookup, Init/Deinit), `capture` (the
//! errors a plugin reports), `manager` (one New … Free context), `owner` (the forked child) and
//! `error` (what a host call returns). The crate denies `unsafe_code`; `capture` is FFI through
//! and through and allows it, elsewhere it is allowed only on the functions that call the plugin
//! or libc, and every `unsafe` block says why it is sound (`// SAFETY:`).

mod capture;
mod error;
mod load;
mod manager;
mod owner;

pub use error::{HostError, HostResult, ReportedError};
pub use load::{DEFAULT_PLUGIN_DIR, Plugin, TableInfo, locate};
pub use manager::{ForeignString, Manager, RawParam};
pub use owner::{ForkedOwner, QEMU_STANDIN, RegisterOutcome, start_owner};
