//! Scale on one node: 10,000 DLM locks held through dlm.so and node1's lockmgrd, then lockmgrd
//! killed and started again, adopting every orphan.

use std::time::{Duration, Instant};

use lockmgr_testbed::Cluster;

use crate::SHARE;
use crate::bed::sh;

/// Locks held at the end of the fill (issue 11: "10,000 held locks on one node").
const SCALE_LOCKS: usize = 10_000;

/// `bench --suite scale` on node1 through dlm.so (its own `lockmgrd --backend dlm`): the probe
/// domain's Acquire and Release as the table grows to `SCALE_LOCKS`, lockmgrd's RSS, and its
/// restart after SIGKILL with every lock left in the kernel as an orphan. Prints bench's table
/// (with the restart target, < 2 s); asserts that the run had no error and that the restarted
/// lockmgrd took back every lock (adopted every orphan), never a time.
pub(crate) fn scale_on_one_node(cluster: &Cluster) {
    let started = Instant::now();
    let (ok, table, described) = sh(
        cluster,
        1,
        &format!(
            "rm -rf /tmp/scale && mkdir -p /tmp/scale && {SHARE}/lockmgr-loader-test bench \
             --plugin dlm={SHARE}/libdlm_plugin.so --disk-dir /tmp/scale --suite scale \
             --scale-locks {SCALE_LOCKS} --json-file /tmp/scale.json"
        ),
        Duration::from_secs(3600),
    );
    println!(
        "\nscale on node1 through dlm.so: {:.1} s in all{table}",
        started.elapsed().as_secs_f64()
    );
    assert!(ok, "scale bench failed on node1: {described}");
    let (_, json, _) = sh(cluster, 1, "cat /tmp/scale.json", Duration::from_secs(60));
    let report: serde_json::Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("scale bench wrote no JSON report ({e}): {described}"));
    assert!(
        report["errors"].as_array().is_some_and(Vec::is_empty),
        "scale errors: {:#}",
        report["errors"]
    );
    let scale = report["scale"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["plugin"] == "dlm"))
        .unwrap_or_else(|| panic!("no dlm scale result: {report:#}"));
    assert_eq!(
        scale["locks"].as_u64(),
        Some(SCALE_LOCKS as u64),
        "{scale:#}"
    );
    assert_eq!(
        scale["restored"]["locks"].as_u64(),
        Some(SCALE_LOCKS as u64),
        "the restarted lockmgrd should have adopted every orphan: {:#}",
        scale["restored"]
    );
    let _ = sh(cluster, 1, "rm -rf /tmp/scale", Duration::from_secs(120));
}
