//! The nemesis: dlm.so and `lockmgrd --backend dlm` never let two hosts write one exclusive disk.
//!
//! Three nodes share one raw disk ([`ClusterSpec::shared_disk`], a SAN LUN); each runs lockmgrd
//! and several `nemesis-worker`s, libvirt domains that contend for a few exclusive disks through
//! dlm.so and write their disk's region of the shared disk only while they hold its lock (format
//! and checker: [`lockmgr_testbed::nemesis`]). Meanwhile the nemesis partitions nodes and heals
//! them, kills them, freezes them (SIGSTOP of the VM) past corosync's token timeout, kills
//! lockmgrd and restarts corosync; a node that was powered off is booted again, with its lockmgrd
//! and workers. Afterwards the checker reads the disk image and the workers' logs.
//!
//! - `nemesis_with_fencing`: every fault kind at least once; 0 violations.
//! - `nemesis_with_watchdog_fencing`: the same with watchdog self-fencing ([`FenceMode::Watchdog`]:
//!   lockmgrd `--watchdog`, an i6300esb per node, `fence_lockmgr_watchdog` on the survivors); the
//!   freeze stops only the vCPUs ([`Cluster::freeze_vcpus`]) so that the watchdog fires; nodes that
//!   powered themselves off are booted again; 0 violations and every expected watchdog reset.
//! - `nemesis_control_without_fencing`: the same cluster booted without fencing and only
//!   partitions; the checker must report violations (it can fail).
//!
//! Environment: `NEMESIS_SECONDS` (the fenced run's length after the first round of every fault
//! kind, default 0), `NEMESIS_REGION_MIB` (per disk, default 16), `NEMESIS_OWNERS` (per node,
//! default 3), `NEMESIS_DISKS` (default 3), `NEMESIS_REPORT` (a file to append the summary to).
//!
//! Needs root, /dev/net/tun, QEMU and a few minutes: run by `tests/cluster/run-nemesis.sh`.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockmgr_testbed::nemesis::{self, Header, Report};
use lockmgr_testbed::{
    Cluster, ClusterSpec, FenceMode, NodeImage, SHARED_DISK_DEVICE, lockmgrd_watchdog_args,
};

const SHARE: &str = "/mnt/host";
const CONFIG: &str = "/etc/libvirt/qemu-dlm.conf";
const LOG_DIR: &str = "/mnt/scratch/nemesis";
const NODES: usize = 3;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn host_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i128::try_from(since.as_nanos()).unwrap_or(0))
}

/// What the nemesis does to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
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

const ALL_FAULTS: [Fault; 5] = [
    Fault::Partition,
    Fault::KillNode,
    Fault::Freeze,
    Fault::KillDaemon,
    Fault::RestartCorosync,
];

/// xorshift64 for the nemesis's choices.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to.saturating_sub(from).max(1)))
    }
}

struct Nemesis<'c> {
    cluster: &'c Cluster,
    image: PathBuf,
    scratch: PathBuf,
    region_bytes: u64,
    disks: u64,
    owners: u64,
    /// Each node's boot count in this run.
    incarnation: RefCell<Vec<u64>>,
    /// (node, incarnation) → node clock − host clock, ns.
    offsets: RefCell<HashMap<(u64, u64), i128>>,
    faults: RefCell<BTreeMap<Fault, u32>>,
    /// Node restarts (power cycles) the nemesis did to bring a node back.
    restarts: RefCell<u32>,
    /// Nodes found powered off by their own watchdog (watchdog fencing).
    watchdog_resets: RefCell<u32>,
    /// Freezes past the watchdog timeout after which the node still ran: the watchdog did not
    /// fire when it had to.
    watchdog_misses: RefCell<Vec<String>>,
    /// Nodes power-cycled because they did not rejoin after a heal (kicked, daemons dead).
    kicked: RefCell<u32>,
    /// fence_lockmgr_watchdog runs that reported a node fenced, per (node, incarnation).
    agent_fences: RefCell<BTreeMap<(usize, u64), u32>>,
    journal: RefCell<Vec<String>>,
    started: Instant,
    random: RefCell<Random>,
}

impl<'c> Nemesis<'c> {
    fn note(&self, line: String) {
        let line = format!(
            "[nemesis {:7.1} s] {line}",
            self.started.elapsed().as_secs_f64()
        );
        println!("{line}");
        self.journal.borrow_mut().push(line);
    }

    fn sh(&self, node: usize, cmd: &str) -> Result<String, String> {
        let out = self
            .cluster
            .exec_timeout(node, cmd, Duration::from_secs(30))
            .map_err(|err| format!("node{node}: {cmd}: {err}"))?;
        Ok(out.stdout_text() + &out.stderr_text())
    }

    /// Node clock − host clock, best of 4 round trips.
    fn clock_offset(&self, node: usize) -> Result<i128, String> {
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

    fn start_daemon(&self, node: usize) -> Result<(), String> {
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
    fn setup(&self, node: usize) -> Result<(), String> {
        self.sh(
            node,
            &format!(
                "mkdir -p /etc/libvirt /run/lockmgr && printf '%s\\n' \
                 'lockspace_name = \"libvirt\"' 'socket_path = \"/run/lockmgr/dlm.sock\"' \
                 'state_dir = \"/run/lockmgr/dlm-state\"' > {CONFIG}"
            ),
        )?;
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
    fn count_agent_fences(&self) {
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
    fn wait_fence_done(&self, node: usize) {
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
    fn bring_back(&self, node: usize) -> Result<(), String> {
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

    fn healthy(&self, node: usize) -> bool {
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
    fn kicked(&self, node: usize) -> bool {
        self.sh(
            node,
            "pidof corosync >/dev/null && pidof dlm_controld >/dev/null && echo up",
        )
        .is_ok_and(|out| !out.contains("up"))
    }

    /// After a fault: waits `min_wait` (a fence decision takes up to ~10 s), then until every
    /// node runs and is healthy twice in a row. A powered-off node is booted again; a running one
    /// that stays unhealthy for 45 s is power-cycled (as an operator would).
    fn settle(&self, min_wait: Duration) -> Result<(), String> {
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

    /// The node whose holder means to hold a disk longest from now, if that is at least
    /// `min_left`; waits up to `wait` for one.
    fn writing_node(&self, min_left: Duration, wait: Duration) -> Option<usize> {
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

    fn victim(&self, min_left: Duration, wait: Duration) -> usize {
        self.writing_node(min_left, wait).unwrap_or_else(|| {
            usize::try_from(1 + self.random.borrow_mut().below(NODES as u64)).unwrap_or(1)
        })
    }

    fn inject(&self, fault: Fault, control: bool) -> Result<(), String> {
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

    /// Stops the workers (they release what they hold) and waits for them.
    fn stop_workers(&self) {
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

struct Outcome {
    report: Report,
    faults: BTreeMap<Fault, u32>,
    restarts: u32,
    fence_events: usize,
    watchdog_resets: u32,
    watchdog_misses: Vec<String>,
    seconds: f64,
    summary: String,
}

fn run(mode: FenceMode, extra_seconds: u64) -> Outcome {
    let fencing = mode.fences();
    let share = common::build_node_binaries();
    assert!(
        share.join("nemesis-worker").exists(),
        "nemesis-worker was not built next to {}",
        share.display()
    );
    let scratch = common::scratch_dir("lockmgr-nemesis-");
    std::fs::create_dir_all(scratch.path().join("nemesis")).unwrap();
    std::fs::set_permissions(
        scratch.path().join("nemesis"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let disks = env_u64("NEMESIS_DISKS", 3);
    let owners = env_u64("NEMESIS_OWNERS", 3);
    let region_bytes = env_u64("NEMESIS_REGION_MIB", 16) << 20;
    let image_path = scratch.path().join("shared.img");
    let image = NodeImage::ensure().expect("node image");
    let spec = ClusterSpec::with_nodes(NODES)
        .share(&share)
        .scratch(scratch.path())
        .fence_mode(mode)
        .shared_disk(&image_path, disks * region_bytes);
    let cluster = Cluster::start(&image, &spec).expect("boot the cluster");
    let nemesis = Nemesis {
        cluster: &cluster,
        image: image_path.clone(),
        scratch: scratch.path().to_owned(),
        region_bytes,
        disks,
        owners,
        incarnation: RefCell::new(vec![0; NODES]),
        offsets: RefCell::new(HashMap::new()),
        faults: RefCell::new(BTreeMap::new()),
        restarts: RefCell::new(0),
        watchdog_resets: RefCell::new(0),
        watchdog_misses: RefCell::new(Vec::new()),
        kicked: RefCell::new(0),
        agent_fences: RefCell::new(BTreeMap::new()),
        journal: RefCell::new(Vec::new()),
        started: Instant::now(),
        random: RefCell::new(Random(
            u64::try_from(host_ns() & 0xffff_ffff).unwrap_or(1) | 1,
        )),
    };
    for node in 1..=NODES {
        nemesis
            .setup(node)
            .unwrap_or_else(|err| panic!("setup node{node}: {err}"));
    }
    nemesis.note(format!(
        "{} nodes, fencing {}, {owners} workers per node, {disks} exclusive disks of {} MiB on {}",
        NODES,
        describe(mode),
        region_bytes >> 20,
        image_path.display()
    ));
    std::thread::sleep(Duration::from_secs(5));
    let plan: Vec<Fault> = if fencing {
        ALL_FAULTS.to_vec()
    } else {
        vec![Fault::Partition, Fault::Partition]
    };
    let mut errors = Vec::new();
    let mut inject = |fault: Fault| {
        if let Err(err) = nemesis.inject(fault, !fencing) {
            nemesis.note(format!("{fault:?} failed: {err}"));
            errors.push(format!("{fault:?}: {err}"));
        }
        let quiet = nemesis.random.borrow_mut().millis(2_000, 6_000);
        std::thread::sleep(quiet);
    };
    for fault in plan {
        inject(fault);
    }
    let soak_until = Instant::now() + Duration::from_secs(extra_seconds);
    while Instant::now() < soak_until {
        let pick = nemesis.random.borrow_mut().below(ALL_FAULTS.len() as u64);
        inject(ALL_FAULTS[usize::try_from(pick).unwrap_or(0)]);
    }
    nemesis.stop_workers();
    nemesis.count_agent_fences();
    let fence_events = if mode == FenceMode::Watchdog {
        let fenced: u32 = nemesis.agent_fences.borrow().values().sum();
        usize::try_from(fenced).unwrap_or(0)
    } else {
        cluster
            .fence_events()
            .map(|events| events.len())
            .unwrap_or(0)
    };
    let watchdog_resets = *nemesis.watchdog_resets.borrow();
    let watchdog_misses = nemesis.watchdog_misses.borrow().clone();
    let kicked = *nemesis.kicked.borrow();
    let seconds = nemesis.started.elapsed().as_secs_f64();
    let faults = nemesis.faults.borrow().clone();
    let restarts = *nemesis.restarts.borrow();
    let offsets = nemesis.offsets.borrow().clone();
    let journal = nemesis.journal.borrow().join("\n");
    drop(nemesis);
    cluster.stop().expect("stop the cluster");

    let bytes = std::fs::read(&image_path).expect("read the shared disk image");
    let logs =
        nemesis::read_logs(&scratch.path().join("nemesis"), &offsets).expect("read the logs");
    let report = nemesis::check(&bytes, region_bytes, disks, &logs);
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "== nemesis, fencing {}: {seconds:.0} s, {} workers in {} incarnations ==",
        describe(mode),
        NODES as u64 * owners,
        logs.len()
    );
    let _ = writeln!(
        summary,
        "faults: {}; node restarts {restarts}; {} {fence_events}; nemesis errors {}",
        faults
            .iter()
            .map(|(fault, count)| format!("{fault:?} {count}"))
            .collect::<Vec<_>>()
            .join(", "),
        if mode == FenceMode::Watchdog {
            "fence_lockmgr_watchdog runs that reported a node fenced"
        } else {
            "fence requests"
        },
        errors.len()
    );
    if mode == FenceMode::Watchdog {
        let _ = writeln!(
            summary,
            "watchdog resets {watchdog_resets}; watchdog did NOT fire when it had to: {}; \
             nodes power-cycled after being kicked out {kicked}",
            watchdog_misses.len()
        );
    }
    summary.push_str(&report.render());
    println!("{journal}\n{summary}");
    if let Ok(path) = std::env::var("NEMESIS_REPORT") {
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, summary.as_bytes()));
    }
    assert!(errors.is_empty(), "the nemesis failed to act: {errors:?}");
    Outcome {
        report,
        faults,
        restarts,
        fence_events,
        watchdog_resets,
        watchdog_misses,
        seconds,
        summary,
    }
}

fn describe(mode: FenceMode) -> &'static str {
    match mode {
        FenceMode::Power => "on",
        FenceMode::Watchdog => "by watchdog",
        FenceMode::Off => "OFF (control)",
    }
}

/// What every fenced run must show: each fault kind injected, grants, fences reported, and no
/// violation.
fn assert_fenced_run(outcome: &Outcome, fencing: &str) {
    for fault in ALL_FAULTS {
        assert!(
            outcome.faults.get(&fault).copied().unwrap_or(0) > 0,
            "{fault:?} was never injected\n{}",
            outcome.summary
        );
    }
    assert!(
        outcome.report.grants > 0,
        "no grant at all\n{}",
        outcome.summary
    );
    assert!(
        outcome.fence_events > 0,
        "nothing was reported fenced ({fencing})\n{}",
        outcome.summary
    );
    assert!(
        outcome.report.violations.is_empty(),
        "violations with {fencing}\n{}",
        outcome.summary
    );
}

#[test]
#[ignore = "boots a 3-node QEMU cluster with a shared disk; run by tests/cluster/run-nemesis.sh"]
fn nemesis_with_fencing() {
    let outcome = run(FenceMode::Power, env_u64("NEMESIS_SECONDS", 0));
    assert_fenced_run(&outcome, "power fencing");
    println!(
        "nemesis with fencing: {:.0} s, {} node restarts, 0 violations",
        outcome.seconds, outcome.restarts
    );
}

#[test]
#[ignore = "boots a 3-node QEMU cluster with watchdogs; run by tests/cluster/run-nemesis.sh"]
fn nemesis_with_watchdog_fencing() {
    let outcome = run(FenceMode::Watchdog, env_u64("NEMESIS_SECONDS", 0));
    assert_fenced_run(&outcome, "watchdog fencing");
    assert!(
        outcome.watchdog_misses.is_empty(),
        "the watchdog did not fire when it had to: {:?}\n{}",
        outcome.watchdog_misses,
        outcome.summary
    );
    assert!(
        outcome.watchdog_resets > 0,
        "no node was powered off by its watchdog\n{}",
        outcome.summary
    );
    println!(
        "nemesis with watchdog fencing: {:.0} s, {} node restarts, {} watchdog resets, 0 violations",
        outcome.seconds, outcome.restarts, outcome.watchdog_resets
    );
}

#[test]
#[ignore = "boots a 3-node QEMU cluster without fencing; run by tests/cluster/run-nemesis.sh"]
fn nemesis_control_without_fencing() {
    let outcome = run(FenceMode::Off, 0);
    assert!(
        outcome.report.grants > 0,
        "no grant at all\n{}",
        outcome.summary
    );
    assert!(
        !outcome.report.violations.is_empty(),
        "the control run without fencing showed no violation: the checker cannot fail\n{}",
        outcome.summary
    );
    println!(
        "control without fencing: {} violations, as it must",
        outcome.report.violations.len()
    );
}
