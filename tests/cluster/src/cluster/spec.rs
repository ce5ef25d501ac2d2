//! What cluster to start: [`ClusterSpec`] and its [`FenceMode`].

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::default_run_dir;

/// How the survivors make sure a failed node no longer writes before they take its locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FenceMode {
    /// Power fencing (the default): dlm_controld's `fence_testbed` asks the host, which kills
    /// the victim's QEMU (see [`crate::fence`]). `dlmnode.fencing=1`.
    #[default]
    Power,
    /// Watchdog self-fencing (issue 8): every node has an emulated i6300esb (`/dev/watchdog`,
    /// `-action watchdog=poweroff`) that lockmgrd pets, and dlm_controld's agent is
    /// `fence_lockmgr_watchdog wait=`[`crate::watchdog::WATCHDOG_FENCE_WAIT_S`], which only waits
    /// (see [`crate::watchdog`]). No host side. `dlmnode.fencing=watchdog`.
    Watchdog,
    /// No fencing (`dlm_controld --enable_fencing 0`): the survivors take a failed node's locks
    /// as soon as corosync drops it; for control runs only. `dlmnode.fencing=0`.
    Off,
}

impl FenceMode {
    /// The value of `dlmnode.fencing=` on the nodes' kernel command line.
    pub fn kernel_arg(self) -> &'static str {
        match self {
            FenceMode::Power => "1",
            FenceMode::Watchdog => "watchdog",
            FenceMode::Off => "0",
        }
    }

    /// Whether dlm_controld fences at all (power or watchdog).
    pub fn fences(self) -> bool {
        self != FenceMode::Off
    }
}

impl std::fmt::Display for FenceMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FenceMode::Power => "power",
            FenceMode::Watchdog => "watchdog",
            FenceMode::Off => "off",
        })
    }
}

/// Where every node mounts [`ClusterSpec::share`] (the node image's init mounts it there).
pub const SHARE_MOUNT: &str = "/mnt/host";

/// What cluster to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Number of nodes (2 by default; 1 to 8).
    pub nodes: usize,
    /// A host directory shared read-only into every node at `/mnt/host` (9p).
    pub share: Option<PathBuf>,
    /// A host directory shared read-write and uncached into every node at `/mnt/scratch`
    /// (9p), for files the nodes write together (e.g. a race test's ledger).
    pub scratch: Option<PathBuf>,
    /// Memory per node in MiB (768; 512 also works).
    pub memory_mib: u32,
    /// Longest wait from the QEMU starts until every node is ready.
    pub boot_timeout: Duration,
    /// Where the run dir is created.
    pub run_dir: PathBuf,
    /// How failed nodes are fenced ([`FenceMode::Power`] by default). Power: dlm_controld runs
    /// with `enable_fencing=1` and the `fence_testbed` agent, and the host powers off the nodes it
    /// asks for (see [`crate::fence`]). Watchdog: the nodes fence themselves (see
    /// [`crate::watchdog`]). Off (`dlmnode.fencing=0` on the kernel command line): the survivors
    /// take a failed node's locks as soon as corosync drops it, even while a node that is only
    /// cut off still runs; for control runs that must show that.
    pub fence_mode: FenceMode,
    /// Two-node clusters only: how long the host holds back a request to power off node1 while
    /// node1 runs. Both halves of a split stay quorate (`two_node: 1`) and ask to fence each other
    /// at once; this makes node1 win (pacemaker's `pcmk_delay_base` on node1's device).
    pub fence_tie_break: Duration,
    /// A raw image file on the host attached to every node as one virtio disk (`/dev/vda` in the
    /// nodes), uncached and shared read-write, as a SAN LUN: with its size in bytes. Created
    /// (sparse) when missing; see [`ClusterSpec::shared_disk`].
    pub shared_disk: Option<(PathBuf, u64)>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            nodes: 2,
            share: None,
            scratch: None,
            memory_mib: 768,
            boot_timeout: Duration::from_secs(300),
            run_dir: default_run_dir(),
            fence_mode: FenceMode::Power,
            fence_tie_break: Duration::from_secs(5),
            shared_disk: None,
        }
    }
}

impl ClusterSpec {
    /// A spec with `nodes` nodes and the other defaults.
    pub fn with_nodes(nodes: usize) -> Self {
        ClusterSpec {
            nodes,
            ..Self::default()
        }
    }

    /// Shares `dir` read-only at `/mnt/host` in every node.
    pub fn share(mut self, dir: impl Into<PathBuf>) -> Self {
        self.share = Some(dir.into());
        self
    }

    /// Shares `dir` read-write at `/mnt/scratch` in every node.
    pub fn scratch(mut self, dir: impl Into<PathBuf>) -> Self {
        self.scratch = Some(dir.into());
        self
    }

    /// Power fencing on (the default) or off (control runs only: unsafe by design).
    pub fn fencing(mut self, on: bool) -> Self {
        self.fence_mode = if on { FenceMode::Power } else { FenceMode::Off };
        self
    }

    /// Power fencing, watchdog self-fencing or none (see [`FenceMode`]).
    pub fn fence_mode(mut self, mode: FenceMode) -> Self {
        self.fence_mode = mode;
        self
    }

    /// Attaches the raw image `path` (`size` bytes; created sparse when missing, grown when
    /// smaller) to every node as `/dev/vda`: one virtio-blk disk that all nodes read and write at
    /// once, uncached on both sides (`cache=none`: O_DIRECT on the host; `share-rw=on`,
    /// `file.locking=off`: QEMU's own image locking would refuse the second node), as a SAN LUN.
    pub fn shared_disk(mut self, path: impl Into<PathBuf>, size: u64) -> Self {
        self.shared_disk = Some((path.into(), size));
        self
    }
}

/// Where a node sees [`ClusterSpec::shared_disk`] (the nodes have no other block device).
pub const SHARED_DISK_DEVICE: &str = "/dev/vda";

/// Memory per node for the libvirt image ([`crate::Flavour::Libvirt`]): its root (about 280 MB)
/// lives in RAM, beside libvirtd, virtlogd and a few 64 MiB domains.
pub const LIBVIRT_NODE_MEMORY_MIB: u32 = 1536;
