//! Broken plugin: built for a (hypothetical) lock driver ABI 2.0.0; its table says so and its
//! drvInit refuses libvirt's 1000000.

mod common;

use common::Plain;
use lockmgr::abi::virLockDriver;
use lockmgr::export::{DriverHolder, ExportedDriver, driver_table};
use lockmgr::{
    AcquireRequest, Acquired, Domain, Error, InitArgs, LockDriver, NewFlags, Resource, Result,
};

/// Refuses every version but 2000000.
#[derive(Debug)]
struct AbiTwo;

impl LockDriver for AbiTwo {
    type Manager = ();

    fn init(args: &InitArgs) -> Result<Self> {
        if args.version != 2_000_000 {
            return Err(Error::config(format!(
                "lock driver ABI version {} is not supported: this plugin needs 2000000",
                args.version
            )));
        }
        Plain::init(args).map(|_| AbiTwo)
    }

    fn new_manager(&self, _domain: Domain, _flags: NewFlags) -> Result<()> {
        Ok(())
    }

    fn add_resource(&self, _manager: &mut (), _resource: Resource) -> Result<()> {
        Ok(())
    }

    fn acquire(&self, _manager: &mut (), _request: &AcquireRequest<'_>) -> Result<Acquired> {
        Ok(Acquired::default())
    }

    fn release(&self, _manager: &mut (), _wants_state: bool) -> Result<Option<String>> {
        Ok(None)
    }
}

static HOLDER: DriverHolder<AbiTwo> = DriverHolder::new();

impl ExportedDriver for AbiTwo {
    fn holder() -> &'static DriverHolder<Self> {
        &HOLDER
    }
}

/// A table declaring version 2000000.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static virLockDriverImpl: virLockDriver = virLockDriver {
    version: 2_000_000,
    ..driver_table::<AbiTwo>()
};
