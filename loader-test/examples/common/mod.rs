//! The do-nothing driver the broken example plugins start from: nop's own, compiled into each
//! example without nop's exported table (each example exports its own, or breaks it), and the
//! same driver with another drvInit.
#![allow(dead_code)] // not every example uses every part

use std::marker::PhantomData;

use lockmgr::export::{DriverHolder, ExportedDriver};
use lockmgr::{AcquireRequest, Acquired, Domain, InitArgs, LockDriver, NewFlags, Resource, Result};

#[path = "../../../plugins/nop/src/driver.rs"]
mod nop;

/// Accepts everything, like nop; each example breaks one thing around it.
pub use nop::NopDriver as Plain;

static HOLDER: DriverHolder<Plain> = DriverHolder::new();

/// For the examples that export a table of `Plain` made by hand (misnamed, or a slot short).
impl ExportedDriver for Plain {
    fn holder() -> &'static DriverHolder<Self> {
        &HOLDER
    }
}

/// The drvInit of an example that breaks only that.
pub trait Init: Send + Sync + 'static {
    /// libvirt's drvInit: `Ok` starts the driver.
    fn init(args: &InitArgs) -> Result<()>;
}

/// `Plain` with the drvInit of `I`.
#[derive(Debug)]
pub struct WithInit<I>(PhantomData<I>);

impl<I: Init> LockDriver for WithInit<I> {
    type Manager = ();

    fn init(args: &InitArgs) -> Result<Self> {
        I::init(args).map(|()| WithInit(PhantomData))
    }

    fn new_manager(&self, domain: Domain, flags: NewFlags) -> Result<()> {
        Plain.new_manager(domain, flags)
    }

    fn add_resource(&self, manager: &mut (), resource: Resource) -> Result<()> {
        Plain.add_resource(manager, resource)
    }

    fn acquire(&self, manager: &mut (), request: &AcquireRequest<'_>) -> Result<Acquired> {
        Plain.acquire(manager, request)
    }

    fn release(&self, manager: &mut (), wants_state: bool) -> Result<Option<String>> {
        Plain.release(manager, wants_state)
    }
}
