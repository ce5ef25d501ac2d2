//! The command line of `bench`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::matrix::ToolArgs;

/// `bench --help`, long form.
pub const LONG_ABOUT: &str = "Times libvirt's resume/pause cycle against each plugin: New(0, uri) + \
    N×AddResource + Acquire(state, 0) + Free, then New(0, NULL) + N×AddResource + \
    Release(&state) + Free, for an owner registered by a forked pre-exec child — for N = 1, 16 \
    and 64 disks (and 8 when sanlock.so is timed: it takes at most 8 per domain), median and \
    p99 per cycle.\n\n\
    The floor is the least a daemon-based plugin can do for the same cycle: one unix-socket round \
    trip to a peer process that takes N raw OFD locks, and one in which it drops them.\n\n\
    Each plugin gets its daemon started by the command (virtlockd for lockd.so in a private \
    mount namespace, lockmgrd for file.so, a sanlock daemon without a watchdog for sanlock.so, \
    whose ~20 s lockspace join is printed and never timed), once with a lockspace directory and \
    once locking the disks themselves (lockd, file). All of them run interleaved in one run, pinned to one CPU (as taskset -c 0: \
    a round trip then costs a context switch) and unpinned (the peer may wake an idle CPU), and \
    the ratios file ÷ floor and lockd ÷ file are printed. Progress goes to stderr. Without \
    --plugin: nop.so and file.so built beside this binary (nop shows what the harness itself \
    costs), and libvirt's lockd.so and (when /usr/sbin/sanlock is installed) sanlock.so.\n\n\
    --suite adds the figures against the real limits (default: cycle alone, as above): ipc-floor \
    (the IPC-inclusive floor in the same rounds: framed request/reply like lockmgrd's + N OFD \
    locks; file ÷ ipc-floor, target <= 2 at N=64), storm (--storm-domains × --storm-disks \
    acquiring at once per plugin: wall, per-domain p50/p99, lockd ÷ file, target >= 10), scale \
    (file.so or dlm.so + lockmgrd holding --scale-locks locks: latency as the table grows, RSS, \
    restart time — for dlm.so the adoption of every orphan — target < 2 s), all.";

/// `bench --help`, examples.
pub const AFTER_HELP: &str = "Examples:\n  \
    lockmgr-loader-test bench\n  \
    lockmgr-loader-test bench --plugin target/release/libfile.so --plugin lockd --iterations 2000\n  \
    lockmgr-loader-test bench --plugin target/release/libnop.so --disks 1,64 --pinning pinned --json\n  \
    lockmgr-loader-test bench --plugin target/release/libnop.so --plugin target/release/libfile.so \
    --plugin lockd --suite all\n  \
    lockmgr-loader-test bench --plugin target/release/libfile.so --suite storm,scale --storm-domains 50 \
    --scale-locks 2000";

/// What `bench` measures (`--suite`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// libvirt's resume/pause cycle per plugin against today's floor (the default).
    Cycle,
    /// The cycle run plus, in the same interleaved rounds, the IPC-inclusive floor
    /// (`ipc-floor`: framed request and reply like the plugin's to lockmgrd, N OFD locks in the
    /// peer) and its parts (`ofd-raw`: N OFD lock+unlock in one process; `2rtt`: two framed
    /// round trips): file ÷ ipc-floor per N.
    IpcFloor,
    /// A boot storm on one host: `--storm-domains` domains × `--storm-disks` disks acquiring at
    /// once, per plugin (nop, file, lockd): wall time, per-domain p50/p99, lockd ÷ file.
    Storm,
    /// file.so or dlm.so + lockmgrd holding `--scale-locks` locks: acquire/release latency as
    /// the table grows, lockmgrd's RSS, its restart time with every lock held by live owners
    /// (for dlm.so: the adoption of every orphan).
    Scale,
    /// Every suite.
    All,
}

/// Which CPU placements to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pinning {
    /// Both pinned and unpinned.
    Both,
    /// Everything on one CPU (`--cpu`).
    Pinned,
    /// All CPUs.
    Unpinned,
}

/// Whether the plugin locks `<lockspace dir>/<sha256>` or the disk itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LockMode {
    /// `file_lockspace_dir` set.
    Lockspace,
    /// No lockspace directory: the disk image itself is locked.
    Direct,
}

impl LockMode {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            LockMode::Lockspace => "lockspace",
            LockMode::Direct => "direct",
        }
    }
}

/// Arguments of `bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A plugin to time; repeat for each. PATH, NAME or PROFILE=PATH.
    #[arg(long = "plugin", value_name = "PLUGIN")]
    pub plugins: Vec<String>,
    /// Disk counts per context (default 1,16,64; 1,8,16,64 when sanlock.so is timed: it holds
    /// at most 8 resources per domain).
    #[arg(long, value_delimiter = ',')]
    pub disks: Option<Vec<usize>>,
    /// Timed cycles per plugin, mode, pinning and disk count.
    #[arg(long, default_value_t = 1000)]
    pub iterations: usize,
    /// Interleaved rounds the cycles are split into.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Untimed cycles per worker and disk count before the rounds.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// Pinned, unpinned, or both.
    #[arg(long, value_enum, default_value = "both")]
    pub pinning: Pinning,
    /// The CPU pinned runs use.
    #[arg(long, default_value_t = 0)]
    pub cpu: usize,
    /// Lock modes for plugins that have a lockspace directory option (lockd, file).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "lockspace,direct"
    )]
    pub modes: Vec<LockMode>,
    /// Leave out the floor.
    #[arg(long)]
    pub no_floor: bool,
    /// Use this program as the floor instead of the built-in one (words split on spaces). It
    /// speaks the worker protocol on stdin / stdout (`run N COUNT` → one JSON line of samples,
    /// `quit`) and is given `--disks LIST`, plus `--cpu N` when pinned and `--disk-dir DIR` with
    /// --disk-dir. E.g. the DLM floor of tests/cluster: `dlm-floor worker --lockspace libvirt`.
    #[arg(long, value_name = "COMMAND")]
    pub floor_command: Option<String>,
    /// Create every worker's disk images in DIR, as `n<N>-<i>.img` (i from 000), instead of in
    /// each worker's scratch directory, so that a floor or another machine can name the same
    /// resources (the DLM names a disk after the sha256 of its path). Workers never run at the
    /// same time and every cycle ends with its disks released, so they can share them.
    #[arg(long, value_name = "DIR")]
    pub disk_dir: Option<PathBuf>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file (with the table or --json on stdout).
    #[arg(long, value_name = "FILE")]
    pub json_file: Option<PathBuf>,
    /// Seconds one batch may take before its worker is given up.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub timeout: u64,
    /// What to measure: cycle (default), ipc-floor, storm, scale, all; comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "cycle")]
    pub suite: Vec<Suite>,
    /// Boot storm: domains starting at once.
    #[arg(long, default_value_t = 200)]
    pub storm_domains: usize,
    /// Boot storm: disks per domain.
    #[arg(long, default_value_t = 4)]
    pub storm_disks: usize,
    /// Boot storm: threads of the plugin's host process making the Acquire calls (0: one per
    /// domain, every Acquire issued at once; libvirtd's default `max_workers` is 20).
    #[arg(long, default_value_t = 0)]
    pub storm_threads: usize,
    /// Boot storm: storms per plugin and mode, interleaved (each: acquire all, then release all).
    #[arg(long, default_value_t = 10)]
    pub storm_rounds: usize,
    /// Scale: locks held through file.so or dlm.so + lockmgrd at the end.
    #[arg(long, default_value_t = 10_000)]
    pub scale_locks: usize,
    /// Scale: disks per owner (domain); one Acquire carries at most 1024.
    #[arg(long, default_value_t = 1000)]
    pub scale_per_owner: usize,
    /// Scale: probe cycles (acquire + release of one more domain's disk) at each table size.
    #[arg(long, default_value_t = 200)]
    pub scale_probes: usize,
    #[command(flatten)]
    pub tools: ToolArgs,
}

impl BenchArgs {
    /// Whether `suite` was asked for (`all` includes every one; `ipc-floor` implies the cycle).
    pub(super) fn wants(&self, suite: Suite) -> bool {
        self.suite.contains(&Suite::All)
            || self.suite.contains(&suite)
            || (suite == Suite::Cycle && self.suite.contains(&Suite::IpcFloor))
    }
}
