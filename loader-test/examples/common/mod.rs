//! A do-nothing driver the broken example plugins start from.

use lockmgr::{AcquireRequest, Acquired, Domain, InitArgs, LockDriver, NewFlags, Resource, Result};

/// Accepts everything, like nop; each example breaks one thing around it.
#[derive(Debug)]
pub struct Plain;

impl LockDriver for Plain {
    type Manager = ();

    fn init(_args: &InitArgs) -> Result<Self> {
        Ok(Plain)
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
