//! The nemesis: dlm.so and `lockmgrd --backend dlm` never let two hosts write one exclusive disk.
//!
//! Three nodes share one raw disk ([`ClusterSpec::shared_disk`], a SAN LUN); each runs lockmgrd
//! and several `nemesis-worker`s, libvirt domains that contend for a few exclusive disks through
//! dlm.so and write their disk's region of the shared disk only while they hold its lock (format
//! and checker: [`lockmgr_testbed::nemesis`]). Meanwhile the nemesis partitions nodes and heals
//! them, kills them, freezes them (SIGSTOP of the VM) past corosync's token timeout, kills
//! lockmgrd and restarts corosync; a node that was powered off is booted again, with its lockmgrd
//! and workers. Afterwards the checker reads the disk image and the workers' logs.
//!
//! - `nemesis_with_fencing`: every fault kind at least once; 0 violations.
//! - `nemesis_with_watchdog_fencing`: the same with watchdog self-fencing ([`FenceMode::Watchdog`]:
//!   lockmgrd `--watchdog`, an i6300esb per node, `fence_lockmgr_watchdog` on the survivors); the
//!   freeze stops only the vCPUs ([`Cluster::freeze_vcpus`]) so that the watchdog fires; nodes that
//!   powered themselves off are booted again; 0 violations and every expected watchdog reset.
//! - `nemesis_control_without_fencing`: the same cluster booted without fencing and only
//!   partitions; the checker must report violations (it can fail).
//!
//! Environment: `NEMESIS_SECONDS` (the fenced run's length after the first round of every fault
//! kind, default 0), `NEMESIS_REGION_MIB` (per disk, default 16), `NEMESIS_OWNERS` (per node,
//! default 3), `NEMESIS_DISKS` (default 3), `NEMESIS_REPORT` (a file to append the summary to).
//!
//! Needs root, /dev/net/tun, QEMU and a few minutes: run by `tests/cluster/run-nemesis.sh`.
//!
//! This file holds the run, its report and the tests; `nemesis/bed.rs` the nemesis's handling of
//! nodes and workers, `nemesis/faults.rs` the faults and how they are injected.

#[path = "nemesis/bed.rs"]
mod bed;
mod common;
#[path = "nemesis/faults.rs"]
mod faults;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockmgr_testbed::nemesis::{self, Random, Report};
use lockmgr_testbed::{Cluster, ClusterSpec, FenceMode, NodeImage};

use bed::Nemesis;
use faults::{ALL_FAULTS, Fault};

use lockmgr_testbed::SHARE_MOUNT as SHARE;
const CONFIG: &str = "/etc/libvirt/qemu-dlm.conf";
const LOG_DIR: &str = "/mnt/scratch/nemesis";
const NODES: usize = 3;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn host_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i128::try_from(since.as_nanos()).unwrap_or(0))
}

struct Outcome {
    report: Report,
    faults: BTreeMap<Fault, u32>,
    restarts: u32,
    fence_events: usize,
    watchdog_resets: u32,
    watchdog_misses: Vec<String>,
    seconds: f64,
    summary: String,
}

fn run(mode: FenceMode, extra_seconds: u64) -> Outcome {
    let fencing = mode.fences();
    let share = common::build_node_binaries();
    assert!(
        share.join("nemesis-worker").exists(),
        "nemesis-worker was not built next to {}",
        share.display()
    );
    let scratch = common::scratch_dir("lockmgr-nemesis-");
    std::fs::create_dir_all(scratch.path().join("nemesis")).unwrap();
    std::fs::set_permissions(
        scratch.path().join("nemesis"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let disks = env_u64("NEMESIS_DISKS", 3);
    let owners = env_u64("NEMESIS_OWNERS", 3);
    let region_bytes = env_u64("NEMESIS_REGION_MIB", 16) << 20;
    let image_path = scratch.path().join("shared.img");
    let image = NodeImage::ensure().expect("node image");
    let spec = ClusterSpec::with_nodes(NODES)
        .share(&share)
        .scratch(scratch.path())
        .fence_mode(mode)
        .shared_disk(&image_path, disks * region_bytes);
    let cluster = Cluster::start(&image, &spec).expect("boot the cluster");
    let nemesis = Nemesis {
        cluster: &cluster,
        image: image_path.clone(),
        scratch: scratch.path().to_owned(),
        region_bytes,
        disks,
        owners,
        incarnation: RefCell::new(vec![0; NODES]),
        offsets: RefCell::new(HashMap::new()),
        faults: RefCell::new(BTreeMap::new()),
        restarts: RefCell::new(0),
        watchdog_resets: RefCell::new(0),
        watchdog_misses: RefCell::new(Vec::new()),
        kicked: RefCell::new(0),
        agent_fences: RefCell::new(BTreeMap::new()),
        journal: RefCell::new(Vec::new()),
        started: Instant::now(),
        random: RefCell::new(Random::new(
            u64::try_from(host_ns() & 0xffff_ffff).unwrap_or(1),
        )),
    };
    for node in 1..=NODES {
        nemesis
            .setup(node)
            .unwrap_or_else(|err| panic!("setup node{node}: {err}"));
    }
    nemesis.note(format!(
        "{} nodes, fencing {}, {owners} workers per node, {disks} exclusive disks of {} MiB on {}",
        NODES,
        describe(mode),
        region_bytes >> 20,
        image_path.display()
    ));
    std::thread::sleep(Duration::from_secs(5));
    let plan: Vec<Fault> = if fencing {
        ALL_FAULTS.to_vec()
    } else {
        vec![Fault::Partition, Fault::Partition]
    };
    let mut errors = Vec::new();
    let mut inject = |fault: Fault| {
        if let Err(err) = nemesis.inject(fault, !fencing) {
            nemesis.note(format!("{fault:?} failed: {err}"));
            errors.push(format!("{fault:?}: {err}"));
        }
        let quiet = nemesis.random.borrow_mut().millis(2_000, 6_000);
        std::thread::sleep(quiet);
    };
    for fault in plan {
        inject(fault);
    }
    let soak_until = Instant::now() + Duration::from_secs(extra_seconds);
    while Instant::now() < soak_until {
        let pick = nemesis.random.borrow_mut().below(ALL_FAULTS.len() as u64);
        inject(ALL_FAULTS[usize::try_from(pick).unwrap_or(0)]);
    }
    nemesis.stop_workers();
    nemesis.count_agent_fences();
    let fence_events = if mode == FenceMode::Watchdog {
        let fenced: u32 = nemesis.agent_fences.borrow().values().sum();
        usize::try_from(fenced).unwrap_or(0)
    } else {
        cluster
            .fence_events()
            .map(|events| events.len())
            .unwrap_or(0)
    };
    let watchdog_resets = *nemesis.watchdog_resets.borrow();
    let watchdog_misses = nemesis.watchdog_misses.borrow().clone();
    let kicked = *nemesis.kicked.borrow();
    let seconds = nemesis.started.elapsed().as_secs_f64();
    let faults = nemesis.faults.borrow().clone();
    let restarts = *nemesis.restarts.borrow();
    let offsets = nemesis.offsets.borrow().clone();
    let journal = nemesis.journal.borrow().join("\n");
    drop(nemesis);
    cluster.stop().expect("stop the cluster");

    let bytes = std::fs::read(&image_path).expect("read the shared disk image");
    let logs =
        nemesis::read_logs(&scratch.path().join("nemesis"), &offsets).expect("read the logs");
    let report = nemesis::check(&bytes, region_bytes, disks, &logs);
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "== nemesis, fencing {}: {seconds:.0} s, {} workers in {} incarnations ==",
        describe(mode),
        NODES as u64 * owners,
        logs.len()
    );
    let _ = writeln!(
        summary,
        "faults: {}; node restarts {restarts}; {} {fence_events}; nemesis errors {}",
        faults
            .iter()
            .map(|(fault, count)| format!("{fault:?} {count}"))
            .collect::<Vec<_>>()
            .join(", "),
        if mode == FenceMode::Watchdog {
            "fence_lockmgr_watchdog runs that reported a node fenced"
        } else {
            "fence requests"
        },
        errors.len()
    );
    if mode == FenceMode::Watchdog {
        let _ = writeln!(
            summary,
            "watchdog resets {watchdog_resets}; watchdog did NOT fire when it had to: {}; \
             nodes power-cycled after being kicked out {kicked}",
            watchdog_misses.len()
        );
    }
    summary.push_str(&report.render());
    println!("{journal}\n{summary}");
    if let Ok(path) = std::env::var("NEMESIS_REPORT") {
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, summary.as_bytes()));
    }
    assert!(errors.is_empty(), "the nemesis failed to act: {errors:?}");
    Outcome {
        report,
        faults,
        restarts,
        fence_events,
        watchdog_resets,
        watchdog_misses,
        seconds,
        summary,
    }
}

fn describe(mode: FenceMode) -> &'static str {
    match mode {
        FenceMode::Power => "on",
        FenceMode::Watchdog => "by watchdog",
        FenceMode::Off => "OFF (control)",
    }
}

/// What every fenced run must show: each fault kind injected, grants, fences reported, and no
/// violation.
fn assert_fenced_run(outcome: &Outcome, fencing: &str) {
    for fault in ALL_FAULTS {
        assert!(
            outcome.faults.get(&fault).copied().unwrap_or(0) > 0,
            "{fault:?} was never injected\n{}",
            outcome.summary
        );
    }
    assert!(
        outcome.report.grants > 0,
        "no grant at all\n{}",
        outcome.summary
    );
    assert!(
        outcome.fence_events > 0,
        "nothing was reported fenced ({fencing})\n{}",
        outcome.summary
    );
    assert!(
        outcome.report.violations.is_empty(),
        "violations with {fencing}\n{}",
        outcome.summary
    );
}

#[test]
#[ignore = "boots a 3-node QEMU cluster with a shared disk; run by tests/cluster/run-nemesis.sh"]
fn nemesis_with_fencing() {
    let outcome = run(FenceMode::Power, env_u64("NEMESIS_SECONDS", 0));
    assert_fenced_run(&outcome, "power fencing");
    println!(
        "nemesis with fencing: {:.0} s, {} node restarts, 0 violations",
        outcome.seconds, outcome.restarts
    );
}

#[test]
#[ignore = "boots a 3-node QEMU cluster with watchdogs; run by tests/cluster/run-nemesis.sh"]
fn nemesis_with_watchdog_fencing() {
    let outcome = run(FenceMode::Watchdog, env_u64("NEMESIS_SECONDS", 0));
    assert_fenced_run(&outcome, "watchdog fencing");
    assert!(
        outcome.watchdog_misses.is_empty(),
        "the watchdog did not fire when it had to: {:?}\n{}",
        outcome.watchdog_misses,
        outcome.summary
    );
    assert!(
        outcome.watchdog_resets > 0,
        "no node was powered off by its watchdog\n{}",
        outcome.summary
    );
    println!(
        "nemesis with watchdog fencing: {:.0} s, {} node restarts, {} watchdog resets, 0 violations",
        outcome.seconds, outcome.restarts, outcome.watchdog_resets
    );
}

#[test]
#[ignore = "boots a 3-node QEMU cluster without fencing; run by tests/cluster/run-nemesis.sh"]
fn nemesis_control_without_fencing() {
    let outcome = run(FenceMode::Off, 0);
    assert!(
        outcome.report.grants > 0,
        "no grant at all\n{}",
        outcome.summary
    );
    assert!(
        !outcome.report.violations.is_empty(),
        "the control run without fencing showed no violation: the checker cannot fail\n{}",
        outcome.summary
    );
    println!(
        "control without fencing: {} violations, as it must",
        outcome.report.violations.len()
    );
}
