//! Watchdog fencing ([`crate::FenceMode::Watchdog`]): the nodes fence themselves.
//!
//! Each node QEMU gets an emulated Intel 6300ESB (`-device i6300esb`, `/dev/watchdog` in the
//! node) and `-action watchdog=poweroff`: when nobody pets it for its timeout, QEMU's main loop
//! powers the VM off (QEMU exits). In the node, lockmgrd pets it (`--watchdog /dev/watchdog`) only
//! while the node is quorate and its DLM answers, or while no lock-holding domain runs; the
//! survivors' dlm_controld runs `fence_lockmgr_watchdog wait=`[`WATCHDOG_FENCE_WAIT_S`], which only
//! waits that long before it reports the failed node fenced. There is no host side to fencing.
//!
//! So that a test can tell a node its watchdog powered off from one the test killed, the cluster
//! listens on each QEMU's second QMP monitor (`nodeN.events`) and appends every `WATCHDOG` event
//! to [`WATCHDOG_LOG`] in the run dir ([`crate::Cluster::watchdog_events`]).
//!
//! The constants are shared by the host side (the kernel command line, lockmgrd's flags in the
//! tests) and, through the command line, by the node's `/init` (the `fence_all` line).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster::ClusterState;
use crate::error::Result;
use crate::qmp::{Next, Qmp};

/// The watchdog device in a node.
pub const WATCHDOG_DEVICE: &str = "/dev/watchdog";
/// lockmgrd's `--watchdog-timeout` in the tests, and the i6300esb driver's heartbeat at boot
/// (`dlmnode.watchdog_timeout`), seconds.
pub const WATCHDOG_TIMEOUT_S: u64 = 10;
/// lockmgrd's `--lock-failure-timeout` in the tests, seconds.
pub const LOCK_FAILURE_TIMEOUT_S: u64 = 8;
/// `wait=` of `fence_all /usr/sbin/fence_lockmgr_watchdog` (`dlmnode.fence_wait`): lockmgrd
/// refuses to start with a wait shorter than watchdog timeout + lock-failure timeout + 2.
pub const WATCHDOG_FENCE_WAIT_S: u64 = WATCHDOG_TIMEOUT_S + LOCK_FAILURE_TIMEOUT_S + 2;
/// Where the nodes have the survivors' fence agent (installed from `daemon/`).
pub const WATCHDOG_FENCE_AGENT: &str = "/usr/sbin/fence_lockmgr_watchdog";
/// The agent's log in a node.
pub const WATCHDOG_FENCE_AGENT_LOG: &str = "/var/log/fence_lockmgr_watchdog.log";
/// The run dir's log of watchdog events, one JSON line each.
pub const WATCHDOG_LOG: &str = "watchdog.log";

/// lockmgrd's watchdog flags, as the tests pass them.
pub fn lockmgrd_watchdog_args() -> String {
    format!(
        "--watchdog {WATCHDOG_DEVICE} --watchdog-timeout {WATCHDOG_TIMEOUT_S} \
         --lock-failure-timeout {LOCK_FAILURE_TIMEOUT_S}"
    )
}

/// One `WATCHDOG` event of a node's QEMU.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WatchdogEvent {
    /// The node.
    pub node: usize,
    /// Its QEMU's pid at the time.
    pub pid: Option<u32>,
    /// What QEMU did (`poweroff`, `reset`, ...).
    pub action: String,
    /// When the host received it (Unix ns).
    pub at_ns: u64,
    /// QEMU's own timestamp of it (Unix ns).
    pub qemu_ns: u64,
}

/// Reads `DIR/watchdog.log` (empty when missing).
pub fn read_log(dir: &Path) -> Result<Vec<WatchdogEvent>> {
    crate::host::read_json_lines(&dir.join(WATCHDOG_LOG))
}

/// One thread per node holding its `nodeN.events` QMP connection (reconnecting after a
/// restart) and logging its `WATCHDOG` events.
#[derive(Debug)]
pub(crate) struct Listener {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Listener {
    pub(crate) fn start(state: &Arc<Mutex<ClusterState>>) -> Listener {
        let stop = Arc::new(AtomicBool::new(false));
        let (dir, sockets): (PathBuf, HashMap<usize, PathBuf>) = {
            let state = state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            (
                state.dir.clone(),
                state
                    .nodes
                    .iter()
                    .filter_map(|node| Some((node.index, node.qmp_events.clone()?)))
                    .collect(),
            )
        };
        let threads = sockets
            .into_iter()
            .map(|(index, socket)| {
                let (state, stop, dir) = (Arc::clone(state), Arc::clone(&stop), dir.clone());
                thread::spawn(move || listen(&state, index, &socket, &dir, &stop))
            })
            .collect();
        Listener { stop, threads }
    }

    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn listen(state: &Mutex<ClusterState>, index: usize, socket: &Path, dir: &Path, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        // The socket exists while QEMU runs; it refuses while the node is powered off.
        let Ok(mut qmp) = Qmp::connect(socket, Duration::from_millis(300)) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        while !stop.load(Ordering::SeqCst) {
            match qmp.next_event() {
                Next::Idle => {}
                Next::Closed => break,
                Next::Event(event) => {
                    if event.get("event").and_then(|name| name.as_str()) != Some("WATCHDOG") {
                        continue;
                    }
                    let pid = state
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .nodes
                        .get(index - 1)
                        .and_then(|node| node.pid);
                    let stamp = &event["timestamp"];
                    let qemu_ns = stamp["seconds"].as_u64().unwrap_or(0) * 1_000_000_000
                        + stamp["microseconds"].as_u64().unwrap_or(0) * 1_000;
                    let record = WatchdogEvent {
                        node: index,
                        pid,
                        action: event["data"]["action"].as_str().unwrap_or("?").to_owned(),
                        at_ns: crate::fence::now_ns(),
                        qemu_ns,
                    };
                    let line = serde_json::to_string(&record).unwrap_or_default();
                    println!("[watchdog] node{index}: {line}");
                    let path = dir.join(WATCHDOG_LOG);
                    let _ = fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .and_then(|mut file| writeln!(file, "{line}"));
                }
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_wait_covers_the_watchdog_and_the_lock_failure_timeouts() {
        assert_eq!(WATCHDOG_FENCE_WAIT_S, 20);
        const { assert!(WATCHDOG_FENCE_WAIT_S >= WATCHDOG_TIMEOUT_S + LOCK_FAILURE_TIMEOUT_S + 2) };
        assert_eq!(
            lockmgrd_watchdog_args(),
            "--watchdog /dev/watchdog --watchdog-timeout 10 --lock-failure-timeout 8"
        );
    }

    #[test]
    fn a_missing_log_is_empty_and_lines_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_log(dir.path()).unwrap().is_empty());
        let event = WatchdogEvent {
            node: 2,
            pid: Some(7),
            action: "poweroff".to_owned(),
            at_ns: 1,
            qemu_ns: 2,
        };
        fs::write(
            dir.path().join(WATCHDOG_LOG),
            serde_json::to_string(&event).unwrap() + "\n",
        )
        .unwrap();
        assert_eq!(read_log(dir.path()).unwrap(), vec![event]);
    }
}
