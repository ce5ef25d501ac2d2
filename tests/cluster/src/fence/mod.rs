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
//!
//! `event.rs` holds what a request ended as and the fence log, `request.rs` how one request is
//! decided and carried out, `server.rs` the threads and the process that serve the fence sockets.
//!
//! [`ClusterState::fence_tie_break_ms`]: crate::cluster::ClusterState::fence_tie_break_ms

use std::sync::{Mutex, MutexGuard};

mod event;
mod request;
mod server;

pub use event::{FenceEvent, FenceOutcome};
pub(crate) use event::{now_ns, read_log};
pub(crate) use request::node_running;
pub(crate) use server::Fencer;
pub use server::serve_fencing;

/// The name of the virtio-serial port a node's fence agent talks through (init links it to
/// `/dev/fence-testbed`).
pub const FENCE_PORT_NAME: &str = "org.lockmgr.fence.0";
/// The fence log in a cluster's run dir: one JSON [`FenceEvent`] per line.
pub const FENCE_LOG: &str = "fence.log";

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::request::{Request, handle_request, precheck};
    use super::*;
    use crate::cluster::{ClusterState, NodeRecord};

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
