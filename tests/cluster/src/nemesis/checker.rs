//! The checker: proves from the disk image and the workers' logs that no two holders of a disk
//! overlapped, and reports what it found.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use super::{BLOCK, Event, Header, Record, WorkerLog, Writer, block_offset, region_capacity};

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

pub(super) fn block(image: &[u8], region_bytes: u64, disk: u64, index: u64) -> &[u8] {
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
