//! Broken plugin: drvInit fails (as a plugin whose config cannot be read would).

use lockmgr::{
    AcquireRequest, Acquired, Domain, Error, InitArgs, LockDriver, NewFlags, Resource, Result,
};

/// Fails to initialise.
#[derive(Debug)]
pub struct Unreadable;

impl LockDriver for Unreadable {
    type Manager = ();

    fn init(args: &InitArgs) -> Result<Self> {
        let path = args
            .config_path
            .as_deref()
            .map_or("(none)".into(), |p| p.display().to_string());
        Err(Error::config(format!(
            "cannot read {path}: simulated permission denied"
        )))
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

lockmgr::export_lock_driver!(Unreadable);
