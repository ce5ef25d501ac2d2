//! One fence request: reading the agent's line ([`Request`]), the checks that end it before
//! anything is killed, the tie-break, and powering the victim off.

use std::collections::HashMap;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use rustix::process::Signal;

use super::event::{FenceEvent, FenceOutcome, now_ns, record};
use super::locked;
use crate::cluster::ClusterState;
use crate::host;

/// Longest wait for a SIGKILLed QEMU to be gone before the request counts as failed.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// `fence id=ID node=N fail_time=T`, as the agent writes it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Request {
    pub(super) id: String,
    pub(super) victim: usize,
    pub(super) fail_time: u64,
}

impl Request {
    /// The id even when the rest is unreadable, so that the refusal reaches the agent.
    pub(super) fn id_of(line: &str) -> Option<String> {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix("id="))
            .filter(|id| valid_id(id))
            .map(str::to_owned)
    }

    pub(super) fn parse(line: &str) -> Result<Request, String> {
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
pub(super) fn precheck(
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
    if !host::signal_qemu(pid, &qemu_name, Signal::KILL) {
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
