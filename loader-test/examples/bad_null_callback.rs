//! Broken plugin: leaves the drvInquire slot NULL (libvirt: "Missing 'drvInquire' field").

mod common;

use common::Plain;
use lockmgr::abi::virLockDriver;
use lockmgr::export::driver_table;

/// The table, one slot short.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static virLockDriverImpl: virLockDriver = virLockDriver {
    drvInquire: None,
    ..driver_table::<Plain>()
};
