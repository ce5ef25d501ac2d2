//! `nop.so`: accepts everything and locks nothing, like libvirt's built-in `nop` driver.
//!
//! libvirt never loads a file called `nop.so` (the name selects its built-in driver), so this
//! plugin exists for loader-test: it is the floor every benchmark and scenario is compared to.
#![forbid(unsafe_code)]

use lockmgr::{AcquireRequest, Acquired, Domain, InitArgs, LockDriver, NewFlags, Resource, Result};

/// The do-nothing driver.
#[derive(Debug)]
pub struct NopDriver;

impl LockDriver for NopDriver {
    type Manager = ();

    fn init(_args: &InitArgs) -> Result<Self> {
        Ok(NopDriver)
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

lockmgr::export_lock_driver!(NopDriver);
