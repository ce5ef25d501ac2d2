//! # lockmgr — libvirt lock manager plugins in Rust
//!
//! libvirt `dlopen`s a lock manager plugin (`lock_manager = "NAME"` in `/etc/libvirt/qemu.conf`)
//! and calls the callbacks of its one exported table, `virLockDriverImpl` (`lock_driver.h`).
//! This crate is that contract:
//!
//! - [`abi`]: the `#[repr(C)]` types, pinned by compile-time layout assertions;
//! - [`LockDriver`]: the safe trait a plugin implements, with typed [`Domain`]s and
//!   [`Resource`]s;
//! - [`export_lock_driver!`]: emits the table in the plugin crate, every callback behind one
//!   guard (pointer checks, `catch_unwind`, errors reported into libvirt, -1);
//! - `host` (feature `host`): loads any plugin the way libvirt does, for tests and loader-test.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod abi;
mod driver;
mod error;
#[doc(hidden)]
pub mod export;
#[cfg(feature = "host")]
pub mod host;
/// The lock daemon protocol (crate `lockmgr-proto`), for plugins that talk to lockmgrd.
#[cfg(feature = "client")]
pub use lockmgr_proto as proto;
pub mod raw;
mod report;
mod types;

pub use driver::LockDriver;
pub use error::{Error, ErrorCode, Result};
pub use types::{
    Access, AcquireFlags, AcquireRequest, Acquired, Domain, InitArgs, Lease, LockFailureAction,
    NewFlags, Resource, Uuid, check_state_string,
};
