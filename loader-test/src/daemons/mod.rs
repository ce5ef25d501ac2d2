//! Plugin profiles: which lock daemon a plugin needs, with which config, and how the harness
//! starts, crashes and stops it.
//!
//! | profile | daemon | config passed to drvInit |
//! |---|---|---|
//! | `nop`, `generic` | none | an absent `qemu-NAME.conf` (defaults) |
//! | `lockd` | `virtlockd`, in a private mount namespace with an empty tmpfs on `/run` (its socket path is fixed) | `qemu-lockd.conf`: `auto_disk_leases = 1`, `require_lease_for_disks = 0`, `file_lockspace_dir` when the scenario wants a lockspace |
//! | `file` | `lockmgrd --config qemu-file.conf` | `qemu-file.conf`: `socket_path`, `state_dir`, `file_lockspace_dir` in scratch dirs |
//! | `dlm` | `lockmgrd --backend dlm --config qemu-dlm.conf` (needs a DLM cluster) | `qemu-dlm.conf`: `socket_path`, `state_dir` |
//! | `sanlock` | a real `sanlock daemon -w 0` (**no watchdog**), in a private mount namespace, `SANLOCK_RUN_DIR` in the scratch directory; one per matrix run, shared by the cells that do not crash it (`Tools::sanlock_shared`) | `qemu-sanlock.conf`: `auto_disk_leases = 1`, `host_id = 1`, `disk_lease_dir` in scratch, `require_lease_for_disks = 0` |
//!
//! The profile is guessed from the plugin's file name (`lockd.so`, `file.so` / `libfile.so`, …)
//! and can be named instead: `--plugin file=/some/where/x.so`.

mod daemon;
mod env;
mod profile;
mod sanlock;

pub use daemon::Daemon;
pub use env::{LEASE_LOCKSPACE, Layout, PluginEnv, SetupError, Tools, prepare};
pub use profile::{PluginSpec, Profile, default_plugins, libvirt_name, plugins_from_args};
pub use sanlock::{
    DEFAULT_SANLOCK, LIBVIRT_SANLOCK_LOCKSPACE, SanlockDirs, join_lockspace, start_sanlock_grouped,
};
