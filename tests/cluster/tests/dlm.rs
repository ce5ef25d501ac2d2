//! dlm.so and `lockmgrd --backend dlm` on real DLM clusters (QEMU nodes, corosync,
//! dlm_controld, power fencing through the test bed's host): libvirt's calls replayed with owners
//! on different nodes, the daemon's crash and orphan adoption, a race test with a ledger, and node
//! failures on 2 and 3 nodes:
//!
//! - **partition**: an owner on the node that gets cut off holds EX on a disk; from the cut (t = 0)
//!   node1 retries an Acquire of the SAME disk every 250 ms. With fencing, node1 must be granted
//!   only after the host powered the cut-off node off (fence log), on 2 and 3 nodes;
//! - **control**: the same check on a 3-node cluster booted without fencing must observe the
//!   violation (node1 granted while the cut-off node still runs), so the checker can fail;
//! - **node crash**: a node's QEMU SIGKILLed; the survivor's grant time;
//! - **watchdog fencing** (3 nodes, no host fence: lockmgrd `--watchdog`, survivors run
//!   `fence_lockmgr_watchdog`): a cut-off node's own lockmgrd stops its domain on quorum loss and
//!   node1 is granted only after that domain is gone; a node whose vCPUs freeze is powered off by
//!   its watchdog before node1 is granted; a crashed node's disk is granted after the wait.
//!
//! Failover times are printed in a table, never asserted; the ordering is.
//!
//! Needs root, /dev/net/tun, QEMU and a few minutes: run by `tests/cluster/run-dlm.sh`.
//!
//! This file holds the cluster plans and the test; `dlm/bed.rs` the helpers, `dlm/functional.rs`
//! the functional checks, `dlm/failover.rs` and `dlm/watchdog.rs` the failover checks,
//! `dlm/doctor.rs` the doctor check, `dlm/summary.rs` what the run prints.

#[path = "dlm/bed.rs"]
mod bed;
mod common;
#[path = "dlm/doctor.rs"]
mod doctor;
#[path = "dlm/failover.rs"]
mod failover;
#[path = "dlm/functional.rs"]
mod functional;
#[path = "dlm/summary.rs"]
mod summary;
#[path = "dlm/watchdog.rs"]
mod watchdog;

use std::path::Path;
use std::time::Instant;

use lockmgr_testbed::{Cluster, ClusterSpec, FenceMode, NodeImage};

use bed::Bed;
use doctor::doctor_says;
use failover::{control_without_fencing, node_crash, partition_fenced, restart};
use functional::{
    daemon_crash_and_adoption, exclusive_across_nodes, owner_kill_frees, race, shared_across_nodes,
};
use summary::{Figure, print_fence_log, print_figures, print_table, report};
use watchdog::{frozen_watchdog, partition_watchdog, partition_watchdog_control};

use lockmgr_testbed::SHARE_MOUNT as SHARE;
use lockmgr_testbed::owners::{BUSY, DLM_CONFIG as CONFIG};
type Check = Result<String, String>;

fn boot(share: &Path, scratch: &Path, nodes: usize, fencing: FenceMode) -> Cluster {
    let image = NodeImage::ensure().expect("node image");
    let spec = ClusterSpec::with_nodes(nodes)
        .share(share)
        .scratch(scratch)
        .fence_mode(fencing);
    let cluster = Cluster::start(&image, &spec)
        .unwrap_or_else(|e| panic!("start a {nodes}-node cluster: {e}"));
    println!(
        "{nodes}-node cluster (fencing: {fencing}) ready in {:.1} s",
        cluster.boot_time().as_secs_f64()
    );
    cluster
}

/// A named check to run on a cluster.
type Named<'s> = (&'static str, Box<dyn FnOnce(&Bed) -> Check + 's>);

/// Boots a cluster, sets lockmgrd up on every node, runs `checks` in order, and stops it.
fn run_cluster(
    share: &Path,
    scratch: &Path,
    nodes: usize,
    fencing: FenceMode,
    checks: Vec<Named<'_>>,
    figures: &mut Vec<Figure>,
) -> Vec<(&'static str, Check)> {
    let cluster = boot(share, scratch, nodes, fencing);
    let bed = Bed::new(&cluster);
    for node in 1..=nodes {
        bed.setup(node);
    }
    let mut results = Vec::new();
    run_checks(&bed, checks, &mut results);
    finish(&cluster, &bed, &results, figures);
    cluster.stop().expect("stop the cluster");
    results
}

fn run_checks(bed: &Bed, checks: Vec<Named<'_>>, results: &mut Vec<(&'static str, Check)>) {
    for (name, check) in checks {
        let started = Instant::now();
        let result = check(bed);
        report(name, started, &result);
        results.push((name, result));
    }
}

/// After a cluster's checks: its fence log, every running node's lockmgrd log when a check
/// failed, and its figures for the summary.
fn finish(cluster: &Cluster, bed: &Bed, results: &[(&str, Check)], figures: &mut Vec<Figure>) {
    print_fence_log(cluster);
    if results.iter().any(|(_, r)| r.is_err()) {
        for node in (1..=cluster.node_count()).filter(|node| cluster.node_running(*node)) {
            println!("--- lockmgrd log, node{node} ---\n{}", bed.daemon_log(node));
        }
    }
    figures.extend(bed.figures.take());
}

/// 2 nodes, fencing on: the checks only a cluster has (the holder named across nodes and never
/// a stale name, shared holders unnamed, the daemon's owner-death figure, orphans and adoption,
/// the race), a node crash, then (node1 restarted) a split where node1 must win. The scenarios of
/// tests/scenarios (read-only, lease, pause/resume, hotplug, …) run with dlm's owners on both
/// nodes in the cluster matrix (dlm_matrix.rs), and through real libvirt in virsh.rs.
fn two_node_checks(scratch: &Path) -> Vec<Named<'_>> {
    let race_seconds = 20;
    vec![
        (
            "exclusive vs exclusive across nodes",
            Box::new(exclusive_across_nodes),
        ),
        (
            "shared + shared across nodes, exclusive refused",
            Box::new(shared_across_nodes),
        ),
        ("owner SIGKILL frees the lock", Box::new(owner_kill_frees)),
        (
            "lockmgrd crash: orphans protect, restart adopts",
            Box::new(daemon_crash_and_adoption),
        ),
        (
            "race: no two exclusive holders overlap",
            Box::new(move |bed| race(bed, scratch, race_seconds)),
        ),
        (
            "2 nodes: node1 crashes → node2 gets the disk",
            Box::new(|bed| node_crash(bed, 1, 2)),
        ),
        (
            "2 nodes: split → node1 granted after node2 off",
            Box::new(|bed| {
                let took = restart(bed, 1)?;
                println!("  (node1 restarted in {:.1} s)", took.as_secs_f64());
                partition_fenced(bed, 2, "split2")
            }),
        ),
    ]
}

/// 3 nodes, fencing on: a partition (node3 cut off), then (node3 restarted) a node crash.
fn three_node_checks(_scratch: &Path) -> Vec<Named<'_>> {
    vec![
        (
            "lockmgr doctor on a healthy node",
            Box::new(|bed| {
                doctor_says(
                    bed,
                    1,
                    true,
                    &[
                        "✓ corosync",
                        "quorate (3 of 3 votes",
                        "✓ fencing",
                        "fence_testbed",
                        "✓ lockmgrd",
                    ],
                )
            }),
        ),
        (
            "3 nodes: node3 cut off → granted after it is off",
            Box::new(|bed| partition_fenced(bed, 3, "part3")),
        ),
        (
            "3 nodes: node2 crashes → node1 gets the disk",
            Box::new(|bed| {
                let took = restart(bed, 3)?;
                println!("  (node3 restarted in {:.1} s)", took.as_secs_f64());
                node_crash(bed, 2, 1)
            }),
        ),
    ]
}

/// 3 nodes fenced by their watchdogs: a partition (node3 cut off, its lockmgrd stops its
/// domain), a frozen host (node2's vCPUs; its watchdog powers it off), and a node crash.
fn watchdog_checks(_scratch: &Path) -> Vec<Named<'_>> {
    vec![
        (
            "watchdog, 3 nodes: node3 cut off → granted after its domain is gone",
            Box::new(|bed| partition_watchdog(bed, 3, "wdpart3")),
        ),
        (
            "lockmgr doctor on the cut-off node (no quorum)",
            Box::new(|bed| {
                doctor_says(
                    bed,
                    3,
                    false,
                    &[
                        "✗ corosync",
                        "NOT quorate (1 of 3 votes",
                        "✓ self-fencing",
                        "✓ watchdog",
                    ],
                )
            }),
        ),
        (
            "watchdog, 3 nodes: node2 frozen → granted after its watchdog fired",
            Box::new(|bed| {
                // node3 stays up cut off (its domain gone, its watchdog petted): power it
                // off and boot it again.
                bed.cluster.kill_node(3).map_err(|e| e.to_string())?;
                let took = restart(bed, 3)?;
                println!("  (node3 restarted in {:.1} s)", took.as_secs_f64());
                frozen_watchdog(bed, 2, "wdfreeze2")
            }),
        ),
        (
            "watchdog, 3 nodes: node3 crashes → node1 gets the disk",
            Box::new(|bed| {
                let took = restart(bed, 2)?;
                println!("  (node2 restarted in {:.1} s)", took.as_secs_f64());
                node_crash(bed, 3, 1)
            }),
        ),
        (
            "control, watchdog agent but node3 without --watchdog: the checker sees the overlap",
            Box::new(|bed| {
                let took = restart(bed, 3)?;
                println!("  (node3 restarted in {:.1} s)", took.as_secs_f64());
                partition_watchdog_control(bed)
            }),
        ),
    ]
}

/// 3 nodes WITHOUT fencing: what lockmgr doctor says, and the control of the partition check.
fn control_checks(_scratch: &Path) -> Vec<Named<'_>> {
    vec![
        (
            "lockmgr doctor on a node without fencing",
            Box::new(|bed| {
                doctor_says(
                    bed,
                    1,
                    false,
                    &["✗ fencing", "enable_fencing=0", "✓ corosync"],
                )
            }),
        ),
        (
            "control, no fencing: the checker sees the overlap",
            Box::new(control_without_fencing),
        ),
    ]
}

#[test]
#[ignore = "boots DLM clusters in QEMU VMs; run by tests/cluster/run-dlm.sh"]
fn dlm_plugin_on_a_real_cluster() {
    let share = common::build_node_binaries();
    let scratch = common::scratch_dir("lockmgr-scratch-");
    let mut figures = Vec::new();
    type Checks = fn(&Path) -> Vec<Named<'_>>;
    let runs: [(&str, usize, FenceMode, Checks); 4] = [
        ("two", 2, FenceMode::Power, two_node_checks),
        ("three", 3, FenceMode::Power, three_node_checks),
        ("watchdog", 3, FenceMode::Watchdog, watchdog_checks),
        ("control", 3, FenceMode::Off, control_checks),
    ];
    // DLM_CLUSTERS=word,word boots only those clusters (by hand); the suite boots them all.
    let only = std::env::var("DLM_CLUSTERS").ok();
    let mut results = Vec::new();
    for (name, nodes, fencing, checks) in runs {
        if only
            .as_deref()
            .is_none_or(|words| words.split(',').any(|w| w == name))
        {
            let checks = checks(scratch.path());
            results.extend(run_cluster(
                &share,
                scratch.path(),
                nodes,
                fencing,
                checks,
                &mut figures,
            ));
        }
    }
    assert!(
        !results.is_empty(),
        "DLM_CLUSTERS={only:?} names no cluster (two, three, watchdog, control)"
    );
    print_table("dlm.so on a real DLM cluster", &results);
    print_figures(&figures);
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    println!("dlm: {} passed, {failed} failed", results.len() - failed);
    assert_eq!(failed, 0, "see the table above");
}
