//! Live migration through libvirt (`virsh migrate --live --p2p` over qemu+tcp between the nodes)
//! with dlm.so handing the lock over, a migration that fails, and a node crash.

use std::time::{Duration, Instant, SystemTime};

use crate::bed::{Bed, Disk, Domain};
use crate::scenarios::refused_naming;
use crate::{Check, Figures};

/// `virsh migrate --live --p2p` of `name` from node `from` to node `to`, with `extra` flags.
fn migrate(bed: &Bed, from: usize, to: usize, name: &str, extra: &str) -> crate::bed::Virsh {
    bed.virsh(
        from,
        &format!("migrate --live --p2p {extra} {name} qemu+tcp://node{to}/system"),
    )
}

/// Starts `probe` on `node`, which must be refused because `holder` on `holder_node` holds the
/// LUN (the refusal names them); a start that succeeds is destroyed again.
fn refused_for(
    bed: &Bed,
    node: usize,
    probe: &Domain<'_>,
    holder: &str,
    holder_node: usize,
) -> Result<(), String> {
    let attempt = bed.start(node, probe);
    if attempt.ok {
        bed.destroy(node, probe.name);
    }
    refused_naming(node, probe, &attempt, holder, holder_node).map(|_| ())
}

/// mig1 (on the LUN) migrates node1 → node2 and back. After each hop: it runs on the
/// destination only; a third domain on either node is refused, naming mig1 on the destination;
/// the source, where mig1 stays defined, cannot start it again.
pub(crate) fn live_migration_round_trip(bed: &Bed, figures: &mut Figures) -> Check {
    let mig = Domain::new("mig1", &[Disk::Lun]);
    let third = Domain::new("third", &[Disk::Lun]);
    let result = (|| {
        let first = bed.start(1, &mig);
        if !first.ok {
            return Err(format!("start mig1 on node1: {}", first.text));
        }
        let mut lines = Vec::new();
        for (from, to) in [(1, 2), (2, 1)] {
            let hop = migrate(bed, from, to, mig.name, "");
            if !hop.ok {
                return Err(format!("migrate node{from} → node{to}: {}", hop.text));
            }
            figures.push((
                if from == 1 {
                    "virsh migrate --live node1 → node2"
                } else {
                    "virsh migrate --live node2 → node1"
                },
                hop.took,
            ));
            // The guest's pause on the way: from the source's pause (where dlm.so releases the
            // lock) to the destination's resume (where it acquires it), as QEMU counted it.
            let downtime = bed.virsh(to, &format!("domjobinfo {} --completed", mig.name));
            let downtime_ms = downtime
                .text
                .lines()
                .find_map(|line| line.strip_prefix("Total downtime:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok());
            if let Some(ms) = downtime_ms {
                figures.push((
                    if from == 1 {
                        "  its downtime (lock handover inside)"
                    } else {
                        "  its downtime (lock handover inside) "
                    },
                    Duration::from_millis(ms),
                ));
            }
            let on_destination = bed.state(to, mig.name);
            if on_destination != "running" {
                return Err(format!(
                    "after node{from} → node{to}, mig1 is '{on_destination}' on node{to}"
                ));
            }
            let on_source = bed.state(from, mig.name);
            if on_source == "running" {
                return Err(format!(
                    "after node{from} → node{to}, mig1 still runs on node{from}"
                ));
            }
            for node in [1, 2] {
                refused_for(bed, node, &third, mig.name, to)
                    .map_err(|e| format!("after node{from} → node{to}: {e}"))?;
            }
            // The source still has mig1 defined (no --undefinesource) when it came from node1.
            if from == 1 {
                let again = bed.virsh(from, &format!("start {}", mig.name));
                if again.ok {
                    return Err(format!(
                        "node{from} started mig1 again while it runs on node{to}"
                    ));
                }
            }
            lines.push(format!(
                "node{from} → node{to} in {:.1} s (downtime {}): runs on node{to} only, 'third' refused on both nodes",
                hop.took.as_secs_f64(),
                downtime_ms.map_or_else(|| "not reported".to_owned(), |ms| format!("{ms} ms"))
            ));
        }
        Ok(lines.join("\n"))
    })();
    bed.destroy(1, mig.name);
    bed.destroy(2, mig.name);
    bed.destroy(1, third.name);
    bed.destroy(2, third.name);
    result
}

/// A migration that fails at the destination (mig2's second disk exists on node1 only) leaves
/// mig2 running on node1 with its lock: node2 is still refused, naming mig2 on node1.
pub(crate) fn failed_migration_keeps_lock(bed: &Bed, _: &mut Figures) -> Check {
    let mig = Domain::new("mig2", &[Disk::Lun, Disk::File("mig2-node1-only.img")]);
    let probe = Domain::new("probe2", &[Disk::Lun]);
    let result = (|| {
        let first = bed.start(1, &mig);
        if !first.ok {
            return Err(format!("start mig2 on node1: {}", first.text));
        }
        bed.must(2, "rm -f /var/lib/libvirt/images/mig2-node1-only.img");
        // --unsafe: past libvirt's own refusal of a cached disk on unshared storage, so that the
        // migration really starts and fails at the destination
        let hop = migrate(bed, 1, 2, mig.name, "--unsafe");
        if hop.ok {
            return Err(
                "the migration to node2 succeeded although a disk is missing there".to_owned(),
            );
        }
        let state = bed.state(1, mig.name);
        if state != "running" {
            return Err(format!(
                "after the failed migration mig2 is '{state}' on node1"
            ));
        }
        refused_for(bed, 2, &probe, mig.name, 1)?;
        Ok(format!(
            "migration failed ({}); mig2 still runs on node1 and holds the LUN",
            hop.text.lines().last().unwrap_or_default()
        ))
    })();
    bed.destroy(1, mig.name);
    bed.destroy(2, mig.name);
    bed.destroy(2, probe.name);
    result
}

/// node1 dies (QEMU SIGKILL) while crash1 holds the LUN: node2 may start a domain on it only
/// after dlm_controld fenced node1 (the fence log's success for node1 comes first). The last
/// scenario: node1 stays down.
pub(crate) fn node_crash_then_fenced_start(bed: &Bed, figures: &mut Figures) -> Check {
    let vm1 = Domain::new("crash1", &[Disk::Lun]);
    let vm2 = Domain::new("crash2", &[Disk::Lun]);
    let first = bed.start(1, &vm1);
    if !first.ok {
        return Err(format!("start crash1 on node1: {}", first.text));
    }
    let killed = Instant::now();
    bed.cluster
        .kill_node(1)
        .map_err(|e| format!("kill node1: {e}"))?;
    let deadline = killed + Duration::from_secs(150);
    let mut attempts = 0;
    let granted = loop {
        attempts += 1;
        let attempt = bed.start(2, &vm2);
        if attempt.ok {
            // the grant came before the start returned
            break (Instant::now(), SystemTime::now());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "node2 could not start crash2 within 150 s of node1's death: {}",
                attempt.text
            ));
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let (granted, returned) = granted;
    figures.push(("node1 killed → crash2 running on node2", granted - killed));
    bed.destroy(2, vm2.name);
    let events = bed
        .cluster
        .fence_events()
        .map_err(|e| format!("fence log: {e}"))?;
    // The DLM may grant node1's lock only once dlm_controld heard "fenced": a grant (the start
    // returning) before the host answered the fence request is the broken promise.
    let Some(fence) = events
        .iter()
        .find(|event| event.victim == Some(1) && event.outcome.fenced())
    else {
        return Err(format!(
            "node2 started crash2, but the fence log has no successful fence of node1: {events:?}"
        ));
    };
    let answered = SystemTime::UNIX_EPOCH + Duration::from_nanos(fence.answered_ns);
    if answered > returned {
        return Err(format!(
            "crash2 started on node2 before the fence of node1 was answered: {fence:?}"
        ));
    }
    Ok(format!(
        "node1 fenced; crash2 started on node2 {:.1} s after node1's death ({attempts} attempt(s))",
        (granted - killed).as_secs_f64()
    ))
}

/// A migration cancelled while it runs leaves the lock with the source. mig3 also has a 32 MiB
/// disk of random bytes on node1 only, copied to node2 by the migration (`--copy-storage-all`) at
/// 1 MiB/s: the migration runs for half a minute, long enough to probe and cancel it. While it
/// runs, a third domain on node2 is refused, naming mig3 on node1; after `virsh domjobabort`,
/// mig3 runs on node1 only and node2 is still refused.
pub(crate) fn cancelled_migration_keeps_lock(bed: &Bed, _: &mut Figures) -> Check {
    let mig = Domain::new("mig3", &[Disk::Lun, Disk::File("mig3-copied.img")]);
    let third = Domain::new("third3", &[Disk::Lun]);
    let images = crate::bed::IMAGES;
    let result = (|| {
        bed.must(
            1,
            &format!("head -c 32M /dev/urandom > {images}/mig3-copied.img"),
        );
        bed.must(2, &format!("truncate -s 32M {images}/mig3-copied.img"));
        let first = bed.start(1, &mig);
        if !first.ok {
            return Err(format!("start mig3 on node1: {}", first.text));
        }
        bed.must(
            1,
            "(virsh -c qemu:///system migrate --live --p2p --copy-storage-all --migrate-disks vdb \
             --bandwidth 1 mig3 qemu+tcp://node2/system >/tmp/mig3.out 2>&1; echo \"rc=$?\" >>/tmp/mig3.out) \
             >/dev/null 2>&1 </dev/null &",
        );
        let migrating = || {
            bed.virsh(1, "domjobinfo mig3")
                .text
                .contains("Outgoing migration")
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !migrating() {
            if Instant::now() > deadline {
                return Err(format!(
                    "no outgoing migration of mig3 within 30 s: {}",
                    bed.sh(1, "cat /tmp/mig3.out").1
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        refused_for(bed, 2, &third, mig.name, 1)
            .map_err(|e| format!("during the migration: {e}"))?;
        if !migrating() {
            return Err(
                "the migration ended before the probe on node2 did: the probe proves nothing"
                    .to_owned(),
            );
        }
        let aborted = bed.virsh(1, "domjobabort mig3");
        if !aborted.ok {
            return Err(format!("domjobabort: {}", aborted.text));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let outcome = loop {
            let out = bed.sh(1, "cat /tmp/mig3.out").1;
            if out.contains("rc=") || Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(Duration::from_millis(300));
        };
        if !outcome.contains("rc=1") {
            return Err(format!("the cancelled migration did not fail: {outcome}"));
        }
        let state = bed.state(1, mig.name);
        if state != "running" {
            return Err(format!("after the cancel mig3 is '{state}' on node1"));
        }
        if bed.state(2, mig.name) == "running" {
            return Err("after the cancel mig3 runs on node2".to_owned());
        }
        refused_for(bed, 2, &third, mig.name, 1).map_err(|e| format!("after the cancel: {e}"))?;
        Ok(format!(
            "refused on node2 during the migration; cancelled ({}); mig3 runs on node1 and holds the LUN",
            outcome
                .lines()
                .find(|l| l.starts_with("error:"))
                .unwrap_or("rc=1")
        ))
    })();
    bed.destroy(1, mig.name);
    bed.destroy(2, mig.name);
    bed.destroy(2, third.name);
    result
}
