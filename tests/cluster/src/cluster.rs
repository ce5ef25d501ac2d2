//! A cluster of QEMU nodes on a bridge inside a private network namespace.
//!
//! Everything a cluster starts is recorded in its run dir (`/run/lockmgr-testbed/<name>/`,
//! `state.json`), so that a cluster is stopped by pid (cmdline-checked) and its namespace
//! deleted: on drop, on SIGINT/SIGTERM/SIGHUP of the process that owns it, at the next
//! [`Cluster::start`] when its owner died, or by `lockmgr-testbed down`.
//!
//! With fencing on (the default), each node also has a fence channel to the host: see
//! [`crate::fence`].

use std::collections::HashMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, Output};
use crate::error::{Error, IoContext, Result};
use crate::fence::{FENCE_PORT_NAME, FenceEvent, Fencer};
use crate::host;
use crate::image::{NodeImage, lock_cache};
use crate::watchdog::{Listener, WATCHDOG_FENCE_WAIT_S, WATCHDOG_TIMEOUT_S, WatchdogEvent};
use crate::{qmp, vcpu};

/// The line a node prints on its serial console once it is quorate and `dlm_tool status` answers.
pub const READY_MARKER: &str = "LOCKMGR-NODE-READY";
/// What dlm_controld prints on a node's console when corosync went away under it (for example
/// when the cluster kills the corosync of a node that rejoined before a fence of it completed).
pub const KICKED_MARKER: &str = "cluster is down, exiting";
/// Where run dirs live (`LOCKMGR_RUN_DIR` overrides).
pub const DEFAULT_RUN_DIR: &str = "/run/lockmgr-testbed";
/// Node N is `10.99.0.N`, only inside the cluster's namespace.
pub const NETWORK_PREFIX: &str = "10.99.0";
/// The most nodes a cluster may have (one hex digit of the MAC, one corosync ring).
pub const MAX_NODES: usize = 8;
/// Default limit for one command in a node.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(120);

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

/// The run dir root: `LOCKMGR_RUN_DIR` or [`DEFAULT_RUN_DIR`].
pub fn default_run_dir() -> PathBuf {
    std::env::var_os("LOCKMGR_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR))
}

/// What a run dir records about a cluster (`state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterState {
    /// Cluster name, also its network namespace: `lockmgr-<pid>-<n>`.
    pub name: String,
    /// The run dir of this cluster.
    pub dir: PathBuf,
    /// The process that tears it down (None: detached, `lockmgr-testbed down` stops it).
    pub owner_pid: Option<u32>,
    /// The owner's start time, against pid reuse.
    pub owner_start: Option<u64>,
    /// The shared host directory, if any.
    pub share: Option<PathBuf>,
    /// The kernel the nodes run.
    pub kernel: String,
    /// Whether the nodes run with power fencing (the host's fencer serves them).
    #[serde(default)]
    pub fencing: bool,
    /// How the nodes fence ([`ClusterSpec::fence_mode`]); missing in state files written before
    /// watchdog fencing existed: [`ClusterState::fence_mode`] then follows `fencing`.
    #[serde(default)]
    pub fence_mode: Option<FenceMode>,
    /// The two-node tie-break in milliseconds (0 for other sizes; [`ClusterSpec::fence_tie_break`]).
    #[serde(default)]
    pub fence_tie_break_ms: u64,
    /// The `lockmgr-testbed fencer` process serving a detached cluster's fence requests.
    #[serde(default)]
    pub fencer_pid: Option<u32>,
    /// Its start time, against pid reuse.
    #[serde(default)]
    pub fencer_start: Option<u64>,
    /// The nodes, node1 first.
    pub nodes: Vec<NodeRecord>,
}

/// One node of a [`ClusterState`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    /// 1-based node number (= corosync nodeid).
    pub index: usize,
    /// QEMU's `-name`, checked in `/proc/PID/cmdline` before any signal.
    pub qemu_name: String,
    /// QEMU's pid once started.
    pub pid: Option<u32>,
    /// The node's address inside the namespace.
    pub address: Ipv4Addr,
    /// Its serial console log.
    pub console: PathBuf,
    /// Its guest agent socket.
    pub agent_socket: PathBuf,
    /// Its fence channel (a virtio-serial port in the node), when the cluster has fencing.
    #[serde(default)]
    pub fence_socket: Option<PathBuf>,
    /// Its QMP command socket (`query-status` while its vCPUs are frozen).
    #[serde(default)]
    pub qmp_socket: Option<PathBuf>,
    /// Its QMP event socket, held by the cluster's watchdog event listener.
    #[serde(default)]
    pub qmp_events: Option<PathBuf>,
    /// Set once it was powered off: by [`Cluster::kill_node`] or by a fence request.
    pub killed: bool,
    /// The node whose fence request powered it off.
    #[serde(default)]
    pub fenced_by: Option<usize>,
    /// When its current QEMU was started (Unix seconds): a fence request about a failure before
    /// that is about an earlier incarnation, already gone.
    #[serde(default)]
    pub started_unix: Option<u64>,
}

impl ClusterState {
    /// How the nodes fence: the recorded mode, or (older state files) power when `fencing`.
    pub fn fence_mode(&self) -> FenceMode {
        self.fence_mode.unwrap_or(if self.fencing {
            FenceMode::Power
        } else {
            FenceMode::Off
        })
    }

    pub(crate) fn save(&self) -> Result<()> {
        let path = self.dir.join("state.json");
        let tmp = self.dir.join("state.json.tmp");
        let text =
            serde_json::to_string_pretty(self).map_err(|err| Error::Usage(err.to_string()))?;
        fs::write(&tmp, text).at(&tmp, "write")?;
        fs::rename(&tmp, &path).at(&path, "replace")
    }

    /// Reads `DIR/state.json`.
    pub fn load(dir: &Path) -> Result<ClusterState> {
        let path = dir.join("state.json");
        let text = fs::read_to_string(&path).at(&path, "read")?;
        serde_json::from_str(&text)
            .map_err(|err| Error::Usage(format!("{}: {err}", path.display())))
    }

    /// Whether a live process owns it (false: detached, or its owner died).
    pub fn owner_alive(&self) -> bool {
        self.owner_pid
            .is_some_and(|pid| host::owner_alive(pid, self.owner_start))
    }

    /// Pids of its QEMUs that are still running.
    pub fn running_pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|node| {
                node.pid
                    .filter(|pid| host::alive(*pid) && host::is_our_qemu(*pid, &node.qemu_name))
            })
            .collect()
    }
}

/// A running cluster. Dropping it stops every QEMU it started and deletes its namespace, also
/// when a test panics; [`Cluster::detach`] leaves it running instead.
#[derive(Debug)]
pub struct Cluster {
    state: Arc<Mutex<ClusterState>>,
    agents: Vec<Mutex<Option<Agent>>>,
    boot_time: Duration,
    owned: bool,
    /// The host side of the fence channels, while this process serves them.
    fencer: Mutex<Option<Fencer>>,
    /// The listener of the nodes' watchdog events (watchdog fencing).
    watchdog: Mutex<Option<Listener>>,
    /// Nodes whose vCPU threads are frozen ([`Cluster::freeze_vcpus`]): their thread ids.
    frozen: Mutex<HashMap<usize, Vec<i32>>>,
    /// What the nodes were started from, for [`Cluster::restart_node`].
    launched_from: Option<(NodeImage, ClusterSpec)>,
}

/// Clusters owned by this process, for the signal handler.
static LIVE: Mutex<Vec<Arc<Mutex<ClusterState>>>> = Mutex::new(Vec::new());
static SIGNAL_THREAD: OnceLock<()> = OnceLock::new();
static NEXT_CLUSTER: AtomicUsize = AtomicUsize::new(0);
/// The signal that interrupted this process (0: none yet).
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

/// `Err(Error::Interrupted)` once a signal started tearing this process's clusters down, so that
/// no caller goes on talking to nodes that are going away.
pub fn check_interrupted() -> Result<()> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => Ok(()),
        signal => Err(Error::Interrupted(signal)),
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Cluster {
    /// Boots `spec.nodes` nodes from `image` and waits until every one is quorate and its DLM
    /// answers, then until every guest agent answers. Fails fast when a QEMU dies, and with the
    /// consoles' tails on timeout.
    pub fn start(image: &NodeImage, spec: &ClusterSpec) -> Result<Cluster> {
        host::check_cluster_host()?;
        if spec.nodes == 0 || spec.nodes > MAX_NODES {
            return Err(Error::Usage(format!(
                "a cluster has 1 to {MAX_NODES} nodes, not {}",
                spec.nodes
            )));
        }
        for share in spec.share.iter().chain(spec.scratch.iter()) {
            if !share.is_dir() {
                return Err(Error::Usage(format!(
                    "share {} is not a directory",
                    share.display()
                )));
            }
            if share.to_string_lossy().contains(',') {
                return Err(Error::Usage(format!(
                    "share {} contains ',' (QEMU cannot take it)",
                    share.display()
                )));
            }
        }
        if let Some((path, size)) = &spec.shared_disk {
            prepare_shared_disk(path, *size)?;
        }
        for reaped in reap_stale(&spec.run_dir) {
            println!("[cluster] {reaped}");
        }
        fs::create_dir_all(&spec.run_dir).at(&spec.run_dir, "create the run dir root")?;

        let (name, dir) = loop {
            let name = format!(
                "lockmgr-{}-{}",
                std::process::id(),
                NEXT_CLUSTER.fetch_add(1, Ordering::SeqCst)
            );
            let dir = spec.run_dir.join(&name);
            if !dir.exists() && !Path::new("/run/netns").join(&name).exists() {
                break (name, dir);
            }
        };
        fs::create_dir(&dir).at(&dir, "create the cluster's run dir")?;
        let me = std::process::id();
        let nodes = (1..=spec.nodes)
            .map(|index| NodeRecord {
                index,
                qemu_name: format!("{name}-node{index}"),
                pid: None,
                address: node_address(index),
                console: dir.join(format!("node{index}.console")),
                agent_socket: dir.join(format!("node{index}.qga")),
                fence_socket: (spec.fence_mode == FenceMode::Power)
                    .then(|| dir.join(format!("node{index}.fence"))),
                qmp_socket: Some(dir.join(format!("node{index}.qmp"))),
                qmp_events: Some(dir.join(format!("node{index}.events"))),
                killed: false,
                fenced_by: None,
                started_unix: None,
            })
            .collect();
        let state = ClusterState {
            name: name.clone(),
            dir: dir.clone(),
            owner_pid: Some(me),
            owner_start: host::start_time(me),
            share: spec.share.clone(),
            kernel: image.kernel_package.clone(),
            fencing: spec.fence_mode == FenceMode::Power,
            fence_mode: Some(spec.fence_mode),
            fence_tie_break_ms: if spec.nodes == 2 {
                u64::try_from(spec.fence_tie_break.as_millis()).unwrap_or(u64::MAX)
            } else {
                0
            },
            fencer_pid: None,
            fencer_start: None,
            nodes,
        };
        state.save()?;
        let state = Arc::new(Mutex::new(state));
        install_signal_handler();
        locked(&LIVE).push(Arc::clone(&state));
        // From here on, any error drops `cluster`, which tears down whatever was started.
        let mut cluster = Cluster {
            state,
            agents: (0..spec.nodes).map(|_| Mutex::new(None)).collect(),
            boot_time: Duration::ZERO,
            owned: true,
            fencer: Mutex::new(None),
            watchdog: Mutex::new(None),
            frozen: Mutex::new(HashMap::new()),
            launched_from: Some((image.clone(), spec.clone())),
        };
        let accel = host::accelerator();
        println!(
            "[cluster] {name}: starting {} node(s) ({}, {} MiB each), kernel {}, fencing {}",
            spec.nodes,
            accel.join(" "),
            spec.memory_mib,
            image.kernel_release,
            match spec.fence_mode {
                FenceMode::Power => "power (fence_testbed -> host)",
                FenceMode::Watchdog => "watchdog (i6300esb; fence_lockmgr_watchdog waits)",
                FenceMode::Off => "OFF (control run)",
            }
        );
        create_network(&name, spec.nodes)?;
        host::become_subreaper();
        let started = Instant::now();
        {
            // Shared: an image rebuild (exclusive) cannot swap the files while QEMU opens them.
            let _image_lock = lock_cache(image.dir.parent().unwrap_or(&image.dir), false)?;
            for index in 1..=spec.nodes {
                cluster.launch(image, spec, accel, index)?;
            }
        }
        match spec.fence_mode {
            FenceMode::Power => *locked(&cluster.fencer) = Some(Fencer::start(&cluster.state)),
            FenceMode::Watchdog => {
                *locked(&cluster.watchdog) = Some(Listener::start(&cluster.state));
            }
            FenceMode::Off => {}
        }
        host::reap_qemu_zombies();
        let all: Vec<usize> = (1..=spec.nodes).collect();
        cluster.wait_ready(&all, started, spec.boot_timeout)?;
        cluster.connect_agents(&all, Duration::from_secs(60))?;
        cluster.boot_time = started.elapsed();
        println!(
            "[cluster] {name}: {} node(s) ready, guest agents answering, {:.1} s after QEMU start",
            spec.nodes,
            cluster.boot_time.as_secs_f64()
        );
        Ok(cluster)
    }

    /// Opens a cluster recorded in `run_dir` (by name, or the only one there) without owning it:
    /// dropping the handle leaves it running.
    pub fn attach(run_dir: &Path, name: Option<&str>) -> Result<Cluster> {
        let state = match name {
            Some(name) => ClusterState::load(&run_dir.join(name))?,
            None => {
                let mut all = list(run_dir);
                match all.len() {
                    1 => all.remove(0),
                    0 => {
                        return Err(Error::Usage(format!(
                            "no cluster is recorded in {}",
                            run_dir.display()
                        )));
                    }
                    _ => {
                        let names: Vec<String> = all.into_iter().map(|state| state.name).collect();
                        return Err(Error::Usage(format!(
                            "several clusters are recorded in {}; pick one with --cluster: {}",
                            run_dir.display(),
                            names.join(", ")
                        )));
                    }
                }
            }
        };
        let agents = state.nodes.iter().map(|_| Mutex::new(None)).collect();
        Ok(Cluster {
            state: Arc::new(Mutex::new(state)),
            agents,
            boot_time: Duration::ZERO,
            owned: false,
            fencer: Mutex::new(None),
            watchdog: Mutex::new(None),
            frozen: Mutex::new(HashMap::new()),
            launched_from: None,
        })
    }

    fn state(&self) -> MutexGuard<'_, ClusterState> {
        locked(&self.state)
    }

    /// A copy of what the run dir records.
    pub fn snapshot(&self) -> ClusterState {
        self.state().clone()
    }

    /// The cluster's name, which is also its network namespace (`ip netns exec NAME ...`).
    pub fn name(&self) -> String {
        self.state().name.clone()
    }

    /// Number of nodes (killed ones included).
    pub fn node_count(&self) -> usize {
        self.agents.len()
    }

    /// Time from the first QEMU start until every node was ready and its agent answered.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// Node `node`'s (1-based) serial console log.
    pub fn console_path(&self, node: usize) -> Result<PathBuf> {
        self.check_node(node)?;
        Ok(self.state().nodes[node - 1].console.clone())
    }

    /// The last `lines` lines of every node's console.
    pub fn console_tails(&self, lines: usize) -> String {
        consoles_tail(&self.state(), lines)
    }

    fn check_node(&self, node: usize) -> Result<()> {
        if node == 0 || node > self.agents.len() {
            return Err(Error::Usage(format!(
                "no node{node}: the cluster has node1 to node{}",
                self.agents.len()
            )));
        }
        Ok(())
    }

    /// Runs `/bin/sh -c cmd` as root in node `node` (1-based) and returns its output; calls to
    /// one node are serialised. Up to [`DEFAULT_EXEC_TIMEOUT`].
    pub fn exec(&self, node: usize, cmd: &str) -> Result<Output> {
        self.exec_timeout(node, cmd, DEFAULT_EXEC_TIMEOUT)
    }

    /// [`Cluster::exec`] with an explicit time limit.
    pub fn exec_timeout(&self, node: usize, cmd: &str, timeout: Duration) -> Result<Output> {
        check_interrupted()?;
        self.check_node(node)?;
        let (socket, killed) = {
            let state = self.state();
            (
                state.nodes[node - 1].agent_socket.clone(),
                state.nodes[node - 1].killed,
            )
        };
        if killed {
            return Err(Error::Usage(format!(
                "node{node} is powered off (killed or fenced); it runs nothing any more"
            )));
        }
        let mut slot = locked(&self.agents[node - 1]);
        if slot.is_none() {
            *slot = Some(Agent::connect(node, &socket)?);
        }
        let agent = slot
            .as_mut()
            .ok_or_else(|| Error::Usage("agent vanished".to_owned()))?;
        let result = agent.exec(cmd, timeout);
        check_interrupted()?;
        if matches!(result, Err(Error::Agent { .. })) {
            // The connection may be out of step: reconnect (and re-sync) next time.
            *slot = None;
        }
        result
    }

    /// Like [`Cluster::exec`], but a non-zero exit is an error carrying both streams; returns
    /// stdout.
    pub fn exec_ok(&self, node: usize, cmd: &str) -> Result<String> {
        let output = self.exec(node, cmd)?;
        if output.success() {
            Ok(output.stdout_text())
        } else {
            Err(Error::Guest {
                node,
                command: cmd.to_owned(),
                detail: output.describe(),
            })
        }
    }

    /// Starts `cmd` in the background in node `node` with its output in `log` (a path in the
    /// node), detached from the agent (`cmd >log 2>&1 </dev/null &`), and returns its pid in the
    /// node. For the pid to be the program's own, `cmd` must be one simple command.
    pub fn spawn(&self, node: usize, cmd: &str, log: &str) -> Result<u32> {
        let line = format!(
            "{cmd} >{} 2>&1 </dev/null & echo $!",
            crate::agent::shell_quote(log)
        );
        let stdout = self.exec_ok(node, &line)?;
        stdout.trim().parse().map_err(|_| Error::Guest {
            node,
            command: line.clone(),
            detail: format!("expected a pid, got {stdout:?}"),
        })
    }

    /// Simulates a node crash: SIGKILL of that node's QEMU (after checking its cmdline), and waits
    /// until it is gone.
    pub fn kill_node(&self, node: usize) -> Result<()> {
        check_interrupted()?;
        self.check_node(node)?;
        let mut state = self.state();
        let record = &state.nodes[node - 1];
        let pid = record
            .pid
            .ok_or_else(|| Error::Usage(format!("node{node} has no QEMU pid")))?;
        if !host::signal_qemu(pid, &record.qemu_name, Signal::SIGKILL) {
            return Err(Error::Usage(format!(
                "node{node}: pid {pid} is not (or no longer) our QEMU {}; nothing was killed",
                record.qemu_name
            )));
        }
        if !host::wait_gone(&[pid], Duration::from_secs(10)).is_empty() {
            return Err(Error::Usage(format!(
                "node{node}: QEMU pid {pid} still alive 10 s after SIGKILL"
            )));
        }
        state.nodes[node - 1].killed = true;
        state.nodes[node - 1].fenced_by = None;
        state.save()?;
        drop(state);
        *locked(&self.agents[node - 1]) = None;
        // Frozen vCPU threads died with it: the tracer lets go of them.
        if let Some(tids) = locked(&self.frozen).remove(&node) {
            vcpu::thaw(&tids);
        }
        Ok(())
    }

    /// Freezes only node `node`'s vCPU threads (`CPU 0/TCG`), not QEMU's main loop: the guest
    /// hangs (its kernel, corosync and lockmgrd stop; its peers see it go silent) while its
    /// emulated devices and timers go on, among them the watchdog, as real watchdog hardware
    /// runs outside the CPU. With [`FenceMode::Watchdog`] the watchdog therefore powers a node
    /// frozen past its timeout off; SIGSTOP ([`Cluster::freeze_node`]) would freeze the watchdog
    /// too.
    ///
    /// Each vCPU thread is `PTRACE_SEIZE`d and `PTRACE_INTERRUPT`ed (see `vcpu.rs`). A vCPU
    /// stopped while it holds QEMU's big lock would stop the main loop as well, so the main loop
    /// must then answer a QMP `query-status` within 1 s; otherwise the threads are thawed and
    /// frozen again, up to 8 times. Returns the number of attempts it took. Calls to the node's
    /// agent hang while it is frozen.
    pub fn freeze_vcpus(&self, node: usize) -> Result<u32> {
        check_interrupted()?;
        self.check_node(node)?;
        let record = self.state().nodes[node - 1].clone();
        let pid = record
            .pid
            .filter(|pid| !record.killed && host::is_our_qemu(*pid, &record.qemu_name))
            .ok_or_else(|| Error::Usage(format!("node{node} has no running QEMU")))?;
        let socket = record.qmp_socket.clone().ok_or_else(|| {
            Error::Usage(format!(
                "node{node} has no QMP socket (started by an older harness)"
            ))
        })?;
        if locked(&self.frozen).contains_key(&node) {
            return Err(Error::Usage(format!(
                "node{node}'s vCPUs are frozen already"
            )));
        }
        let tids = vcpu::vcpu_threads(pid);
        if tids.is_empty() {
            return Err(Error::Usage(format!(
                "node{node}: QEMU pid {pid} has no vCPU thread (no `CPU n/...` in /proc/{pid}/task/*/comm)"
            )));
        }
        let mut last = String::new();
        for attempt in 1..=8u32 {
            vcpu::freeze(&tids).map_err(|err| Error::Usage(format!("node{node}: {err}")))?;
            match qmp::main_loop_answers(&socket, Duration::from_secs(1)) {
                Ok(_) => {
                    locked(&self.frozen).insert(node, tids);
                    return Ok(attempt);
                }
                Err(err) => {
                    last = err.to_string();
                    vcpu::thaw(&tids);
                    thread::sleep(Duration::from_millis(50 + 40 * u64::from(attempt)));
                }
            }
        }
        Err(Error::Usage(format!(
            "node{node}: QEMU's main loop did not answer with the vCPUs frozen, 8 times \
             (a vCPU held the big QEMU lock?): {last}"
        )))
    }

    /// Undoes [`Cluster::freeze_vcpus`]. Returns whether the node's QEMU still runs: false when it
    /// exited meanwhile (powered off by its watchdog; see [`Cluster::powered_off_by_watchdog`]),
    /// in which case its threads are only reaped.
    pub fn thaw_vcpus(&self, node: usize) -> Result<bool> {
        self.check_node(node)?;
        let tids = locked(&self.frozen)
            .remove(&node)
            .ok_or_else(|| Error::Usage(format!("node{node}'s vCPUs are not frozen")))?;
        let problems = vcpu::thaw(&tids);
        if !problems.is_empty() && self.node_running(node) {
            return Err(Error::Usage(format!(
                "node{node}: thawing its vCPUs: {}",
                problems.join("; ")
            )));
        }
        Ok(self.node_running(node))
    }

    /// The nodes' watchdog events, oldest first (watchdog fencing only; read before the cluster
    /// stops: the log lives in the run dir).
    pub fn watchdog_events(&self) -> Result<Vec<WatchdogEvent>> {
        crate::watchdog::read_log(&self.state().dir)
    }

    /// Whether node `node` is powered off because its watchdog fired: its QEMU is gone and sent
    /// a `WATCHDOG` event (as opposed to [`Cluster::kill_node`], a power fence, or a crash).
    pub fn powered_off_by_watchdog(&self, node: usize) -> bool {
        let pid = self
            .state()
            .nodes
            .get(node.wrapping_sub(1))
            .and_then(|n| n.pid);
        !self.node_running(node)
            && self.watchdog_events().is_ok_and(|events| {
                events
                    .iter()
                    .any(|event| event.node == node && event.pid == pid)
            })
    }

    /// Freezes node `node` whole: SIGSTOP of its QEMU (pid-checked), as a VM that hangs (a long
    /// host stall, a stuck hypervisor). Its peers see it go silent; it notices nothing until
    /// [`Cluster::thaw_node`], and then goes on where it stopped, still believing what it believed
    /// (its DLM locks, its quorum). A frozen node can still be fenced: SIGKILL ends a stopped
    /// process. Calls to its agent block while it is frozen.
    pub fn freeze_node(&self, node: usize) -> Result<()> {
        self.signal_node(node, Signal::SIGSTOP)
    }

    /// Undoes [`Cluster::freeze_node`] (SIGCONT). An error if its QEMU is gone (fenced meanwhile).
    pub fn thaw_node(&self, node: usize) -> Result<()> {
        self.signal_node(node, Signal::SIGCONT)
    }

    fn signal_node(&self, node: usize, signal: Signal) -> Result<()> {
        check_interrupted()?;
        self.check_node(node)?;
        let record = self.state().nodes[node - 1].clone();
        let pid = record
            .pid
            .filter(|_| !record.killed)
            .ok_or_else(|| Error::Usage(format!("node{node} has no running QEMU")))?;
        if host::signal_qemu(pid, &record.qemu_name, signal) {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "node{node}: pid {pid} is not (or no longer) our QEMU {}; no {signal} sent",
                record.qemu_name
            )))
        }
    }

    /// Whether node `node`'s QEMU runs (its recorded pid is alive and still our QEMU, and it was
    /// neither killed nor fenced).
    pub fn node_running(&self, node: usize) -> bool {
        crate::fence::node_running(&self.state(), node)
    }

    /// Whether the nodes fence (power or watchdog; false only for control runs).
    pub fn fencing(&self) -> bool {
        self.fence_mode().fences()
    }

    /// How the nodes fence.
    pub fn fence_mode(&self) -> FenceMode {
        self.state().fence_mode()
    }

    /// Cuts node `node` off the cluster network: its tap device on the namespace's bridge goes
    /// down, so nothing reaches it and nothing it sends gets anywhere, as when its switch port
    /// dies. Done on the host side, so the node cannot undo it; its guest agent and fence channel
    /// (virtio-serial, not network) keep working.
    pub fn cut_node(&self, node: usize) -> Result<()> {
        self.set_link(node, "down")
    }

    /// Undoes [`Cluster::cut_node`].
    pub fn reconnect_node(&self, node: usize) -> Result<()> {
        self.set_link(node, "up")
    }

    fn set_link(&self, node: usize, updown: &str) -> Result<()> {
        check_interrupted()?;
        self.check_node(node)?;
        let name = self.name();
        host::run(Command::new("ip").args([
            "-n",
            &name,
            "link",
            "set",
            &format!("tap{node}"),
            updown,
        ]))
        .map(drop)
    }

    /// The cluster's fence log: every fence request the nodes made and what the host did, oldest
    /// first (empty without fencing). Read it before the cluster stops: it lives in the run dir.
    pub fn fence_events(&self) -> Result<Vec<FenceEvent>> {
        crate::fence::read_log(&self.state().dir)
    }

    /// Boots node `node` again after it was killed or fenced (a clean, RAM-only node, as at
    /// start, with its network link back if [`Cluster::cut_node`] had cut it), waits until it is
    /// ready and its agent answers, and returns how long that took. Only for clusters this process
    /// started. Its previous console is kept as `nodeN.console.before-restart`.
    pub fn restart_node(&self, node: usize) -> Result<Duration> {
        check_interrupted()?;
        self.check_node(node)?;
        let (image, spec) = self.launched_from.as_ref().ok_or_else(|| {
            Error::Usage("only the process that started a cluster can restart its nodes".to_owned())
        })?;
        if self.node_running(node) {
            return Err(Error::Usage(format!(
                "node{node} still runs: kill or fence it before restarting it"
            )));
        }
        *locked(&self.agents[node - 1]) = None;
        if let Some(tids) = locked(&self.frozen).remove(&node) {
            vcpu::thaw(&tids);
        }
        self.reconnect_node(node)?;
        let console = self.console_path(node)?;
        let _ = fs::rename(&console, console.with_extension("console.before-restart"));
        let started = Instant::now();
        {
            let _image_lock = lock_cache(image.dir.parent().unwrap_or(&image.dir), false)?;
            self.launch(image, spec, host::accelerator(), node)?;
        }
        host::reap_qemu_zombies();
        self.wait_ready(&[node], started, spec.boot_timeout)?;
        self.connect_agents(&[node], Duration::from_secs(60))?;
        let took = started.elapsed();
        println!(
            "[cluster] {}: node{node} restarted, ready in {:.1} s",
            self.name(),
            took.as_secs_f64()
        );
        Ok(took)
    }

    /// Leaves the cluster running after this handle is gone (for `lockmgr-testbed up`); it is
    /// then stopped by `lockmgr-testbed down`. With fencing, `fencer` (the `lockmgr-testbed`
    /// binary) is started in the background as `lockmgr-testbed fencer` to serve the nodes' fence
    /// requests from then on; `down` stops it. Returns what the run dir records.
    pub fn detach(mut self, fencer: &Path) -> Result<ClusterState> {
        self.owned = false;
        locked(&LIVE).retain(|live| !Arc::ptr_eq(live, &self.state));
        if let Some(threads) = locked(&self.fencer).take() {
            threads.stop();
        }
        for (_, tids) in locked(&self.frozen).drain() {
            vcpu::thaw(&tids);
        }
        if let Some(listener) = locked(&self.watchdog).take() {
            listener.stop();
        }
        let mut state = self.state();
        if state.fencing {
            let run_dir = state.dir.parent().unwrap_or(&state.dir).to_owned();
            let out_path = state.dir.join("fencer.out");
            let out = fs::File::create(&out_path).at(&out_path, "create")?;
            let err = out.try_clone().at(&out_path, "dup")?;
            let mut command = Command::new(fencer);
            command
                .arg("--run-dir")
                .arg(&run_dir)
                .args(["fencer", "--cluster", &state.name])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            // Its own process group: a ^C in the shell that ran `up` does not reach it.
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            let child = command.spawn().map_err(|err| Error::Command {
                command: host::describe(&command),
                detail: format!("cannot start the fencer: {err}"),
            })?;
            state.fencer_pid = Some(child.id());
            state.fencer_start = host::start_time(child.id());
        }
        state.owner_pid = None;
        state.owner_start = None;
        state.save()?;
        Ok(state.clone())
    }

    /// Stops the cluster now and reports what could not be cleaned up.
    pub fn stop(mut self) -> Result<()> {
        let problems = self.teardown_owned(false);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Usage(problems.join("; ")))
        }
    }

    fn teardown_owned(&mut self, keep_consoles: bool) -> Vec<String> {
        if !self.owned {
            return Vec::new();
        }
        self.owned = false;
        let was_live = {
            let mut live = locked(&LIVE);
            let before = live.len();
            live.retain(|entry| !Arc::ptr_eq(entry, &self.state));
            live.len() != before
        };
        if let Some(fencer) = locked(&self.fencer).take() {
            fencer.stop();
        }
        // Frozen vCPUs would hold up QEMU's orderly exit on SIGTERM.
        for (_, tids) in locked(&self.frozen).drain() {
            vcpu::thaw(&tids);
        }
        if let Some(listener) = locked(&self.watchdog).take() {
            listener.stop();
        }
        if !was_live {
            return Vec::new(); // the signal handler got there first
        }
        for slot in &self.agents {
            *locked(slot) = None;
        }
        let state = self.state().clone();
        teardown(&state, keep_consoles)
    }

    /// Starts node `index`'s QEMU and records its pid.
    fn launch(
        &self,
        image: &NodeImage,
        spec: &ClusterSpec,
        accel: &[&str],
        index: usize,
    ) -> Result<u32> {
        let (name, record, dir) = {
            let state = self.state();
            (
                state.name.clone(),
                state.nodes[index - 1].clone(),
                state.dir.clone(),
            )
        };
        let pidfile = dir.join(format!("node{index}.pid"));
        let log_path = dir.join(format!("node{index}.qemu.log"));
        let log = fs::File::create(&log_path).at(&log_path, "create")?;
        let log_err = log.try_clone().at(&log_path, "dup")?;
        let mut append = format!(
            "console=ttyS0 quiet panic=-1 mitigations=off random.trust_cpu=on \
             dlmnode.node={index} dlmnode.nodes={} dlmnode.net={NETWORK_PREFIX} dlmnode.fencing={}",
            spec.nodes,
            spec.fence_mode.kernel_arg()
        );
        if spec.fence_mode == FenceMode::Watchdog {
            append.push_str(&format!(
                " dlmnode.fence_wait={WATCHDOG_FENCE_WAIT_S} dlmnode.watchdog_timeout={WATCHDOG_TIMEOUT_S}"
            ));
        }
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                &name,
                "qemu-system-x86_64",
                "-name",
                &record.qemu_name,
            ])
            // Names its threads (`CPU 0/TCG`, ...) for freeze_vcpus; merged into the -name above,
            // which stays the 2nd argument that is_our_qemu checks.
            .args(["-name", "debug-threads=on"])
            .args(accel)
            .args(["-M", "pc", "-smp", "1", "-m", &spec.memory_mib.to_string()])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&image.vmlinuz)
            .arg("-initrd")
            .arg(&image.initrd)
            .args(["-append", &append])
            .arg("-serial")
            .arg(format!("file:{}", record.console.display()))
            .args([
                "-netdev",
                &format!("tap,id=net0,ifname=tap{index},script=no,downscript=no"),
            ])
            .args([
                "-device",
                &format!("virtio-net-pci,romfile=,netdev=net0,mac=52:54:00:99:00:{index:02x}"),
            ])
            .args(["-device", "virtio-rng-pci", "-device", "virtio-serial-pci"])
            .args([
                "-chardev",
                &format!(
                    "socket,id=qga0,path={},server=on,wait=off",
                    record.agent_socket.display()
                ),
            ])
            .args([
                "-device",
                "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            ]);
        if let Some(fence_socket) = &record.fence_socket {
            // The node's own fence channel: the host knows who asks by the socket.
            command
                .args([
                    "-chardev",
                    &format!(
                        "socket,id=fence0,path={},server=on,wait=off",
                        fence_socket.display()
                    ),
                ])
                .args([
                    "-device",
                    &format!("virtserialport,chardev=fence0,name={FENCE_PORT_NAME}"),
                ]);
        }
        for socket in record.qmp_socket.iter().chain(record.qmp_events.iter()) {
            command.args([
                "-qmp",
                &format!("unix:{},server=on,wait=off", socket.display()),
            ]);
        }
        if spec.fence_mode == FenceMode::Watchdog {
            // The emulated watchdog runs in QEMU's main loop, outside the guest's CPU; when it
            // expires QEMU exits (power off, no reset: -no-reboot would make a reset one anyway).
            command.args(["-device", "i6300esb", "-action", "watchdog=poweroff"]);
        }
        if let Some(share) = &spec.share {
            command.args([
                "-virtfs",
                &format!(
                    "local,path={},mount_tag=share,security_model=none,readonly=on",
                    share.display()
                ),
            ]);
        }
        if let Some(scratch) = &spec.scratch {
            command.args([
                "-virtfs",
                &format!(
                    "local,path={},mount_tag=scratch,security_model=none",
                    scratch.display()
                ),
            ]);
        }
        if let Some((disk, _)) = &spec.shared_disk {
            command
                .args([
                    "-drive",
                    &format!(
                        "file={},format=raw,if=none,cache=none,file.locking=off,id=shared0",
                        disk.display()
                    ),
                ])
                .args(["-device", "virtio-blk-pci,drive=shared0,share-rw=on"]);
        }
        command.arg("-pidfile").arg(&pidfile).arg("-daemonize");
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let status = command.status().map_err(|err| Error::Command {
            command: host::describe(&command),
            detail: err.to_string(),
        })?;
        if !status.success() {
            return Err(Error::Command {
                command: host::describe(&command),
                detail: format!("{status}: {}", host::tail(&log_path, 20)),
            });
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(pid) = fs::read_to_string(&pidfile)
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok())
            {
                if host::is_our_qemu(pid, &record.qemu_name) {
                    let mut state = self.state();
                    let node = &mut state.nodes[index - 1];
                    node.pid = Some(pid);
                    node.killed = false;
                    node.fenced_by = None;
                    node.started_unix = Some(
                        SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |since| since.as_secs()),
                    );
                    state.save()?;
                    return Ok(pid);
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Command {
                    command: host::describe(&command),
                    detail: format!(
                        "no live QEMU in pidfile {}: {}",
                        pidfile.display(),
                        host::tail(&log_path, 20)
                    ),
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn boot_error(&self, reason: String) -> Error {
        let state = self.state();
        let mut consoles = consoles_tail(&state, 25);
        for node in &state.nodes {
            let qemu_log = state.dir.join(format!("node{}.qemu.log", node.index));
            let text = host::tail(&qemu_log, 10);
            if !text.trim().is_empty() {
                consoles.push_str(&format!("--- node{} QEMU log ---\n{text}\n", node.index));
            }
        }
        Error::Boot {
            cluster: state.name.clone(),
            reason,
            consoles,
        }
    }

    /// Waits for the readiness marker of each of `indexes` on its console.
    fn wait_ready(&self, indexes: &[usize], started: Instant, timeout: Duration) -> Result<()> {
        let nodes: Vec<NodeRecord> = self
            .snapshot()
            .nodes
            .into_iter()
            .filter(|node| indexes.contains(&node.index))
            .collect();
        let mut ready = vec![false; nodes.len()];
        let deadline = started + timeout;
        while ready.iter().any(|ready| !ready) {
            for (slot, node) in nodes.iter().enumerate() {
                if ready[slot] {
                    continue;
                }
                let pid = node.pid.unwrap_or(0);
                if !host::alive(pid) {
                    return Err(self.boot_error(format!(
                        "node{}'s QEMU (pid {pid}) exited during boot after {:.1} s",
                        node.index,
                        started.elapsed().as_secs_f64()
                    )));
                }
                let marker = format!("{READY_MARKER} node={}", node.index);
                let console = fs::read(&node.console)
                    .map(|text| String::from_utf8_lossy(&text).into_owned())
                    .unwrap_or_default();
                if !console.contains(&marker) && console.contains(KICKED_MARKER) {
                    // It will never be ready: no need to wait for the timeout.
                    return Err(self.boot_error(format!(
                        "node{}'s dlm_controld exited during boot (`{KICKED_MARKER}`): the \
                         cluster threw it out, e.g. because a fence of its previous incarnation \
                         completed after it had rejoined",
                        node.index
                    )));
                }
                if console.contains(&marker) {
                    ready[slot] = true;
                    println!(
                        "[cluster]   node{} ready at {:.1} s",
                        node.index,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            if Instant::now() >= deadline {
                let waiting: Vec<String> = nodes
                    .iter()
                    .zip(&ready)
                    .filter(|(_, ready)| !**ready)
                    .map(|(node, _)| format!("node{}", node.index))
                    .collect();
                return Err(self.boot_error(format!(
                    "{} not ready (no `{READY_MARKER}` on the console) after {} s",
                    waiting.join(", "),
                    timeout.as_secs()
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The agent socket exists before qemu-ga runs (server=on,wait=off): ping with retries.
    fn connect_agents(&self, indexes: &[usize], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for node in self.snapshot().nodes.iter() {
            if !indexes.contains(&node.index) {
                continue;
            }
            let slot = node.index - 1;
            loop {
                match Agent::connect(node.index, &node.agent_socket) {
                    Ok(agent) => {
                        *locked(&self.agents[slot]) = Some(agent);
                        break;
                    }
                    Err(err) if Instant::now() >= deadline => {
                        return Err(self.boot_error(format!("guest agent never answered: {err}")));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(250)),
                }
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        for problem in self.teardown_owned(panicking) {
            eprintln!("[cluster] teardown: {problem}");
        }
    }
}

/// Creates the shared disk's image (sparse) or grows it to `size`.
fn prepare_shared_disk(path: &Path, size: u64) -> Result<()> {
    if path.to_string_lossy().contains(',') {
        return Err(Error::Usage(format!(
            "shared disk {} contains ',' (QEMU cannot take it)",
            path.display()
        )));
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .at(path, "open the shared disk")?;
    let len = file.metadata().at(path, "stat the shared disk")?.len();
    if len < size {
        file.set_len(size).at(path, "size the shared disk")?;
    }
    Ok(())
}

/// `10.99.0.N`.
pub fn node_address(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 0, u8::try_from(index).unwrap_or(u8::MAX))
}

fn consoles_tail(state: &ClusterState, lines: usize) -> String {
    let mut text = String::new();
    for node in &state.nodes {
        text.push_str(&format!(
            "--- node{} console ({}), last {lines} lines ---\n{}\n",
            node.index,
            node.console.display(),
            host::tail(&node.console, lines)
        ));
    }
    text
}

/// Namespace, bridge and one tap per node; no uplink, no host address, no route.
fn create_network(namespace: &str, nodes: usize) -> Result<()> {
    host::run(Command::new("ip").args(["netns", "add", namespace]))?;
    host::run(Command::new("ip").args(["-n", namespace, "link", "set", "lo", "up"]))?;
    host::run(Command::new("ip").args([
        "-n",
        namespace,
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "stp_state",
        "0",
        "forward_delay",
        "0",
    ]))?;
    host::run(Command::new("ip").args(["-n", namespace, "link", "set", "br0", "up"]))?;
    for index in 1..=nodes {
        let tap = format!("tap{index}");
        host::run(
            Command::new("ip").args(["-n", namespace, "tuntap", "add", "dev", &tap, "mode", "tap"]),
        )?;
        host::run(
            Command::new("ip").args(["-n", namespace, "link", "set", &tap, "master", "br0", "up"]),
        )?;
    }
    Ok(())
}

/// Stops every recorded QEMU (SIGTERM, up to 5 s, then SIGKILL; each signal cmdline-checked),
/// deletes the namespace and the run dir. Returns what could not be done.
pub(crate) fn teardown(state: &ClusterState, keep_consoles: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(pid) = state.fencer_pid {
        // First, so that it kills no node while they go down.
        if let Err(problem) = host::stop_fencer(pid, state.fencer_start, &state.name) {
            problems.push(problem);
        }
    }
    let ours: Vec<(u32, &str)> = state
        .nodes
        .iter()
        .filter_map(|node| node.pid.map(|pid| (pid, node.qemu_name.as_str())))
        .collect();
    let signalled: Vec<u32> = ours
        .iter()
        .filter(|(pid, name)| host::signal_qemu(*pid, name, Signal::SIGTERM))
        .map(|(pid, _)| *pid)
        .collect();
    let stubborn = host::wait_gone(&signalled, Duration::from_secs(5));
    // Killed earlier (kill_node) or died on their own: collect them if they are our children.
    ours.iter().for_each(|(pid, _)| host::reap(*pid));
    for pid in &stubborn {
        if let Some((_, name)) = ours.iter().find(|(candidate, _)| candidate == pid) {
            host::signal_qemu(*pid, name, Signal::SIGKILL);
        }
    }
    for pid in host::wait_gone(&stubborn, Duration::from_secs(5)) {
        problems.push(format!("QEMU pid {pid} of {} survived SIGKILL", state.name));
    }
    host::reap_qemu_zombies();
    if Path::new("/run/netns").join(&state.name).exists() {
        if let Err(err) = host::run(Command::new("ip").args(["netns", "del", &state.name])) {
            problems.push(err.to_string());
        }
    }
    if keep_consoles {
        let keep = PathBuf::from("/var/tmp/lockmgr-testbed").join(&state.name);
        if fs::create_dir_all(&keep).is_ok() {
            for node in &state.nodes {
                let _ = fs::copy(
                    &node.console,
                    keep.join(format!("node{}.console", node.index)),
                );
            }
            let _ = fs::copy(
                state.dir.join(crate::fence::FENCE_LOG),
                keep.join(crate::fence::FENCE_LOG),
            );
            eprintln!(
                "[cluster] {}: consoles kept in {}",
                state.name,
                keep.display()
            );
        }
    }
    if let Err(err) = fs::remove_dir_all(&state.dir) {
        if err.kind() != std::io::ErrorKind::NotFound {
            problems.push(format!("{}: remove: {err}", state.dir.display()));
        }
    }
    problems
}

/// Whether the `lockmgr-testbed fencer` recorded for a detached cluster still runs.
pub fn fencer_alive(state: &ClusterState) -> bool {
    state
        .fencer_pid
        .is_some_and(|pid| host::is_our_fencer(pid, state.fencer_start, &state.name))
}

/// Every cluster recorded under `run_dir`.
pub fn list(run_dir: &Path) -> Vec<ClusterState> {
    let Ok(entries) = fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut all: Vec<ClusterState> = entries
        .filter_map(|entry| ClusterState::load(&entry.ok()?.path()).ok())
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// Stops clusters recorded under `run_dir`: detached ones and those whose owner died; with
/// `force`, also those a live process owns. Returns one line per cluster handled.
pub fn down(run_dir: &Path, name: Option<&str>, force: bool) -> Vec<String> {
    let mut report = Vec::new();
    for state in list(run_dir) {
        if name.is_some_and(|name| name != state.name) {
            continue;
        }
        if state.owner_alive() && !force {
            report.push(format!(
                "{}: skipped, owned by live process {} (use --force to stop it anyway)",
                state.name,
                state.owner_pid.unwrap_or(0)
            ));
            continue;
        }
        let running = state.running_pids().len();
        let problems = teardown(&state, false);
        if problems.is_empty() {
            report.push(format!(
                "{}: stopped {running} QEMU process(es), namespace and run dir removed",
                state.name
            ));
        } else {
            report.push(format!("{}: {}", state.name, problems.join("; ")));
        }
    }
    // A run dir whose state.json is unreadable still may name a namespace.
    if let Ok(entries) = fs::read_dir(run_dir) {
        for entry in entries.flatten() {
            let dir = entry.path();
            let dir_name = entry.file_name().to_string_lossy().into_owned();
            if name.is_some_and(|name| name != dir_name) || dir.join("state.json").exists() {
                continue;
            }
            if Path::new("/run/netns").join(&dir_name).exists() {
                let _ = host::run(Command::new("ip").args(["netns", "del", &dir_name]));
            }
            let _ = fs::remove_dir_all(&dir);
            report.push(format!("{dir_name}: removed a run dir without state"));
        }
    }
    report
}

/// Tears down clusters whose owning process is gone (a test killed before its Drop ran).
fn reap_stale(run_dir: &Path) -> Vec<String> {
    list(run_dir)
        .into_iter()
        .filter(|state| state.owner_pid.is_some() && !state.owner_alive())
        .map(|state| {
            let problems = teardown(&state, false);
            format!(
                "reaped {} left by dead process {}: {:?}",
                state.name,
                state.owner_pid.unwrap_or(0),
                problems
            )
        })
        .collect()
}

/// On SIGINT, SIGTERM or SIGHUP: tear down every cluster this process owns, then exit.
fn install_signal_handler() {
    SIGNAL_THREAD.get_or_init(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            Ok(mut signals) => {
                thread::spawn(move || {
                    if let Some(signal) = signals.forever().next() {
                        INTERRUPTED.store(signal, Ordering::SeqCst);
                        let live: Vec<_> = locked(&LIVE).drain(..).collect();
                        for state in live {
                            let state = locked(&state).clone();
                            eprintln!("[cluster] signal {signal}: stopping {}", state.name);
                            for problem in teardown(&state, false) {
                                eprintln!("[cluster] teardown: {problem}");
                            }
                        }
                        std::process::exit(128 + signal);
                    }
                });
            }
            Err(err) => eprintln!(
                "[cluster] cannot catch SIGINT/SIGTERM ({err}); `lockmgr-testbed down` cleans up"
            ),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_in(dir: &Path, owner_pid: Option<u32>) -> ClusterState {
        ClusterState {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            dir: dir.to_owned(),
            owner_pid,
            owner_start: owner_pid.and_then(host::start_time),
            share: None,
            kernel: "k".to_owned(),
            fencing: false,
            fence_mode: None,
            fence_tie_break_ms: 0,
            fencer_pid: None,
            fencer_start: None,
            nodes: vec![NodeRecord {
                index: 1,
                qemu_name: "lockmgr-test-node1".to_owned(),
                // our own pid: never a QEMU, so teardown must not signal it
                pid: Some(std::process::id()),
                address: node_address(1),
                console: dir.join("node1.console"),
                agent_socket: dir.join("node1.qga"),
                fence_socket: None,
                qmp_socket: None,
                qmp_events: None,
                killed: false,
                fenced_by: None,
                started_unix: None,
            }],
        }
    }

    #[test]
    fn fence_modes_and_old_state_files() {
        assert_eq!(FenceMode::Power.kernel_arg(), "1");
        assert_eq!(FenceMode::Watchdog.kernel_arg(), "watchdog");
        assert_eq!(FenceMode::Off.kernel_arg(), "0");
        assert!(FenceMode::Watchdog.fences() && !FenceMode::Off.fences());
        assert_eq!(ClusterSpec::default().fence_mode, FenceMode::Power);
        assert_eq!(
            ClusterSpec::default().fencing(false).fence_mode,
            FenceMode::Off
        );
        assert_eq!(
            ClusterSpec::default()
                .fence_mode(FenceMode::Watchdog)
                .fence_mode,
            FenceMode::Watchdog
        );
        // A state file written before fence modes existed: `fencing` decides.
        let root = tempfile::tempdir().unwrap();
        let mut state = state_in(root.path(), None);
        for (fencing, mode) in [(true, FenceMode::Power), (false, FenceMode::Off)] {
            state.fencing = fencing;
            let mut json = serde_json::to_value(&state).unwrap();
            json.as_object_mut().unwrap().remove("fence_mode");
            for node in json["nodes"].as_array_mut().unwrap() {
                node.as_object_mut().unwrap().remove("qmp_socket");
                node.as_object_mut().unwrap().remove("qmp_events");
            }
            fs::write(root.path().join("state.json"), json.to_string()).unwrap();
            let loaded = ClusterState::load(root.path()).unwrap();
            assert_eq!(loaded.fence_mode(), mode);
            assert_eq!(loaded.nodes[0].qmp_socket, None);
        }
        state.fence_mode = Some(FenceMode::Watchdog);
        state.save().unwrap();
        assert_eq!(
            ClusterState::load(root.path()).unwrap().fence_mode(),
            FenceMode::Watchdog
        );
        assert!(
            fs::read_to_string(root.path().join("state.json"))
                .unwrap()
                .contains("\"fence_mode\": \"watchdog\"")
        );
    }

    #[test]
    fn addresses_are_in_the_private_test_network() {
        assert_eq!(node_address(1), Ipv4Addr::new(10, 99, 0, 1));
        assert_eq!(node_address(3).to_string(), "10.99.0.3");
    }

    #[test]
    fn state_round_trips_and_down_respects_live_owners() {
        let root = tempfile::tempdir().unwrap();
        let owned_dir = root.path().join("lockmgr-owned");
        let stale_dir = root.path().join("lockmgr-stale");
        fs::create_dir(&owned_dir).unwrap();
        fs::create_dir(&stale_dir).unwrap();
        let owned = state_in(&owned_dir, Some(std::process::id()));
        owned.save().unwrap();
        let mut stale = state_in(&stale_dir, Some(std::process::id()));
        stale.owner_start = stale.owner_start.map(|start| start + 1); // a reused pid: owner is dead
        stale.save().unwrap();

        let loaded = ClusterState::load(&owned_dir).unwrap();
        assert_eq!(loaded.name, "lockmgr-owned");
        assert!(loaded.owner_alive());
        assert!(
            loaded.running_pids().is_empty(),
            "our own pid must not count as a QEMU"
        );
        assert_eq!(list(root.path()).len(), 2);

        let report = down(root.path(), None, false);
        assert!(
            report
                .iter()
                .any(|line| line.starts_with("lockmgr-owned: skipped")),
            "{report:?}"
        );
        assert!(
            report
                .iter()
                .any(|line| line.starts_with("lockmgr-stale: stopped 0")),
            "{report:?}"
        );
        assert!(owned_dir.exists() && !stale_dir.exists());
        assert!(
            std::process::id() > 0 && host::alive(std::process::id()),
            "teardown must not kill us"
        );

        down(root.path(), Some("lockmgr-owned"), true);
        assert!(!owned_dir.exists());
    }

    #[test]
    fn attach_needs_a_unique_or_named_cluster() {
        let root = tempfile::tempdir().unwrap();
        assert!(
            Cluster::attach(root.path(), None)
                .unwrap_err()
                .to_string()
                .contains("no cluster")
        );
        for name in ["lockmgr-a", "lockmgr-b"] {
            let dir = root.path().join(name);
            fs::create_dir(&dir).unwrap();
            state_in(&dir, None).save().unwrap();
        }
        assert!(
            Cluster::attach(root.path(), None)
                .unwrap_err()
                .to_string()
                .contains("lockmgr-a, lockmgr-b")
        );
        let cluster = Cluster::attach(root.path(), Some("lockmgr-b")).unwrap();
        assert_eq!(cluster.name(), "lockmgr-b");
        assert!(
            cluster
                .exec(2, "true")
                .unwrap_err()
                .to_string()
                .contains("no node2")
        );
        drop(cluster);
        assert!(
            root.path().join("lockmgr-b").exists(),
            "an attached handle must not tear down"
        );
    }
}
