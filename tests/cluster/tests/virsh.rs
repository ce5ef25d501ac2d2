//! dlm.so under a real libvirtd on every node of a 2-node DLM cluster (issue 10): libvirt 11 and
//! QEMU 10 from bookworm-backports in the nodes (the image's libvirt flavour), lockmgr installed
//! from its Debian packages (`target/debian`, built by `tests/package/run.sh`), one LUN shared by
//! both nodes (`/dev/vda`), and domains with no OS under TCG inside the nodes. Through virsh:
//! exclusion across nodes with the holder named, a lease, shareable and read-only disks, QEMU
//! killed, suspend/resume, hotplug, libvirtd and lockmgrd restarts, live migration there and back,
//! a migration that fails, one cancelled while it runs (probed during), and a node crash with
//! power fencing. The control: the exclusion
//! scenario with `lock_manager = "nop"` must report the double start.
//!
//! Times are printed, never asserted. Needs root, /dev/net/tun, QEMU and about 10 minutes: run by
//! `tests/cluster/run-virsh.sh`.
//!
//! `virsh/bed.rs` installs and drives libvirt in the nodes, `virsh/scenarios.rs` and
//! `virsh/migration.rs` hold the checks.

#[path = "virsh/bed.rs"]
mod bed;
#[path = "virsh/migration.rs"]
mod migration;
#[path = "virsh/scenarios.rs"]
mod scenarios;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lockmgr_testbed::{Cluster, ClusterSpec, LIBVIRT_NODE_MEMORY_MIB, NodeImage};

use bed::Bed;

type Check = Result<String, String>;
/// Times measured on the way, printed at the end.
type Figures = Vec<(&'static str, Duration)>;
type Scenario = (&'static str, fn(&Bed, &mut Figures) -> Check);

/// The Debian packages the nodes install: `LOCKMGR_DEB_DIR`, or the workspace's `target/debian`.
fn deb_dir() -> PathBuf {
    let dir = std::env::var_os("LOCKMGR_DEB_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debian"),
        PathBuf::from,
    );
    let has = |prefix: &str| {
        std::fs::read_dir(&dir).is_ok_and(|entries| {
            entries.flatten().any(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.starts_with(prefix) && name.ends_with("_amd64.deb")
            })
        })
    };
    assert!(
        has("lockmgr_") && has("libvirt-daemon-plugin-lockmgr-dlm_"),
        "no lockmgr_*_amd64.deb and libvirt-daemon-plugin-lockmgr-dlm_*_amd64.deb in {}: build them \
         first with `tests/package/run.sh --build-only` (tests/cluster/run-virsh.sh does)",
        dir.display()
    );
    dir.canonicalize().expect("the package directory")
}

const SCENARIOS: &[Scenario] = &[
    (
        "exclusive LUN across nodes, holder named",
        scenarios::exclusive_across_nodes,
    ),
    ("<lease> across nodes", scenarios::lease_across_nodes),
    (
        "shareable and read-only on both nodes",
        scenarios::shareable_and_read_only,
    ),
    ("QEMU kill -9 frees the LUN", scenarios::qemu_kill_frees),
    ("suspend frees, resume re-takes", scenarios::suspend_resume),
    ("hotplug and unplug", scenarios::hotplug),
    (
        "libvirtd restart keeps the lock",
        scenarios::libvirtd_restart_keeps_lock,
    ),
    (
        "lockmgrd SIGKILL + restart: orphan kept and adopted",
        scenarios::daemon_crash_keeps_lock,
    ),
    (
        "lockmgr status --cluster names every node's domains",
        scenarios::cluster_wide_status,
    ),
    (
        "live migration node1 → node2 → node1",
        migration::live_migration_round_trip,
    ),
    (
        "failed migration leaves the lock with the source",
        migration::failed_migration_keeps_lock,
    ),
    (
        "cancelled migration: refused during, lock stays with the source",
        migration::cancelled_migration_keeps_lock,
    ),
];

fn run(
    bed: &Bed,
    name: &str,
    scenario: fn(&Bed, &mut Figures) -> Check,
    figures: &mut Figures,
) -> Check {
    println!("\n=== {name}");
    let started = Instant::now();
    let result = scenario(bed, figures);
    match &result {
        Ok(what) => println!(
            "PASS {name} ({:.1} s)\n{what}",
            started.elapsed().as_secs_f64()
        ),
        Err(why) => {
            println!(
                "FAIL {name} ({:.1} s): {why}",
                started.elapsed().as_secs_f64()
            );
            for node in 1..=2 {
                if bed.cluster.node_running(node) {
                    println!("--- node{node}\n{}", bed.logs(node));
                }
            }
        }
    }
    result
}

#[test]
#[ignore = "boots a 2-node cluster with libvirt inside (root, QEMU, ~10 min): tests/cluster/run-virsh.sh"]
fn virsh_across_nodes() {
    let debs = deb_dir();
    let image = NodeImage::ensure_libvirt().expect("the libvirt node image");
    let lun = tempfile::Builder::new()
        .prefix("lockmgr-virsh-lun")
        .tempdir_in("/var/tmp")
        .expect("a directory for the LUN");
    let spec = ClusterSpec {
        memory_mib: LIBVIRT_NODE_MEMORY_MIB,
        ..ClusterSpec::with_nodes(2)
    }
    .share(&debs)
    .shared_disk(lun.path().join("lun.img"), 64 << 20);
    let cluster = Cluster::start(&image, &spec).expect("boot the cluster");
    let bed = Bed::new(&cluster);
    let initrd_mb = std::fs::metadata(&image.initrd).map_or(0, |m| m.len() >> 20);
    println!(
        "[virsh] 2 nodes booted in {:.1} s (root in RAM: {initrd_mb} MB initramfs, {LIBVIRT_NODE_MEMORY_MIB} MiB per node)",
        cluster.boot_time().as_secs_f64()
    );

    // Both nodes at once: libvirtd's first start probes QEMU for about half a minute under TCG.
    let probes: Vec<Duration> = std::thread::scope(|scope| {
        let nodes: Vec<_> = (1..=2)
            .map(|node| {
                let bed = &bed;
                scope.spawn(move || bed.install_and_start(node))
            })
            .collect();
        nodes
            .into_iter()
            .map(|node| node.join().expect("setting a node up"))
            .collect()
    });
    for (index, probe) in probes.iter().enumerate() {
        let memory = bed.must(
            index + 1,
            "free -m | awk '/^Mem:/ { print $3 \" MiB used of \" $2 }'",
        );
        println!(
            "[virsh] node{}: lockmgr installed from its packages; libvirtd answered after {:.1} s; {}",
            index + 1,
            probe.as_secs_f64(),
            memory.trim()
        );
    }

    let mut figures = Figures::new();
    let mut results: Vec<(&str, Check)> = Vec::new();
    for (name, scenario) in SCENARIOS {
        results.push((name, run(&bed, name, *scenario, &mut figures)));
    }

    // The control: with libvirt's built-in nop lock manager the exclusion scenario must fail.
    for node in 1..=2 {
        bed.set_lock_manager(node, "nop");
        bed.stop_libvirtd(node);
        bed.start_libvirtd(node);
    }
    let control = run(
        &bed,
        "CONTROL: exclusive LUN across nodes with lock_manager = \"nop\" (must fail)",
        scenarios::exclusive_across_nodes,
        &mut Figures::new(),
    );
    results.push((
        "control: nop lets both nodes start the LUN",
        match control {
            Err(why) if why.contains("SUCCEEDED") => Ok(format!("the check caught it: {why}")),
            Err(why) => Err(format!("the control failed for another reason: {why}")),
            Ok(_) => {
                Err("the exclusion check passed with no lock manager: it cannot fail".to_owned())
            }
        },
    ));
    for node in 1..=2 {
        bed.set_lock_manager(node, "dlm");
        bed.stop_libvirtd(node);
        bed.start_libvirtd(node);
    }

    // Last: node1 stays down.
    let name = "node1 crash: node2 starts the domain after fencing";
    results.push((
        name,
        run(
            &bed,
            name,
            migration::node_crash_then_fenced_start,
            &mut figures,
        ),
    ));

    println!("\n[virsh] times (printed, never asserted):");
    for (what, took) in &figures {
        println!("  {what:<45} {:>7.2} s", took.as_secs_f64());
    }
    println!("\n[virsh] results:");
    for (name, result) in &results {
        println!("  {} {name}", if result.is_ok() { "PASS" } else { "FAIL" });
    }
    cluster.stop().expect("stop the cluster");
    let failed: Vec<_> = results
        .iter()
        .filter(|(_, result)| result.is_err())
        .map(|(name, _)| *name)
        .collect();
    assert!(failed.is_empty(), "failed: {failed:?}");
}
