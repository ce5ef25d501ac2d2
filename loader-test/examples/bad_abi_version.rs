//! Broken plugin: built for a (hypothetical) lock driver ABI 2.0.0; its table says so and its
//! drvInit refuses libvirt's 1000000.

mod common;

use common::{Init, WithInit};
use lockmgr::abi::virLockDriver;
use lockmgr::export::{DriverHolder, ExportedDriver, driver_table};
use lockmgr::{Error, InitArgs, Result};

/// Refuses every version but 2000000.
#[derive(Debug)]
struct AbiTwo;

impl Init for AbiTwo {
    fn init(args: &InitArgs) -> Result<()> {
        if args.version != 2_000_000 {
            return Err(Error::config(format!(
                "lock driver ABI version {} is not supported: this plugin needs 2000000",
                args.version
            )));
        }
        Ok(())
    }
}

static HOLDER: DriverHolder<WithInit<AbiTwo>> = DriverHolder::new();

impl ExportedDriver for WithInit<AbiTwo> {
    fn holder() -> &'static DriverHolder<Self> {
        &HOLDER
    }
}

/// A table declaring version 2000000.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static virLockDriverImpl: virLockDriver = virLockDriver {
    version: 2_000_000,
    ..driver_table::<WithInit<AbiTwo>>()
};
