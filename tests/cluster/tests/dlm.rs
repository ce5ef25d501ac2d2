//! dlm.so and `lockmgrd --backend dlm` on a real DLM cluster (QEMU nodes, corosync,
//! dlm_controld): libvirt's calls replayed with owners on different nodes, the daemon's crash and
//! orphan adoption, node failure, a race test with a ledger, and a partitioned node in a 3-node
//! cluster. Figures are printed, never asserted.
//!
//! Needs root, /dev/net/tun, QEMU and a few minutes: run by `tests/cluster/run-dlm.sh`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use lockmgr_testbed::{Cluster, ClusterSpec, NodeImage};

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
    pid: u32,
}

struct Bed<'c> {
    cluster: &'c Cluster,
}

impl Bed<'_> {
    fn sh(&self, node: usize, cmd: &str) -> String {
        let out = self
            .cluster
            .exec(node, cmd)
            .unwrap_or_else(|e| panic!("node{node}: {cmd}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    fn step(&self, node: usize, op: &str, domain: &str, pid: u32, extra: &str) -> Step {
        let cmd = format!(
            "{SHARE}/lockmgr-loader-test step {op} --plugin {SHARE}/libdlm_plugin.so --config {CONFIG} \
             --domain {domain} --pid {pid} {extra}"
        );
        let out = self
            .cluster
            .exec(node, &cmd)
            .unwrap_or_else(|e| panic!("node{node}: {cmd}: {e}"));
        let raw = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = raw.lines().last().unwrap_or("").to_owned();
        let json = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!(
                "node{node}: `{cmd}` printed no JSON:\n{raw}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        Step { json, raw }
    }

    /// libvirt's start: the pre-exec child registers; the real Acquire follows separately.
    fn register(&self, node: usize, name: &str, disks: &str) -> Dom {
        let step = self.step(node, "register", name, 0, disks);
        assert!(step.ok(), "register {name} on node{node}: {}", step.error());
        Dom {
            node,
            name: name.into(),
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
        self.sh(
            node,
            "rm -f /run/lockmgr/dlm.pid; mkdir -p /run/lockmgr /etc/libvirt",
        );
        self.cluster
            .spawn(
                node,
                &format!("{SHARE}/lockmgrd --backend dlm --config {CONFIG} --pid-file /run/lockmgr/dlm.pid --lock-failure-timeout 8"),
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

/// Parses "<secs>.<ms> lockmgrd[..]: owner … freed N lock(s) in U µs".
fn freed_micros(log: &str, uuid_hint: &str) -> Option<u64> {
    log.lines()
        .filter(|l| l.contains("exited; freed") && l.contains(uuid_hint))
        .rev()
        .find_map(|l| l.rsplit_once(" in ")?.1.strip_suffix(" µs")?.parse().ok())
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
    let log = bed.daemon_log(1);
    // Checks run one after another: the last release of one lock on node1 is A's.
    let freed = freed_micros(&log, "freed 1 lock(s)")
        .ok_or_else(|| format!("node1's daemon logged no release:\n{log}"))?;
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
    let log = bed.daemon_log(1);
    let restored = log
        .lines()
        .rev()
        .find(|l| l.contains("restored"))
        .unwrap_or("")
        .to_owned();
    if !restored.contains("restored 1 of 2 lock(s) for 1 running domain(s)") {
        return Err(format!(
            "the restarted daemon did not adopt as expected:\n{log}"
        ));
    }
    sequence.push(format!(
        "lockmgrd restarted: {}",
        restored.split(": ").last().unwrap_or_default()
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

fn node_failure(bed: &Bed) -> Check {
    let disk = "--disk /vm/node.img";
    let a = bed.register(1, "node-a", disk);
    let b = bed.register(2, "node-b", disk);
    granted(&bed.acquire(&a, disk), "A on node1")?;
    refused_across_nodes(&bed.acquire(&b, disk), "B before node1 dies")?;
    let killed = Instant::now();
    bed.cluster.kill_node(1).map_err(|e| e.to_string())?;
    bed.acquire_until_granted(&b, disk, Duration::from_secs(60))?;
    Ok(format!(
        "node1 killed hard (QEMU SIGKILL); node2 granted the disk {:.2} s later (DLM recovery: corosync token 3 s + consensus)",
        killed.elapsed().as_secs_f64()
    ))
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

fn run_two_nodes(share: &Path, scratch: &Path) -> Vec<(&'static str, Check)> {
    let image = NodeImage::ensure().expect("node image");
    let spec = ClusterSpec::with_nodes(2).share(share).scratch(scratch);
    let cluster = Cluster::start(&image, &spec).expect("start a 2-node cluster");
    println!(
        "2-node cluster ready in {:.1} s",
        cluster.boot_time().as_secs_f64()
    );
    let bed = Bed { cluster: &cluster };
    for node in 1..=2 {
        bed.setup(node);
    }
    let race_seconds = 20;
    let mut results: Vec<(&'static str, Check)> = Vec::new();
    type CheckFn = fn(&Bed) -> Check;
    let checks: [(&'static str, CheckFn); 8] = [
        (
            "exclusive vs exclusive across nodes",
            exclusive_across_nodes,
        ),
        (
            "shared + shared across nodes, exclusive refused",
            shared_across_nodes,
        ),
        ("read-only disks", read_only_is_not_locked),
        ("lease conflict across nodes", lease_across_nodes),
        (
            "pause frees, resume re-takes with the state",
            pause_resume_with_state,
        ),
        ("hotplug of one disk", hotplug_of_one_disk),
        ("owner SIGKILL frees the lock", owner_kill_frees),
        (
            "lockmgrd crash: orphans protect, restart adopts",
            daemon_crash_and_adoption,
        ),
    ];
    for (name, check) in checks {
        let started = Instant::now();
        let result = check(&bed);
        match &result {
            Ok(_) => println!("  ok   {name} ({:.1} s)", started.elapsed().as_secs_f64()),
            Err(why) => println!(
                "  FAIL {name} ({:.1} s): {why}",
                started.elapsed().as_secs_f64()
            ),
        }
        results.push((name, result));
    }
    results.push((
        "race: no two exclusive holders overlap",
        race(&bed, scratch, race_seconds),
    ));
    results.push((
        "node1 killed hard → node2 gets the lock",
        node_failure(&bed),
    ));
    if results.iter().any(|(_, r)| r.is_err()) {
        for node in 1..=2 {
            println!("--- lockmgrd log, node{node} ---\n{}", bed.daemon_log(node));
        }
    }
    cluster.stop().expect("stop the cluster");
    results
}

fn partitioned_node(share: &Path, scratch: &Path) -> Vec<(&'static str, Check)> {
    let image = NodeImage::ensure().expect("node image");
    let spec = ClusterSpec::with_nodes(3).share(share).scratch(scratch);
    let cluster = Cluster::start(&image, &spec).expect("start a 3-node cluster");
    println!(
        "3-node cluster ready in {:.1} s",
        cluster.boot_time().as_secs_f64()
    );
    let bed = Bed { cluster: &cluster };
    for node in 1..=3 {
        bed.setup(node);
    }
    let check = (|| -> Check {
        let (held, wanted) = ("--disk /vm/part-held.img", "--disk /vm/part-new.img");
        let c = bed.register(3, "part-c", held);
        let a = bed.register(1, "part-a", wanted);
        let e = bed.register(3, "part-e", wanted);
        granted(&bed.acquire(&c, held), "C on node3 before the cut")?;
        bed.sh(3, "ip link set eth0 down");
        let cut = Instant::now();
        // node3's daemon must see the DLM stop answering and apply C's on_lockfailure (default:
        // poweroff) after its 8 s lock failure timeout.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let log = bed.daemon_log(3);
            if log.contains("LOCK FAILURE") && log.contains("powered off") {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "node3's daemon never declared a lock failure:\n{log}"
                ));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let failure_after = cut.elapsed();
        let c_alive = bed.sh(
            3,
            &format!("kill -0 {} 2>/dev/null && echo alive || echo gone", c.pid),
        );
        if !c_alive.contains("gone") {
            return Err("C's QEMU stand-in still runs after the lock failure".into());
        }
        let refused = bed.acquire(&e, wanted);
        if refused.ok() {
            return Err("the cut-off node granted a lock".into());
        }
        let granted_at = bed.acquire_until_granted(&a, wanted, Duration::from_secs(60))?;
        Ok(format!(
            "node3 cut off: its daemon declared LOCK FAILURE after {:.1} s and powered off C; node3 refuses ({}); \
             node1 (quorate side) granted the disk within {:.1} s",
            failure_after.as_secs_f64(),
            refused.error(),
            granted_at.as_secs_f64()
        ))
    })();
    if check.is_err() {
        println!("--- lockmgrd log, node3 ---\n{}", bed.daemon_log(3));
    }
    cluster.stop().expect("stop the cluster");
    vec![("3 nodes: a cut-off node cannot grant", check)]
}

#[test]
#[ignore = "boots DLM clusters in QEMU VMs; run by tests/cluster/run-dlm.sh"]
fn dlm_plugin_on_a_real_cluster() {
    let share = common::build_node_binaries();
    let scratch = common::scratch_dir("lockmgr-scratch-");
    let mut results = run_two_nodes(&share, scratch.path());
    results.extend(partitioned_node(&share, scratch.path()));
    print_table("dlm.so on a real DLM cluster", &results);
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    println!("dlm: {} passed, {failed} failed", results.len() - failed);
    assert_eq!(failed, 0, "see the table above");
}
