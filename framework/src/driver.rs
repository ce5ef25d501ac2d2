//! The safe trait a plugin implements.

use crate::error::Result;
use crate::types::{AcquireRequest, Acquired, Domain, InitArgs, NewFlags, Resource};

/// A lock manager plugin. `export_lock_driver!(MyDriver);` turns an implementation into the
/// `virLockDriverImpl` table that libvirt loads.
///
/// libvirt creates a fresh, short-lived context (`Self::Manager`) for every operation:
/// New → AddResource×N → one of Acquire / Release / Inquire → Free. Nothing survives between
/// operations except what the driver keeps itself (or in its daemon).
///
/// Acquire with `register_only` runs in libvirt's **pre-exec child**, a fork of a multi-threaded
/// daemon: on that path, start no threads and take no lock another thread could have held.
pub trait LockDriver: Send + Sync + Sized + 'static {
    /// Per-object state, built by New and dropped by Free.
    type Manager: Send;

    /// `VIR_LOCK_MANAGER_USES_STATE`: Release and Inquire return state strings.
    const USES_STATE: bool = false;

    /// First `drvInit` of the process: load the configuration. Later `drvInit` calls (one per
    /// hypervisor driver) only take a reference and ignore their config path, as lockd does.
    fn init(args: &InitArgs) -> Result<Self>;

    /// Last `drvDeinit`: release what `init` set up.
    fn deinit(self) -> Result<()> {
        Ok(())
    }

    /// `drvNew`: a context for one domain.
    fn new_manager(&self, domain: Domain, flags: NewFlags) -> Result<Self::Manager>;

    /// `drvAddResource`: one disk or lease, already decoded and checked.
    fn add_resource(&self, manager: &mut Self::Manager, resource: Resource) -> Result<()>;

    /// `drvAcquire`: register (child) or take (daemon) the resources added.
    fn acquire(
        &self,
        manager: &mut Self::Manager,
        request: &AcquireRequest<'_>,
    ) -> Result<Acquired>;

    /// `drvRelease`: drop the resources added. Return a state string when `wants_state`
    /// (libvirt passes it back to the next Acquire). Must be idempotent and thread-safe:
    /// libvirt sends two concurrent Releases on `virsh suspend`.
    fn release(&self, manager: &mut Self::Manager, wants_state: bool) -> Result<Option<String>>;

    /// `drvInquire`: the current state string, if the driver keeps one.
    fn inquire(&self, manager: &mut Self::Manager) -> Result<Option<String>> {
        let _ = manager;
        Ok(None)
    }
}
