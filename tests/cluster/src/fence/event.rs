//! What a fence request ended as ([`FenceOutcome`]), the record of it ([`FenceEvent`]), and the
//! fence log those records are appended to.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::FENCE_LOG;
use crate::cluster::ClusterState;
use crate::error::Result;
use crate::host;

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

    pub(super) fn answer_line(&self) -> String {
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

/// Appends the event to the fence log and prints it.
pub(super) fn record(state: &ClusterState, event: &FenceEvent) {
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
