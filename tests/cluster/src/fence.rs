//! Power fencing: the host side of the nodes' fence agent.
//!
//! dlm_controld in each node runs `/usr/sbin/fence_testbed` (`node/fence_testbed`) when a node has
//! failed, and recovers that node's locks only once the agent exits 0. The agent writes one line on
//! its node's own virtio-serial port ([`FENCE_PORT_NAME`]), which QEMU connects to the unix socket
//! `nodeN.fence` in the cluster's run dir:
//!
//! ```text
//! fence id=ID node=VICTIM fail_time=UNIXSECS
//! ```
//!
//! and the host answers `id=ID result=ok|refused|failed detail=...`, `ok` only once the victim's
//! QEMU is gone (SIGKILLed here, pid- and cmdline-checked like [`crate::Cluster::kill_node`]).
//!
//! - **Who asks** is the socket the line arrived on, never anything in the line: a node cannot ask
//!   under another node's name, and it can only name nodes of its own cluster (and not itself).
//! - **A node that is powered off cannot fence**: decisions are taken under the cluster state's
//!   lock, so when the two halves of a split ask to fence each other, the first request carried
//!   out wins and the other one is refused: the loser never kills the winner.
//! - **Tie-break** (two-node clusters): both halves of a split stay quorate and ask at the same
//!   moment, so a request to power off node1 while it runs waits [`ClusterState::fence_tie_break_ms`]
//!   first (pacemaker's `pcmk_delay_base` on node1's device): node1 wins.
//! - **Stale requests**: a request whose `fail_time` is older than the victim's current QEMU (the
//!   node was restarted since) is answered `ok` without touching the new incarnation.
//!
//! Every request and its outcome is one JSON line in `fence.log` in the run dir
//! ([`FenceEvent`], read back by [`crate::Cluster::fence_events`]). The host side runs as threads of
//! the process owning the cluster (`Fencer`), or for a cluster left up by `lockmgr-testbed up`, as
//! a `lockmgr-testbed fencer` process ([`serve_fencing`]) that `lockmgr-testbed down` stops.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::cluster::ClusterState;
use crate::error::{Error, Result};
use crate::host;

/// The name of the virtio-serial port a node's fence agent talks through (init links it to
/// `/dev/fence-testbed`).
pub const FENCE_PORT_NAME: &str = "org.lockmgr.fence.0";
/// The fence log in a cluster's run dir: one JSON [`FenceEvent`] per line.
pub const FENCE_LOG: &str = "fence.log";
/// Longest wait for a SIGKILLed QEMU to be gone before the request counts as failed.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request line read from a node.
const MAX_LINE: u64 = 4096;

/// How a fence request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FenceOutcome {
    /// The host SIGKILLed the victim's QEMU and saw it gone; answered `ok`.
    PoweredOff,
    /// The victim's QEMU was gone already (crashed, killed by a test, fenced by an earlier
    /// request, or restarted since it failed); answered `ok`.
    AlreadyDead,
    /// Not carried out: a malformed request, an unknown victim, the node itself, or a requester
    /// that is powered off; answered `refused`.
    Refused,
    /// Carrying it out failed (the QEMU survived SIGKILL, ...); answered `failed`, and
    /// dlm_controld tries again.
    Failed,
}

impl FenceOutcome {
    /// Whether the agent was told the victim is fenced (it then exits 0).
    pub fn fenced(self) -> bool {
        matches!(self, FenceOutcome::PoweredOff | FenceOutcome::AlreadyDead)
    }

    fn answer(self) -> &'static str {
        match self {
            FenceOutcome::PoweredOff | FenceOutcome::AlreadyDead => "ok",
            FenceOutcome::Refused => "refused",
            FenceOutcome::Failed => "failed",
        }
    }
}

/// One fence request and what the host did about it (a line of `fence.log`). Times are
/// nanoseconds since the Unix epoch on the host's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceEvent {
    /// The agent's request id (`?` when unreadable).
    pub id: String,
    /// The node that asked: the one whose fence socket the request arrived on.
    pub requester: usize,
    /// The node it asked to power off (None when the request named none).
    pub victim: Option<usize>,
    /// What happened.
    pub outcome: FenceOutcome,
    /// Why, in words.
    pub detail: String,
    /// The victim's QEMU pid at the time.
    pub qemu_pid: Option<u32>,
    /// When the request arrived.
    pub received_ns: u64,
    /// How long the tie-break held it back, in milliseconds.
    pub delayed_ms: u64,
    /// When SIGKILL was sent (PoweredOff).
    pub signalled_ns: Option<u64>,
    /// When the victim's QEMU was seen gone (PoweredOff, AlreadyDead).
    pub dead_ns: Option<u64>,
    /// When the answer was sent.
    pub answered_ns: u64,
}

impl FenceEvent {
    /// When the request arrived.
    pub fn received_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.received_ns)
    }

    /// When the host saw the victim's QEMU gone, if it did.
    pub fn victim_dead_at(&self) -> Option<SystemTime> {
        self.dead_ns.map(|ns| UNIX_EPOCH + Duration::from_nanos(ns))
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let victim = self
            .victim
            .map_or_else(|| "?".to_owned(), |victim| format!("node{victim}"));
        let delayed = if self.delayed_ms > 0 {
            format!(", held back {} ms (tie-break)", self.delayed_ms)
        } else {
            String::new()
        };
        format!(
            "node{} asked to power off {victim} (request {}): {}{delayed}: {}",
            self.requester,
            self.id,
            self.outcome.answer(),
            self.detail
        )
    }

    fn answer_line(&self) -> String {
        let detail: String = self
            .detail
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        format!(
            "id={} result={} detail={detail}\n",
            self.id,
            self.outcome.answer()
        )
    }
}

/// The nanoseconds since the Unix epoch, now.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// `fence id=ID node=N fail_time=T`, as the agent writes it.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    id: String,
    victim: usize,
    fail_time: u64,
}

impl Request {
    /// The id even when the rest is unreadable, so that the refusal reaches the agent.
    fn id_of(line: &str) -> Option<String> {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix("id="))
            .filter(|id| valid_id(id))
            .map(str::to_owned)
    }

    fn parse(line: &str) -> Result<Request, String> {
        let mut words = line.split_whitespace();
        if words.next() != Some("fence") {
            return Err(format!("not a fence request: {line:?}"));
        }
        let fields: HashMap<&str, &str> = words.filter_map(|word| word.split_once('=')).collect();
        let id = fields
            .get("id")
            .filter(|id| valid_id(id))
            .ok_or("no valid id=")?;
        let victim = fields
            .get("node")
            .and_then(|node| node.parse().ok())
            .ok_or("no node=NODEID")?;
        let fail_time = fields
            .get("fail_time")
            .and_then(|time| time.parse().ok())
            .unwrap_or(0);
        Ok(Request {
            id: (*id).to_owned(),
            victim,
            fail_time,
        })
    }
}

fn valid_id(id: &str) -> bool {
    (1..=96).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether node `index`'s QEMU is running (recorded pid alive and still our QEMU, not marked
/// killed or fenced).
pub(crate) fn node_running(state: &ClusterState, index: usize) -> bool {
    state.nodes.get(index.wrapping_sub(1)).is_some_and(|node| {
        !node.killed
            && node
                .pid
                .is_some_and(|pid| host::alive(pid) && host::is_our_qemu(pid, &node.qemu_name))
    })
}

/// A decision that ends the request before anything is killed.
fn precheck(
    state: &ClusterState,
    requester: usize,
    request: &Request,
) -> Option<(FenceOutcome, String)> {
    let count = state.nodes.len();
    if !node_running(state, requester) {
        return Some((
            FenceOutcome::Refused,
            format!("node{requester} is itself powered off: it fences no one"),
        ));
    }
    if request.victim == 0 || request.victim > count {
        return Some((
            FenceOutcome::Refused,
            format!(
                "node{} is not in this cluster (node1 to node{count})",
                request.victim
            ),
        ));
    }
    if request.victim == requester {
        return Some((
            FenceOutcome::Refused,
            "a node does not fence itself".to_owned(),
        ));
    }
    let victim = &state.nodes[request.victim - 1];
    if !node_running(state, request.victim) {
        return Some((
            FenceOutcome::AlreadyDead,
            format!("node{}'s QEMU is already gone", request.victim),
        ));
    }
    if let Some(started) = victim.started_unix {
        if request.fail_time != 0 && request.fail_time < started {
            return Some((
                FenceOutcome::AlreadyDead,
                format!(
                    "the node{} that failed at {} is gone; its QEMU was restarted at {started}",
                    request.victim, request.fail_time
                ),
            ));
        }
    }
    None
}

/// Carries out one request from node `requester` (a line read from its fence socket), logs it to
/// the run dir's fence log and returns what happened.
pub(crate) fn handle_request(
    state: &Mutex<ClusterState>,
    requester: usize,
    line: &str,
) -> FenceEvent {
    let mut event = FenceEvent {
        id: Request::id_of(line).unwrap_or_else(|| "?".to_owned()),
        requester,
        victim: None,
        outcome: FenceOutcome::Refused,
        detail: String::new(),
        qemu_pid: None,
        received_ns: now_ns(),
        delayed_ms: 0,
        signalled_ns: None,
        dead_ns: None,
        answered_ns: 0,
    };
    let finish = |mut event: FenceEvent, outcome, detail: String, state: &ClusterState| {
        event.outcome = outcome;
        event.detail = detail;
        if outcome == FenceOutcome::AlreadyDead && event.dead_ns.is_none() {
            event.dead_ns = Some(now_ns());
        }
        event.answered_ns = now_ns();
        record(state, &event);
        event
    };
    let request = match Request::parse(line) {
        Ok(request) => request,
        Err(why) => {
            let state = locked(state);
            return finish(event, FenceOutcome::Refused, why, &state);
        }
    };
    event.victim = Some(request.victim);
    let delay = {
        let state = locked(state);
        if let Some((outcome, detail)) = precheck(&state, requester, &request) {
            return finish(event, outcome, detail, &state);
        }
        if request.victim == 1 {
            Duration::from_millis(state.fence_tie_break_ms)
        } else {
            Duration::ZERO
        }
    };
    if !delay.is_zero() {
        println!(
            "[fence] node{requester} asks to power off node1: held back {} ms (two-node tie-break)",
            delay.as_millis()
        );
        thread::sleep(delay);
        event.delayed_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    }
    let mut guard = locked(state);
    // The requester may have been powered off meanwhile (by the request that won the race).
    if let Some((outcome, detail)) = precheck(&guard, requester, &request) {
        return finish(event, outcome, detail, &guard);
    }
    let victim = request.victim;
    let (pid, qemu_name) = {
        let node = &guard.nodes[victim - 1];
        (node.pid.unwrap_or(0), node.qemu_name.clone())
    };
    event.qemu_pid = Some(pid);
    event.signalled_ns = Some(now_ns());
    if !host::signal_qemu(pid, &qemu_name, Signal::SIGKILL) {
        // It went away between the check and the signal.
        if host::alive(pid) && host::is_our_qemu(pid, &qemu_name) {
            return finish(
                event,
                FenceOutcome::Failed,
                format!("SIGKILL of node{victim}'s QEMU (pid {pid}) failed"),
                &guard,
            );
        }
        event.signalled_ns = None;
        mark_fenced(&mut guard, victim, requester);
        return finish(
            event,
            FenceOutcome::AlreadyDead,
            format!("node{victim}'s QEMU (pid {pid}) is already gone"),
            &guard,
        );
    }
    if !host::wait_gone(&[pid], KILL_TIMEOUT).is_empty() {
        return finish(
            event,
            FenceOutcome::Failed,
            format!(
                "node{victim}'s QEMU (pid {pid}) still runs {} s after SIGKILL",
                KILL_TIMEOUT.as_secs()
            ),
            &guard,
        );
    }
    let dead = now_ns();
    event.dead_ns = Some(dead);
    mark_fenced(&mut guard, victim, requester);
    let took = Duration::from_nanos(dead.saturating_sub(event.signalled_ns.unwrap_or(dead)));
    finish(
        event,
        FenceOutcome::PoweredOff,
        format!(
            "node{victim}'s QEMU (pid {pid}) SIGKILLed, gone {:.0} ms later",
            took.as_secs_f64() * 1000.0
        ),
        &guard,
    )
}

fn mark_fenced(state: &mut ClusterState, victim: usize, requester: usize) {
    let node = &mut state.nodes[victim - 1];
    node.killed = true;
    node.fenced_by = Some(requester);
    if let Err(err) = state.save() {
        eprintln!("[fence] recording node{victim} as powered off: {err}");
    }
}

/// Appends the event to the fence log and prints it.
fn record(state: &ClusterState, event: &FenceEvent) {
    println!("[fence] {}", event.summary());
    let path = state.dir.join(FENCE_LOG);
    let line = match serde_json::to_string(event) {
        Ok(json) => json + "\n",
        Err(err) => {
            eprintln!("[fence] cannot encode {event:?}: {err}");
            return;
        }
    };
    let written = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(err) = written {
        eprintln!("[fence] {}: {err}", path.display());
    }
}

/// Reads a cluster's fence log (empty when no node asked yet).
pub(crate) fn read_log(dir: &Path) -> Result<Vec<FenceEvent>> {
    host::read_json_lines(&dir.join(FENCE_LOG))
}

/// The host side of a cluster's fence channels: one thread per node, connected to its
/// `nodeN.fence` socket (reconnecting when the node is restarted), answering its requests.
#[derive(Debug)]
pub(crate) struct Fencer {
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<HashMap<usize, UnixStream>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Fencer {
    /// Starts serving every node of `state` that has a fence socket.
    pub(crate) fn start(state: &Arc<Mutex<ClusterState>>) -> Fencer {
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(HashMap::new()));
        let sockets: Vec<(usize, PathBuf)> = locked(state)
            .nodes
            .iter()
            .filter_map(|node| Some((node.index, node.fence_socket.clone()?)))
            .collect();
        let threads = sockets
            .into_iter()
            .map(|(index, socket)| {
                let (state, stop, streams) =
                    (Arc::clone(state), Arc::clone(&stop), Arc::clone(&streams));
                thread::spawn(move || serve_node(&state, index, &socket, &stop, &streams))
            })
            .collect();
        Fencer {
            stop,
            streams,
            threads,
        }
    }

    /// Stops every thread (a request being carried out is finished first).
    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for stream in locked(&self.streams).values() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn serve_node(
    state: &Mutex<ClusterState>,
    index: usize,
    socket: &Path,
    stop: &AtomicBool,
    streams: &Mutex<HashMap<usize, UnixStream>>,
) {
    while !stop.load(Ordering::SeqCst) {
        // The socket exists once QEMU runs; it refuses while the node is powered off.
        let Ok(stream) = UnixStream::connect(socket) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        let (Ok(reader), Ok(handle)) = (stream.try_clone(), stream.try_clone()) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        locked(streams).insert(index, handle);
        // Registered before this check: stop() either sees the stream or we see the flag.
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let mut reader = BufReader::new(reader);
        let mut writer = stream;
        loop {
            let mut line = String::new();
            match reader.by_ref().take(MAX_LINE).read_line(&mut line) {
                Ok(0) | Err(_) => break, // QEMU gone, or stop()
                Ok(_) => {}
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let event = handle_request(state, index, line);
            if writer.write_all(event.answer_line().as_bytes()).is_err() {
                break;
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Serves the fence requests of a cluster recorded in `run_dir` (`lockmgr-testbed fencer`, the
/// background process `lockmgr-testbed up` leaves behind). Returns once none of the cluster's
/// QEMUs runs any more or its run dir is gone; `lockmgr-testbed down` stops it with SIGTERM.
pub fn serve_fencing(run_dir: &Path, name: &str) -> Result<()> {
    let dir = run_dir.join(name);
    let state = ClusterState::load(&dir)?;
    if !state.fencing {
        return Err(Error::Usage(format!(
            "cluster {name} runs without fencing: there is nothing to serve"
        )));
    }
    println!(
        "[fence] serving the fence requests of {name} ({} nodes), log {}",
        state.nodes.len(),
        dir.join(FENCE_LOG).display()
    );
    let state = Arc::new(Mutex::new(state));
    let fencer = Fencer::start(&state);
    loop {
        thread::sleep(Duration::from_secs(1));
        if !dir.join("state.json").exists() || locked(&state).running_pids().is_empty() {
            break;
        }
    }
    fencer.stop();
    println!("[fence] {name}: no node left running; exiting");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::NodeRecord;

    fn state_in(dir: &Path, nodes: usize) -> ClusterState {
        ClusterState {
            name: "lockmgr-fence-test".to_owned(),
            dir: dir.to_owned(),
            owner_pid: None,
            owner_start: None,
            share: None,
            kernel: "k".to_owned(),
            fencing: true,
            fence_mode: None,
            fence_tie_break_ms: 0,
            fencer_pid: None,
            fencer_start: None,
            nodes: (1..=nodes)
                .map(|index| NodeRecord {
                    index,
                    qemu_name: format!("lockmgr-fence-test-node{index}"),
                    // our own pid: alive, but never our QEMU, so never signalled
                    pid: Some(std::process::id()),
                    address: crate::cluster::node_address(index),
                    console: dir.join(format!("node{index}.console")),
                    agent_socket: dir.join(format!("node{index}.qga")),
                    fence_socket: Some(dir.join(format!("node{index}.fence"))),
                    qmp_socket: None,
                    qmp_events: None,
                    killed: false,
                    fenced_by: None,
                    started_unix: None,
                })
                .collect(),
        }
    }

    #[test]
    fn requests_parse_and_malformed_ones_keep_their_id() {
        assert_eq!(
            Request::parse("fence id=node1-42-7 node=3 fail_time=1700000000"),
            Ok(Request {
                id: "node1-42-7".to_owned(),
                victim: 3,
                fail_time: 1_700_000_000
            })
        );
        assert!(Request::parse("fence id=a node=x").is_err());
        assert!(Request::parse("unfence id=a node=2").is_err());
        assert!(Request::parse("fence id=a;rm node=2").is_err());
        assert_eq!(
            Request::id_of("fence id=abc node=x").as_deref(),
            Some("abc")
        );
        assert_eq!(Request::id_of("fence id=a/b node=2"), None);
    }

    #[test]
    fn refusals_and_dead_victims_are_answered_and_logged() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = state_in(dir.path(), 3);
        // node1's "QEMU" is us (never our QEMU: treated as not running); mark node2 dead.
        state.nodes[1].killed = true;
        state.save().unwrap();
        let state = Mutex::new(state);

        // The requester is not a running QEMU of ours: refused, whatever it asks.
        let event = handle_request(&state, 1, "fence id=r1 node=3 fail_time=0");
        assert_eq!(event.outcome, FenceOutcome::Refused);
        assert!(event.detail.contains("itself powered off"), "{event:?}");
        assert_eq!(
            event.answer_line(),
            format!("id=r1 result=refused detail={}\n", event.detail)
        );

        let event = handle_request(&state, 3, "garbage id=r2");
        assert_eq!(event.outcome, FenceOutcome::Refused);
        assert_eq!(event.id, "r2");

        let log = read_log(dir.path()).unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!((log[0].requester, log[0].id.as_str()), (1, "r1"));
        assert_eq!(log[0].victim, Some(3));
        assert_eq!((log[1].requester, log[1].id.as_str()), (3, "r2"));
        assert!(!log.iter().any(|event| event.outcome.fenced()));
    }

    #[test]
    fn precheck_names_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_in(dir.path(), 2);
        let request = |victim| Request {
            id: "x".to_owned(),
            victim,
            fail_time: 0,
        };
        // Nothing in the test state is a running QEMU: every requester counts as powered off.
        let (outcome, detail) = precheck(&state, 1, &request(2)).unwrap();
        assert_eq!(outcome, FenceOutcome::Refused);
        assert!(detail.contains("node1 is itself powered off"));
        assert!(!node_running(&state, 1));
        assert!(!node_running(&state, 9));
    }
}
