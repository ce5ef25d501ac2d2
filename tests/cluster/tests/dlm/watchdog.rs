//! The failover checks with watchdog fencing: a partition, a frozen host, and the control run
//! whose lockmgrd was told to ignore the watchdog.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Check;
use crate::bed::{Bed, granted, lock_lost, refused_across_nodes, secs_between};
use crate::failover::{partition, retry_until_granted};
use crate::summary::Figure;

/// When `node`'s watchdog powered it off, per the cluster's watchdog log, in seconds after `since`.
pub(crate) fn watchdog_fired(bed: &Bed, node: usize, since: SystemTime) -> Option<f64> {
    let events = bed.cluster.watchdog_events().ok()?;
    events
        .iter()
        .filter(|event| event.node == node)
        .map(|event| UNIX_EPOCH + Duration::from_nanos(event.at_ns))
        .find(|at| *at >= since)
        .map(|at| secs_between(since, at))
}

/// The partition check with watchdog fencing: the cut-off node's lockmgrd loses quorum and
/// powers its domain off (or its watchdog powers the node off); node1, whose fence agent only
/// waits, must be granted strictly after that, counting the clock error against the grant.
pub(crate) fn partition_watchdog(bed: &Bed, victim: usize, tag: &str) -> Check {
    let seen = partition(bed, victim, tag)?;
    let reset = watchdog_fired(bed, victim, seen.cut);
    let gone = match (seen.owner_gone, reset) {
        (Some(owner), Some(node)) => Some(owner.min(node)),
        (owner, node) => owner.or(node),
    };
    bed.figures.borrow_mut().push(Figure {
        scenario: format!("partition: node{victim} cut off (watchdog fence)"),
        nodes: bed.cluster.node_count(),
        fencing: true,
        victim_dead: gone,
        granted: Some(seen.granted),
        note: format!(
            "±{:.2} s; owner gone at {}, node reset by its watchdog: {}",
            seen.clock_error,
            seen.owner_gone
                .map_or("never seen".into(), |g| format!("{g:.2} s")),
            reset.map_or("no".into(), |r| format!("at {r:.2} s"))
        ),
    });
    let Some(gone) = gone else {
        return Err(format!(
            "node1 was granted at {:.2} s and the owner on node{victim} was never seen gone: {}",
            seen.granted,
            seen.describe()
        ));
    };
    if seen.granted - seen.clock_error <= gone {
        return Err(format!(
            "node1 was granted at {:.2} s (±{:.2} s), not after node{victim}'s owner was gone at {gone:.2} s: {}",
            seen.granted,
            seen.clock_error,
            seen.describe()
        ));
    }
    let lost = lock_lost(bed, victim, &format!("{tag}-owner"));
    let stopped_by = match lost {
        _ if reset.is_some() => "its watchdog powered the node off".to_owned(),
        Some(detail) if detail.contains("lost quorum") && detail.contains("powered off") => {
            format!("its own lockmgrd: {detail}")
        }
        other => {
            return Err(format!(
                "node{victim}'s owner was gone, but neither a watchdog reset nor a lock lost to \
                 quorum loss in its lockmgrd's events ({other:?}):\n{}",
                bed.daemon_log(victim)
            ));
        }
    };
    Ok(format!(
        "{}; {stopped_by}; granted {:.2} s after the owner was gone",
        seen.describe(),
        seen.granted - gone
    ))
}

/// A frozen host for the watchdog fence: only `victim`'s vCPUs stop (its emulated watchdog runs
/// on); node1 retries an Acquire of the SAME disk from the freeze. The watchdog must power the
/// node off, and node1 be granted only after that.
pub(crate) fn frozen_watchdog(bed: &Bed, victim: usize, tag: &str) -> Check {
    let disk = format!("--disk /vm/{tag}.img");
    let owner = bed.register(victim, &format!("{tag}-owner"), &disk);
    let taker = bed.register(1, &format!("{tag}-taker"), &disk);
    granted(
        &bed.acquire(&owner, &disk),
        &format!("owner on node{victim}"),
    )?;
    refused_across_nodes(&bed.acquire(&taker, &disk), "node1 before the freeze")?;
    let clock = bed.clock(1)?;
    let frozen = SystemTime::now();
    bed.cluster
        .freeze_vcpus(victim)
        .map_err(|e| format!("freeze node{victim}'s vCPUs: {e}"))?;
    let grant = retry_until_granted(bed, &taker, &disk, clock, Duration::from_secs(120));
    let ran_after_grant = bed.cluster.node_running(victim);
    let thawed = bed.cluster.thaw_vcpus(victim);
    let (granted_at, attempts, _) = grant?;
    let granted = secs_between(frozen, granted_at);
    let reset = watchdog_fired(bed, victim, frozen);
    bed.figures.borrow_mut().push(Figure {
        scenario: format!("frozen host: node{victim}'s vCPUs stopped (watchdog fence)"),
        nodes: bed.cluster.node_count(),
        fencing: true,
        victim_dead: reset,
        granted: Some(granted),
        note: format!("±{} ms", clock.error.as_millis()),
    });
    let Some(reset) = reset else {
        return Err(format!(
            "node1 was granted at {granted:.2} s, and node{victim}'s watchdog never fired \
             (QEMU still running after the grant: {ran_after_grant}; thaw: {thawed:?})"
        ));
    };
    if ran_after_grant || granted - clock.error.as_secs_f64() <= reset {
        return Err(format!(
            "node1 was granted at {granted:.2} s (±{} ms), not after node{victim}'s watchdog \
             powered it off at {reset:.2} s (still running after the grant: {ran_after_grant})",
            clock.error.as_millis()
        ));
    }
    Ok(format!(
        "node{victim}'s vCPUs frozen at t=0; its watchdog powered it off at {reset:.2} s; node1 \
         granted at {granted:.2} s (±{} ms, {attempts} attempts)",
        clock.error.as_millis()
    ))
}

/// The control of the watchdog fence: node3's lockmgrd runs as if the operator had silenced its
/// refusal — told of a power-fencing dlm.conf, without `--watchdog`, with a long lock-failure
/// timeout — while the survivors still trust the watchdog agent. The partition check must then
/// see node1 granted while node3's domain still runs (so the check can fail).
pub(crate) fn partition_watchdog_control(bed: &Bed) -> Check {
    // A clean stop: no lock held, so the watchdog is disarmed and node3 is not reset.
    bed.sh(
        3,
        "kill -TERM $(cat /run/lockmgr/dlm.pid); for i in $(seq 50); do test -e /run/lockmgr/dlm.pid || break; sleep 0.1; done; \
         cat /run/lockmgr/lockmgrd.log.current >> /run/lockmgr/lockmgrd.log; \
         printf '%s\\n' 'enable_fencing=1' 'fence_all /usr/sbin/fence_testbed' > /run/lockmgr/dlm-power.conf",
    );
    bed.start_daemon_with(
        3,
        "--dlm-conf /run/lockmgr/dlm-power.conf --lock-failure-timeout 60",
    );
    let seen = partition(bed, 3, "wdctl3")?;
    let gone = seen.owner_gone.or(watchdog_fired(bed, 3, seen.cut));
    match gone {
        Some(gone) if seen.granted - seen.clock_error > gone => Err(format!(
            "the control saw no overlap: node1 granted at {:.2} s, after the owner was gone at {gone:.2} s: {}",
            seen.granted,
            seen.describe()
        )),
        _ => Ok(format!(
            "overlap seen, as it must be without the watchdog: {}",
            seen.describe()
        )),
    }
}
