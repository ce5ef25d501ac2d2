//! The do-nothing driver. A module of its own so that loader-test's broken example plugins can
//! start from it (they include this file) without nop's exported table.

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
