//! The faults a test makes on a running cluster: crashes ([`Cluster::kill_node`]), frozen VMs
//! and vCPUs, partitions ([`Cluster::cut_node`]), power cycles ([`Cluster::restart_node`]),
//! and what the fence and watchdog channels saw of them.

use std::fs;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::error::{Error, Result};
use crate::fence::FenceEvent;
use crate::host;
use crate::image::lock_cache;
use crate::watchdog::WatchdogEvent;
use crate::{qmp, vcpu};

use super::{Cluster, FenceMode, check_interrupted, locked};

impl Cluster {
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
        if !host::signal_qemu(pid, &record.qemu_name, Signal::KILL) {
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
        self.signal_node(node, Signal::STOP, "SIGSTOP")
    }

    /// Undoes [`Cluster::freeze_node`] (SIGCONT). An error if its QEMU is gone (fenced meanwhile).
    pub fn thaw_node(&self, node: usize) -> Result<()> {
        self.signal_node(node, Signal::CONT, "SIGCONT")
    }

    fn signal_node(&self, node: usize, signal: Signal, signal_name: &str) -> Result<()> {
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
                "node{node}: pid {pid} is not (or no longer) our QEMU {}; no {signal_name} sent",
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
}
