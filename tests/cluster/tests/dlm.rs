//! dlm.so and `lockmgrd --backend dlm` on real DLM clusters (QEMU nodes, corosync,
//! dlm_controld, power fencing through the test bed's host): libvirt's calls replayed with owners
//! on different nodes, the daemon's crash and orphan adoption, a race test with a ledger, and node
//! failures on 2 and 3 nodes:
//!
//! - **partition**: an owner on the node that gets cut off holds EX on a disk; from the cut (t = 0)
//!   node1 retries an Acquire of the SAME disk every 250 ms. With fencing, node1 must be granted
//!   only after the host powered the cut-off node off (fence log), on 2 and 3 nodes;
//! - **control**: the same check on a 3-node cluster booted without fencing must observe the
//!   violation (node1 granted while the cut-off node still runs), so the checker can fail;
//! - **node crash**: a node's QEMU SIGKILLed; the survivor's grant time;
//! - **watchdog fencing** (3 nodes, no host fence: lockmgrd `--watchdog`, survivors run
//!   `fence_lockmgr_watchdog`): a cut-off node's own lockmgrd stops its domain on quorum loss and
//!   node1 is granted only after that domain is gone; a node whose vCPUs freeze is powered off by
//!   its watchdog before node1 is granted; a crashed node's disk is granted after the wait.
//!
//! Failover times are printed in a table, never asserted; the ordering is.
//!
//! Needs root, /dev/net/tun, QEMU and a few minutes: run by `tests/cluster/run-dlm.sh`.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockmgr_testbed::watchdog::{LOCK_FAILURE_TIMEOUT_S, lockmgrd_watchdog_args};
use lockmgr_testbed::{Cluster, ClusterSpec, FenceEvent, FenceMode, NodeImage};

const SHARE: &str = "/mnt/host";
const CONFIG: &str = "/etc/libvirt/qemu-dlm.conf";
const BUSY: i64 = 87;

/// What a `step` printed.
#[derive(Debug, Clone)]
struct Step {
    json: serde_json::Value,
    raw: String,
}

impl Step {
    fn ok(&self) -> bool {
        self.json["ok"] == true
    }
    fn code(&self) -> i64 {
        self.json["code"].as_i64().unwrap_or(0)
    }
    fn error(&self) -> String {
        self.json["error"].as_str().unwrap_or(&self.raw).to_owned()
    }
    fn state(&self) -> Option<String> {
        self.json["state"].as_str().map(str::to_owned)
    }
    fn pid(&self) -> u32 {
        self.json["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0)
    }
}

/// A domain placed on a node: its name and its QEMU stand-in's pid there.
#[derive(Debug, Clone)]
struct Dom {
    node: usize,
    name: String,
    uuid: String,
    pid: u32,
}

struct Bed<'c> {
    cluster: &'c Cluster,
    /// Failover figures measured on this cluster, for the summary.
    figures: RefCell<Vec<Figure>>,
}

/// A node's clock against the host's: `node_ns - offset_ns` is the host time, ± `error`.
#[derive(Debug, Clone, Copy)]
struct Clock {
    offset_ns: i128,
    error: Duration,
}

fn host_ns(time: SystemTime) -> i128 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| i128::try_from(since.as_nanos()).unwrap_or(0))
}

/// `later - earlier` in seconds (negative when `later` is earlier).
fn secs_between(earlier: SystemTime, later: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

/// One row of the failover table; times in seconds from the cut or the kill (host clock).
#[derive(Debug, Clone)]
struct Figure {
    scenario: String,
    nodes: usize,
    fencing: bool,
    victim_dead: Option<f64>,
    granted: Option<f64>,
    note: String,
}

impl<'c> Bed<'c> {
    fn new(cluster: &'c Cluster) -> Self {
        Bed {
            cluster,
            figures: RefCell::new(Vec::new()),
        }
    }

    /// Measures node `node`'s clock against ours (the best of a few round trips).
    fn clock(&self, node: usize) -> Result<Clock, String> {
        let mut best: Option<Clock> = None;
        for _ in 0..4 {
            let before = SystemTime::now();
            let out = self
                .cluster
                .exec_ok(node, "date +%s%N")
                .map_err(|e| e.to_string())?;
            let after = SystemTime::now();
            let guest: i128 = out
                .trim()
                .parse()
                .map_err(|e| format!("node{node}: date +%s%N: {out:?}: {e}"))?;
            let middle = (host_ns(before) + host_ns(after)) / 2;
            let error = after.duration_since(before).unwrap_or_default() / 2;
            if best.is_none_or(|best| error < best.error) {
                best = Some(Clock {
                    offset_ns: guest - middle,
                    error,
                });
            }
        }
        best.ok_or_else(|| "no clock sample".to_owned())
    }

    fn sh(&self, node: usize, cmd: &str) -> String {
        let out = self
            .cluster
            .exec(node, cmd)
            .unwrap_or_else(|e| panic!("node{node}: {cmd}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    fn step_cmd(op: &str, domain: &str, pid: u32, extra: &str) -> String {
        format!(
            "{SHARE}/lockmgr-loader-test step {op} --plugin {SHARE}/libdlm_plugin.so --config {CONFIG} \
             --domain {domain} --pid {pid} {extra}"
        )
    }

    fn step(&self, node: usize, op: &str, domain: &str, pid: u32, extra: &str) -> Step {
        self.run_step(node, &Self::step_cmd(op, domain, pid, extra))
            .0
    }

    /// Runs a step command; also returns the node's clock (ns) read right after it ended.
    fn run_step(&self, node: usize, cmd: &str) -> (Step, Option<i128>) {
        let timed = format!("{cmd}; date +%s%N >&2");
        let out = self
            .cluster
            .exec(node, &timed)
            .unwrap_or_else(|e| panic!("node{node}: {cmd}: {e}"));
        let raw = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = raw.lines().last().unwrap_or("").to_owned();
        let json = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!(
                "node{node}: `{cmd}` printed no JSON:\n{raw}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let ended = out
            .stderr_text()
            .lines()
            .last()
            .and_then(|line| line.trim().parse().ok());
        (Step { json, raw }, ended)
    }

    /// Acquire, with the node's clock (ns) when it returned.
    fn acquire_timed(&self, dom: &Dom, disks: &str) -> (Step, Option<i128>) {
        self.run_step(
            dom.node,
            &Self::step_cmd("acquire", &dom.name, dom.pid, disks),
        )
    }

    /// libvirt's start: the pre-exec child registers; the real Acquire follows separately.
    fn register(&self, node: usize, name: &str, disks: &str) -> Dom {
        let step = self.step(node, "register", name, 0, disks);
        assert!(step.ok(), "register {name} on node{node}: {}", step.error());
        Dom {
            node,
            name: name.into(),
            uuid: step.json["uuid"].as_str().unwrap_or_default().to_owned(),
            pid: step.pid(),
        }
    }

    fn acquire(&self, dom: &Dom, disks: &str) -> Step {
        self.step(dom.node, "acquire", &dom.name, dom.pid, disks)
    }

    fn resume(&self, dom: &Dom, disks: &str, state: &str) -> Step {
        self.step(
            dom.node,
            "acquire",
            &dom.name,
            dom.pid,
            &format!("{disks} --state '{state}'"),
        )
    }

    fn pause(&self, dom: &Dom, disks: &str) -> Step {
        self.step(dom.node, "pause", &dom.name, dom.pid, disks)
    }

    fn detach(&self, dom: &Dom, disks: &str) -> Step {
        self.step(dom.node, "release", &dom.name, dom.pid, disks)
    }

    fn kill(&self, dom: &Dom) {
        self.sh(dom.node, &format!("kill -9 {}", dom.pid));
    }

    fn start_daemon(&self, node: usize) {
        let fencing_flags = match self.cluster.fence_mode() {
            FenceMode::Power => format!("--lock-failure-timeout {LOCK_FAILURE_TIMEOUT_S}"),
            FenceMode::Watchdog => lockmgrd_watchdog_args(),
            // lockmgrd refuses a cluster without fencing; the control run must run it anyway.
            FenceMode::Off => {
                format!("--lock-failure-timeout {LOCK_FAILURE_TIMEOUT_S} --unsafe-allow-no-fencing")
            }
        };
        self.start_daemon_with(node, &fencing_flags);
    }

    /// Starts lockmgrd on `node` with these fencing flags, and waits until it serves.
    fn start_daemon_with(&self, node: usize, fencing_flags: &str) {
        self.sh(
            node,
            "rm -f /run/lockmgr/dlm.pid; mkdir -p /run/lockmgr /etc/libvirt",
        );
        self.cluster
            .spawn(
                node,
                &format!("{SHARE}/lockmgrd --backend dlm --config {CONFIG} --pid-file /run/lockmgr/dlm.pid {fencing_flags}"),
                "/run/lockmgr/lockmgrd.log.current",
            )
            .unwrap();
        // Keep every run's log: append the current one on each start.
        let deadline = Instant::now() + Duration::from_secs(30);
        // The pid file appears once the daemon has restored its table and listens (a killed
        // daemon leaves its socket file behind, so that is no sign of life).
        while !self
            .sh(node, "test -s /run/lockmgr/dlm.pid && echo up")
            .contains("up")
        {
            assert!(
                Instant::now() < deadline,
                "lockmgrd did not start on node{node}:\n{}",
                self.daemon_log(node)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn daemon_log(&self, node: usize) -> String {
        let cmd = "cat /run/lockmgr/lockmgrd.log 2>/dev/null; cat /run/lockmgr/lockmgrd.log.current 2>/dev/null";
        match self.cluster.exec(node, cmd) {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(err) => format!("(no log from node{node}: {err})"),
        }
    }

    /// SIGKILL of lockmgrd (a crash); its log is kept.
    fn crash_daemon(&self, node: usize) {
        self.sh(
            node,
            "kill -9 $(cat /run/lockmgr/dlm.pid); sleep 0.2; cat /run/lockmgr/lockmgrd.log.current >> /run/lockmgr/lockmgrd.log",
        );
    }

    fn setup(&self, node: usize) {
        self.sh(
            node,
            &format!(
                "mkdir -p /etc/libvirt /run/lockmgr && printf '%s\\n' \
                 'lockspace_name = \"libvirt\"' 'socket_path = \"/run/lockmgr/dlm.sock\"' \
                 'state_dir = \"/run/lockmgr/dlm-state\"' > {CONFIG}"
            ),
        );
        self.start_daemon(node);
    }

    /// Retries `acquire` until granted or `limit`; returns the time it took.
    fn acquire_until_granted(
        &self,
        dom: &Dom,
        disks: &str,
        limit: Duration,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            let step = self.acquire(dom, disks);
            if step.ok() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                return Err(format!("not granted after {:?}: {}", limit, step.error()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

type Check = Result<String, String>;

fn refused_across_nodes(step: &Step, what: &str) -> Check {
    if step.ok() {
        return Err(format!("{what}: granted, expected a refusal"));
    }
    if step.code() != BUSY || !step.error().contains("locked on another node of cluster") {
        return Err(format!(
            "{what}: refused, but not as busy on another node: {}",
            step.error()
        ));
    }
    Ok(step.error())
}

fn granted(step: &Step, what: &str) -> Result<(), String> {
    if step.ok() {
        Ok(())
    } else {
        Err(format!("{what}: refused: {}", step.error()))
    }
}

fn exclusive_across_nodes(bed: &Bed) -> Check {
    let disk = "--disk /vm/excl.img";
    let a = bed.register(1, "excl-a", disk);
    let b = bed.register(2, "excl-b", disk);
    granted(&bed.acquire(&a, disk), "A on node1")?;
    let refusal = refused_across_nodes(&bed.acquire(&b, disk), "B on node2")?;
    granted(&bed.detach(&a, disk), "A detaches")?;
    granted(&bed.acquire(&b, disk), "B after A detached")?;
    refused_across_nodes(&bed.acquire(&a, disk), "A while B holds it")?;
    bed.kill(&a);
    bed.kill(&b);
    Ok(format!("virsh would say: {refusal}"))
}

fn shared_across_nodes(bed: &Bed) -> Check {
    let shared = "--disk /vm/shared.img,shared";
    let exclusive = "--disk /vm/shared.img";
    let a = bed.register(1, "shr-a", shared);
    let c = bed.register(2, "shr-c", exclusive);
    let b = bed.register(2, "shr-b", shared);
    granted(&bed.acquire(&a, shared), "A shared on node1")?;
    refused_across_nodes(
        &bed.acquire(&c, exclusive),
        "C exclusive on node2 while A shares",
    )?;
    granted(&bed.acquire(&b, shared), "B shared on node2 beside A")?;
    for dom in [&a, &b, &c] {
        bed.kill(dom);
    }
    Ok("PR + PR granted on both nodes; EX refused".into())
}

fn read_only_is_not_locked(bed: &Bed) -> Check {
    let ro = "--disk /vm/ro.img,readonly";
    let a = bed.register(1, "ro-a", ro);
    let b = bed.register(2, "ro-b", ro);
    granted(&bed.acquire(&a, ro), "A read-only")?;
    granted(&bed.acquire(&b, ro), "B read-only")?;
    bed.kill(&a);
    bed.kill(&b);
    Ok("read-only disks take no lock (as lockd and sanlock)".into())
}

fn lease_across_nodes(bed: &Bed) -> Check {
    let lease = "--lease mylease,lockspace=pool";
    let a = bed.register(1, "lease-a", lease);
    let b = bed.register(2, "lease-b", lease);
    granted(&bed.acquire(&a, lease), "A's lease")?;
    let refusal = refused_across_nodes(&bed.acquire(&b, lease), "B's lease")?;
    bed.kill(&a);
    bed.kill(&b);
    Ok(refusal)
}

fn pause_resume_with_state(bed: &Bed) -> Check {
    let disk = "--disk /vm/pause.img";
    let a = bed.register(1, "pause-a", disk);
    let b = bed.register(2, "pause-b", disk);
    granted(&bed.acquire(&a, disk), "A")?;
    let paused = bed.pause(&a, disk);
    let state = paused
        .state()
        .ok_or_else(|| format!("pause returned no state: {}", paused.raw))?;
    granted(&bed.acquire(&b, disk), "B while A is paused")?;
    refused_across_nodes(
        &bed.resume(&a, disk, &state),
        "A's resume while B holds the disk",
    )?;
    let corrupted = state.replacen('E', "S", 1);
    let bad = bed.resume(&a, disk, &corrupted);
    if bad.ok() || !bad.error().contains("checksum mismatch") {
        return Err(format!(
            "a corrupted state string was not refused clearly: {}",
            bad.raw
        ));
    }
    granted(&bed.detach(&b, disk), "B detaches")?;
    granted(&bed.resume(&a, disk, &state), "A resumes with its state")?;
    bed.kill(&a);
    bed.kill(&b);
    Ok(format!("state '{state}'; corrupted one: {}", bad.error()))
}

fn hotplug_of_one_disk(bed: &Bed) -> Check {
    let (root, extra) = ("--disk /vm/hp-root.img", "--disk /vm/hp-extra.img");
    let a = bed.register(1, "hp-a", root);
    let b = bed.register(2, "hp-b", extra);
    granted(&bed.acquire(&a, root), "A's root disk")?;
    granted(&bed.acquire(&a, extra), "attach of the extra disk to A")?;
    refused_across_nodes(&bed.acquire(&b, extra), "B wants A's hotplugged disk")?;
    granted(&bed.detach(&a, extra), "detach from A")?;
    granted(&bed.acquire(&b, extra), "B after the detach")?;
    refused_across_nodes(&bed.acquire(&b, root), "A's root disk is still held")?;
    bed.kill(&a);
    bed.kill(&b);
    Ok("attach locks one disk, detach frees it, the rest stays held".into())
}

/// What `node`'s lockmgrd did on its own (`lockmgr events --json`), newest first.
fn daemon_events(bed: &Bed, node: usize) -> Vec<serde_json::Value> {
    bed.sh(
        node,
        &format!("{SHARE}/lockmgr events --backend dlm --config {CONFIG} --json"),
    )
    .lines()
    .rev()
    .filter_map(|line| serde_json::from_str(line).ok())
    .collect()
}

/// `node`'s lockmgrd's table (`lockmgr status --json`).
fn daemon_status(bed: &Bed, node: usize) -> serde_json::Value {
    let out = bed.sh(
        node,
        &format!("{SHARE}/lockmgr status --backend dlm --config {CONFIG} --json"),
    );
    serde_json::from_str::<serde_json::Value>(&out)
        .map(|reports| reports[0].clone())
        .unwrap_or_else(|_| serde_json::json!({ "unparsed": out }))
}

/// How long `node`'s lockmgrd took to free the locks of `dom` once its QEMU exited, and how many
/// it freed, from its events.
fn freed_micros(bed: &Bed, dom: &Dom) -> Result<(u64, u64), String> {
    let events = daemon_events(bed, dom.node);
    events
        .iter()
        .find_map(|event| {
            let exited = &event["what"]["owner_exited"];
            (exited["uuid"] == dom.uuid.as_str())
                .then(|| Some((exited["micros"].as_u64()?, exited["freed"].as_u64()?)))?
        })
        .ok_or_else(|| {
            format!(
                "node{}'s lockmgrd has no exit event for {} ({}): {events:?}",
                dom.node, dom.name, dom.uuid
            )
        })
}

/// The lock-lost event of `node`'s lockmgrd for domain `name`, if any: its detail.
fn lock_lost(bed: &Bed, node: usize, name: &str) -> Option<String> {
    daemon_events(bed, node).iter().find_map(|event| {
        let lost = &event["what"]["lock_lost"];
        (lost["domain"] == name).then(|| lost["detail"].as_str().unwrap_or_default().to_owned())
    })
}

fn owner_kill_frees(bed: &Bed) -> Check {
    let disk = "--disk /vm/kill.img";
    let a = bed.register(1, "kill-a", disk);
    let b = bed.register(2, "kill-b", disk);
    granted(&bed.acquire(&a, disk), "A")?;
    refused_across_nodes(&bed.acquire(&b, disk), "B before the kill")?;
    let killed = Instant::now();
    bed.kill(&a);
    bed.acquire_until_granted(&b, disk, Duration::from_secs(30))?;
    let end_to_end = killed.elapsed();
    let (freed, count) = freed_micros(bed, &a)?;
    if count != 1 {
        return Err(format!(
            "node1's lockmgrd freed {count} lock(s) of A, expected 1"
        ));
    }
    bed.kill(&b);
    Ok(format!(
        "node1's daemon released the DLM lock {:.2} ms after seeing QEMU die; node2 granted {:.2} s after the kill \
         (including guest-agent round trips of ~0.3-0.5 s each)",
        freed as f64 / 1000.0,
        end_to_end.as_secs_f64()
    ))
}

fn daemon_crash_and_adoption(bed: &Bed) -> Check {
    let (disk, gone) = ("--disk /vm/adopt.img", "--disk /vm/adopt-gone.img");
    let a = bed.register(1, "adopt-a", disk);
    let d = bed.register(1, "adopt-d", gone);
    let b = bed.register(2, "adopt-b", &format!("{disk} {gone}"));
    granted(&bed.acquire(&a, disk), "A")?;
    granted(&bed.acquire(&d, gone), "D")?;
    let mut sequence = vec!["A (node1) holds adopt.img, D (node1) holds adopt-gone.img".to_owned()];

    bed.crash_daemon(1);
    sequence.push("lockmgrd on node1 SIGKILLed".into());
    let lockdebug = bed.sh(
        1,
        "dlm_tool lockdebug -v libvirt 2>&1 | grep -c ' EX ' || true",
    );
    sequence.push(format!(
        "node1 dlm_tool lockdebug: {} EX lock(s) still granted as orphans",
        lockdebug.trim()
    ));
    refused_across_nodes(&bed.acquire(&b, disk), "B while node1's daemon is down")?;
    sequence.push("B (node2) refused adopt.img: the orphan still protects it".into());
    bed.kill(&d);
    sequence.push("D's QEMU killed while the daemon is down".into());

    bed.start_daemon(1);
    let status = daemon_status(bed, 1);
    let locks = status["locks"].as_array().cloned().unwrap_or_default();
    let adopted_for_a = locks.len() == 1 && locks[0]["owners"] == serde_json::json!(["adopt-a"]);
    if !adopted_for_a {
        return Err(format!(
            "the restarted daemon did not adopt as expected (one lock, A's): {status}\n{}",
            bed.daemon_log(1)
        ));
    }
    sequence.push(format!(
        "lockmgrd restarted: holds {} for adopt-a only",
        locks[0]["resource"].as_str().unwrap_or_default()
    ));
    refused_across_nodes(&bed.acquire(&b, disk), "B after the restart")?;
    sequence.push("B still refused adopt.img (adopted by the new daemon)".into());
    granted(
        &bed.acquire(&b, gone),
        "B takes adopt-gone.img (D's orphan was adopted and released)",
    )?;
    sequence.push("B granted adopt-gone.img: D's orphan was dropped at restart".into());
    bed.detach(&b, gone);

    bed.kill(&a);
    let waited = bed.acquire_until_granted(&b, disk, Duration::from_secs(30))?;
    sequence.push(format!(
        "A's QEMU killed → B granted adopt.img {:.2} s later",
        waited.as_secs_f64()
    ));
    bed.kill(&b);
    Ok(sequence.join("; "))
}

/// When node1 (or `taker`) learned it holds the disk: the node's clock when its Acquire returned,
/// converted to the host's.
fn granted_at(clock: Clock, node_end_ns: Option<i128>) -> Result<SystemTime, String> {
    let node_end = node_end_ns.ok_or("the node printed no time after its Acquire")?;
    let host = u64::try_from(node_end - clock.offset_ns).map_err(|e| e.to_string())?;
    Ok(UNIX_EPOCH + Duration::from_nanos(host))
}

/// Retries `taker`'s Acquire every 250 ms until granted; returns the host time the grant
/// returned, the attempt count and how long the granted attempt took inside the node.
fn retry_until_granted(
    bed: &Bed,
    taker: &Dom,
    disk: &str,
    clock: Clock,
    limit: Duration,
) -> Result<(SystemTime, usize, Duration), String> {
    let start = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (step, ended) = bed.acquire_timed(taker, disk);
        if step.ok() {
            let inside = Duration::from_micros(step.json["micros"].as_u64().unwrap_or(0));
            return Ok((granted_at(clock, ended)?, attempts, inside));
        }
        if start.elapsed() > limit {
            return Err(format!(
                "node{} not granted after {} attempts in {limit:?}: {}",
                taker.node,
                attempts,
                step.error()
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The fence requests that reached the host at or after `since` (the cluster's fence log also
/// holds those of earlier checks).
fn fence_events_since(bed: &Bed, since: SystemTime) -> Result<Vec<FenceEvent>, String> {
    Ok(bed
        .cluster
        .fence_events()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|event| event.received_at() >= since)
        .collect())
}

/// The first fence request about `victim` that the host answered "fenced".
fn fenced(events: &[FenceEvent], victim: usize) -> Option<&FenceEvent> {
    events
        .iter()
        .find(|event| event.victim == Some(victim) && event.outcome.fenced())
}

/// A node crash: `victim`'s QEMU is SIGKILLed while its owner holds EX on a disk; `taker` retries
/// an Acquire of that disk until granted. With fencing, the survivors' fence request about the
/// dead node is answered at once (already dead).
fn node_crash(bed: &Bed, victim: usize, taker: usize) -> Check {
    let nodes = bed.cluster.node_count();
    let disk = format!("--disk /vm/crash-{nodes}.img");
    let owner = bed.register(victim, &format!("crash{nodes}-owner"), &disk);
    let other = bed.register(taker, &format!("crash{nodes}-taker"), &disk);
    granted(
        &bed.acquire(&owner, &disk),
        &format!("owner on node{victim}"),
    )?;
    refused_across_nodes(
        &bed.acquire(&other, &disk),
        &format!("node{taker} before the crash"),
    )?;
    let clock = bed.clock(taker)?;
    let killed = SystemTime::now();
    bed.cluster.kill_node(victim).map_err(|e| e.to_string())?;
    let (granted_at, attempts, _) =
        retry_until_granted(bed, &other, &disk, clock, Duration::from_secs(90))?;
    let granted_after = secs_between(killed, granted_at);
    let events = fence_events_since(bed, killed)?;
    let fence = fenced(&events, victim);
    if bed.cluster.fence_mode() == FenceMode::Power && fence.is_none() {
        return Err(format!(
            "node{taker} was granted, but no fence request about node{victim} was answered: {events:?}"
        ));
    }
    let how = fence.map_or_else(String::new, |event| {
        format!(
            "; node{} asked to fence node{victim} {:.2} s after the kill, answered {} ({})",
            event.requester,
            secs_between(killed, event.received_at()),
            if event.outcome == lockmgr_testbed::FenceOutcome::AlreadyDead {
                "at once: already dead"
            } else {
                "after a power-off"
            },
            event.detail
        )
    });
    bed.figures.borrow_mut().push(Figure {
        scenario: format!("node crash: node{victim}'s QEMU SIGKILLed"),
        nodes,
        fencing: bed.cluster.fencing(),
        victim_dead: Some(0.0),
        granted: Some(granted_after),
        note: format!("±{} ms", clock.error.as_millis()),
    });
    Ok(format!(
        "node{victim} killed hard (QEMU SIGKILL); node{taker} granted the disk {granted_after:.2} s later \
         (±{} ms, {attempts} attempts){how}",
        clock.error.as_millis()
    ))
}

/// What was seen after node `victim` was cut off, in seconds from the cut (host clock).
#[derive(Debug)]
struct Partition {
    victim: usize,
    /// t = 0.
    cut: SystemTime,
    /// When node1's Acquire of the disk returned success.
    granted: f64,
    /// ± of the conversion of node1's clock.
    clock_error: f64,
    attempts: usize,
    /// How long the granted attempt took inside node1 (a request caught by the DLM's recovery
    /// waits in it).
    attempt: f64,
    /// When the host saw the victim's QEMU gone, per the fence log.
    victim_dead: Option<f64>,
    /// Whether the victim's QEMU still ran once node1's grant was back on the host.
    victim_ran_after_grant: bool,
    /// The owner's process in the cut-off node: last seen alive, first seen gone.
    owner_last_alive: Option<f64>,
    owner_gone: Option<f64>,
    fence: Vec<FenceEvent>,
}

impl Partition {
    fn describe(&self) -> String {
        let dead = self
            .victim_dead
            .map_or("never (still running)".to_owned(), |dead| {
                format!("{dead:.2} s")
            });
        let owner = match (self.owner_last_alive, self.owner_gone) {
            (_, Some(gone)) => format!("owner seen gone at {gone:.2} s"),
            (Some(alive), None) => format!("owner last seen alive at {alive:.2} s"),
            (None, None) => "owner never polled".to_owned(),
        };
        format!(
            "node{} cut off at t=0; its QEMU gone: {dead}; node1 granted at {:.2} s (±{:.2} s, attempt {} of {}, \
             {:.2} s inside node1); {owner}",
            self.victim, self.granted, self.clock_error, self.attempts, self.attempts, self.attempt
        )
    }

    /// With fencing: granted strictly after the victim's QEMU was gone (counting the clock error
    /// against the grant). Without: a grant while the victim still ran is a violation.
    fn violation(&self) -> Option<String> {
        match self.victim_dead {
            _ if self.victim_ran_after_grant => Some(format!(
                "node1 was granted at {:.2} s while node{}'s QEMU still ran",
                self.granted, self.victim
            )),
            None => Some(format!(
                "node1 was granted at {:.2} s and node{}'s QEMU was never seen gone",
                self.granted, self.victim
            )),
            Some(dead) if self.granted - self.clock_error <= dead => Some(format!(
                "node1 was granted at {:.2} s (±{:.2} s), not after node{}'s QEMU was gone at {dead:.2} s",
                self.granted, self.clock_error, self.victim
            )),
            Some(_) => None,
        }
    }
}

/// The partition check: an owner on `victim` holds EX on a disk; `victim` is cut off from the
/// host side (its tap goes down: the node cannot undo it, and its agent still answers over
/// virtio-serial); from the cut, node1 retries an Acquire of the SAME disk every 250 ms, while the
/// owner's existence in the victim and the victim's QEMU are polled.
fn partition(bed: &Bed, victim: usize, tag: &str) -> Result<Partition, String> {
    let disk = format!("--disk /vm/{tag}.img");
    let owner = bed.register(victim, &format!("{tag}-owner"), &disk);
    let taker = bed.register(1, &format!("{tag}-taker"), &disk);
    granted(
        &bed.acquire(&owner, &disk),
        &format!("owner on node{victim} before the cut"),
    )?;
    refused_across_nodes(&bed.acquire(&taker, &disk), "node1 before the cut")?;
    let clock = bed.clock(1)?;
    let cut = SystemTime::now();
    bed.cluster.cut_node(victim).map_err(|e| e.to_string())?;
    let since_cut = |time: SystemTime| secs_between(cut, time);
    let stop = AtomicBool::new(false);
    let (grant, owner_seen) = std::thread::scope(|scope| {
        // The owner's existence, through the victim's guest agent, until it is gone, the node is
        // powered off, or 60 s.
        let watcher = scope.spawn(|| {
            let (mut last_alive, mut gone) = (None, None);
            let probe = format!(
                "kill -0 {} 2>/dev/null && echo alive || echo gone",
                owner.pid
            );
            while !stop.load(Ordering::SeqCst) && since_cut(SystemTime::now()) < 60.0 {
                let asked = SystemTime::now();
                match bed
                    .cluster
                    .exec_timeout(victim, &probe, Duration::from_secs(15))
                {
                    Ok(out) if out.stdout_text().contains("alive") => {
                        last_alive = Some(since_cut(asked));
                    }
                    Ok(_) => {
                        gone = Some(since_cut(SystemTime::now()));
                        break;
                    }
                    Err(_) => break, // powered off: gone with its node
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (last_alive, gone)
        });
        let grant = retry_until_granted(bed, &taker, &disk, clock, Duration::from_secs(90))
            .map(|(at, attempts, inside)| (at, attempts, inside, bed.cluster.node_running(victim)));
        if grant.is_err() {
            stop.store(true, Ordering::SeqCst);
        }
        let owner_seen = watcher.join().unwrap_or((None, None));
        (grant, owner_seen)
    });
    let (granted_at, attempts, inside, victim_ran_after_grant) = grant?;
    let fence = fence_events_since(bed, cut)?;
    let victim_dead = fenced(&fence, victim)
        .and_then(FenceEvent::victim_dead_at)
        .map(since_cut);
    Ok(Partition {
        victim,
        cut,
        granted: since_cut(granted_at),
        clock_error: clock.error.as_secs_f64(),
        attempts,
        attempt: inside.as_secs_f64(),
        victim_dead,
        victim_ran_after_grant,
        owner_last_alive: owner_seen.0,
        owner_gone: owner_seen.1,
        fence,
    })
}

/// The partition check with fencing on: node1 is granted only after the victim was powered off.
fn partition_fenced(bed: &Bed, victim: usize, tag: &str) -> Check {
    let nodes = bed.cluster.node_count();
    let seen = partition(bed, victim, tag)?;
    bed.figures.borrow_mut().push(Figure {
        scenario: format!("partition: node{victim} cut off"),
        nodes,
        fencing: true,
        victim_dead: seen.victim_dead,
        granted: Some(seen.granted),
        note: format!("±{:.2} s", seen.clock_error),
    });
    if let Some(violation) = seen.violation() {
        return Err(format!("{violation}; {}", seen.describe()));
    }
    let fencer = fenced(&seen.fence, victim).map_or(0, |event| event.requester);
    let mut detail = format!(
        "{}; node{fencer} fenced node{victim}; granted {:.2} s after the power-off",
        seen.describe(),
        seen.granted - seen.victim_dead.unwrap_or_default()
    );
    if nodes == 2 {
        // Both halves stay quorate and ask to fence each other: exactly one may survive.
        let survivors: Vec<usize> = (1..=2)
            .filter(|node| bed.cluster.node_running(*node))
            .collect();
        if survivors != [1] {
            return Err(format!(
                "after the split, running nodes are {survivors:?}, expected node1 alone; fence log: {:?}",
                seen.fence
            ));
        }
        // The loser's own request may still be held back by the tie-break (5 s): wait for its
        // outcome in the log.
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut log = seen.fence.clone();
        while !log.iter().any(|event| event.requester == victim) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            log = fence_events_since(bed, seen.cut)?;
        }
        let losers: Vec<String> = log
            .iter()
            .filter(|event| event.requester == victim)
            .map(|event| format!("{:?}, {}", event.outcome, event.detail))
            .collect();
        detail.push_str(&format!(
            "; node1 alone survives; node{victim}'s own request: {}",
            if losers.is_empty() {
                "none reached the host".to_owned()
            } else {
                losers.join(", ")
            }
        ));
    }
    Ok(detail)
}

/// The race: two processes per node, two domains each, three contended disks, with a shared
/// ledger. Returns the counts and the checker's verdict.
fn race(bed: &Bed, scratch: &Path, seconds: u64) -> Check {
    let ledger = "/mnt/scratch/race";
    bed.sh(1, &format!("rm -rf {ledger}; mkdir -p {ledger}"));
    let resources = "/vm/race-1.img,/vm/race-2.img,/vm/race-3.img";
    let mut logs = Vec::new();
    for node in 1..=2 {
        for process in 0..2 {
            let name = format!("n{node}p{process}");
            let log = format!("/run/race-{name}.out");
            bed.cluster
                .spawn(
                    node,
                    &format!(
                        "{SHARE}/lockmgr-loader-test step race --plugin {SHARE}/libdlm_plugin.so --config {CONFIG} \
                         --node {name} --owners 2 --resources {resources} --seconds {seconds} --ledger {ledger}"
                    ),
                    &log,
                )
                .unwrap();
            logs.push((node, log));
        }
    }
    std::thread::sleep(Duration::from_secs(seconds + 5));
    let (mut attempts, mut grants, mut refusals) = (0, 0, 0);
    for (node, log) in &logs {
        let deadline = Instant::now() + Duration::from_secs(60);
        let summary = loop {
            let text = bed.sh(*node, &format!("cat {log}"));
            if let Some(line) = text.lines().find(|l| l.contains("\"attempts\"")) {
                break serde_json::from_str::<serde_json::Value>(line)
                    .map_err(|e| e.to_string())?;
            }
            if Instant::now() > deadline {
                return Err(format!("race on node{node} did not finish: {text}"));
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        attempts += summary["attempts"].as_u64().unwrap_or(0);
        grants += summary["grants"].as_u64().unwrap_or(0);
        refusals += summary["refusals"].as_u64().unwrap_or(0);
    }
    let violations = check_ledger(&scratch.join("race"))?;
    if grants == 0 {
        return Err("no grant at all: the race proves nothing".into());
    }
    if !violations.is_empty() {
        return Err(format!(
            "{} violation(s): {}",
            violations.len(),
            violations.join("; ")
        ));
    }
    Ok(format!(
        "{attempts} attempts, {grants} grants, {refusals} refusals, 0 violations (4 processes × 2 domains on 2 nodes, 3 disks, {seconds} s)"
    ))
}

/// Per resource, events sorted by sequence must be G n, R n+1 by the same holder, n = 1, 3, 5…
fn check_ledger(dir: &Path) -> Result<Vec<String>, String> {
    let mut events: BTreeMap<String, Vec<(u64, char, String)>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        for line in std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())?
            .lines()
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [kind, resource, node, owner, seq] = fields[..] else {
                return Err(format!(
                    "{}: malformed ledger line '{line}'",
                    path.display()
                ));
            };
            let seq: u64 = seq
                .parse()
                .map_err(|_| format!("bad sequence in '{line}'"))?;
            let kind = kind.chars().next().unwrap_or('?');
            events
                .entry(resource.into())
                .or_default()
                .push((seq, kind, format!("{node}/{owner}")));
        }
    }
    let mut violations = Vec::new();
    for (resource, mut list) in events {
        list.sort();
        for (index, pair) in list.chunks(2).enumerate() {
            let expected = 2 * index as u64 + 1;
            match pair {
                [(g, 'G', holder), (r, 'R', releaser)]
                    if *g == expected && *r == expected + 1 && holder == releaser => {}
                other => violations.push(format!("{resource} at seq {expected}: {other:?}")),
            }
        }
    }
    Ok(violations)
}

fn print_table(title: &str, results: &[(&str, Check)]) {
    println!("\n{title}");
    for (name, result) in results {
        match result {
            Ok(detail) => println!("  PASS  {name:<44} {detail}"),
            Err(why) => println!("  FAIL  {name:<44} {why}"),
        }
    }
}

fn print_figures(figures: &[Figure]) {
    println!(
        "\nfailover, t = 0 at the cut or the kill (host clock; a grant is when node1's Acquire returned)"
    );
    println!(
        "  {:<34} {:>5}  {:<7} {:>16}  {:>14}  note",
        "scenario", "nodes", "fencing", "victim QEMU gone", "survivor grant"
    );
    for figure in figures {
        let secs = |value: Option<f64>| value.map_or("never".to_owned(), |v| format!("{v:.2} s"));
        println!(
            "  {:<34} {:>5}  {:<7} {:>16}  {:>14}  {}",
            figure.scenario,
            figure.nodes,
            if figure.fencing { "on" } else { "OFF" },
            secs(figure.victim_dead),
            secs(figure.granted),
            figure.note
        );
    }
}

/// Sets up lockmgrd on the restarted `node`, then waits out dlm_controld's post_join_delay (5 s
/// after the node joined), which would otherwise hold back the next fencing and skew its figure.
fn restart(bed: &Bed, node: usize) -> Result<Duration, String> {
    let took = bed.cluster.restart_node(node).map_err(|e| e.to_string())?;
    let ready = Instant::now();
    bed.setup(node);
    std::thread::sleep(Duration::from_secs(6).saturating_sub(ready.elapsed()));
    Ok(took)
}

fn boot(share: &Path, scratch: &Path, nodes: usize, fencing: FenceMode) -> Cluster {
    let image = NodeImage::ensure().expect("node image");
    let spec = ClusterSpec::with_nodes(nodes)
        .share(share)
        .scratch(scratch)
        .fence_mode(fencing);
    let cluster = Cluster::start(&image, &spec)
        .unwrap_or_else(|e| panic!("start a {nodes}-node cluster: {e}"));
    println!(
        "{nodes}-node cluster (fencing: {fencing}) ready in {:.1} s",
        cluster.boot_time().as_secs_f64()
    );
    cluster
}

fn report(name: &str, started: Instant, result: &Check) {
    match result {
        Ok(_) => println!("  ok   {name} ({:.1} s)", started.elapsed().as_secs_f64()),
        Err(why) => println!(
            "  FAIL {name} ({:.1} s): {why}",
            started.elapsed().as_secs_f64()
        ),
    }
}

/// A named check to run on a cluster.
type Named<'s> = (&'static str, Box<dyn FnOnce(&Bed) -> Check + 's>);

/// Boots a cluster, sets lockmgrd up on every node, runs `checks` in order, and stops it.
fn run_cluster(
    share: &Path,
    scratch: &Path,
    nodes: usize,
    fencing: FenceMode,
    checks: Vec<Named<'_>>,
    figures: &mut Vec<Figure>,
) -> Vec<(&'static str, Check)> {
    let cluster = boot(share, scratch, nodes, fencing);
    let bed = Bed::new(&cluster);
    for node in 1..=nodes {
        bed.setup(node);
    }
    let mut results = Vec::new();
    run_checks(&bed, checks, &mut results);
    finish(&cluster, &bed, &results, figures);
    cluster.stop().expect("stop the cluster");
    results
}

fn run_checks(bed: &Bed, checks: Vec<Named<'_>>, results: &mut Vec<(&'static str, Check)>) {
    for (name, check) in checks {
        let started = Instant::now();
        let result = check(bed);
        report(name, started, &result);
        results.push((name, result));
    }
}

/// After a cluster's checks: its fence log, every running node's lockmgrd log when a check
/// failed, and its figures for the summary.
fn finish(cluster: &Cluster, bed: &Bed, results: &[(&str, Check)], figures: &mut Vec<Figure>) {
    print_fence_log(cluster);
    if results.iter().any(|(_, r)| r.is_err()) {
        for node in (1..=cluster.node_count()).filter(|node| cluster.node_running(*node)) {
            println!("--- lockmgrd log, node{node} ---\n{}", bed.daemon_log(node));
        }
    }
    figures.extend(bed.figures.take());
}

fn print_fence_log(cluster: &Cluster) {
    match cluster.fence_events() {
        Ok(events) => {
            for event in events {
                println!("  [fence log] {}", event.summary());
            }
        }
        Err(err) => println!("  [fence log] {err}"),
    }
}

/// 2 nodes, fencing on: the functional checks, the race, a node crash, then (node1 restarted) a
/// split where node1 must win.
fn two_node_checks(scratch: &Path) -> Vec<Named<'_>> {
    let race_seconds = 20;
    vec![
        (
            "exclusive vs exclusive across nodes",
            Box::new(exclusive_across_nodes),
        ),
        (
            "shared + shared across nodes, exclusive refused",
            Box::new(shared_across_nodes),
        ),
        ("read-only disks", Box::new(read_only_is_not_locked)),
        ("lease conflict across nodes", Box::new(lease_across_nodes)),
        (
            "pause frees, resume re-takes with the state",
            Box::new(pause_resume_with_state),
        ),
        ("hotplug of one disk", Box::new(hotplug_of_one_disk)),
        ("owner SIGKILL frees the lock", Box::new(owner_kill_frees)),
        (
            "lockmgrd crash: orphans protect, restart adopts",
            Box::new(daemon_crash_and_adoption),
        ),
        (
            "race: no two exclusive holders overlap",
            Box::new(move |bed| race(bed, scratch, race_seconds)),
        ),
        (
            "2 nodes: node1 crashes → node2 gets the disk",
            Box::new(|bed| node_crash(bed, 1, 2)),
        ),
        (
            "2 nodes: split → node1 granted after node2 off",
            Box::new(|bed| {
                let took = restart(bed, 1)?;
                println!("  (node1 restarted in {:.1} s)", took.as_secs_f64());
                partition_fenced(bed, 2, "split2")
            }),
        ),
    ]
}

/// 3 nodes, fencing on: a partition (node3 cut off), then (node3 restarted) a node crash.
fn three_node_checks(_scratch: &Path) -> Vec<Named<'_>> {
    vec![
        (
            "lockmgr doctor on a healthy node",
            Box::new(|bed| {
                doctor_says(
                    bed,
                    1,
                    true,
                    &[
                        "✓ corosync",
                        "quorate (3 of 3 votes",
                        "✓ fencing",
                        "fence_testbed",
                        "✓ lockmgrd",
                    ],
                )
            }),
        ),
        (
            "3 nodes: node3 cut off → granted after it is off",
            Box::new(|bed| partition_fenced(bed, 3, "part3")),
        ),
        (
            "3 nodes: node2 crashes → node1 gets the disk",
            Box::new(|bed| {
                let took = restart(bed, 3)?;
                println!("  (node3 restarted in {:.1} s)", took.as_secs_f64());
                node_crash(bed, 2, 1)
            }),
        ),
    ]
}

/// When `node`'s watchdog powered it off, per the cluster's watchdog log, in seconds after `since`.
fn watchdog_fired(bed: &Bed, node: usize, since: SystemTime) -> Option<f64> {
    let events = bed.cluster.watchdog_events().ok()?;
    events
        .iter()
        .filter(|event| event.node == node)
        .map(|event| UNIX_EPOCH + Duration::from_nanos(event.at_ns))
        .find(|at| *at >= since)
        .map(|at| secs_between(since, at))
}

/// The partition check with watchdog fencing: the cut-off node's lockmgrd loses quorum and
/// powers its domain off (or its watchdog powers the node off); node1, whose fence agent only
/// waits, must be granted strictly after that, counting the clock error against the grant.
fn partition_watchdog(bed: &Bed, victim: usize, tag: &str) -> Check {
    let seen = partition(bed, victim, tag)?;
    let reset = watchdog_fired(bed, victim, seen.cut);
    let gone = match (seen.owner_gone, reset) {
        (Some(owner), Some(node)) => Some(owner.min(node)),
        (owner, node) => owner.or(node),
    };
    bed.figures.borrow_mut().push(Figure {
        scenario: format!("partition: node{victim} cut off (watchdog fence)"),
        nodes: bed.cluster.node_count(),
        fencing: true,
        victim_dead: gone,
        granted: Some(seen.granted),
        note: format!(
            "±{:.2} s; owner gone at {}, node reset by its watchdog: {}",
            seen.clock_error,
            seen.owner_gone
                .map_or("never seen".into(), |g| format!("{g:.2} s")),
            reset.map_or("no".into(), |r| format!("at {r:.2} s"))
        ),
    });
    let Some(gone) = gone else {
        return Err(format!(
            "node1 was granted at {:.2} s and the owner on node{victim} was never seen gone: {}",
            seen.granted,
            seen.describe()
        ));
    };
    if seen.granted - seen.clock_error <= gone {
        return Err(format!(
            "node1 was granted at {:.2} s (±{:.2} s), not after node{victim}'s owner was gone at {gone:.2} s: {}",
            seen.granted,
            seen.clock_error,
            seen.describe()
        ));
    }
    let lost = lock_lost(bed, victim, &format!("{tag}-owner"));
    let stopped_by = match lost {
        _ if reset.is_some() => "its watchdog powered the node off".to_owned(),
        Some(detail) if detail.contains("lost quorum") && detail.contains("powered off") => {
            format!("its own lockmgrd: {detail}")
        }
        other => {
            return Err(format!(
                "node{victim}'s owner was gone, but neither a watchdog reset nor a lock lost to \
                 quorum loss in its lockmgrd's events ({other:?}):\n{}",
                bed.daemon_log(victim)
            ));
        }
    };
    Ok(format!(
        "{}; {stopped_by}; granted {:.2} s after the owner was gone",
        seen.describe(),
        seen.granted - gone
    ))
}

/// A frozen host for the watchdog fence: only `victim`'s vCPUs stop (its emulated watchdog runs
/// on); node1 retries an Acquire of the SAME disk from the freeze. The watchdog must power the
/// node off, and node1 be granted only after that.
fn frozen_watchdog(bed: &Bed, victim: usize, tag: &str) -> Check {
    let disk = format!("--disk /vm/{tag}.img");
    let owner = bed.register(victim, &format!("{tag}-owner"), &disk);
    let taker = bed.register(1, &format!("{tag}-taker"), &disk);
    granted(
        &bed.acquire(&owner, &disk),
        &format!("owner on node{victim}"),
    )?;
    refused_across_nodes(&bed.acquire(&taker, &disk), "node1 before the freeze")?;
    let clock = bed.clock(1)?;
    let frozen = SystemTime::now();
    bed.cluster
        .freeze_vcpus(victim)
        .map_err(|e| format!("freeze node{victim}'s vCPUs: {e}"))?;
    let grant = retry_until_granted(bed, &taker, &disk, clock, Duration::from_secs(120));
    let ran_after_grant = bed.cluster.node_running(victim);
    let thawed = bed.cluster.thaw_vcpus(victim);
    let (granted_at, attempts, _) = grant?;
    let granted = secs_between(frozen, granted_at);
    let reset = watchdog_fired(bed, victim, frozen);
    bed.figures.borrow_mut().push(Figure {
        scenario: format!("frozen host: node{victim}'s vCPUs stopped (watchdog fence)"),
        nodes: bed.cluster.node_count(),
        fencing: true,
        victim_dead: reset,
        granted: Some(granted),
        note: format!("±{} ms", clock.error.as_millis()),
    });
    let Some(reset) = reset else {
        return Err(format!(
            "node1 was granted at {granted:.2} s, and node{victim}'s watchdog never fired \
             (QEMU still running after the grant: {ran_after_grant}; thaw: {thawed:?})"
        ));
    };
    if ran_after_grant || granted - clock.error.as_secs_f64() <= reset {
        return Err(format!(
            "node1 was granted at {granted:.2} s (±{} ms), not after node{victim}'s watchdog \
             powered it off at {reset:.2} s (still running after the grant: {ran_after_grant})",
            clock.error.as_millis()
        ));
    }
    Ok(format!(
        "node{victim}'s vCPUs frozen at t=0; its watchdog powered it off at {reset:.2} s; node1 \
         granted at {granted:.2} s (±{} ms, {attempts} attempts)",
        clock.error.as_millis()
    ))
}

/// `lockmgr doctor` on `node` (its qemu.conf and plugin directory stand-ins in /run/lockmgr):
/// ready or not as expected, and every `expected` text in its findings.
fn doctor_says(bed: &Bed, node: usize, ready: bool, expected: &[&str]) -> Check {
    bed.sh(
        node,
        "mkdir -p /run/lockmgr/plugins && ln -sf /mnt/host/libdlm_plugin.so /run/lockmgr/plugins/dlm.so \
         && printf 'lock_manager = \"dlm\"\\n' > /run/lockmgr/qemu.conf",
    );
    let out = bed
        .cluster
        .exec(
            node,
            &format!(
                "{SHARE}/lockmgr doctor --qemu-conf /run/lockmgr/qemu.conf \
                 --plugin-dir /run/lockmgr/plugins --config {CONFIG}"
            ),
        )
        .map_err(|e| e.to_string())?;
    let text = out.stdout_text() + &out.stderr_text();
    let said_ready = out.code() == Some(0);
    if said_ready != ready {
        return Err(format!(
            "lockmgr doctor on node{node} exited {:?}, expected {}:\n{text}",
            out.code(),
            if ready { "ready (0)" } else { "not ready (1)" }
        ));
    }
    if let Some(missing) = expected.iter().find(|e| !text.contains(*e)) {
        return Err(format!(
            "lockmgr doctor on node{node} does not say '{missing}':\n{text}"
        ));
    }
    println!("{text}");
    Ok(format!(
        "node{node}: {}",
        text.lines().last().unwrap_or_default()
    ))
}

/// The control of the watchdog fence: node3's lockmgrd runs as if the operator had silenced its
/// refusal — told of a power-fencing dlm.conf, without `--watchdog`, with a long lock-failure
/// timeout — while the survivors still trust the watchdog agent. The partition check must then
/// see node1 granted while node3's domain still runs (so the check can fail).
fn partition_watchdog_control(bed: &Bed) -> Check {
    // A clean stop: no lock held, so the watchdog is disarmed and node3 is not reset.
    bed.sh(
        3,
        "kill -TERM $(cat /run/lockmgr/dlm.pid); for i in $(seq 50); do test -e /run/lockmgr/dlm.pid || break; sleep 0.1; done; \
         cat /run/lockmgr/lockmgrd.log.current >> /run/lockmgr/lockmgrd.log; \
         printf '%s\\n' 'enable_fencing=1' 'fence_all /usr/sbin/fence_testbed' > /run/lockmgr/dlm-power.conf",
    );
    bed.start_daemon_with(
        3,
        "--dlm-conf /run/lockmgr/dlm-power.conf --lock-failure-timeout 60",
    );
    let seen = partition(bed, 3, "wdctl3")?;
    let gone = seen.owner_gone.or(watchdog_fired(bed, 3, seen.cut));
    match gone {
        Some(gone) if seen.granted - seen.clock_error > gone => Err(format!(
            "the control saw no overlap: node1 granted at {:.2} s, after the owner was gone at {gone:.2} s: {}",
            seen.granted,
            seen.describe()
        )),
        _ => Ok(format!(
            "overlap seen, as it must be without the watchdog: {}",
            seen.describe()
        )),
    }
}

/// 3 nodes fenced by their watchdogs: a partition (node3 cut off, its lockmgrd stops its
/// domain), a frozen host (node2's vCPUs; its watchdog powers it off), and a node crash.
fn watchdog_checks(_scratch: &Path) -> Vec<Named<'_>> {
    vec![
        (
            "watchdog, 3 nodes: node3 cut off → granted after its domain is gone",
            Box::new(|bed| partition_watchdog(bed, 3, "wdpart3")),
        ),
        (
            "lockmgr doctor on the cut-off node (no quorum)",
            Box::new(|bed| {
                doctor_says(
                    bed,
                    3,
                    false,
                    &[
                        "✗ corosync",
                        "NOT quorate (1 of 3 votes",
                        "✓ self-fencing",
                        "✓ watchdog",
                    ],
                )
            }),
        ),
        (
            "watchdog, 3 nodes: node2 frozen → granted after its watchdog fired",
            Box::new(|bed| {
                // node3 stays up cut off (its domain gone, its watchdog petted): power it
                // off and boot it again.
                bed.cluster.kill_node(3).map_err(|e| e.to_string())?;
                let took = restart(bed, 3)?;
                println!("  (node3 restarted in {:.1} s)", took.as_secs_f64());
                frozen_watchdog(bed, 2, "wdfreeze2")
            }),
        ),
        (
            "watchdog, 3 nodes: node3 crashes → node1 gets the disk",
            Box::new(|bed| {
                let took = restart(bed, 2)?;
                println!("  (node2 restarted in {:.1} s)", took.as_secs_f64());
                node_crash(bed, 3, 1)
            }),
        ),
        (
            "control, watchdog agent but node3 without --watchdog: the checker sees the overlap",
            Box::new(|bed| {
                let took = restart(bed, 3)?;
                println!("  (node3 restarted in {:.1} s)", took.as_secs_f64());
                partition_watchdog_control(bed)
            }),
        ),
    ]
}

/// The control run: the same partition check on 3 nodes booted WITHOUT fencing must observe the
/// violation (so the checker is shown able to fail). The cut-off node, without quorum, must still
/// refuse new locks, and its own lockmgrd must declare LOCK FAILURE and power its domain off.
fn control_without_fencing(bed: &Bed) -> Check {
    let refuser = bed.register(3, "ctl-late", "--disk /vm/ctl-late.img");
    let seen = partition(bed, 3, "ctl3")?;
    bed.figures.borrow_mut().push(Figure {
        scenario: "partition: node3 cut off (CONTROL)".to_owned(),
        nodes: 3,
        fencing: false,
        victim_dead: seen.victim_dead,
        granted: Some(seen.granted),
        note: match seen.owner_gone {
            Some(gone) => format!(
                "two live holders for {:.2} s: node3's domain ran until {gone:.2} s (its lockmgrd's lock-failure timeout)",
                gone - seen.granted
            ),
            None => "node3's domain never seen gone".to_owned(),
        },
    });
    let Some(violation) = seen.violation() else {
        return Err(format!(
            "without fencing the checker saw no violation, so it cannot tell: {}",
            seen.describe()
        ));
    };
    if !seen.fence.is_empty() {
        return Err(format!(
            "a cluster without fencing logged fence requests: {:?}",
            seen.fence
        ));
    }
    // What the cut-off node itself does, without quorum: its daemon declares a lock failure and
    // powers its domain off (--lock-failure-timeout 8), and refuses new locks.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lock_lost(bed, 3, "ctl3-owner").is_some_and(|detail| detail.contains("powered off")) {
        if Instant::now() > deadline {
            return Err(format!(
                "node3's daemon never declared a lock failure:\n{}",
                bed.daemon_log(3)
            ));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let refused = bed.acquire(&refuser, "--disk /vm/ctl-late.img");
    if refused.ok() {
        return Err("the cut-off node granted a new lock".into());
    }
    if !bed.cluster.node_running(3) {
        return Err("node3's QEMU is gone, but nothing should have powered it off".into());
    }
    Ok(format!(
        "VIOLATION OBSERVED, as it must be without fencing: {violation}; {}; node3's lockmgrd declared LOCK \
         FAILURE and powered its domain off; node3 refuses new locks ({})",
        seen.describe(),
        refused.error()
    ))
}

/// 3 nodes WITHOUT fencing: what lockmgr doctor says, and the control of the partition check.
fn control_checks(_scratch: &Path) -> Vec<Named<'_>> {
    vec![
        (
            "lockmgr doctor on a node without fencing",
            Box::new(|bed| {
                doctor_says(
                    bed,
                    1,
                    false,
                    &["✗ fencing", "enable_fencing=0", "✓ corosync"],
                )
            }),
        ),
        (
            "control, no fencing: the checker sees the overlap",
            Box::new(control_without_fencing),
        ),
    ]
}

#[test]
#[ignore = "boots DLM clusters in QEMU VMs; run by tests/cluster/run-dlm.sh"]
fn dlm_plugin_on_a_real_cluster() {
    let share = common::build_node_binaries();
    let scratch = common::scratch_dir("lockmgr-scratch-");
    let mut figures = Vec::new();
    type Checks = fn(&Path) -> Vec<Named<'_>>;
    let runs: [(&str, usize, FenceMode, Checks); 4] = [
        ("two", 2, FenceMode::Power, two_node_checks),
        ("three", 3, FenceMode::Power, three_node_checks),
        ("watchdog", 3, FenceMode::Watchdog, watchdog_checks),
        ("control", 3, FenceMode::Off, control_checks),
    ];
    // DLM_CLUSTERS=word,word boots only those clusters (by hand); the suite boots them all.
    let only = std::env::var("DLM_CLUSTERS").ok();
    let mut results = Vec::new();
    for (name, nodes, fencing, checks) in runs {
        if only
            .as_deref()
            .is_none_or(|words| words.split(',').any(|w| w == name))
        {
            let checks = checks(scratch.path());
            results.extend(run_cluster(
                &share,
                scratch.path(),
                nodes,
                fencing,
                checks,
                &mut figures,
            ));
        }
    }
    assert!(
        !results.is_empty(),
        "DLM_CLUSTERS={only:?} names no cluster (two, three, watchdog, control)"
    );
    print_table("dlm.so on a real DLM cluster", &results);
    print_figures(&figures);
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    println!("dlm: {} passed, {failed} failed", results.len() - failed);
    assert_eq!(failed, 0, "see the table above");
}
