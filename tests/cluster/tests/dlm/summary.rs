//! What the run prints: the per-cluster results table, the failover figures, each check's
//! result and the cluster's fence log.

use std::time::Instant;

use lockmgr_testbed::Cluster;

use crate::Check;

/// One row of the failover table; times in seconds from the cut or the kill (host clock).
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    pub(crate) scenario: String,
    pub(crate) nodes: usize,
    pub(crate) fencing: bool,
    pub(crate) victim_dead: Option<f64>,
    pub(crate) granted: Option<f64>,
    pub(crate) note: String,
}

pub(crate) fn print_table(title: &str, results: &[(&str, Check)]) {
    println!("\n{title}");
    for (name, result) in results {
        match result {
            Ok(detail) => println!("  PASS  {name:<44} {detail}"),
            Err(why) => println!("  FAIL  {name:<44} {why}"),
        }
    }
}

pub(crate) fn print_figures(figures: &[Figure]) {
    println!(
        "\nfailover, t = 0 at the cut or the kill (host clock; a grant is when node1's Acquire returned)"
    );
    println!(
        "  {:<34} {:>5}  {:<7} {:>16}  {:>14}  note",
        "scenario", "nodes", "fencing", "victim QEMU gone", "survivor grant"
    );
    for figure in figures {
        let secs = |value: Option<f64>| value.map_or("never".to_owned(), |v| format!("{v:.2} s"));
        println!(
            "  {:<34} {:>5}  {:<7} {:>16}  {:>14}  {}",
            figure.scenario,
            figure.nodes,
            if figure.fencing { "on" } else { "OFF" },
            secs(figure.victim_dead),
            secs(figure.granted),
            figure.note
        );
    }
}

pub(crate) fn report(name: &str, started: Instant, result: &Check) {
    match result {
        Ok(_) => println!("  ok   {name} ({:.1} s)", started.elapsed().as_secs_f64()),
        Err(why) => println!(
            "  FAIL {name} ({:.1} s): {why}",
            started.elapsed().as_secs_f64()
        ),
    }
}

pub(crate) fn print_fence_log(cluster: &Cluster) {
    match cluster.fence_events() {
        Ok(events) => {
            for event in events {
                println!("  [fence log] {}", event.summary());
            }
        }
        Err(err) => println!("  [fence log] {err}"),
    }
}
