//! The boot storm on both nodes at once, through dlm.so and each node's lockmgrd.

use std::time::{Duration, Instant};

use lockmgr_testbed::Cluster;

use crate::SHARE;
use crate::bed::{sh, wait_for};
use crate::bench::human;

/// Domains per node in the boot storm across nodes (200 in all, as the host storm).
const STORM_DOMAINS_PER_NODE: usize = 100;

/// A boot storm on both nodes at once: on each, `STORM_DOMAINS_PER_NODE` domains × 4 disks
/// (distinct per node) acquire at once through dlm.so and that node's lockmgrd, 3 storms, the
/// two nodes started together. Prints each node's wall time and per-domain p50 / p99; asserts
/// only that every storm ran without error.
pub(crate) fn boot_storm_on_both_nodes(cluster: &Cluster) {
    let bench = |node: usize| {
        format!(
            "mkdir -p /tmp/storm-node{node} && {SHARE}/lockmgr-loader-test bench \
             --plugin dlm={SHARE}/libdlm_plugin.so --disk-dir /tmp/storm-node{node} --suite storm \
             --storm-domains {STORM_DOMAINS_PER_NODE} --storm-disks 4 --storm-rounds 3 --json \
             > /tmp/storm-node{node}.json 2>/tmp/storm-node{node}.log; echo exit=$? > /tmp/storm-node{node}.done"
        )
    };
    let started = Instant::now();
    for node in [1, 2] {
        let _ = sh(
            cluster,
            node,
            &format!("rm -f /tmp/storm-node{node}.done"),
            Duration::from_secs(60),
        );
        cluster
            .spawn(
                node,
                &format!("sh -c '{}'", bench(node).replace('\'', "")),
                "/tmp/storm-spawn.log",
            )
            .unwrap_or_else(|e| panic!("node{node}: start the storm: {e}"));
    }
    let mut rows = Vec::new();
    for node in [1, 2] {
        let done = wait_for(
            cluster,
            node,
            &format!("/tmp/storm-node{node}.done"),
            "exit=",
            Duration::from_secs(1800),
        );
        let (_, json, _) = sh(
            cluster,
            node,
            &format!("cat /tmp/storm-node{node}.json"),
            Duration::from_secs(60),
        );
        let (_, log, _) = sh(
            cluster,
            node,
            &format!("tail -n 20 /tmp/storm-node{node}.log"),
            Duration::from_secs(60),
        );
        assert!(
            done.contains("exit=0"),
            "node{node}: storm bench failed ({done}):\n{log}"
        );
        let report: serde_json::Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("node{node}: storm bench printed no JSON ({e}):\n{log}"));
        assert!(
            report["errors"].as_array().is_some_and(Vec::is_empty),
            "node{node}: storm errors: {:#}",
            report["errors"]
        );
        let row = report["storm"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["plugin"] == "dlm"))
            .cloned()
            .unwrap_or_else(|| panic!("node{node}: no dlm storm row: {report:#}"));
        rows.push((node, row));
    }
    println!(
        "\nboot storm across 2 nodes: on each node {STORM_DOMAINS_PER_NODE} domains × 4 disks \
         (distinct per node) acquire at once through dlm.so + lockmgrd --backend dlm, both nodes \
         together, 3 storms; {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<6} {:>12} {:>12} {:>12} {:>12} {:>13}",
        "node", "wall median", "wall max", "domain p50", "domain p99", "release wall"
    );
    for (node, row) in &rows {
        let ns = |key: &str| row[key].as_u64().unwrap_or(0);
        assert!(ns("storms") > 0, "node{node}: no storm ran: {row}");
        println!(
            "node{node:<2} {:>12} {:>12} {:>12} {:>12} {:>13}",
            human(ns("wall_median_ns")),
            human(ns("wall_max_ns")),
            human(ns("domain_p50_ns")),
            human(ns("domain_p99_ns")),
            human(ns("release_wall_median_ns")),
        );
    }
}
