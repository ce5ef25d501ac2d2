//! The lockmgr DLM test bed: a real cluster of QEMU virtual machines on this build machine,
//! each running the Debian kernel's `dlm.ko`, corosync and dlm_controld.
//!
//! - [`NodeImage::ensure`] builds (or finds cached) the node image from Debian packages only:
//!   the generic kernel and a debootstrap root as one initramfs, under `/var/cache/lockmgr/`.
//! - [`Cluster::start`] boots 1–8 nodes (2 by default) on a bridge inside a network namespace of
//!   its own, waits until every node is quorate and its DLM answers, and stops everything it
//!   started when dropped (also on panic, and on SIGINT/SIGTERM of the process).
//! - [`Cluster::exec`] runs a command in a node through qemu-guest-agent; a host directory can be
//!   shared read-only into every node at `/mnt/host` (the workspace's binaries run there as is:
//!   host and nodes are both bookworm).
//! - Power fencing is on by default: dlm_controld's agent in a node asks the host, over the node's
//!   own virtio-serial port, to power a failed node off, and the host kills that node's QEMU
//!   before it answers ([`fence`], [`Cluster::fence_events`]). [`ClusterSpec::fencing`] turns it
//!   off for control runs; [`ClusterSpec::fence_mode`] also offers watchdog self-fencing
//!   ([`watchdog`]). [`Cluster::cut_node`], [`Cluster::kill_node`] and
//!   [`Cluster::restart_node`] make partitions, crashes and power cycles;
//!   [`Cluster::freeze_node`] hangs a whole VM, [`Cluster::freeze_vcpus`] only its vCPUs, and [`ClusterSpec::shared_disk`] gives every node
//!   one shared raw disk, as a SAN LUN.
//! - [`nemesis`]: the on-disk format the nemesis's workers write under the lock, and the checker
//!   that proves from the disk image and their logs that no two holders overlapped.
//!
//! ```no_run
//! use lockmgr_testbed::{Cluster, ClusterSpec, NodeImage};
//! let image = NodeImage::ensure()?;
//! let cluster = Cluster::start(&image, &ClusterSpec::with_nodes(2).share("/work/target/debug"))?;
//! println!("{}", cluster.exec_ok(1, "dlm_tool status")?);
//! # Ok::<(), lockmgr_testbed::Error>(())
//! ```
//!
//! Everything needs root; a test that cannot run here must fail with [`Error::Precondition`].

// The one exception is vcpu.rs's ptrace call (rustix has no ptrace).
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod agent;
mod cluster;
mod error;
pub mod fence;
mod host;
mod image;
pub mod nemesis;
pub mod owners;
mod qmp;
mod vcpu;
pub mod watchdog;

pub use agent::{ExitStatus, Output, shell_quote};
pub use cluster::{
    Cluster, ClusterSpec, ClusterState, DEFAULT_EXEC_TIMEOUT, DEFAULT_RUN_DIR, FenceMode,
    KICKED_MARKER, LIBVIRT_NODE_MEMORY_MIB, MAX_NODES, NETWORK_PREFIX, NodeRecord, READY_MARKER,
    SHARE_MOUNT, SHARED_DISK_DEVICE, check_interrupted, default_run_dir, down, fencer_alive, list,
    node_address,
};
pub use error::{Error, Result};
pub use fence::{FENCE_LOG, FENCE_PORT_NAME, FenceEvent, FenceOutcome, serve_fencing};
pub use image::{DEFAULT_CACHE_DIR, DEFAULT_KERNEL_META, Flavour, ImageOptions, NodeImage};
pub use watchdog::{
    LOCK_FAILURE_TIMEOUT_S, WATCHDOG_DEVICE, WATCHDOG_FENCE_WAIT_S, WATCHDOG_TIMEOUT_S,
    WatchdogEvent, lockmgrd_watchdog_args,
};
