//! Watchdog self-fencing on the test bed ([`FenceMode::Watchdog`]).
//!
//! - `watchdog_hardware`: the nodes' emulated i6300esb (`/dev/watchdog`) powers a node off when
//!   nobody pets it, also while only its vCPUs are frozen ([`Cluster::freeze_vcpus`]: QEMU's main
//!   loop runs the watchdog, as real hardware runs outside the CPU), and not while it is petted;
//!   the harness tells such a node from one it killed. No lockmgrd needed (a shell loop pets).
//!
//! Failover with the watchdog fence (partition, frozen host, crash, and its control) is checked
//! with lockmgrd in `tests/dlm.rs`; this file checks only the test bed's own fault injection.
//!
//! Needs root, /dev/net/tun and QEMU:
//! `cargo test -p lockmgr-testbed --test watchdog -- --ignored --nocapture --test-threads=1`.

use std::time::{Duration, Instant};

use lockmgr_testbed::{
    Cluster, ClusterSpec, FenceMode, NodeImage, WATCHDOG_FENCE_WAIT_S, WATCHDOG_TIMEOUT_S,
};

const PETTER: &str = "while :; do printf . ; sleep 1; done > /dev/watchdog";

fn boot(share: Option<&std::path::Path>) -> Cluster {
    let image = NodeImage::ensure().expect("node image");
    let mut spec = ClusterSpec::with_nodes(3).fence_mode(FenceMode::Watchdog);
    if let Some(share) = share {
        spec = spec.share(share);
    }
    Cluster::start(&image, &spec).expect("boot a 3-node watchdog cluster")
}

/// Waits until node `node`'s QEMU is gone, at most `limit`; returns when (since `from`).
fn wait_powered_off(cluster: &Cluster, node: usize, from: Instant, limit: Duration) -> Option<f64> {
    while from.elapsed() < limit {
        if !cluster.node_running(node) {
            return Some(from.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
#[ignore = "boots a 3-node QEMU cluster with watchdogs"]
fn watchdog_hardware() {
    let cluster = boot(None);
    for node in 1..=3 {
        let out = cluster
            .exec_ok(
                node,
                "ls /dev/watchdog && grep '^fence_all' /etc/dlm/dlm.conf",
            )
            .unwrap();
        assert!(
            out.contains(&format!(
                "fence_all /usr/sbin/fence_lockmgr_watchdog wait={WATCHDOG_FENCE_WAIT_S}"
            )),
            "node{node}: {out}"
        );
    }
    let console = std::fs::read_to_string(cluster.console_path(1).unwrap()).unwrap();
    assert!(
        console.contains("/dev/watchdog is i6300ESB timer"),
        "node1's init did not find the i6300esb:\n{console}"
    );

    // 1. Frozen vCPUs, watchdog not armed: the node stays, the main loop answers, its peers lose it.
    let attempts = cluster.freeze_vcpus(2).expect("freeze node2's vCPUs");
    let frozen = Instant::now();
    let mut lost = None;
    while frozen.elapsed() < Duration::from_secs(15) && lost.is_none() {
        let members = cluster
            .exec_ok(1, "corosync-quorumtool -l | grep -c node")
            .unwrap();
        if members.trim() == "2" {
            lost = Some(frozen.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(cluster.node_running(2), "node2 died while frozen, unarmed");
    let ran = cluster.thaw_vcpus(2).expect("thaw node2");
    assert!(ran);
    println!(
        "unarmed watchdog: node2's vCPUs frozen ({attempts} attempt(s)); node1 saw it leave \
         corosync after {lost:?} s; thawed, still running"
    );
    assert!(
        lost.is_some(),
        "node1 never lost node2 while its vCPUs were frozen"
    );
    // It merged back with stale state: dlm_controld may kick it; power-cycle it anyway.
    cluster.kill_node(2).unwrap();
    assert!(
        !cluster.powered_off_by_watchdog(2),
        "a kill is not a watchdog reset"
    );

    // 2. Armed (a shell pets it every second), vCPUs frozen: the watchdog fires.
    cluster
        .spawn(3, &format!("sh -c '{PETTER}'"), "/run/petter.log")
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    cluster.freeze_vcpus(3).expect("freeze node3's vCPUs");
    let frozen = Instant::now();
    let off = wait_powered_off(&cluster, 3, frozen, Duration::from_secs(25));
    let ran = cluster
        .thaw_vcpus(3)
        .expect("thaw must cope with a QEMU that is gone");
    println!(
        "armed watchdog, vCPUs frozen: node3 powered off after {off:?} s; thaw: still running = {ran}"
    );
    let off = off.expect("THE WATCHDOG DID NOT FIRE while node3's vCPUs were frozen");
    assert!(!ran);
    assert!(
        off > (WATCHDOG_TIMEOUT_S as f64) - 2.0 && off < (WATCHDOG_TIMEOUT_S as f64) + 5.0,
        "node3 powered off {off:.1} s after the freeze, expected about {WATCHDOG_TIMEOUT_S} s"
    );
    assert!(
        cluster.powered_off_by_watchdog(3),
        "no WATCHDOG event recorded for node3"
    );

    // 3. Armed, petted, running: nothing happens for 2 timeouts; then the petter stops.
    let petter = cluster
        .spawn(1, &format!("sh -c '{PETTER}'"), "/run/petter.log")
        .unwrap();
    std::thread::sleep(Duration::from_secs(2 * WATCHDOG_TIMEOUT_S));
    assert!(cluster.node_running(1), "node1 was reset although petted");
    cluster.exec_ok(1, &format!("kill {petter}")).unwrap();
    let stopped = Instant::now();
    let off = wait_powered_off(&cluster, 1, stopped, Duration::from_secs(25));
    println!("petting stopped on node1: powered off after {off:?} s");
    assert!(
        off.is_some(),
        "THE WATCHDOG DID NOT FIRE after node1's petter stopped"
    );
    assert!(cluster.powered_off_by_watchdog(1));
    let events = cluster.watchdog_events().unwrap();
    println!("watchdog events: {events:?}");
    assert_eq!(events.len(), 2, "{events:?}");
    cluster.stop().unwrap();
}
