//! The nemesis's hold on the cluster: [`Nemesis`] sets up lockmgrd and the workers on a node,
//! brings nodes back after a fault, waits for the cluster to settle, counts fences and stops the
//! workers.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lockmgr_testbed::nemesis::{self, Random};
use lockmgr_testbed::{Cluster, FenceMode, SHARED_DISK_DEVICE, lockmgrd_watchdog_args};

use crate::faults::Fault;
use crate::{CONFIG, LOG_DIR, NODES, SHARE, host_ns};

pub(crate) struct Nemesis<'c> {
    pub(crate) cluster: &'c Cluster,
    pub(crate) image: PathBuf,
    pub(crate) scratch: PathBuf,
    pub(crate) region_bytes: u64,
    pub(crate) disks: u64,
    pub(crate) owners: u64,
    /// Each node's boot count in this run.
    pub(crate) incarnation: RefCell<Vec<u64>>,
    /// (node, incarnation) → node clock − host clock, ns.
    pub(crate) offsets: RefCell<HashMap<(u64, u64), i128>>,
    pub(crate) faults: RefCell<BTreeMap<Fault, u32>>,
    /// Node restarts (power cycles) the nemesis did to bring a node back.
    pub(crate) restarts: RefCell<u32>,
    /// Nodes found powered off by their own watchdog (watchdog fencing).
    pub(crate) watchdog_resets: RefCell<u32>,
    /// Freezes past the watchdog timeout after which the node still ran: the watchdog did not
    /// fire when it had to.
    pub(crate) watchdog_misses: RefCell<Vec<String>>,
    /// Nodes power-cycled because they did not rejoin after a heal (kicked, daemons dead).
    pub(crate) kicked: RefCell<u32>,
    /// fence_lockmgr_watchdog runs that reported a node fenced, per (node, incarnation).
    pub(crate) agent_fences: RefCell<BTreeMap<(usize, u64), u32>>,
    pub(crate) journal: RefCell<Vec<String>>,
    pub(crate) started: Instant,
    pub(crate) random: RefCell<Random>,
}

impl<'c> Nemesis<'c> {
    pub(crate) fn note(&self, line: String) {
        let line = format!(
            "[nemesis {:7.1} s] {line}",
            self.started.elapsed().as_secs_f64()
        );
        println!("{line}");
        self.journal.borrow_mut().push(line);
    }

    pub(crate) fn sh(&self, node: usize, cmd: &str) -> Result<String, String> {
        let out = self
            .cluster
            .exec_timeout(node, cmd, Duration::from_secs(30))
            .map_err(|err| format!("node{node}: {cmd}: {err}"))?;
        Ok(out.stdout_text() + &out.stderr_text())
    }

    /// Node clock − host clock, best of 4 round trips.
    pub(crate) fn clock_offset(&self, node: usize) -> Result<i128, String> {
        let mut best: Option<(i128, i128)> = None;
        for _ in 0..4 {
            let before = host_ns();
            let out = self.sh(node, "date +%s%N")?;
            let after = host_ns();
            let guest: i128 = out.trim().parse().map_err(|_| format!("date: {out:?}"))?;
            let error = (after - before) / 2;
            if best.is_none_or(|(_, best_error)| error < best_error) {
                best = Some((guest - (before + after) / 2, error));
            }
        }
        best.map(|(offset, _)| offset)
            .ok_or_else(|| "no clock sample".to_owned())
    }

    pub(crate) fn start_daemon(&self, node: usize) -> Result<(), String> {
        self.sh(
            node,
            "rm -f /run/lockmgr/dlm.pid; mkdir -p /run/lockmgr /etc/libvirt",
        )?;
        let unsafe_flag = match self.cluster.fence_mode() {
            FenceMode::Power => String::new(),
            FenceMode::Watchdog => format!(" {}", lockmgrd_watchdog_args()),
            FenceMode::Off => " --unsafe-allow-no-fencing".to_owned(),
        };
        self.cluster
            .spawn(
                node,
                &format!(
                    "{SHARE}/lockmgrd --backend dlm --config {CONFIG} --pid-file /run/lockmgr/dlm.pid{unsafe_flag}"
                ),
                "/run/lockmgr/lockmgrd.log.current",
            )
            .map_err(|err| err.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(40);
        while !self
            .sh(node, "test -s /run/lockmgr/dlm.pid && echo up")?
            .contains("up")
        {
            if Instant::now() > deadline {
                return Err(format!(
                    "lockmgrd did not start on node{node}: {}",
                    self.sh(node, "tail -20 /run/lockmgr/lockmgrd.log.current")
                        .unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(())
    }

    /// Config, lockmgrd, clock offset and the workers of a freshly booted node.
    pub(crate) fn setup(&self, node: usize) -> Result<(), String> {
        self.sh(node, &crate::common::write_dlm_config(CONFIG))?;
        self.start_daemon(node)?;
        let incarnation = self.incarnation.borrow()[node - 1];
        let offset = self.clock_offset(node)?;
        self.offsets
            .borrow_mut()
            .insert((node as u64, incarnation), offset);
        for owner in 0..self.owners {
            self.cluster
                .spawn(
                    node,
                    &format!(
                        "{SHARE}/nemesis-worker --plugin {SHARE}/libdlm_plugin.so --config {CONFIG} \
                         --node {node} --owner {owner} --incarnation {incarnation} \
                         --device {SHARED_DISK_DEVICE} --disks {} --region-bytes {} \
                         --log-dir {LOG_DIR} --stop {LOG_DIR}/stop --seconds 86400",
                        self.disks, self.region_bytes
                    ),
                    &format!("/run/nemesis-worker-{owner}.log"),
                )
                .map_err(|err| err.to_string())?;
        }
        // Every worker must have started its log in the scratch share (the checker counts on it).
        let deadline = Instant::now() + Duration::from_secs(30);
        for owner in 0..self.owners {
            let log = self.scratch.join("nemesis").join(nemesis::log_name(
                node as u64,
                owner,
                incarnation,
            ));
            while !log.exists() {
                if Instant::now() > deadline {
                    let out = self
                        .sh(
                            node,
                            &format!("cat /run/nemesis-worker-{owner}.log; mount | grep 9p"),
                        )
                        .unwrap_or_default();
                    return Err(format!(
                        "node{node}: worker {owner} (incarnation {incarnation}) wrote no log in 30 s: {out}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        Ok(())
    }

    /// Counts the fence_lockmgr_watchdog runs each running node logged (its log lives in the
    /// node's RAM: read after every fault, before a survivor could be restarted).
    pub(crate) fn count_agent_fences(&self) {
        if self.cluster.fence_mode() != FenceMode::Watchdog {
            return;
        }
        for node in 1..=NODES {
            if !self.cluster.node_running(node) {
                continue;
            }
            let Ok(out) = self.sh(
                node,
                &format!(
                    "grep -c 'fenced:' {} 2>/dev/null || true",
                    lockmgr_testbed::watchdog::WATCHDOG_FENCE_AGENT_LOG
                ),
            ) else {
                continue;
            };
            if let Ok(count) = out.trim().parse::<u32>() {
                let incarnation = self.incarnation.borrow()[node - 1];
                let mut fences = self.agent_fences.borrow_mut();
                let seen = fences.entry((node, incarnation)).or_default();
                *seen = (*seen).max(count);
            }
        }
    }

    /// Watchdog fencing: waits (up to 45 s) until no running node has a fence of `node` pending.
    /// fence_lockmgr_watchdog waits 20 s; a node that rejoins before the fence of its previous
    /// incarnation has completed is thrown out when it does.
    pub(crate) fn wait_fence_done(&self, node: usize) {
        if self.cluster.fence_mode() != FenceMode::Watchdog {
            return;
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(45) {
            let pending = (1..=NODES)
                .filter(|other| *other != node && self.cluster.node_running(*other))
                .any(|other| {
                    self.sh(
                        other,
                        &format!(
                            "dlm_tool status 2>/dev/null | grep -q '^fence {node} ' && echo pending"
                        ),
                    )
                    .is_ok_and(|out| out.contains("pending"))
                });
            if !pending {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        if started.elapsed() > Duration::from_secs(1) {
            self.note(format!(
                "node{node}: waited {:.1} s for the survivors' fence of it to complete",
                started.elapsed().as_secs_f64()
            ));
        }
    }

    /// Boots a powered-off node again and sets it up.
    pub(crate) fn bring_back(&self, node: usize) -> Result<(), String> {
        let mut attempt = 1;
        let took = loop {
            self.wait_fence_done(node);
            match self.cluster.restart_node(node) {
                Ok(took) => break took,
                // Watchdog fencing: the survivors' fence of its previous incarnation completed
                // after it had rejoined, and they threw it out. Once more, as an operator would.
                Err(err) if attempt < 3 && self.cluster.fence_mode() == FenceMode::Watchdog => {
                    self.note(format!(
                        "node{node} failed to rejoin (attempt {attempt}): {}",
                        err.to_string().lines().next().unwrap_or_default()
                    ));
                    if self.cluster.node_running(node) {
                        self.cluster
                            .kill_node(node)
                            .map_err(|err| err.to_string())?;
                    }
                    attempt += 1;
                }
                Err(err) => return Err(err.to_string()),
            }
        };
        self.incarnation.borrow_mut()[node - 1] += 1;
        *self.restarts.borrow_mut() += 1;
        self.setup(node)?;
        self.note(format!(
            "node{node} back (incarnation {}), booted in {:.1} s",
            self.incarnation.borrow()[node - 1],
            took.as_secs_f64()
        ));
        Ok(())
    }

    pub(crate) fn healthy(&self, node: usize) -> bool {
        self.sh(
            node,
            "corosync-quorumtool -s 2>/dev/null | grep -q '^Quorate:[[:space:]]*Yes' && \
             dlm_tool ls 2>/dev/null | grep -Eq '^members +1 2 3 *$' && \
             kill -0 $(cat /run/lockmgr/dlm.pid) && echo healthy",
        )
        .is_ok_and(|out| out.contains("healthy"))
    }

    /// Whether node `node`'s corosync or dlm_controld is gone (dlm_controld kills corosync on a
    /// node that merges back with stale state; dlm_controld exits when corosync dies).
    pub(crate) fn kicked(&self, node: usize) -> bool {
        self.sh(
            node,
            "pidof corosync >/dev/null && pidof dlm_controld >/dev/null && echo up",
        )
        .is_ok_and(|out| !out.contains("up"))
    }

    /// After a fault: waits `min_wait` (a fence decision takes up to ~10 s), then until every
    /// node runs and is healthy twice in a row. A powered-off node is booted again; a running one
    /// that stays unhealthy for 45 s is power-cycled (as an operator would).
    pub(crate) fn settle(&self, min_wait: Duration) -> Result<(), String> {
        std::thread::sleep(min_wait);
        let mut unhealthy_since: Vec<Option<Instant>> = vec![None; NODES];
        let mut healthy_rounds = 0;
        let deadline = Instant::now() + Duration::from_secs(600);
        while healthy_rounds < 2 {
            if Instant::now() > deadline {
                return Err("the cluster did not settle within 600 s".to_owned());
            }
            let mut all = true;
            self.count_agent_fences();
            for node in 1..=NODES {
                if !self.cluster.node_running(node) {
                    if self.cluster.powered_off_by_watchdog(node) {
                        *self.watchdog_resets.borrow_mut() += 1;
                        self.note(format!("node{node} was powered off by its own watchdog"));
                    } else {
                        self.note(format!("node{node} is powered off (fenced or killed)"));
                    }
                    self.bring_back(node)?;
                    unhealthy_since[node - 1] = None;
                    all = false;
                } else if self.healthy(node) {
                    unhealthy_since[node - 1] = None;
                } else if self.cluster.fence_mode() == FenceMode::Watchdog && self.kicked(node) {
                    // Nobody powers it off: its watchdog stays petted (its domains are gone), and
                    // it cannot rejoin with its stale DLM state. The operator reboots it.
                    *self.kicked.borrow_mut() += 1;
                    self.note(format!(
                        "node{node} runs without corosync or dlm_controld (kicked out after a \
                         heal, or its corosync died): power-cycling it"
                    ));
                    self.cluster
                        .kill_node(node)
                        .map_err(|err| err.to_string())?;
                    self.bring_back(node)?;
                    unhealthy_since[node - 1] = None;
                    all = false;
                } else {
                    all = false;
                    let since = *unhealthy_since[node - 1].get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(45) {
                        self.note(format!(
                            "node{node} runs but is not healthy for 45 s: power-cycling it"
                        ));
                        self.cluster
                            .kill_node(node)
                            .map_err(|err| err.to_string())?;
                        self.bring_back(node)?;
                        unhealthy_since[node - 1] = None;
                    }
                }
            }
            healthy_rounds = if all { healthy_rounds + 1 } else { 0 };
            std::thread::sleep(Duration::from_secs(1));
        }
        Ok(())
    }

    /// Stops the workers (they release what they hold) and waits for them.
    pub(crate) fn stop_workers(&self) {
        let stop = self.scratch.join("nemesis").join("stop");
        let _ = std::fs::write(&stop, b"stop\n");
        let deadline = Instant::now() + Duration::from_secs(60);
        for node in 1..=NODES {
            while self.cluster.node_running(node)
                && self
                    .sh(node, "pidof nemesis-worker >/dev/null && echo running")
                    .is_ok_and(|out| out.contains("running"))
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}
