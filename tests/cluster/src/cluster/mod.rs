//! A cluster of QEMU nodes on a bridge inside a private network namespace.
//!
//! Everything a cluster starts is recorded in its run dir (`/run/lockmgr-testbed/<name>/`,
//! `state.json`), so that a cluster is stopped by pid (cmdline-checked) and its namespace
//! deleted: on drop, on SIGINT/SIGTERM/SIGHUP of the process that owns it, at the next
//! [`Cluster::start`] when its owner died, or by `lockmgr-testbed down`.
//!
//! With fencing on (the default), each node also has a fence channel to the host: see
//! [`crate::fence`].
//!
//! This module owns the [`Cluster`] handle: start, attach, exec, detach, stop and drop. `spec`
//! holds what to start, `state` the run dir's record and the clean-up from it, `launch` the
//! booting of nodes, `faults` what a test does to them, `network` the namespace and taps.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::agent::{Agent, Output};
use crate::error::{Error, IoContext, Result};
use crate::fence::Fencer;
use crate::host;
use crate::image::{NodeImage, lock_cache};
use crate::vcpu;
use crate::watchdog::Listener;

mod faults;
mod launch;
mod network;
mod spec;
mod state;
#[cfg(test)]
mod tests;

pub use network::node_address;
pub use spec::{ClusterSpec, FenceMode, LIBVIRT_NODE_MEMORY_MIB, SHARE_MOUNT, SHARED_DISK_DEVICE};
pub(crate) use state::teardown;
pub use state::{ClusterState, NodeRecord, default_run_dir, down, fencer_alive, list};

use launch::prepare_shared_disk;
use network::create_network;
use state::{consoles_tail, reap_stale};

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
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        for problem in self.teardown_owned(panicking) {
            eprintln!("[cluster] teardown: {problem}");
        }
    }
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
