//! Unit tests of the nemesis format and checker, with simulated holders writing the way the
//! worker does.

use super::checker::block;
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
