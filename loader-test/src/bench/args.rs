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
    costs), and libvirt's lockd.so and (when /usr/sbin/sanlock is installed) sanlock.so.";

/// `bench --help`, examples.
pub const AFTER_HELP: &str = "Examples:\n  \
    lockmgr-loader-test bench\n  \
    lockmgr-loader-test bench --plugin target/release/libfile.so --plugin lockd --iterations 2000\n  \
    lockmgr-loader-test bench --plugin target/release/libnop.so --disks 1,64 --pinning pinned --json";

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
    /// Seconds one batch may take before its worker is given up.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub timeout: u64,
    #[command(flatten)]
    pub tools: ToolArgs,
}
