//! The workers' event logs: what a worker logs (JSON Lines, one file per worker) and how they
//! are read back.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One line of a worker's log (JSON Lines in the scratch share, one file per worker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "kebab-case")]
pub enum Event {
    /// The worker registered an owner (the QEMU stand-in) with the plugin.
    Register {
        /// Node clock, ns.
        t: u64,
        /// The owner's pid in the node.
        pid: u32,
    },
    /// Acquire refused: the disk is locked elsewhere.
    Refused {
        /// Node clock, ns.
        t: u64,
        /// Disk.
        disk: u64,
    },
    /// Acquire or release failed otherwise (daemon down, lockspace stopped, ...).
    Error {
        /// Node clock, ns.
        t: u64,
        /// Disk.
        disk: u64,
        /// `acquire` or `release`.
        op: String,
        /// What the plugin said.
        error: String,
    },
    /// Acquire granted and generation claimed on disk.
    Grant {
        /// Node clock, ns.
        t: u64,
        /// Disk.
        disk: u64,
        /// The worker's grant counter.
        grant: u64,
        /// The generation it claimed.
        generation: u64,
        /// Its first record slot.
        start: u64,
    },
    /// The holder stopped writing: `records` written from `start`. `owner_alive`: the owner
    /// still ran, i.e. the lock was never taken from it; otherwise the lock was lost.
    Done {
        /// Node clock, ns.
        t: u64,
        /// Disk.
        disk: u64,
        /// The grant counter.
        grant: u64,
        /// Records written and committed.
        records: u64,
        /// Whether its owner still ran when it stopped.
        owner_alive: bool,
    },
    /// Released (after `Done`).
    Release {
        /// Node clock, ns.
        t: u64,
        /// Disk.
        disk: u64,
        /// The grant counter.
        grant: u64,
    },
    /// The owner died while the worker waited or held (killed by lockmgrd's on_lockfailure).
    OwnerDied {
        /// Node clock, ns.
        t: u64,
        /// Its pid.
        pid: u32,
    },
    /// The region is full: the worker no longer writes to it.
    Full {
        /// Node clock, ns.
        t: u64,
        /// Disk.
        disk: u64,
    },
}

/// A worker's log, as read back: who wrote it, its node clock's offset to the host's (node −
/// host, ns; 0 when unknown), and its events in order.
#[derive(Debug, Clone, Default)]
pub struct WorkerLog {
    /// Node.
    pub node: u64,
    /// Owner index.
    pub owner: u64,
    /// Incarnation.
    pub incarnation: u64,
    /// Node clock − host clock, ns.
    pub clock_offset_ns: i128,
    /// The events.
    pub events: Vec<Event>,
}

/// The name of a worker's log file.
pub fn log_name(node: u64, owner: u64, incarnation: u64) -> String {
    format!("node{node}-owner{owner}-inc{incarnation}.jsonl")
}

/// Reads every `nodeN-ownerO-incI.jsonl` in `dir`; `offsets` maps (node, incarnation) to that
/// boot's clock offset. A torn last line (a node powered off mid-write) is skipped.
pub fn read_logs(
    dir: &Path,
    offsets: &HashMap<(u64, u64), i128>,
) -> std::io::Result<Vec<WorkerLog>> {
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".jsonl") else {
            continue;
        };
        let numbers: Vec<u64> = stem
            .split('-')
            .filter_map(|part| {
                part.trim_start_matches(|c: char| c.is_ascii_alphabetic())
                    .parse()
                    .ok()
            })
            .collect();
        let [node, owner, incarnation] = numbers[..] else {
            continue;
        };
        let text = std::fs::read_to_string(&path)?;
        let events = text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        logs.push(WorkerLog {
            node,
            owner,
            incarnation,
            clock_offset_ns: offsets.get(&(node, incarnation)).copied().unwrap_or(0),
            events,
        });
    }
    logs.sort_by_key(|log| (log.node, log.owner, log.incarnation));
    Ok(logs)
}
