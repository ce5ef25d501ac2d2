//! The nemesis's on-disk format, the workers' event log and the checker.
//!
//! Every node sees one shared disk ([`crate::ClusterSpec::shared_disk`]); exclusive disk `d` of
//! the workload (the lock name is its path, `/vm/nemesis-d.img`) is region `d` of it,
//! `region_bytes` long. A region is an array of 512-byte blocks: block 0 is the **header**, the
//! others hold **records**, appended in order (record slot `i` is block `1 + i`).
//!
//! A worker (`src/bin/nemesis-worker.rs`) that was granted disk `d`:
//!
//! 1. reads the header (generation `G`, next slot `N`, hash of the last record `H`);
//! 2. **claims** generation `G + 1` by writing the header back with it, then logs its grant;
//! 3. appends records `N, N+1, ...`: `(disk, generation, node, owner, incarnation, grant, seq,
//!    slot, prev = hash of the record before, time)`, each followed by the header update that
//!    commits it (`next = slot + 1`, `last_hash`);
//! 4. stops writing, logs how many records it wrote, and only then releases the lock.
//!
//! It writes with O_DIRECT and checks before every write that its owner (the QEMU stand-in the
//! lock belongs to) is still alive: lockmgrd kills it when the lock is lost.
//!
//! So one holder at a time leaves, per region, one hash chain of records whose generations only
//! grow and whose runs are each one grant's `seq 0, 1, 2, ...`. Two holders at once both read the
//! same header (a generation claimed twice), or one overwrites the other's slots (the chain
//! breaks, or the records a worker logged as written are gone). The [`check`] finds all three.
//!
//! `format` owns the blocks on disk, `log` the workers' event logs, `checker` the checker and
//! its [`Report`]; [`Random`] makes the choices of the nemesis and of its workers.

use std::time::Duration;

mod checker;
mod format;
mod log;
#[cfg(test)]
mod tests;

pub use checker::{Report, check};
pub use format::{BLOCK, Header, Record, Writer, block_offset, fnv1a, region_capacity};
pub use log::{Event, WorkerLog, log_name, read_logs};

/// xorshift64 for the nemesis's choices and the workers' (which disk, how long to hold): varied
/// choices, not good randomness.
#[derive(Debug)]
pub struct Random(u64);

impl Random {
    /// Starts from `seed`, made odd so that the state is never 0.
    pub fn new(seed: u64) -> Random {
        Random(seed | 1)
    }

    /// A number below `n` (below 1 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    /// A duration of `from` ms up to `to` ms.
    pub fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to.saturating_sub(from).max(1)))
    }
}
