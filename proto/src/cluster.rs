//! What the lockmgrd daemons of a DLM cluster say to each other in their corosync process group
//! ([`STATUS_GROUP`]): `lockmgr status --cluster` joins the group, sends a [`GroupMessage::Query`],
//! and every lockmgrd answers with its table ([`GroupMessage::Answer`]). Messages are JSON.

use serde::{Deserialize, Serialize};

use crate::{DomainStatus, LockStatus};

/// The corosync process group the lockmgrd daemons (`--backend dlm`) join.
pub const STATUS_GROUP: &str = "lockmgrd-status";

/// One message in [`STATUS_GROUP`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum GroupMessage {
    /// Every lockmgrd: answer with your table.
    Query {
        /// Chosen by the asker; answers carry it back.
        id: u64,
    },
    /// One lockmgrd's table.
    Answer {
        /// The query's id.
        id: u64,
        /// The answering node's corosync node id.
        node_id: u32,
        /// What lockmgrd's own Status said, or why it could not be asked.
        status: Result<NodeStatus, String>,
    },
}

/// A node's lockmgrd table, as its Status reply has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeStatus {
    /// Registered domains.
    pub owners: Vec<DomainStatus>,
    /// Held locks.
    pub locks: Vec<LockStatus>,
    /// Set when the table was cut to fit a reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<String>,
}

impl GroupMessage {
    /// The message as sent.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A received message; anything else in the group is an error.
    pub fn decode(data: &[u8]) -> Result<GroupMessage, String> {
        serde_json::from_slice(data).map_err(|e| format!("not a lockmgrd group message: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Mode;

    #[test]
    fn messages_round_trip_and_strangers_are_refused() {
        let answer = GroupMessage::Answer {
            id: 7,
            node_id: 2,
            status: Ok(NodeStatus {
                owners: vec![DomainStatus {
                    name: "vm1".into(),
                    uuid: "3e1b6f0a-8c1d-4a57-9d0e-2b7c1f0e9a11".into(),
                    pid: 42,
                }],
                locks: vec![LockStatus {
                    resource: "disk /dev/vda".into(),
                    target: "1bff2a50".into(),
                    mode: Mode::Exclusive,
                    owners: vec!["vm1".into()],
                    since_ms: Some(1),
                }],
                truncated: None,
            }),
        };
        for message in [GroupMessage::Query { id: 7 }, answer] {
            assert_eq!(GroupMessage::decode(&message.encode()), Ok(message));
        }
        assert!(GroupMessage::decode(b"{\"type\":\"query\",\"id\":1,\"extra\":2}").is_err());
        assert!(GroupMessage::decode(b"hello").is_err());
    }
}
