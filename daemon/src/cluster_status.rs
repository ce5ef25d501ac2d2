//! `lockmgr status --cluster`, both sides. lockmgrd runs a thread that joins the lockmgrd process
//! group of the cluster's corosync ([`STATUS_GROUP`]) and answers every query with this daemon's
//! table, asked through its own socket like any client (so the answer is exactly what `lockmgr
//! status` shows on that node); it never touches the lock table, so a stalled server only delays
//! its answer. `lockmgr` joins the same group to ask ([`ask_cluster`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockmgr_proto::cluster::{GroupMessage, NodeStatus, STATUS_GROUP};
use lockmgr_proto::{Client, Reply, Request};
use lockmgr_quorum::{COROSYNC_CONF, ProcessGroup, Votequorum, node_names};
use serde::Serialize;

use crate::{log, sys};

/// How long to wait before joining again after corosync refused or dropped the group.
const REJOIN_AFTER: Duration = Duration::from_secs(5);

/// Starts the responder thread for the daemon serving `socket`.
pub fn spawn_responder(socket: PathBuf) {
    let spawned = std::thread::Builder::new()
        .name("cluster-status".into())
        .spawn(move || respond_forever(&socket));
    if let Err(err) = spawned {
        log(&format!(
            "cannot start the cluster status thread ({err}): `lockmgr status --cluster` will not see this node"
        ));
    }
}

fn respond_forever(socket: &Path) {
    let mut said = None;
    loop {
        let error = match ProcessGroup::join(STATUS_GROUP) {
            Ok(mut group) => {
                if said.take().is_some() {
                    log(&format!("joined corosync process group '{STATUS_GROUP}'"));
                }
                match serve(&mut group, socket) {
                    Ok(never) => match never {},
                    Err(err) => err,
                }
            }
            Err(err) => err.to_string(),
        };
        // Said once per kind of failure, not every REJOIN_AFTER.
        if said.as_ref() != Some(&error) {
            log(&format!(
                "corosync process group '{STATUS_GROUP}': {error}; `lockmgr status --cluster` does not see this node until it is back (retrying every {} s)",
                REJOIN_AFTER.as_secs()
            ));
            said = Some(error);
        }
        std::thread::sleep(REJOIN_AFTER);
    }
}

fn serve(group: &mut ProcessGroup, socket: &Path) -> Result<std::convert::Infallible, String> {
    let node_id = group.local_node_id().map_err(|e| e.to_string())?;
    let fd = group.fd().map_err(|e| e.to_string())?;
    loop {
        sys::poll_readable(&[fd], -1).map_err(|e| format!("poll: {e}"))?;
        for message in group.dispatch().map_err(|e| e.to_string())? {
            // Answers of other daemons, and anything that is not ours, need no answer.
            let Ok(GroupMessage::Query { id }) = GroupMessage::decode(&message.data) else {
                continue;
            };
            let answer = GroupMessage::Answer {
                id,
                node_id,
                status: own_status(socket),
            };
            group.send(&answer.encode()).map_err(|e| e.to_string())?;
        }
    }
}

/// This daemon's table, asked on its socket.
fn own_status(socket: &Path) -> Result<NodeStatus, String> {
    let mut client = Client::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    match client.call(&Request::Status) {
        Ok(Reply::Status {
            owners,
            locks,
            truncated,
            ..
        }) => Ok(NodeStatus {
            owners,
            locks,
            truncated,
        }),
        Ok(other) => Err(format!("unexpected reply {other:?}")),
        Err(err) => Err(err.to_string()),
    }
}

// ---- the asking side: `lockmgr status --cluster` ----------------------------------------------

/// How long the daemons have to answer a query.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// One node of the cluster, as `lockmgr status --cluster` reports it.
#[derive(Debug, Serialize)]
pub struct NodeReport {
    /// Its corosync node id.
    pub node_id: u32,
    /// Its name in corosync.conf's nodelist (`id N` when it has none).
    pub name: String,
    /// Whether its lockmgrd answered.
    pub answered: bool,
    /// Why there is no table: no answer, or the daemon's own error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its lockmgrd's table.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub status: Option<NodeStatus>,
}

/// Every node's lockmgrd, as far as this node can reach them.
#[derive(Debug, Serialize)]
pub struct ClusterReport {
    /// The node that asked.
    pub asked_from: u32,
    /// Whether it was quorate (if not, only its own partition can answer).
    pub quorate: Option<bool>,
    /// The nodes of corosync.conf's nodelist and any other that answered, by id.
    pub nodes: Vec<NodeReport>,
}

/// Asks every lockmgrd of the cluster through [`STATUS_GROUP`] and waits for their answers (at
/// most [`ANSWER_WITHIN`]).
pub fn ask_cluster() -> Result<ClusterReport, String> {
    let mut group = ProcessGroup::join(STATUS_GROUP).map_err(|e| {
        format!("cannot ask the cluster through corosync: {e} (is this node a member of a running corosync cluster?)")
    })?;
    let me = group.local_node_id().map_err(|e| e.to_string())?;
    let quorate = Votequorum::connect()
        .and_then(|quorum| quorum.info())
        .ok()
        .map(|info| info.quorate);
    let id = query_id();
    group
        .send(&GroupMessage::Query { id }.encode())
        .map_err(|e| e.to_string())?;
    let answers = collect_answers(&mut group, id, me)?;

    let mut names = std::fs::read_to_string(COROSYNC_CONF)
        .map(|text| node_names(&text))
        .unwrap_or_default();
    let mut ids: Vec<u32> = names
        .keys()
        .copied()
        .chain(answers.keys().copied())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut answers = answers;
    let nodes: Vec<NodeReport> = ids
        .into_iter()
        .map(|node_id| {
            let name = names.remove(&node_id).unwrap_or_else(|| format!("id {node_id}"));
            match answers.remove(&node_id) {
                Some(Ok(status)) => NodeReport {
                    node_id,
                    name,
                    answered: true,
                    error: None,
                    status: Some(status),
                },
                Some(Err(error)) => NodeReport {
                    node_id,
                    name,
                    answered: true,
                    error: Some(error),
                    status: None,
                },
                None => NodeReport {
                    node_id,
                    name,
                    answered: false,
                    error: Some(format!(
                        "no answer within {} s: the node is down or cut off from this one, or runs no lockmgrd --backend dlm",
                        ANSWER_WITHIN.as_secs()
                    )),
                    status: None,
                },
            }
        })
        .collect();
    Ok(ClusterReport {
        asked_from: me,
        quorate,
        nodes,
    })
}

/// An id no other asker uses at the same time: this process and the time.
fn query_id() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    (u64::from(std::process::id()) << 32) ^ now
}

/// The answers to query `id`, by node id, until every lockmgrd in the group answered or the
/// time is up.
fn collect_answers(
    group: &mut ProcessGroup,
    id: u64,
    me: u32,
) -> Result<BTreeMap<u32, Result<NodeStatus, String>>, String> {
    let fd = group.fd().map_err(|e| e.to_string())?;
    let deadline = Instant::now() + ANSWER_WITHIN;
    let own_pid = std::process::id();
    let mut answers = BTreeMap::new();
    loop {
        let daemons: Vec<u32> = group
            .members(STATUS_GROUP)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|member| !(member.node_id == me && member.pid == own_pid))
            .map(|member| member.node_id)
            .collect();
        let all_in = !daemons.is_empty() && daemons.iter().all(|node| answers.contains_key(node));
        let left = deadline.saturating_duration_since(Instant::now());
        if all_in || left.is_zero() {
            return Ok(answers);
        }
        let wait_ms = i32::try_from(left.as_millis().min(200)).unwrap_or(200);
        sys::poll_readable(&[fd], wait_ms).map_err(|e| format!("poll: {e}"))?;
        for message in group.dispatch().map_err(|e| e.to_string())? {
            if let Ok(GroupMessage::Answer {
                id: answered,
                node_id,
                status,
            }) = GroupMessage::decode(&message.data)
            {
                if answered == id {
                    answers.insert(node_id, status);
                }
            }
        }
    }
}
