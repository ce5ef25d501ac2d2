//! The faults: what the nemesis does to a node ([`Fault`]), its random choices, which node it
//! picks, and how it injects each fault.

use std::time::{Duration, Instant};

use lockmgr_testbed::FenceMode;
use lockmgr_testbed::nemesis::{self, Header};

use crate::bed::Nemesis;
use crate::{NODES, host_ns};

/// What the nemesis does to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fault {
    /// `cut_node`, a while, `reconnect_node`.
    Partition,
    /// `kill_node`: the VM's power cut.
    KillNode,
    /// SIGSTOP of the VM past the token timeout, then SIGCONT; with watchdog fencing, only its
    /// vCPUs are stopped (ptrace), past the watchdog timeout.
    Freeze,
    /// SIGKILL of lockmgrd, then a new one.
    KillDaemon,
    /// corosync SIGKILLed and started again.
    RestartCorosync,
}

pub(crate) const ALL_FAULTS: [Fault; 5] = [
    Fault::Partition,
    Fault::KillNode,
    Fault::Freeze,
    Fault::KillDaemon,
    Fault::RestartCorosync,
];

impl<'c> Nemesis<'c> {
    /// The node whose holder means to hold a disk longest from now, if that is at least
    /// `min_left`; waits up to `wait` for one.
    pub(crate) fn writing_node(&self, min_left: Duration, wait: Duration) -> Option<usize> {
        let deadline = Instant::now() + wait;
        loop {
            if let Ok(file) = std::fs::File::open(&self.image) {
                let now = host_ns();
                let offsets = self.offsets.borrow();
                let incarnations = self.incarnation.borrow();
                let best = (0..self.disks)
                    .filter_map(|disk| {
                        let mut block = [0u8; nemesis::BLOCK];
                        let at = nemesis::block_offset(self.region_bytes, disk, 0);
                        std::os::unix::fs::FileExt::read_exact_at(&file, &mut block, at).ok()?;
                        let header = Header::decode(&block)?;
                        let node = usize::try_from(header.node)
                            .ok()
                            .filter(|n| (1..=NODES).contains(n))?;
                        let offset = offsets
                            .get(&(header.node, incarnations[node - 1]))
                            .copied()
                            .unwrap_or(0);
                        let left = i128::from(header.hold_until_ns) - offset - now;
                        Some((left, node))
                    })
                    .max();
                if let Some((left, node)) = best {
                    if left >= i128::try_from(min_left.as_nanos()).unwrap_or(i128::MAX)
                        && self.cluster.node_running(node)
                    {
                        return Some(node);
                    }
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(crate) fn victim(&self, min_left: Duration, wait: Duration) -> usize {
        self.writing_node(min_left, wait).unwrap_or_else(|| {
            usize::try_from(1 + self.random.borrow_mut().below(NODES as u64)).unwrap_or(1)
        })
    }

    pub(crate) fn inject(&self, fault: Fault, control: bool) -> Result<(), String> {
        *self.faults.borrow_mut().entry(fault).or_default() += 1;
        let (min_left, wait) = if control {
            (Duration::from_secs(10), Duration::from_secs(60))
        } else {
            (Duration::from_secs(3), Duration::from_secs(15))
        };
        let node = self.victim(min_left, wait);
        match fault {
            Fault::Partition => {
                let cut_for = if control {
                    Duration::from_secs(16)
                } else {
                    self.random.borrow_mut().millis(2_000, 14_000)
                };
                self.note(format!(
                    "partition: node{node} cut off for {:.1} s",
                    cut_for.as_secs_f64()
                ));
                self.cluster.cut_node(node).map_err(|err| err.to_string())?;
                std::thread::sleep(cut_for);
                if self.cluster.node_running(node) {
                    self.cluster
                        .reconnect_node(node)
                        .map_err(|err| err.to_string())?;
                    self.note(format!("partition: node{node} reconnected"));
                    if !self.cluster.fencing() && cut_for > Duration::from_secs(4) {
                        // Nobody fences it: the operator power-cycles the node that was cut off
                        // (its DLM state diverged from the survivors').
                        self.note(format!(
                            "partition: no fencing, node{node} power-cycled by hand"
                        ));
                        self.cluster
                            .kill_node(node)
                            .map_err(|err| err.to_string())?;
                    }
                }
                self.settle(Duration::from_secs(12))
            }
            Fault::KillNode => {
                self.note(format!("kill: node{node}'s QEMU SIGKILLed"));
                self.cluster
                    .kill_node(node)
                    .map_err(|err| err.to_string())?;
                self.settle(Duration::from_secs(12))
            }
            Fault::Freeze if self.cluster.fence_mode() == FenceMode::Watchdog => {
                let frozen_for = self.random.borrow_mut().millis(15_000, 25_000);
                self.note(format!(
                    "freeze: node{node}'s vCPUs stopped for up to {:.1} s (its watchdog runs on)",
                    frozen_for.as_secs_f64()
                ));
                let attempts = self
                    .cluster
                    .freeze_vcpus(node)
                    .map_err(|err| err.to_string())?;
                let frozen = Instant::now();
                while frozen.elapsed() < frozen_for && self.cluster.node_running(node) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let gone_after = frozen.elapsed().as_secs_f64();
                let ran = self
                    .cluster
                    .thaw_vcpus(node)
                    .map_err(|err| err.to_string())?;
                if ran {
                    // lockmgrd always has the watchdog open: frozen past its timeout, the node
                    // must have been powered off.
                    let miss = format!(
                        "node{node} still ran after its vCPUs were frozen {gone_after:.1} s: THE \
                         WATCHDOG DID NOT FIRE"
                    );
                    self.note(miss.clone());
                    self.watchdog_misses.borrow_mut().push(miss);
                } else {
                    self.note(format!(
                        "freeze: node{node} powered off {gone_after:.1} s into the freeze \
                         (frozen in {attempts} attempt(s)); watchdog event: {}",
                        self.cluster.powered_off_by_watchdog(node)
                    ));
                }
                self.settle(Duration::from_secs(12))
            }
            Fault::Freeze => {
                let frozen_for = self.random.borrow_mut().millis(5_000, 11_000);
                self.note(format!(
                    "freeze: node{node} SIGSTOPped for {:.1} s",
                    frozen_for.as_secs_f64()
                ));
                self.cluster
                    .freeze_node(node)
                    .map_err(|err| err.to_string())?;
                std::thread::sleep(frozen_for);
                match self.cluster.thaw_node(node) {
                    Ok(()) => self.note(format!("freeze: node{node} SIGCONTed")),
                    Err(err) => self.note(format!("freeze: node{node} not thawed: {err}")),
                }
                self.settle(Duration::from_secs(12))
            }
            Fault::KillDaemon => {
                self.note(format!("daemon: lockmgrd SIGKILLed on node{node}"));
                self.sh(
                    node,
                    "kill -9 $(cat /run/lockmgr/dlm.pid); sleep 0.2; \
                     cat /run/lockmgr/lockmgrd.log.current >> /run/lockmgr/lockmgrd.log",
                )?;
                // Within the watchdog timeout (10 s) with watchdog fencing: the node survives.
                std::thread::sleep(self.random.borrow_mut().millis(500, 4_000));
                match self.start_daemon(node) {
                    Ok(()) => self.note(format!("daemon: lockmgrd restarted on node{node}")),
                    // Its watchdog powered it off meanwhile: settle boots it again.
                    Err(_) if !self.cluster.node_running(node) => self.note(format!(
                        "daemon: node{node} powered off before lockmgrd was back"
                    )),
                    Err(err) => return Err(err),
                }
                self.settle(Duration::from_secs(2))
            }
            Fault::RestartCorosync => {
                self.note(format!(
                    "corosync: SIGKILLed and started again on node{node}"
                ));
                self.sh(node, "kill -9 $(pidof corosync); sleep 0.5; corosync")?;
                self.settle(Duration::from_secs(12))
            }
        }
    }
}
