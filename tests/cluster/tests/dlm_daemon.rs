//! `lockmgrd --backend dlm` under crashes and abuse on a real 2-node DLM cluster (fencing on):
//!
//! - **crash points**: the daemon on node1 aborts at a step of acquire, release, owner death or
//!   restore (`LOCKMGRD_FAILPOINT`, a build with the `failpoints` feature); after its restart
//!   node1's table and the real DLM agree: a disk the table holds for a running domain is refused
//!   to node2 (nothing lost), any other is granted to node2 (nothing leaked: no orphan left);
//! - **a second daemon** on the same configuration touches nothing;
//! - **another pid** cannot release a domain's lock;
//! - **a zombie owner** (exited, not reaped) loses its locks;
//! - **inputs beyond the limits** are refused;
//! - **a full state disk**: a refused Acquire leaves no DLM lock behind;
//! - **an inconsistent lock table** stops the daemon;
//! - **a hung DLM request** (its master node cut off) is refused at its deadline, another
//!   domain is served meanwhile, and the late grant is dropped;
//! - **an unfenced cluster** is refused at start (the control cluster of `dlm.rs` boots without
//!   fencing; here the daemon is pointed at a stand-in `dlm_tool` that says so);
//! - **unsafe self-fencing** is refused at start (watchdog agent without `--watchdog`, a short
//!   `wait=`, watchdog fencing on this two_node cluster, a missing watchdog device).
//!
//! Needs root, /dev/net/tun and QEMU: run by `tests/cluster/run-dlm.sh`.
//!
//! This file holds the test; `dlm_daemon/bed.rs` the helpers, `dlm_daemon/crash.rs` the crash
//! points, `dlm_daemon/abuse.rs` the checks on a serving daemon, `dlm_daemon/startup.rs` the
//! starts it must refuse.

#[path = "dlm_daemon/abuse.rs"]
mod abuse;
#[path = "dlm_daemon/bed.rs"]
mod bed;
mod common;
#[path = "dlm_daemon/crash.rs"]
mod crash;
#[path = "dlm_daemon/startup.rs"]
mod startup;

use lockmgr_testbed::{Cluster, ClusterSpec, NodeImage};

use abuse::{
    a_full_state_disk_leaves_no_lock, a_hung_dlm_request_is_refused_at_its_deadline,
    a_zombie_owner_loses_its_locks, another_pid_cannot_release, inputs_are_bounded,
    second_daemon_touches_nothing,
};
use bed::Bed;
use crash::crash_point;
use startup::{inconsistent_table_refused, unfenced_cluster_refused, unsafe_self_fencing_refused};

use lockmgr_testbed::SHARE_MOUNT as SHARE;
use lockmgr_testbed::owners::DLM_CONFIG as CONFIG;

const PID_FILE: &str = "/run/lockmgr/dlm.pid";
const LOG: &str = "/run/lockmgr/lockmgrd.log";

#[test]
#[ignore = "boots a DLM cluster in QEMU VMs; run by tests/cluster/run-dlm.sh"]
fn lockmgrd_dlm_under_crashes_and_abuse() {
    let share = common::build_node_binaries();
    let image = NodeImage::ensure().expect("node image");
    let cluster = Cluster::start(&image, &ClusterSpec::with_nodes(2).share(&share))
        .expect("a 2-node cluster");
    let bed = Bed { cluster: &cluster };
    for node in 1..=2 {
        bed.sh(node, &common::write_dlm_config(CONFIG));
        if let Err(log) = bed.start_daemon(node, "") {
            panic!("lockmgrd on node{node}:\n{log}");
        }
    }
    type Case = fn(&Bed) -> Result<String, String>;
    let cases: [(&str, Case); 9] = [
        ("second daemon", second_daemon_touches_nothing),
        ("release by another pid", another_pid_cannot_release),
        ("inconsistent locks.json", inconsistent_table_refused),
        ("zombie owner", a_zombie_owner_loses_its_locks),
        ("inputs beyond the limits", inputs_are_bounded),
        ("full state disk", a_full_state_disk_leaves_no_lock),
        ("unfenced cluster", unfenced_cluster_refused),
        ("unsafe self-fencing", unsafe_self_fencing_refused),
        // Last: it cuts node2 off for good.
        (
            "hung DLM request (node2 cut off)",
            a_hung_dlm_request_is_refused_at_its_deadline,
        ),
    ];
    // DLM_DAEMON_CASES=word,word runs only the cases whose name contains one of the words (by
    // hand, e.g. a control run of one case against a changed daemon); the suite runs them all.
    let only = std::env::var("DLM_DAEMON_CASES").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|words| words.split(',').any(|w| name.contains(w)))
    };
    let mut results: Vec<(String, Result<String, String>)> = Vec::new();
    for (n, point) in lockmgrd::failpoint::POINTS.iter().enumerate() {
        let name = format!("crash at {point}");
        if !wanted(&name) {
            continue;
        }
        let result = crash_point(&bed, point, n);
        if result.is_err() {
            // Leave a serving daemon for the next case.
            bed.stop_daemon(1);
            let _ = bed.start_daemon(1, "");
        }
        results.push((name, result));
    }
    for (name, case) in cases {
        if wanted(name) {
            results.push((name.to_owned(), case(&bed)));
        }
    }
    assert!(
        !results.is_empty(),
        "DLM_DAEMON_CASES={only:?} names no case"
    );

    println!("\nlockmgrd --backend dlm under crashes and abuse (2 nodes, fencing on)");
    for (name, result) in &results {
        match result {
            Ok(what) => println!("  ✓ {name:<36} {what}"),
            Err(why) => println!("  ✗ {name:<36} {}", why.lines().next().unwrap_or_default()),
        }
    }
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(name, r)| r.as_ref().err().map(|why| format!("{name}: {why}")))
        .collect();
    println!(
        "dlm daemon: {} passed, {} failed",
        results.len() - failed.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
