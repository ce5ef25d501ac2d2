//! The conformance matrix and the benchmark on a real DLM cluster (2 QEMU nodes, corosync,
//! dlm_controld), with binaries built from this workspace and shared read-only into the nodes:
//!
//! - `matrix_with_dlm_owners_on_two_nodes`: `lockmgr-loader-test matrix` on node1 prints nop,
//!   file and dlm side by side; dlm's owners b, d, … run on node2 through
//!   `lockmgr-loader-test agent`, each node with its own `lockmgrd --backend dlm`. Asserted: dlm ✓
//!   on every scenario, its exclusion scenarios with owners on both nodes; nop ✗ on the exclusion
//!   scenarios; file ✓ on every scenario (both its owners on node1); nothing left running.
//! - `dlm_so_against_the_raw_libdlm_floor`: `lockmgr-loader-test bench` on node1 times libvirt's
//!   resume/pause cycle through dlm.so for N = 1, 16, 64, interleaved with `dlm-floor` (one
//!   process locking and unlocking the same N DLM resources), once with the resources mastered
//!   on node1 and once on node2; prints medians, p99 and dlm.so ÷ floor, and beside it the
//!   asynchronous floor (`dlm-floor parallel`) and the IPC-inclusive floor (`dlm-floor ipc`) with
//!   their ratios and targets; then the boot storm on both nodes and the scale suite on node1
//!   (10,000 DLM locks held, lockmgrd's restart adopting every orphan). No timing is asserted.
//!
//! Needs root, /dev/net/tun, QEMU and several minutes: run by `tests/cluster/run-dlm-matrix.sh`.
//!
//! This file holds the tests; `dlm_matrix/bed.rs` the helpers that boot the cluster and run
//! commands in its nodes, `dlm_matrix/bench.rs` the benchmark against the libdlm floor and its
//! figures, `dlm_matrix/storm.rs` the boot storm on both nodes, `dlm_matrix/scale.rs` the scale
//! suite on node1.

#[path = "dlm_matrix/bed.rs"]
mod bed;
#[path = "dlm_matrix/bench.rs"]
mod bench;
mod common;
// NO_EXCLUSION and NEEDS_DAEMON_OR_STATE are for loader-test's own checks, not this test's.
#[allow(dead_code)]
#[path = "../../scenarios/expected.rs"]
mod expected;
#[path = "dlm_matrix/scale.rs"]
mod scale;
#[path = "dlm_matrix/storm.rs"]
mod storm;

use std::path::Path;
use std::time::{Duration, Instant};

use expected::{EXCLUSION, cells};
use lockmgr_testbed::node_address;

use bed::{boot, leftovers, sh, wait_for};
use bench::{bench_mastered_on, human, print_against_the_async_floor, series};
use scale::scale_on_one_node;
use storm::boot_storm_on_both_nodes;

use lockmgr_testbed::SHARE_MOUNT as SHARE;
const SCRATCH: &str = "/mnt/scratch";
const AGENT_PORT: u16 = 7311;
const LOCKSPACE: &str = "libvirt";

#[test]
#[ignore = "boots a DLM cluster in QEMU VMs; run by tests/cluster/run-dlm-matrix.sh"]
fn matrix_with_dlm_owners_on_two_nodes() {
    let share = common::build_node_binaries();
    let scratch = common::scratch_dir("lockmgr-dlmx-");
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let copied = scratch.path().join("scenarios");
    std::fs::create_dir(&copied).unwrap();
    for entry in std::fs::read_dir(&scenarios).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, copied.join(path.file_name().unwrap())).unwrap();
        }
    }
    let cluster = boot(&share, scratch.path());
    let agent_address = format!("{}:{AGENT_PORT}", node_address(2));

    let agent_pid = cluster
        .spawn(
            2,
            &format!(
                "{SHARE}/lockmgr-loader-test agent --listen {agent_address} \
                 --plugin dlm={SHARE}/libdlm_plugin.so"
            ),
            "/tmp/agent.log",
        )
        .expect("start the agent on node2");
    wait_for(
        &cluster,
        2,
        "/tmp/agent.log",
        "listening on",
        Duration::from_secs(60),
    );

    let started = Instant::now();
    let (_, table, described) = sh(
        &cluster,
        1,
        &format!(
            "{SHARE}/lockmgr-loader-test matrix --plugin nop={SHARE}/libnop.so \
             --plugin file={SHARE}/libfile.so --plugin dlm={SHARE}/libdlm_plugin.so \
             --scenarios {SCRATCH}/scenarios --remote-node {agent_address} \
             --json-file {SCRATCH}/matrix.json"
        ),
        Duration::from_secs(3600),
    );
    let took = started.elapsed();
    println!("\nlockmgr-loader-test matrix on node1 (dlm's owners b, d, … on node2):\n{table}");
    println!("matrix took {:.1} s", took.as_secs_f64());

    let _ = sh(
        &cluster,
        2,
        &format!("kill {agent_pid}"),
        Duration::from_secs(60),
    );
    let agent_log = wait_for(
        &cluster,
        2,
        "/tmp/agent.log",
        "agent: stopped",
        Duration::from_secs(60),
    );
    let left: Vec<String> = [1, 2]
        .into_iter()
        .flat_map(|node| {
            leftovers(&cluster, node)
                .into_iter()
                .map(move |line| format!("node{node}: {line}"))
        })
        .collect();
    drop(cluster);

    let text = std::fs::read_to_string(scratch.path().join("matrix.json")).unwrap_or_else(|e| {
        panic!("the matrix wrote no JSON ({e}); it printed:\n{described}\n{table}")
    });
    let report: serde_json::Value = serde_json::from_str(&text).expect("matrix JSON");
    let cells = cells(&report);
    let names: Vec<String> = report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.len() >= 15, "{names:?}");
    let cell = |scenario: &str, plugin: &str| -> &serde_json::Value {
        cells
            .get(&(scenario.to_owned(), plugin.to_owned()))
            .unwrap_or_else(|| panic!("no cell {scenario} × {plugin}"))
    };
    let mut problems = Vec::new();
    let remote_label = format!("@{}", node_address(2));
    for scenario in &names {
        let dlm = cell(scenario, "dlm");
        if dlm["verdict"] != "pass" {
            problems.push(format!("dlm × {scenario}: {}", dlm["reason"]));
        }
        let file = cell(scenario, "file");
        if file["verdict"] != "pass" {
            problems.push(format!("file × {scenario}: {}", file["reason"]));
        }
        if file["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["label"].as_str().unwrap().contains(&remote_label))
        {
            problems.push(format!("file × {scenario}: an owner ran on node2"));
        }
    }
    for scenario in EXCLUSION {
        let dlm = cell(scenario, "dlm");
        let steps = dlm["steps"].as_array().unwrap();
        let on_node2 = steps
            .iter()
            .filter(|s| s["label"].as_str().unwrap().contains(&remote_label))
            .count();
        let on_node1 = steps.len() - on_node2;
        if on_node2 == 0 || on_node1 == 0 {
            problems.push(format!(
                "dlm × {scenario}: steps on node1 {on_node1}, on node2 {on_node2}: not across nodes"
            ));
        }
        let nop = cell(scenario, "nop");
        if nop["verdict"] != "fail"
            || !nop["reason"]
                .as_str()
                .unwrap()
                .contains("expected refused, got granted")
        {
            problems.push(format!(
                "nop × {scenario}: expected ✗ letting the second domain in, got {} {}",
                nop["verdict"], nop["reason"]
            ));
        }
    }
    // A refusal across nodes comes from the DLM, and names the disk.
    let refused = &cell("exclusive-vs-exclusive", "dlm")["steps"][3];
    if refused["outcome"] != "refused"
        || !refused["detail"]
            .as_str()
            .unwrap()
            .contains("locked on another node of cluster")
    {
        problems.push(format!(
            "exclusive-vs-exclusive step 4 is not a DLM refusal: {refused}"
        ));
    }
    let column = report["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["label"] == "dlm")
        .unwrap();
    if column["remote_node"] != agent_address.as_str() {
        problems.push(format!("the dlm column does not name node2: {column}"));
    }
    if !left.is_empty() {
        problems.push(format!("left running: {left:?}"));
    }
    if !problems.is_empty() {
        println!("--- agent log (node2) ---\n{agent_log}");
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
#[ignore = "boots a DLM cluster in QEMU VMs; run by tests/cluster/run-dlm-matrix.sh"]
fn dlm_so_against_the_raw_libdlm_floor() {
    let share = common::build_node_binaries();
    let scratch = common::scratch_dir("lockmgr-dlmx-");
    let cluster = boot(&share, scratch.path());
    // Both nodes in the lockspace before anything is mastered: a later join would re-spread the
    // resource directory while the benchmark runs.
    for node in [1, 2] {
        let (ok, _, described) = sh(
            &cluster,
            node,
            &format!("{SHARE}/dlm-proof join {LOCKSPACE}"),
            Duration::from_secs(120),
        );
        assert!(ok, "node{node} could not join {LOCKSPACE}: {described}");
    }
    let iterations_local: usize = std::env::var("DLMX_ITERATIONS_LOCAL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let iterations_remote: usize = std::env::var("DLMX_ITERATIONS_REMOTE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let (local, local_floors) =
        bench_mastered_on(&cluster, 1, "/tmp/bench-local", iterations_local, 20);
    let (remote, remote_floors) =
        bench_mastered_on(&cluster, 2, "/tmp/bench-remote", iterations_remote, 5);

    println!(
        "\ndlm.so: libvirt's resume/pause cycle (New + N×AddResource + Acquire(state) + Free, \
         New + N×AddResource + Release(&state) + Free) through lockmgrd --backend dlm on node1\n\
         floor: one process on node1, EX|NOQUEUE|PERSISTENT lock then unlock of the same N DLM \
         resources (libdlm_lt)\n\
         interleaved rounds; TCG virtual machines (1 vCPU each) on a shared 2-core host\n"
    );
    println!(
        "{:<9} {:>5} {:>7}   {:>11} {:>11}   {:>11} {:>11}   {:>8} {:>8}   target 1.5×",
        "master",
        "N",
        "cycles",
        "floor p50",
        "floor p99",
        "dlm.so p50",
        "dlm.so p99",
        "ratio",
        "(p99)"
    );
    let mut rows = 0;
    for (mastering, report) in [("node1", &local), ("node2", &remote)] {
        for n in [1u64, 16, 64] {
            let floor = series(report, "floor", n)
                .unwrap_or_else(|| panic!("no floor series at N={n}: {report:#}"));
            let dlm = series(report, "dlm", n)
                .unwrap_or_else(|| panic!("no dlm series at N={n}: {report:#}"));
            assert!(floor.cycles > 0 && dlm.cycles > 0 && floor.cycles == dlm.cycles);
            let ratio = dlm.median_ns as f64 / floor.median_ns.max(1) as f64;
            let ratio_p99 = dlm.p99_ns as f64 / floor.p99_ns.max(1) as f64;
            println!(
                "{mastering:<9} {n:>5} {:>7}   {:>11} {:>11}   {:>11} {:>11}   {:>7.2}× {:>7.2}×   {}",
                dlm.cycles,
                human(floor.median_ns),
                human(floor.p99_ns),
                human(dlm.median_ns),
                human(dlm.p99_ns),
                ratio,
                ratio_p99,
                if ratio <= 1.5 { "met" } else { "NOT met" }
            );
            rows += 1;
        }
        let ratios = report["ratios"].as_array().unwrap();
        assert_eq!(
            ratios
                .iter()
                .filter(|r| r["what"] == "dlm/floor" && r["target"] == "<= 1.5")
                .count(),
            3,
            "bench prints dlm ÷ floor for every N: {:#}",
            report["ratios"]
        );
    }
    assert_eq!(rows, 6);
    print_against_the_async_floor(&[
        ("node1", &local, &local_floors),
        ("node2", &remote, &remote_floors),
    ]);
    boot_storm_on_both_nodes(&cluster);
    scale_on_one_node(&cluster);
    let left: Vec<String> = [1, 2]
        .into_iter()
        .flat_map(|node| leftovers(&cluster, node))
        .collect();
    drop(cluster);
    assert!(left.is_empty(), "left running: {left:?}");
}
