//! Broken plugin: registers fine, then aborts the whole host process in libvirtd's Acquire (as a
//! plugin bug that kills libvirtd would). `matrix` must report the crash as a ✗ naming the step,
//! and go on with the next cell.

use lockmgr::{AcquireRequest, Acquired, Domain, InitArgs, LockDriver, NewFlags, Resource, Result};

/// Aborts in Acquire unless it is the pre-exec child's REGISTER_ONLY call.
#[derive(Debug)]
pub struct Aborts;

impl LockDriver for Aborts {
    type Manager = ();

    fn init(_args: &InitArgs) -> Result<Self> {
        Ok(Aborts)
    }

    fn new_manager(&self, _domain: Domain, _flags: NewFlags) -> Result<()> {
        Ok(())
    }

    fn add_resource(&self, _manager: &mut (), _resource: Resource) -> Result<()> {
        Ok(())
    }

    fn acquire(&self, _manager: &mut (), request: &AcquireRequest<'_>) -> Result<Acquired> {
        if request.flags.register_only {
            return Ok(Acquired::default());
        }
        std::process::abort();
    }

    fn release(&self, _manager: &mut (), _wants_state: bool) -> Result<Option<String>> {
        Ok(None)
    }
}

lockmgr::export_lock_driver!(Aborts);
