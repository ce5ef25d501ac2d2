//! The helpers: booting the 2-node cluster, running a command in a node, waiting for a file's
//! text and listing what of ours still runs.

use std::path::Path;
use std::time::{Duration, Instant};

use lockmgr_testbed::{Cluster, ClusterSpec, NodeImage};

pub(crate) fn boot(share: &Path, scratch: &Path) -> Cluster {
    let image = NodeImage::ensure().expect("node image");
    let spec = ClusterSpec::with_nodes(2).share(share).scratch(scratch);
    let cluster = Cluster::start(&image, &spec).expect("start a 2-node cluster");
    println!(
        "2-node cluster ready in {:.1} s",
        cluster.boot_time().as_secs_f64()
    );
    cluster
}

/// Runs `cmd` in `node` (up to `limit`), returning stdout + stderr; panics naming the node.
pub(crate) fn sh(
    cluster: &Cluster,
    node: usize,
    cmd: &str,
    limit: Duration,
) -> (bool, String, String) {
    let out = cluster
        .exec_timeout(node, cmd, limit)
        .unwrap_or_else(|e| panic!("node{node}: {cmd}: {e}"));
    (out.success(), out.stdout_text(), out.describe())
}

/// Waits until `file` in `node` contains `needle`; returns its text.
pub(crate) fn wait_for(
    cluster: &Cluster,
    node: usize,
    file: &str,
    needle: &str,
    limit: Duration,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (_, text, _) = sh(cluster, node, &format!("cat {file} 2>&1"), limit);
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "node{node}: no '{needle}' in {file} after {} s:\n{text}",
            limit.as_secs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// What of ours still runs in `node`: daemons, QEMU stand-ins, agents, floors.
pub(crate) fn leftovers(cluster: &Cluster, node: usize) -> Vec<String> {
    let (_, text, _) = sh(
        cluster,
        node,
        "ps -eo pid,args | grep -E 'lockmgrd|sleep infinity|lockmgr-loader-test|dlm-floor' \
         | grep -v grep || true",
        Duration::from_secs(60),
    );
    text.lines().map(str::to_owned).collect()
}
