//! The proof that the libdlm bindings (`lockmgr-dlm` over `dlm-sys`) work on a real DLM cluster:
//! boots 2 QEMU nodes, runs `dlm-proof` (built from the bindings, shared read-only at /mnt/host)
//! in them, and checks cross-node exclusion, shared locks, holder death, orphans, adoption,
//! purge and node failure. Latency and failover figures are printed, never asserted.
//!
//! Needs root, /dev/net/tun, QEMU and about 2 minutes: run by `tests/cluster/run-proof.sh`.
//!
//! This file holds the test; `proof/bed.rs` the helpers that run dlm-proof in the nodes and
//! record the checks, `proof/checks.rs` the checks, `proof/summary.rs` what the run prints.

#[path = "proof/bed.rs"]
mod bed;
#[path = "proof/checks.rs"]
mod checks;
#[path = "proof/summary.rs"]
mod summary;

use std::path::Path;
use std::time::Instant;

use lockmgr_testbed::{Cluster, ClusterSpec, NodeImage};

use bed::Proof;
use checks::run_checks;
use summary::print_summary;

const LS: &str = "lockmgrproof";
const PROOF: &str = "/mnt/host/dlm-proof";
const EAGAIN: i32 = 11;
const ENOENT: i32 = 2;

#[test]
#[ignore = "boots a DLM cluster in QEMU VMs; run by tests/cluster/run-proof.sh"]
fn dlm_bindings_on_a_real_two_node_cluster() {
    let total = Instant::now();
    let image = NodeImage::ensure().unwrap_or_else(|err| panic!("{err}"));
    let proof_binary = Path::new(env!("CARGO_BIN_EXE_dlm-proof"));
    let share = proof_binary
        .parent()
        .expect("the binary lives in a directory");
    println!(
        "[proof] sharing {} (dlm-proof from the bindings) at /mnt/host",
        share.display()
    );
    let cluster = Cluster::start(&image, &ClusterSpec::with_nodes(2).share(share))
        .unwrap_or_else(|err| panic!("{err}"));
    let boot = cluster.boot_time();
    let checks_started = Instant::now();
    let mut proof = Proof {
        cluster,
        rows: Vec::new(),
        figures: Vec::new(),
        next_log: 0,
    };
    run_checks(&mut proof);
    let checks = checks_started.elapsed();

    let Proof {
        cluster,
        rows,
        figures,
        ..
    } = proof;
    let teardown_started = Instant::now();
    let stopped = cluster.stop();
    let teardown = teardown_started.elapsed();

    print_summary(&rows, &figures);
    println!("[proof] times:");
    println!(
        "    image          {:>6.1} s  ({})",
        image.elapsed.as_secs_f64(),
        if image.built {
            "built"
        } else {
            "cached, up to date"
        }
    );
    println!(
        "    boot to ready  {:>6.1} s  (2 nodes, QEMU start until quorate + DLM + guest agents)",
        boot.as_secs_f64()
    );
    println!("    checks         {:>6.1} s", checks.as_secs_f64());
    println!("    teardown       {:>6.1} s", teardown.as_secs_f64());
    println!(
        "    total          {:>6.1} s",
        total.elapsed().as_secs_f64()
    );

    stopped.unwrap_or_else(|err| panic!("teardown left something behind: {err}"));
    let failed: Vec<&str> = rows
        .iter()
        .filter(|row| !row.pass)
        .map(|row| row.check.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} proof checks failed: {failed:?}",
        failed.len(),
        rows.len()
    );
}
