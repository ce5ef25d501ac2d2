//! Broken plugin: exports its table under the wrong name, so libvirt's dlsym fails.

mod common;

use common::Plain;
use lockmgr::export::driver_table;

/// Misspelt: libvirt looks up `virLockDriverImpl`.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static virLockDriverImplementation: lockmgr::abi::virLockDriver = driver_table::<Plain>();
