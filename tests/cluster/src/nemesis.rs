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

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Size of a header or record block (the disk's logical block; O_DIRECT unit).
pub const BLOCK: usize = 512;
const HEADER_MAGIC: &[u8; 8] = b"LMNHDR01";
const RECORD_MAGIC: &[u8; 8] = b"LMNREC01";

/// FNV-1a, 64 bits: a record's identity in the chain (not cryptographic; the writers are ours).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn put_u64(block: &mut [u8], at: usize, value: u64) {
    block[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn get_u64(block: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&block[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// Block 0 of a region: the last committed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// The last claimed generation (0: never granted).
    pub generation: u64,
    /// The next free record slot (= records committed).
    pub next: u64,
    /// [`Record::hash`] of the record in slot `next - 1` (0 for none).
    pub last_hash: u64,
    /// Who wrote it last.
    pub node: u64,
    /// The owner index on that node.
    pub owner: u64,
    /// When the current holder means to release (its node's clock, ns since the epoch): lets a
    /// nemesis pick a node that will still be writing.
    pub hold_until_ns: u64,
}

impl Header {
    /// The block's bytes.
    pub fn encode(&self) -> [u8; BLOCK] {
        let mut block = [0u8; BLOCK];
        block[..8].copy_from_slice(HEADER_MAGIC);
        for (index, value) in [
            self.generation,
            self.next,
            self.last_hash,
            self.node,
            self.owner,
            self.hold_until_ns,
        ]
        .into_iter()
        .enumerate()
        {
            put_u64(&mut block, 8 + 8 * index, value);
        }
        let sum = fnv1a(&block[..56]);
        put_u64(&mut block, 56, sum);
        block
    }

    /// A header from a block; an all-zero block is the empty region. `None`: not a valid header.
    pub fn decode(block: &[u8]) -> Option<Header> {
        if block.iter().all(|byte| *byte == 0) {
            return Some(Header::default());
        }
        if block.len() < BLOCK
            || &block[..8] != HEADER_MAGIC
            || get_u64(block, 56) != fnv1a(&block[..56])
        {
            return None;
        }
        Some(Header {
            generation: get_u64(block, 8),
            next: get_u64(block, 16),
            last_hash: get_u64(block, 24),
            node: get_u64(block, 32),
            owner: get_u64(block, 40),
            hold_until_ns: get_u64(block, 48),
        })
    }
}

/// One record a holder appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Record {
    /// The exclusive disk (region) index.
    pub disk: u64,
    /// The generation its holder claimed.
    pub generation: u64,
    /// The holder's node.
    pub node: u64,
    /// The holder's owner index on that node.
    pub owner: u64,
    /// The worker's incarnation (its node's boot count in the run).
    pub incarnation: u64,
    /// The worker's grant counter.
    pub grant: u64,
    /// 0, 1, 2, ... within the grant.
    pub seq: u64,
    /// Its own slot.
    pub slot: u64,
    /// [`Record::hash`] of the record in slot `slot - 1` as its writer believed it (0 in slot 0).
    pub prev: u64,
    /// When it was written (its node's clock, ns since the epoch).
    pub time_ns: u64,
}

const RECORD_FIELDS: usize = 10;
const RECORD_SUM_AT: usize = 8 + 8 * RECORD_FIELDS;

impl Record {
    fn fields(&self) -> [u64; RECORD_FIELDS] {
        [
            self.disk,
            self.generation,
            self.node,
            self.owner,
            self.incarnation,
            self.grant,
            self.seq,
            self.slot,
            self.prev,
            self.time_ns,
        ]
    }

    /// The block's bytes.
    pub fn encode(&self) -> [u8; BLOCK] {
        let mut block = [0u8; BLOCK];
        block[..8].copy_from_slice(RECORD_MAGIC);
        for (index, value) in self.fields().into_iter().enumerate() {
            put_u64(&mut block, 8 + 8 * index, value);
        }
        let sum = fnv1a(&block[..RECORD_SUM_AT]);
        put_u64(&mut block, RECORD_SUM_AT, sum);
        block
    }

    /// A record from a block, `None` when it is not one (never written, torn, or foreign).
    pub fn decode(block: &[u8]) -> Option<Record> {
        if block.len() < BLOCK
            || &block[..8] != RECORD_MAGIC
            || get_u64(block, RECORD_SUM_AT) != fnv1a(&block[..RECORD_SUM_AT])
        {
            return None;
        }
        let field = |index: usize| get_u64(block, 8 + 8 * index);
        Some(Record {
            disk: field(0),
            generation: field(1),
            node: field(2),
            owner: field(3),
            incarnation: field(4),
            grant: field(5),
            seq: field(6),
            slot: field(7),
            prev: field(8),
            time_ns: field(9),
        })
    }

    /// Its link in the chain: the checksum of its encoding.
    pub fn hash(&self) -> u64 {
        fnv1a(&self.encode()[..RECORD_SUM_AT])
    }

    /// Which grant wrote it.
    pub fn writer(&self) -> Writer {
        Writer {
            node: self.node,
            owner: self.owner,
            incarnation: self.incarnation,
            grant: self.grant,
        }
    }

    fn describe(&self) -> String {
        format!(
            "slot {} gen {} by node{}/owner{}/inc{} grant {} seq {} (prev {:016x}, t {})",
            self.slot,
            self.generation,
            self.node,
            self.owner,
            self.incarnation,
            self.grant,
            self.seq,
            self.prev,
            self.time_ns
        )
    }
}

/// One grant of one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Writer {
    /// Node.
    pub node: u64,
    /// Owner index on the node.
    pub owner: u64,
    /// The worker's incarnation.
    pub incarnation: u64,
    /// The worker's grant counter.
    pub grant: u64,
}

impl std::fmt::Display for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node{}/owner{}/inc{} grant {}",
            self.node, self.owner, self.incarnation, self.grant
        )
    }
}

/// Byte offset of region `disk`'s block `block`.
pub fn block_offset(region_bytes: u64, disk: u64, block: u64) -> u64 {
    disk * region_bytes + block * BLOCK as u64
}

/// Record slots a region holds.
pub fn region_capacity(region_bytes: u64) -> u64 {
    (region_bytes / BLOCK as u64).saturating_sub(1)
}

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

/// What the checker found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Lock operations: acquires tried (granted, refused or failed) and releases.
    pub operations: u64,
    /// Acquires granted.
    pub grants: u64,
    /// Acquires refused as busy.
    pub refusals: u64,
    /// Acquires and releases that failed otherwise.
    pub errors: u64,
    /// Grants whose owner died while holding (the lock was lost, and the worker stopped).
    pub lost: u64,
    /// Records committed on disk, all regions.
    pub records: u64,
    /// Per disk: the longest time it was unavailable, i.e. from the end of every earlier hold
    /// (its release; for a holder that died holding, its last record) to the next grant (host
    /// clock, s), and when that began (s from the first event).
    pub longest_unavailable: BTreeMap<u64, (f64, f64)>,
    /// Every violation, with the records that show it.
    pub violations: Vec<String>,
}

impl Report {
    /// A multi-line summary.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "operations {}, grants {}, refusals {}, other failures {}, grants lost with their owner {}, records on disk {}",
            self.operations, self.grants, self.refusals, self.errors, self.lost, self.records
        );
        for (disk, (gap, at)) in &self.longest_unavailable {
            let _ = writeln!(
                text,
                "disk {disk}: longest unavailable (free, not yet granted) {gap:.1} s (from t = {at:.1} s)"
            );
        }
        let _ = writeln!(text, "violations: {}", self.violations.len());
        for violation in self.violations.iter().take(20) {
            let _ = writeln!(text, "  - {violation}");
        }
        if self.violations.len() > 20 {
            let _ = writeln!(text, "  ... and {} more", self.violations.len() - 20);
        }
        text
    }
}

/// One grant from the logs.
#[derive(Debug, Clone)]
struct LoggedGrant {
    writer: Writer,
    generation: u64,
    start: u64,
    host_t: i128,
    /// Its node clock's offset.
    offset: i128,
    /// When it released or stopped (host clock).
    end_t: Option<i128>,
    done: Option<(u64, bool)>,
}

/// Checks the shared disk `image` (`disks` regions of `region_bytes`) against the workers' logs.
pub fn check(image: &[u8], region_bytes: u64, disks: u64, logs: &[WorkerLog]) -> Report {
    let mut report = Report::default();
    let mut grants: BTreeMap<u64, Vec<LoggedGrant>> = BTreeMap::new();
    for log in logs {
        let mut open: HashMap<(u64, u64), usize> = HashMap::new();
        for event in &log.events {
            match event {
                Event::Refused { .. } => {
                    report.operations += 1;
                    report.refusals += 1;
                }
                Event::Error { .. } => {
                    report.operations += 1;
                    report.errors += 1;
                }
                Event::Grant {
                    t,
                    disk,
                    grant,
                    generation,
                    start,
                } => {
                    report.operations += 1;
                    report.grants += 1;
                    let list = grants.entry(*disk).or_default();
                    open.insert((*disk, *grant), list.len());
                    list.push(LoggedGrant {
                        writer: Writer {
                            node: log.node,
                            owner: log.owner,
                            incarnation: log.incarnation,
                            grant: *grant,
                        },
                        generation: *generation,
                        start: *start,
                        host_t: i128::from(*t) - log.clock_offset_ns,
                        offset: log.clock_offset_ns,
                        end_t: None,
                        done: None,
                    });
                }
                Event::Done {
                    t,
                    disk,
                    grant,
                    records,
                    owner_alive,
                } => {
                    if !owner_alive {
                        report.lost += 1;
                    }
                    if let Some(index) = open.get(&(*disk, *grant)) {
                        if let Some(logged) = grants.get_mut(disk).and_then(|l| l.get_mut(*index)) {
                            logged.done = Some((*records, *owner_alive));
                            logged.end_t = Some(i128::from(*t) - log.clock_offset_ns);
                        }
                    }
                }
                Event::Release { t, disk, grant } => {
                    report.operations += 1;
                    if let Some(index) = open.get(&(*disk, *grant)) {
                        if let Some(logged) = grants.get_mut(disk).and_then(|l| l.get_mut(*index)) {
                            logged.end_t = Some(i128::from(*t) - log.clock_offset_ns);
                        }
                    }
                }
                Event::Register { .. } | Event::OwnerDied { .. } | Event::Full { .. } => {}
            }
        }
    }

    for disk in 0..disks {
        let mut logged = grants.remove(&disk).unwrap_or_default();
        let last_written = check_region(image, region_bytes, disk, &logged, &mut report);
        // A holder that died holding ended with its last record (or its grant).
        for grant in &mut logged {
            if grant.end_t.is_none() {
                grant.end_t = Some(
                    last_written
                        .get(&grant.writer)
                        .map_or(grant.host_t, |t| i128::from(*t) - grant.offset),
                );
            }
        }
        logged.sort_by_key(|grant| grant.host_t);
        let first = logs
            .iter()
            .flat_map(|log| {
                log.events
                    .first()
                    .map(|event| event_t(event) - log.clock_offset_ns)
            })
            .min()
            .unwrap_or(0);
        let mut longest = (0.0f64, 0.0f64);
        let mut held_until: Option<i128> = None;
        for grant in &logged {
            if let Some(free_from) = held_until {
                let gap = seconds(grant.host_t - free_from);
                if gap > longest.0 {
                    longest = (gap, seconds(free_from - first));
                }
            }
            let end = grant.end_t.unwrap_or(grant.host_t);
            held_until = Some(held_until.map_or(end, |until| until.max(end)));
        }
        report.longest_unavailable.insert(disk, longest);
    }
    report
}

fn seconds(ns: i128) -> f64 {
    // Precision is irrelevant here: these are seconds of a test run.
    #[allow(clippy::cast_precision_loss)]
    let value = ns as f64 / 1e9;
    value
}

fn event_t(event: &Event) -> i128 {
    let t = match event {
        Event::Register { t, .. }
        | Event::Refused { t, .. }
        | Event::Error { t, .. }
        | Event::Grant { t, .. }
        | Event::Done { t, .. }
        | Event::Release { t, .. }
        | Event::OwnerDied { t, .. }
        | Event::Full { t, .. } => *t,
    };
    i128::from(t)
}

fn block(image: &[u8], region_bytes: u64, disk: u64, index: u64) -> &[u8] {
    let at = usize::try_from(block_offset(region_bytes, disk, index)).unwrap_or(usize::MAX);
    image.get(at..at.saturating_add(BLOCK)).unwrap_or(&[])
}

/// Checks one region; returns when each writer wrote its last committed record (node clock).
fn check_region(
    image: &[u8],
    region_bytes: u64,
    disk: u64,
    logged: &[LoggedGrant],
    report: &mut Report,
) -> HashMap<Writer, u64> {
    let mut last_written = HashMap::new();
    let violations = &mut report.violations;
    let Some(header) = Header::decode(block(image, region_bytes, disk, 0)) else {
        violations.push(format!("disk {disk}: the header block is not a header"));
        return last_written;
    };
    let capacity = region_capacity(region_bytes);
    if header.next > capacity {
        violations.push(format!(
            "disk {disk}: header next {} beyond the region",
            header.next
        ));
        return last_written;
    }
    report.records += header.next;

    // 1. The chain of committed records.
    let mut previous: Option<Record> = None;
    let mut runs: Vec<(u64, Writer, u64)> = Vec::new(); // generation, writer, first slot
    for slot in 0..header.next {
        let Some(record) = Record::decode(block(image, region_bytes, disk, 1 + slot)) else {
            violations.push(format!(
                "disk {disk}: slot {slot} (committed: header next {}) holds no valid record",
                header.next
            ));
            previous = None;
            continue;
        };
        if record.slot != slot || record.disk != disk {
            violations.push(format!(
                "disk {disk}: slot {slot} holds a record for disk {} slot {}: {}",
                record.disk,
                record.slot,
                record.describe()
            ));
        }
        let expected_prev = previous.map_or(0, |prev| prev.hash());
        if slot > 0 && previous.is_some() && record.prev != expected_prev {
            let before = previous.map(|prev| prev.describe()).unwrap_or_default();
            violations.push(format!(
                "disk {disk}: chain broken at slot {slot}: its writer saw another record before it \
                 than the one there (interleaved writers): [{before}] then [{}]",
                record.describe()
            ));
        }
        match previous {
            Some(prev) if prev.generation == record.generation => {
                if prev.writer() != record.writer() || record.seq != prev.seq + 1 {
                    violations.push(format!(
                        "disk {disk}: generation {} written by two grants, or out of order: [{}] then [{}]",
                        record.generation,
                        prev.describe(),
                        record.describe()
                    ));
                }
            }
            Some(prev) if record.generation < prev.generation => violations.push(format!(
                "disk {disk}: generation went back from {} to {}: [{}] then [{}]",
                prev.generation,
                record.generation,
                prev.describe(),
                record.describe()
            )),
            _ => {
                if record.seq != 0 {
                    violations.push(format!(
                        "disk {disk}: a run of generation {} starts at seq {} (its first records were \
                         overwritten): [{}]",
                        record.generation,
                        record.seq,
                        record.describe()
                    ));
                }
                runs.push((record.generation, record.writer(), slot));
            }
        }
        last_written.insert(record.writer(), record.time_ns);
        previous = Some(record);
    }
    if header.next > 0 {
        if let Some(last) = Record::decode(block(image, region_bytes, disk, header.next)) {
            if last.hash() != header.last_hash {
                violations.push(format!(
                    "disk {disk}: the header's last hash is not the last record's: [{}]",
                    last.describe()
                ));
            }
        }
    }

    // 2. The logs: one grant per generation, and every finished grant's records intact.
    let mut by_generation: BTreeMap<u64, Vec<&LoggedGrant>> = BTreeMap::new();
    for grant in logged {
        by_generation
            .entry(grant.generation)
            .or_default()
            .push(grant);
    }
    for (generation, claimants) in &by_generation {
        if claimants.len() > 1 {
            let who: Vec<String> = claimants
                .iter()
                .map(|grant| format!("{} (start slot {})", grant.writer, grant.start))
                .collect();
            violations.push(format!(
                "disk {disk}: generation {generation} claimed by {} grants at once (both read the \
                 same header): {}",
                claimants.len(),
                who.join(", ")
            ));
        }
    }
    for grant in logged {
        let Some((records, owner_alive)) = grant.done else {
            continue; // the worker died holding: whatever it committed is checked by the chain
        };
        for seq in 0..records {
            let slot = grant.start + seq;
            let found = Record::decode(block(image, region_bytes, disk, 1 + slot));
            let intact = found.is_some_and(|record| {
                record.writer() == grant.writer
                    && record.generation == grant.generation
                    && record.seq == seq
                    && slot < header.next
            });
            if !intact {
                violations.push(format!(
                    "disk {disk}: {} (generation {}, owner {}) logged {records} records from slot {} \
                     as written under its lock, but slot {slot} holds {}",
                    grant.writer,
                    grant.generation,
                    if owner_alive { "alive" } else { "dead" },
                    grant.start,
                    found.map_or_else(|| "no record".to_owned(), |record| format!("[{}]", record.describe()))
                ));
                break;
            }
        }
    }
    for (generation, writer, slot) in runs {
        let logged_here = by_generation
            .get(&generation)
            .is_some_and(|claimants| claimants.iter().any(|grant| grant.writer == writer));
        if !logged_here {
            violations.push(format!(
                "disk {disk}: generation {generation} from slot {slot} was written by {writer}, \
                 which logged no such grant"
            ));
        }
    }
    last_written
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGION: u64 = 64 * BLOCK as u64;

    /// A simulated holder writing the way the worker does.
    struct Disk {
        image: Vec<u8>,
    }

    impl Disk {
        fn new(disks: u64) -> Disk {
            Disk {
                image: vec![0; usize::try_from(REGION * disks).unwrap()],
            }
        }
        fn write(&mut self, disk: u64, index: u64, bytes: &[u8; BLOCK]) {
            let at = usize::try_from(block_offset(REGION, disk, index)).unwrap();
            self.image[at..at + BLOCK].copy_from_slice(bytes);
        }
        fn header(&self, disk: u64) -> Header {
            Header::decode(block(&self.image, REGION, disk, 0)).unwrap()
        }
    }

    /// A holder in the middle of its grant.
    struct Holder {
        writer: Writer,
        disk: u64,
        generation: u64,
        start: u64,
        next: u64,
        last: u64,
    }

    impl Holder {
        fn claim(disk_image: &mut Disk, disk: u64, writer: Writer, log: &mut Vec<Event>) -> Holder {
            let mut header = disk_image.header(disk);
            header.generation += 1;
            disk_image.write(disk, 0, &header.encode());
            log.push(Event::Grant {
                t: 1,
                disk,
                grant: writer.grant,
                generation: header.generation,
                start: header.next,
            });
            Holder {
                writer,
                disk,
                generation: header.generation,
                start: header.next,
                next: header.next,
                last: header.last_hash,
            }
        }
        fn append(&mut self, disk_image: &mut Disk) {
            let record = Record {
                disk: self.disk,
                generation: self.generation,
                node: self.writer.node,
                owner: self.writer.owner,
                incarnation: self.writer.incarnation,
                grant: self.writer.grant,
                seq: self.next - self.start,
                slot: self.next,
                prev: self.last,
                time_ns: 5,
            };
            disk_image.write(self.disk, 1 + self.next, &record.encode());
            self.next += 1;
            self.last = record.hash();
            let header = Header {
                generation: self.generation,
                next: self.next,
                last_hash: self.last,
                node: self.writer.node,
                owner: self.writer.owner,
                hold_until_ns: 0,
            };
            disk_image.write(self.disk, 0, &header.encode());
        }
        fn done(&self, log: &mut Vec<Event>) {
            log.push(Event::Done {
                t: 2,
                disk: self.disk,
                grant: self.writer.grant,
                records: self.next - self.start,
                owner_alive: true,
            });
            log.push(Event::Release {
                t: 3,
                disk: self.disk,
                grant: self.writer.grant,
            });
        }
    }

    fn writer(node: u64, grant: u64) -> Writer {
        Writer {
            node,
            owner: 0,
            incarnation: 0,
            grant,
        }
    }

    fn logs(per_node: [Vec<Event>; 2]) -> Vec<WorkerLog> {
        per_node
            .into_iter()
            .enumerate()
            .map(|(index, events)| WorkerLog {
                node: index as u64 + 1,
                events,
                ..WorkerLog::default()
            })
            .collect()
    }

    #[test]
    fn blocks_round_trip_and_reject_corruption() {
        let header = Header {
            generation: 7,
            next: 3,
            last_hash: 99,
            node: 2,
            owner: 1,
            hold_until_ns: 5,
        };
        assert_eq!(Header::decode(&header.encode()), Some(header));
        assert_eq!(Header::decode(&[0; BLOCK]), Some(Header::default()));
        let record = Record {
            disk: 1,
            generation: 2,
            seq: 3,
            ..Record::default()
        };
        let mut bytes = record.encode();
        assert_eq!(Record::decode(&bytes), Some(record));
        bytes[20] ^= 1;
        assert_eq!(Record::decode(&bytes), None);
        assert_eq!(Record::decode(&[0; BLOCK]), None);
    }

    #[test]
    fn one_holder_at_a_time_is_clean() {
        let mut disk = Disk::new(2);
        let mut log = [Vec::new(), Vec::new()];
        for grant in 0..4 {
            let node = usize::try_from(grant % 2).unwrap();
            let mut holder =
                Holder::claim(&mut disk, 1, writer(node as u64 + 1, grant), &mut log[node]);
            for _ in 0..3 {
                holder.append(&mut disk);
            }
            holder.done(&mut log[node]);
        }
        // A holder killed after its claim, before any record: the next one claims the next
        // generation; no violation.
        let _dead = Holder::claim(&mut disk, 1, writer(1, 10), &mut log[0]);
        let mut next = Holder::claim(&mut disk, 1, writer(2, 11), &mut log[1]);
        next.append(&mut disk);
        next.done(&mut log[1]);
        let report = check(&disk.image, REGION, 2, &logs(log));
        assert!(report.violations.is_empty(), "{}", report.render());
        assert_eq!(report.grants, 6);
        assert_eq!(report.records, 13);
    }

    #[test]
    fn unavailability_runs_from_the_end_of_a_hold_to_the_next_grant() {
        const S: u64 = 1_000_000_000;
        let mut disk = Disk::new(1);
        let mut log = [Vec::new(), Vec::new()];
        // node1 holds 0-1 s; node2 is granted at 5 s (free 4 s) and dies holding, its last
        // record at 8 s; node1 is granted again at 18 s (free 10 s).
        let mut a = Holder::claim(&mut disk, 0, writer(1, 0), &mut log[0]);
        a.append(&mut disk);
        a.done(&mut log[0]);
        let mut b = Holder::claim(&mut disk, 0, writer(2, 0), &mut log[1]);
        b.append(&mut disk);
        let mut c = Holder::claim(&mut disk, 0, writer(1, 1), &mut log[0]);
        c.append(&mut disk);
        c.done(&mut log[0]);
        let retime = |event: &mut Event, at: u64| match event {
            Event::Grant { t, .. } | Event::Done { t, .. } | Event::Release { t, .. } => *t = at,
            _ => {}
        };
        for (event, at) in log[0].iter_mut().zip([0, S / 2, S, 18 * S, 19 * S, 19 * S]) {
            retime(event, at);
        }
        retime(&mut log[1][0], 5 * S);
        // node2's record says when it last wrote.
        let mut record = Record::decode(block(&disk.image, REGION, 0, 2)).unwrap();
        record.time_ns = 8 * S;
        record.prev = Record::decode(block(&disk.image, REGION, 0, 1))
            .unwrap()
            .hash();
        disk.write(0, 2, &record.encode());
        let mut next = Record::decode(block(&disk.image, REGION, 0, 3)).unwrap();
        next.prev = record.hash();
        disk.write(0, 3, &next.encode());
        let mut header = disk.header(0);
        header.last_hash = next.hash();
        disk.write(0, 0, &header.encode());
        let report = check(&disk.image, REGION, 1, &logs(log));
        assert!(report.violations.is_empty(), "{}", report.render());
        let (gap, from) = report.longest_unavailable[&0];
        assert!(
            (gap - 10.0).abs() < 1e-6 && (from - 8.0).abs() < 1e-6,
            "{gap} from {from}"
        );
    }

    #[test]
    fn two_holders_reading_the_same_header_are_caught() {
        let mut disk = Disk::new(1);
        let mut log = [Vec::new(), Vec::new()];
        let mut a = Holder::claim(&mut disk, 0, writer(1, 0), &mut log[0]);
        let mut b = Holder::claim(&mut disk, 0, writer(2, 0), &mut log[1]);
        // Both claimed generation 1? No: b read a's claim. Make them read the same header:
        b.generation = a.generation;
        a.append(&mut disk);
        b.append(&mut disk);
        a.append(&mut disk);
        a.done(&mut log[0]);
        b.done(&mut log[1]);
        let report = check(&disk.image, REGION, 1, &logs(log));
        assert!(!report.violations.is_empty(), "{}", report.render());
    }

    #[test]
    fn a_holder_writing_after_the_next_was_granted_is_caught() {
        let mut disk = Disk::new(1);
        let mut log = [Vec::new(), Vec::new()];
        let mut a = Holder::claim(&mut disk, 0, writer(1, 0), &mut log[0]);
        a.append(&mut disk);
        a.append(&mut disk);
        // b is granted while a still believes it holds the lock (a cut-off node, no fencing).
        let mut b = Holder::claim(&mut disk, 0, writer(2, 0), &mut log[1]);
        b.append(&mut disk);
        a.append(&mut disk); // overwrites b's first record
        b.append(&mut disk);
        b.done(&mut log[1]);
        a.done(&mut log[0]);
        let report = check(&disk.image, REGION, 1, &logs(log));
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.contains("chain broken") || v.contains("logged")),
            "{}",
            report.render()
        );
    }

    #[test]
    fn silently_lost_records_are_caught_even_with_an_intact_chain() {
        let mut disk = Disk::new(1);
        let mut log = [Vec::new(), Vec::new()];
        let mut a = Holder::claim(&mut disk, 0, writer(1, 0), &mut log[0]);
        a.append(&mut disk);
        a.done(&mut log[0]);
        // b overwrites from a's start as if a had never written (it read a stale header).
        let mut b = Holder::claim(&mut disk, 0, writer(2, 0), &mut log[1]);
        b.start = 0;
        b.next = 0;
        b.last = 0;
        b.append(&mut disk);
        b.done(&mut log[1]);
        let report = check(&disk.image, REGION, 1, &logs(log));
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.contains("as written under its lock")),
            "{}",
            report.render()
        );
    }
}
