//! Broken plugin: exports its table under the wrong name, so libvirt's dlsym fails.

mod common;

use common::Plain;
use lockmgr::export::{DriverHolder, ExportedDriver, driver_table};

static HOLDER: DriverHolder<Plain> = DriverHolder::new();

impl ExportedDriver for Plain {
    fn holder() -> &'static DriverHolder<Self> {
        &HOLDER
    }
}

/// Misspelt: libvirt looks up `virLockDriverImpl`.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static virLockDriverImplementation: lockmgr::abi::virLockDriver = driver_table::<Plain>();
