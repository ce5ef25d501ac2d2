//! The test bed's helpers: [`Bed`] runs `step`s (libvirt's calls) and lockmgrd on a cluster's
//! nodes; [`Dom`] is a domain placed on a node, [`Clock`] a node's clock against the host's;
//! the verdicts on a step ([`granted`], [`refused_across_nodes`]) and what a node's lockmgrd
//! reports ([`daemon_events`], [`daemon_status`], [`lock_lost`]).

use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockmgr_testbed::owners::{Step, step_command};
use lockmgr_testbed::watchdog::{LOCK_FAILURE_TIMEOUT_S, lockmgrd_watchdog_args};
use lockmgr_testbed::{Cluster, FenceMode};

use crate::summary::Figure;
use crate::{BUSY, CONFIG, Check, SHARE};

/// A domain placed on a node: its name and its QEMU stand-in's pid there.
#[derive(Debug, Clone)]
pub(crate) struct Dom {
    pub(crate) node: usize,
    pub(crate) name: String,
    pub(crate) uuid: String,
    pub(crate) pid: u32,
}

pub(crate) struct Bed<'c> {
    pub(crate) cluster: &'c Cluster,
    /// Failover figures measured on this cluster, for the summary.
    pub(crate) figures: RefCell<Vec<Figure>>,
}

/// A node's clock against the host's: `node_ns - offset_ns` is the host time, ± `error`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    pub(crate) offset_ns: i128,
    pub(crate) error: Duration,
}

pub(crate) fn host_ns(time: SystemTime) -> i128 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| i128::try_from(since.as_nanos()).unwrap_or(0))
}

/// `later - earlier` in seconds (negative when `later` is earlier).
pub(crate) fn secs_between(earlier: SystemTime, later: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

impl<'c> Bed<'c> {
    pub(crate) fn new(cluster: &'c Cluster) -> Self {
        Bed {
            cluster,
            figures: RefCell::new(Vec::new()),
        }
    }

    /// Measures node `node`'s clock against ours (the best of a few round trips).
    pub(crate) fn clock(&self, node: usize) -> Result<Clock, String> {
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

    pub(crate) fn sh(&self, node: usize, cmd: &str) -> String {
        let out = self
            .cluster
            .exec(node, cmd)
            .unwrap_or_else(|e| panic!("node{node}: {cmd}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    pub(crate) fn step(&self, node: usize, op: &str, domain: &str, pid: u32, extra: &str) -> Step {
        self.run_step(node, &step_command(op, CONFIG, domain, pid, extra))
            .0
    }

    /// Runs a step command; also returns the node's clock (ns) read right after it ended.
    pub(crate) fn run_step(&self, node: usize, cmd: &str) -> (Step, Option<i128>) {
        let timed = format!("{cmd}; date +%s%N >&2");
        let out = self
            .cluster
            .exec(node, &timed)
            .unwrap_or_else(|e| panic!("node{node}: {cmd}: {e}"));
        let raw = String::from_utf8_lossy(&out.stdout).into_owned();
        let step = Step::parse(&raw).unwrap_or_else(|| {
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
        (step, ended)
    }

    /// Acquire, with the node's clock (ns) when it returned.
    pub(crate) fn acquire_timed(&self, dom: &Dom, disks: &str) -> (Step, Option<i128>) {
        self.run_step(
            dom.node,
            &step_command("acquire", CONFIG, &dom.name, dom.pid, disks),
        )
    }

    /// libvirt's start: the pre-exec child registers; the real Acquire follows separately.
    pub(crate) fn register(&self, node: usize, name: &str, disks: &str) -> Dom {
        let step = self.step(node, "register", name, 0, disks);
        assert!(step.ok(), "register {name} on node{node}: {}", step.error());
        Dom {
            node,
            name: name.into(),
            uuid: step.uuid(),
            pid: step.pid(),
        }
    }

    pub(crate) fn acquire(&self, dom: &Dom, disks: &str) -> Step {
        self.step(dom.node, "acquire", &dom.name, dom.pid, disks)
    }

    pub(crate) fn detach(&self, dom: &Dom, disks: &str) -> Step {
        self.step(dom.node, "release", &dom.name, dom.pid, disks)
    }

    pub(crate) fn kill(&self, dom: &Dom) {
        self.sh(dom.node, &format!("kill -9 {}", dom.pid));
    }

    pub(crate) fn start_daemon(&self, node: usize) {
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
    pub(crate) fn start_daemon_with(&self, node: usize, fencing_flags: &str) {
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

    pub(crate) fn daemon_log(&self, node: usize) -> String {
        let cmd = "cat /run/lockmgr/lockmgrd.log 2>/dev/null; cat /run/lockmgr/lockmgrd.log.current 2>/dev/null";
        match self.cluster.exec(node, cmd) {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(err) => format!("(no log from node{node}: {err})"),
        }
    }

    /// SIGKILL of lockmgrd (a crash); its log is kept.
    pub(crate) fn crash_daemon(&self, node: usize) {
        self.sh(
            node,
            "kill -9 $(cat /run/lockmgr/dlm.pid); sleep 0.2; cat /run/lockmgr/lockmgrd.log.current >> /run/lockmgr/lockmgrd.log",
        );
    }

    pub(crate) fn setup(&self, node: usize) {
        self.sh(node, &crate::common::write_dlm_config(CONFIG));
        self.start_daemon(node);
    }

    /// Retries `acquire` until granted or `limit`; returns the time it took.
    pub(crate) fn acquire_until_granted(
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

pub(crate) fn refused_across_nodes(step: &Step, what: &str) -> Check {
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

pub(crate) fn granted(step: &Step, what: &str) -> Result<(), String> {
    if step.ok() {
        Ok(())
    } else {
        Err(format!("{what}: refused: {}", step.error()))
    }
}

/// What `node`'s lockmgrd did on its own (`lockmgr events --json`), newest first.
pub(crate) fn daemon_events(bed: &Bed, node: usize) -> Vec<serde_json::Value> {
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
pub(crate) fn daemon_status(bed: &Bed, node: usize) -> serde_json::Value {
    let out = bed.sh(
        node,
        &format!("{SHARE}/lockmgr status --backend dlm --config {CONFIG} --json"),
    );
    serde_json::from_str::<serde_json::Value>(&out)
        .map(|reports| reports[0].clone())
        .unwrap_or_else(|_| serde_json::json!({ "unparsed": out }))
}

/// The lock-lost event of `node`'s lockmgrd for domain `name`, if any: its detail.
pub(crate) fn lock_lost(bed: &Bed, node: usize, name: &str) -> Option<String> {
    daemon_events(bed, node).iter().find_map(|event| {
        let lost = &event["what"]["lock_lost"];
        (lost["domain"] == name).then(|| lost["detail"].as_str().unwrap_or_default().to_owned())
    })
}
