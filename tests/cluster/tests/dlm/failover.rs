//! The failover checks with power fencing or none: a node crash, a partition (fenced, and the
//! control run without fencing), and the restart of a node between checks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockmgr_testbed::{FenceEvent, FenceMode};

use crate::Check;
use crate::bed::{Bed, Clock, Dom, granted, lock_lost, refused_across_nodes, secs_between};
use crate::summary::Figure;

/// When node1 (or `taker`) learned it holds the disk: the node's clock when its Acquire returned,
/// converted to the host's.
pub(crate) fn granted_at(clock: Clock, node_end_ns: Option<i128>) -> Result<SystemTime, String> {
    let node_end = node_end_ns.ok_or("the node printed no time after its Acquire")?;
    let host = u64::try_from(node_end - clock.offset_ns).map_err(|e| e.to_string())?;
    Ok(UNIX_EPOCH + Duration::from_nanos(host))
}

/// Retries `taker`'s Acquire every 250 ms until granted; returns the host time the grant
/// returned, the attempt count and how long the granted attempt took inside the node.
pub(crate) fn retry_until_granted(
    bed: &Bed,
    taker: &Dom,
    disk: &str,
    clock: Clock,
    limit: Duration,
) -> Result<(SystemTime, usize, Duration), String> {
    let start = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (step, ended) = bed.acquire_timed(taker, disk);
        if step.ok() {
            let inside = Duration::from_micros(step.json["micros"].as_u64().unwrap_or(0));
            return Ok((granted_at(clock, ended)?, attempts, inside));
        }
        if start.elapsed() > limit {
            return Err(format!(
                "node{} not granted after {} attempts in {limit:?}: {}",
                taker.node,
                attempts,
                step.error()
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The fence requests that reached the host at or after `since` (the cluster's fence log also
/// holds those of earlier checks).
pub(crate) fn fence_events_since(bed: &Bed, since: SystemTime) -> Result<Vec<FenceEvent>, String> {
    Ok(bed
        .cluster
        .fence_events()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|event| event.received_at() >= since)
        .collect())
}

/// The first fence request about `victim` that the host answered "fenced".
pub(crate) fn fenced(events: &[FenceEvent], victim: usize) -> Option<&FenceEvent> {
    events
        .iter()
        .find(|event| event.victim == Some(victim) && event.outcome.fenced())
}

/// A node crash: `victim`'s QEMU is SIGKILLed while its owner holds EX on a disk; `taker` retries
/// an Acquire of that disk until granted. With fencing, the survivors' fence request about the
/// dead node is answered at once (already dead).
pub(crate) fn node_crash(bed: &Bed, victim: usize, taker: usize) -> Check {
    let nodes = bed.cluster.node_count();
    let disk = format!("--disk /vm/crash-{nodes}.img");
    let owner = bed.register(victim, &format!("crash{nodes}-owner"), &disk);
    let other = bed.register(taker, &format!("crash{nodes}-taker"), &disk);
    granted(
        &bed.acquire(&owner, &disk),
        &format!("owner on node{victim}"),
    )?;
    refused_across_nodes(
        &bed.acquire(&other, &disk),
        &format!("node{taker} before the crash"),
    )?;
    let clock = bed.clock(taker)?;
    let killed = SystemTime::now();
    bed.cluster.kill_node(victim).map_err(|e| e.to_string())?;
    let (granted_at, attempts, _) =
        retry_until_granted(bed, &other, &disk, clock, Duration::from_secs(90))?;
    let granted_after = secs_between(killed, granted_at);
    let events = fence_events_since(bed, killed)?;
    let fence = fenced(&events, victim);
    if bed.cluster.fence_mode() == FenceMode::Power && fence.is_none() {
        return Err(format!(
            "node{taker} was granted, but no fence request about node{victim} was answered: {events:?}"
        ));
    }
    let how = fence.map_or_else(String::new, |event| {
        format!(
            "; node{} asked to fence node{victim} {:.2} s after the kill, answered {} ({})",
            event.requester,
            secs_between(killed, event.received_at()),
            if event.outcome == lockmgr_testbed::FenceOutcome::AlreadyDead {
                "at once: already dead"
            } else {
                "after a power-off"
            },
            event.detail
        )
    });
    bed.figures.borrow_mut().push(Figure {
        scenario: format!("node crash: node{victim}'s QEMU SIGKILLed"),
        nodes,
        fencing: bed.cluster.fencing(),
        victim_dead: Some(0.0),
        granted: Some(granted_after),
        note: format!("±{} ms", clock.error.as_millis()),
    });
    Ok(format!(
        "node{victim} killed hard (QEMU SIGKILL); node{taker} granted the disk {granted_after:.2} s later \
         (±{} ms, {attempts} attempts){how}",
        clock.error.as_millis()
    ))
}

/// What was seen after node `victim` was cut off, in seconds from the cut (host clock).
#[derive(Debug)]
pub(crate) struct Partition {
    pub(crate) victim: usize,
    /// t = 0.
    pub(crate) cut: SystemTime,
    /// When node1's Acquire of the disk returned success.
    pub(crate) granted: f64,
    /// ± of the conversion of node1's clock.
    pub(crate) clock_error: f64,
    pub(crate) attempts: usize,
    /// How long the granted attempt took inside node1 (a request caught by the DLM's recovery
    /// waits in it).
    pub(crate) attempt: f64,
    /// When the host saw the victim's QEMU gone, per the fence log.
    pub(crate) victim_dead: Option<f64>,
    /// Whether the victim's QEMU still ran once node1's grant was back on the host.
    pub(crate) victim_ran_after_grant: bool,
    /// The owner's process in the cut-off node: last seen alive, first seen gone.
    pub(crate) owner_last_alive: Option<f64>,
    pub(crate) owner_gone: Option<f64>,
    pub(crate) fence: Vec<FenceEvent>,
}

impl Partition {
    pub(crate) fn describe(&self) -> String {
        let dead = self
            .victim_dead
            .map_or("never (still running)".to_owned(), |dead| {
                format!("{dead:.2} s")
            });
        let owner = match (self.owner_last_alive, self.owner_gone) {
            (_, Some(gone)) => format!("owner seen gone at {gone:.2} s"),
            (Some(alive), None) => format!("owner last seen alive at {alive:.2} s"),
            (None, None) => "owner never polled".to_owned(),
        };
        format!(
            "node{} cut off at t=0; its QEMU gone: {dead}; node1 granted at {:.2} s (±{:.2} s, attempt {} of {}, \
             {:.2} s inside node1); {owner}",
            self.victim, self.granted, self.clock_error, self.attempts, self.attempts, self.attempt
        )
    }

    /// With fencing: granted strictly after the victim's QEMU was gone (counting the clock error
    /// against the grant). Without: a grant while the victim still ran is a violation.
    pub(crate) fn violation(&self) -> Option<String> {
        match self.victim_dead {
            _ if self.victim_ran_after_grant => Some(format!(
                "node1 was granted at {:.2} s while node{}'s QEMU still ran",
                self.granted, self.victim
            )),
            None => Some(format!(
                "node1 was granted at {:.2} s and node{}'s QEMU was never seen gone",
                self.granted, self.victim
            )),
            Some(dead) if self.granted - self.clock_error <= dead => Some(format!(
                "node1 was granted at {:.2} s (±{:.2} s), not after node{}'s QEMU was gone at {dead:.2} s",
                self.granted, self.clock_error, self.victim
            )),
            Some(_) => None,
        }
    }
}

/// The partition check: an owner on `victim` holds EX on a disk; `victim` is cut off from the
/// host side (its tap goes down: the node cannot undo it, and its agent still answers over
/// virtio-serial); from the cut, node1 retries an Acquire of the SAME disk every 250 ms, while the
/// owner's existence in the victim and the victim's QEMU are polled.
pub(crate) fn partition(bed: &Bed, victim: usize, tag: &str) -> Result<Partition, String> {
    let disk = format!("--disk /vm/{tag}.img");
    let owner = bed.register(victim, &format!("{tag}-owner"), &disk);
    let taker = bed.register(1, &format!("{tag}-taker"), &disk);
    granted(
        &bed.acquire(&owner, &disk),
        &format!("owner on node{victim} before the cut"),
    )?;
    refused_across_nodes(&bed.acquire(&taker, &disk), "node1 before the cut")?;
    let clock = bed.clock(1)?;
    let cut = SystemTime::now();
    bed.cluster.cut_node(victim).map_err(|e| e.to_string())?;
    let since_cut = |time: SystemTime| secs_between(cut, time);
    let stop = AtomicBool::new(false);
    let (grant, owner_seen) = std::thread::scope(|scope| {
        // The owner's existence, through the victim's guest agent, until it is gone, the node is
        // powered off, or 60 s.
        let watcher = scope.spawn(|| {
            let (mut last_alive, mut gone) = (None, None);
            let probe = format!(
                "kill -0 {} 2>/dev/null && echo alive || echo gone",
                owner.pid
            );
            while !stop.load(Ordering::SeqCst) && since_cut(SystemTime::now()) < 60.0 {
                let asked = SystemTime::now();
                match bed
                    .cluster
                    .exec_timeout(victim, &probe, Duration::from_secs(15))
                {
                    Ok(out) if out.stdout_text().contains("alive") => {
                        last_alive = Some(since_cut(asked));
                    }
                    Ok(_) => {
                        gone = Some(since_cut(SystemTime::now()));
                        break;
                    }
                    Err(_) => break, // powered off: gone with its node
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (last_alive, gone)
        });
        let grant = retry_until_granted(bed, &taker, &disk, clock, Duration::from_secs(90))
            .map(|(at, attempts, inside)| (at, attempts, inside, bed.cluster.node_running(victim)));
        if grant.is_err() {
            stop.store(true, Ordering::SeqCst);
        }
        let owner_seen = watcher.join().unwrap_or((None, None));
        (grant, owner_seen)
    });
    let (granted_at, attempts, inside, victim_ran_after_grant) = grant?;
    let fence = fence_events_since(bed, cut)?;
    let victim_dead = fenced(&fence, victim)
        .and_then(FenceEvent::victim_dead_at)
        .map(since_cut);
    Ok(Partition {
        victim,
        cut,
        granted: since_cut(granted_at),
        clock_error: clock.error.as_secs_f64(),
        attempts,
        attempt: inside.as_secs_f64(),
        victim_dead,
        victim_ran_after_grant,
        owner_last_alive: owner_seen.0,
        owner_gone: owner_seen.1,
        fence,
    })
}

/// The partition check with fencing on: node1 is granted only after the victim was powered off.
pub(crate) fn partition_fenced(bed: &Bed, victim: usize, tag: &str) -> Check {
    let nodes = bed.cluster.node_count();
    let seen = partition(bed, victim, tag)?;
    bed.figures.borrow_mut().push(Figure {
        scenario: format!("partition: node{victim} cut off"),
        nodes,
        fencing: true,
        victim_dead: seen.victim_dead,
        granted: Some(seen.granted),
        note: format!("±{:.2} s", seen.clock_error),
    });
    if let Some(violation) = seen.violation() {
        return Err(format!("{violation}; {}", seen.describe()));
    }
    let fencer = fenced(&seen.fence, victim).map_or(0, |event| event.requester);
    let mut detail = format!(
        "{}; node{fencer} fenced node{victim}; granted {:.2} s after the power-off",
        seen.describe(),
        seen.granted - seen.victim_dead.unwrap_or_default()
    );
    if nodes == 2 {
        // Both halves stay quorate and ask to fence each other: exactly one may survive.
        let survivors: Vec<usize> = (1..=2)
            .filter(|node| bed.cluster.node_running(*node))
            .collect();
        if survivors != [1] {
            return Err(format!(
                "after the split, running nodes are {survivors:?}, expected node1 alone; fence log: {:?}",
                seen.fence
            ));
        }
        // The loser's own request may still be held back by the tie-break (5 s): wait for its
        // outcome in the log.
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut log = seen.fence.clone();
        while !log.iter().any(|event| event.requester == victim) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            log = fence_events_since(bed, seen.cut)?;
        }
        let losers: Vec<String> = log
            .iter()
            .filter(|event| event.requester == victim)
            .map(|event| format!("{:?}, {}", event.outcome, event.detail))
            .collect();
        detail.push_str(&format!(
            "; node1 alone survives; node{victim}'s own request: {}",
            if losers.is_empty() {
                "none reached the host".to_owned()
            } else {
                losers.join(", ")
            }
        ));
    }
    Ok(detail)
}

/// Sets up lockmgrd on the restarted `node`, then waits out dlm_controld's post_join_delay (5 s
/// after the node joined), which would otherwise hold back the next fencing and skew its figure.
pub(crate) fn restart(bed: &Bed, node: usize) -> Result<Duration, String> {
    let took = bed.cluster.restart_node(node).map_err(|e| e.to_string())?;
    let ready = Instant::now();
    bed.setup(node);
    std::thread::sleep(Duration::from_secs(6).saturating_sub(ready.elapsed()));
    Ok(took)
}

/// The control run: the same partition check on 3 nodes booted WITHOUT fencing must observe the
/// violation (so the checker is shown able to fail). The cut-off node, without quorum, must still
/// refuse new locks, and its own lockmgrd must declare LOCK FAILURE and power its domain off.
pub(crate) fn control_without_fencing(bed: &Bed) -> Check {
    let refuser = bed.register(3, "ctl-late", "--disk /vm/ctl-late.img");
    let seen = partition(bed, 3, "ctl3")?;
    bed.figures.borrow_mut().push(Figure {
        scenario: "partition: node3 cut off (CONTROL)".to_owned(),
        nodes: 3,
        fencing: false,
        victim_dead: seen.victim_dead,
        granted: Some(seen.granted),
        note: match seen.owner_gone {
            Some(gone) => format!(
                "two live holders for {:.2} s: node3's domain ran until {gone:.2} s (its lockmgrd's lock-failure timeout)",
                gone - seen.granted
            ),
            None => "node3's domain never seen gone".to_owned(),
        },
    });
    let Some(violation) = seen.violation() else {
        return Err(format!(
            "without fencing the checker saw no violation, so it cannot tell: {}",
            seen.describe()
        ));
    };
    if !seen.fence.is_empty() {
        return Err(format!(
            "a cluster without fencing logged fence requests: {:?}",
            seen.fence
        ));
    }
    // What the cut-off node itself does, without quorum: its daemon declares a lock failure and
    // powers its domain off (--lock-failure-timeout 8), and refuses new locks.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lock_lost(bed, 3, "ctl3-owner").is_some_and(|detail| detail.contains("powered off")) {
        if Instant::now() > deadline {
            return Err(format!(
                "node3's daemon never declared a lock failure:\n{}",
                bed.daemon_log(3)
            ));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let refused = bed.acquire(&refuser, "--disk /vm/ctl-late.img");
    if refused.ok() {
        return Err("the cut-off node granted a new lock".into());
    }
    if !bed.cluster.node_running(3) {
        return Err("node3's QEMU is gone, but nothing should have powered it off".into());
    }
    Ok(format!(
        "VIOLATION OBSERVED, as it must be without fencing: {violation}; {}; node3's lockmgrd declared LOCK \
         FAILURE and powered its domain off; node3 refuses new locks ({})",
        seen.describe(),
        refused.error()
    ))
}
