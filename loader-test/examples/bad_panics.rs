//! Broken plugin: its Acquire panics. The framework's guard must turn that into -1 with an
//! error, never an abort of the host.

use lockmgr::{AcquireRequest, Acquired, Domain, InitArgs, LockDriver, NewFlags, Resource, Result};

/// Panics in Acquire.
#[derive(Debug)]
pub struct Panicky;

impl LockDriver for Panicky {
    type Manager = Vec<Resource>;

    fn init(_args: &InitArgs) -> Result<Self> {
        Ok(Panicky)
    }

    fn new_manager(&self, _domain: Domain, _flags: NewFlags) -> Result<Vec<Resource>> {
        Ok(Vec::new())
    }

    fn add_resource(&self, manager: &mut Vec<Resource>, resource: Resource) -> Result<()> {
        manager.push(resource);
        Ok(())
    }

    fn acquire(
        &self,
        manager: &mut Vec<Resource>,
        _request: &AcquireRequest<'_>,
    ) -> Result<Acquired> {
        let index = manager.len() + 1;
        panic!("simulated bug: resource index {index} out of range");
    }

    fn release(&self, _manager: &mut Vec<Resource>, _wants_state: bool) -> Result<Option<String>> {
        Ok(None)
    }
}

lockmgr::export_lock_driver!(Panicky);
