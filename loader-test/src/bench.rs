//! `bench`: libvirt's resume/pause cycle, timed per plugin, against a floor.
//!
//! One cycle is what libvirtd does on `virsh resume` then `virsh suspend`: New(0, uri) +
//! N×AddResource + Acquire(saved state, 0) + Free, then New(0, NULL) + N×AddResource +
//! Release(&state) + Free. The owner was registered first by libvirt's pre-exec child (a real
//! fork, as in `matrix`).
//!
//! The **floor** is the least any daemon-based plugin can do for that cycle: one unix-socket
//! round trip to a peer process that takes N raw OFD locks, and one round trip in which it drops
//! them (its files already open).
//!
//! Every (plugin, mode, pinning) runs in a worker process of its own, with its own daemon; the
//! coordinator drives all workers in interleaved rounds (a batch of cycles each, in rotating
//! order), so that load from elsewhere on the machine falls on every plugin alike. Pinned
//! workers and their daemons run on one CPU (as `taskset -c 0`); unpinned ones on all.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lockmgr::host::{self, ForkedOwner, Plugin, RegisterOutcome};
use lockmgr::{Access, AcquireFlags, Domain, LockFailureAction, NewFlags, Resource, Uuid};
use serde::{Deserialize, Serialize};

use crate::daemons::{self, Layout, PluginEnv, PluginSpec, Profile};
use crate::harness_sys;
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
    fn as_str(self) -> &'static str {
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

/// Arguments of `__bench-worker`.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// `floor` or a plugin path.
    #[arg(long)]
    plugin: Option<PathBuf>,
    #[arg(long)]
    profile: Option<String>,
    #[arg(long)]
    floor: bool,
    #[arg(long, value_enum)]
    mode: Option<LockMode>,
    /// Pin to this CPU; absent = all CPUs.
    #[arg(long)]
    cpu: Option<usize>,
    #[arg(long, value_delimiter = ',')]
    disks: Vec<usize>,
    #[arg(long)]
    scratch: PathBuf,
    #[arg(long)]
    disk_dir: Option<PathBuf>,
    #[command(flatten)]
    tools: ToolArgs,
}

/// Arguments of `__bench-floor`.
#[derive(clap::Args, Debug)]
pub struct FloorArgs {
    #[arg(long)]
    socket: PathBuf,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    files: usize,
}

/// What a worker writes back, one JSON line per command.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Reply {
    Ready { detail: String },
    Samples { ns: Vec<u64> },
    Error { message: String },
}

/// One measured series.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// Column label: `floor` or the plugin's label.
    pub plugin: String,
    /// `lockspace`, `direct`, or `-` (floor, nop).
    pub mode: String,
    /// Pinned to one CPU.
    pub pinned: bool,
    /// Disks per context.
    pub disks: usize,
    /// Cycles timed.
    pub cycles: usize,
    /// Median per cycle, ns.
    pub median_ns: u64,
    /// 99th percentile per cycle (nearest rank), ns.
    pub p99_ns: u64,
    /// Mean per cycle, ns.
    pub mean_ns: u64,
    /// Fastest cycle, ns.
    pub min_ns: u64,
}

/// A ratio line.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// `lockd/file`, `file/floor` or `dlm/floor`.
    pub what: String,
    /// The mode of the plugins compared.
    pub mode: String,
    /// Disks per context.
    pub disks: usize,
    /// Pinned or not.
    pub pinned: bool,
    /// Ratio of the medians.
    pub median: f64,
    /// Ratio of the p99s.
    pub p99: f64,
    /// The target for this ratio, e.g. `>= 10` (at N = 64 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Whether the median meets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
}

/// Everything `bench --json` prints.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// Cycles per series.
    pub iterations: usize,
    /// Interleaved rounds.
    pub rounds: usize,
    /// CPU used by pinned runs.
    pub pinned_cpu: usize,
    /// CPUs used by unpinned runs.
    pub unpinned_cpus: Vec<usize>,
    /// Every series.
    pub series: Vec<Series>,
    /// The ratios.
    pub ratios: Vec<Ratio>,
    /// Workers that could not run, with why.
    pub errors: Vec<String>,
    /// What the table should say about some workers' setup (sanlock: no watchdog, the time its
    /// lockspace took to join, the disk counts it refused).
    pub notes: Vec<String>,
    /// What the floor is.
    pub floor: String,
}

/// sanlock.so's limit of resources per domain (`SANLK_MAX_RESOURCES`).
const SANLOCK_MAX_RESOURCES: usize = 8;

/// What the built-in floor does per cycle.
const BUILTIN_FLOOR: &str =
    "2 unix-socket round trips to a peer that takes N OFD locks, then drops them";

#[derive(Debug, Clone)]
struct WorkerSpec {
    plugin: Option<PluginSpec>,
    mode: Option<LockMode>,
    pinned: bool,
}

impl WorkerSpec {
    fn label(&self) -> String {
        self.plugin
            .as_ref()
            .map_or_else(|| "floor".to_owned(), |p| p.label.clone())
    }

    fn mode_str(&self) -> String {
        self.mode.map_or_else(|| "-".into(), |m| m.as_str().into())
    }

    fn describe(&self) -> String {
        format!(
            "{}/{}/{}",
            self.label(),
            self.mode_str(),
            if self.pinned { "pinned" } else { "unpinned" }
        )
    }
}

struct Worker {
    spec: WorkerSpec,
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::Receiver<Reply>,
    stderr: std::thread::JoinHandle<String>,
    failed: Option<String>,
}

impl Worker {
    fn start(
        exe: &Path,
        spec: WorkerSpec,
        args: &BenchArgs,
        disks: &[usize],
        scratch: &Path,
    ) -> Result<Worker, String> {
        std::fs::create_dir_all(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
        let external = match (&spec.plugin, &args.floor_command) {
            (None, Some(line)) => Some(line.split_whitespace().collect::<Vec<_>>()),
            _ => None,
        };
        let mut command = match external.as_deref() {
            Some([program, rest @ ..]) => {
                let mut command = Command::new(program);
                command.args(rest);
                command
            }
            Some([]) => return Err("--floor-command is empty".into()),
            None => {
                let mut command = Command::new(exe);
                command.arg("__bench-worker").arg("--scratch").arg(scratch);
                command
            }
        };
        match (&spec.plugin, &external) {
            (Some(plugin), _) => {
                command
                    .arg("--plugin")
                    .arg(&plugin.path)
                    .arg("--profile")
                    .arg(plugin.profile.as_str());
            }
            (None, None) => {
                command.arg("--floor");
            }
            (None, Some(_)) => {}
        }
        if let Some(mode) = spec.mode {
            command.arg("--mode").arg(mode.as_str());
        }
        if spec.pinned {
            command.arg("--cpu").arg(args.cpu.to_string());
        }
        let disks: Vec<String> = disks.iter().map(ToString::to_string).collect();
        command.arg("--disks").arg(disks.join(","));
        if let Some(dir) = &args.disk_dir {
            command.arg("--disk-dir").arg(dir);
        }
        if external.is_none() {
            command.args(args.tools.tools().to_args());
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| match &external {
                Some(words) => format!("cannot start the floor {}: {e}", words.join(" ")),
                None => format!("cannot start a worker: {e}"),
            })?;
        harness_sys::track_group(child.id());
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(reply) = serde_json::from_str::<Reply>(&line) {
                    if tx.send(reply).is_err() {
                        break;
                    }
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            text
        });
        Ok(Worker {
            spec,
            child,
            stdin,
            replies,
            stderr,
            failed: None,
        })
    }

    fn receive(&mut self, timeout: Duration) -> Result<Reply, String> {
        match self.replies.recv_timeout(timeout) {
            Ok(Reply::Error { message }) => Err(message),
            Ok(reply) => Ok(reply),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(format!("no answer within {} s", timeout.as_secs()))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten().map_or_else(
                    || "closed its output".to_owned(),
                    |s| format!("ended ({s})"),
                );
                Err(format!("the worker {status}"))
            }
        }
    }

    fn run(&mut self, disks: usize, cycles: usize, timeout: Duration) -> Result<Vec<u64>, String> {
        writeln!(self.stdin, "run {disks} {cycles}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("the worker stopped listening: {e}"))?;
        match self.receive(timeout)? {
            Reply::Samples { ns } => Ok(ns),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Asks the worker to clean up and exit; then sweeps its process group.
    fn stop(mut self) -> String {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        drop(self.stdin);
        let pid = self.child.id();
        let exited =
            harness_sys::wait_exit_keep_zombie(pid, Duration::from_secs(15)).unwrap_or(false);
        harness_sys::signal_process_group(pid, libc::SIGKILL);
        harness_sys::untrack_group(pid);
        let _ = self.child.wait();
        let mut log = self.stderr.join().unwrap_or_default();
        if !exited {
            log.push_str("\n(the worker did not exit within 15 s and was killed)");
        }
        log
    }
}

/// `bench`.
pub fn command(args: &BenchArgs) -> u8 {
    match run_bench(args) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(err) => {
                        eprintln!("lockmgr-loader-test bench: cannot encode JSON: {err}");
                        return crate::EXIT_FAIL;
                    }
                }
            } else {
                print!("{}", render(&report));
            }
            if report.series.is_empty() {
                crate::EXIT_FAIL
            } else {
                crate::EXIT_PASS
            }
        }
        Err(err) => {
            eprintln!("lockmgr-loader-test bench: {err}");
            if harness_sys::terminating() { 130 } else { 2 }
        }
    }
}

fn bench_plugins(args: &BenchArgs) -> Result<Vec<PluginSpec>, String> {
    if args.plugins.is_empty() {
        let defaults = daemons::default_plugins();
        if defaults.is_empty() && args.no_floor {
            return Err("nothing to time: no plugin found and --no-floor".into());
        }
        return Ok(defaults);
    }
    daemons::plugins_from_args(&args.plugins)
}

fn run_bench(args: &BenchArgs) -> Result<BenchReport, String> {
    let plugins = bench_plugins(args)?;
    let disks = args.disks.clone().unwrap_or_else(|| {
        if plugins.iter().any(|p| p.profile == Profile::Sanlock) {
            vec![1, SANLOCK_MAX_RESOURCES, 16, 64]
        } else {
            vec![1, 16, 64]
        }
    });
    if disks.is_empty() || disks.contains(&0) {
        return Err("--disks needs counts of at least 1".into());
    }
    let rounds = args.rounds.max(1);
    let iterations = args.iterations.max(1);
    let batch = iterations.div_ceil(rounds);
    let pinnings: &[bool] = match args.pinning {
        Pinning::Both => &[true, false],
        Pinning::Pinned => &[true],
        Pinning::Unpinned => &[false],
    };
    let mut specs = Vec::new();
    for &pinned in pinnings {
        if !args.no_floor {
            specs.push(WorkerSpec {
                plugin: None,
                mode: None,
                pinned,
            });
        }
        for plugin in &plugins {
            if plugin.profile.has_lockspace_mode() {
                for &mode in &args.modes {
                    specs.push(WorkerSpec {
                        plugin: Some(plugin.clone()),
                        mode: Some(mode),
                        pinned,
                    });
                }
            } else {
                specs.push(WorkerSpec {
                    plugin: Some(plugin.clone()),
                    mode: None,
                    pinned,
                });
            }
        }
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    harness_sys::kill_groups_on_interrupt()
        .map_err(|e| format!("cannot set up the interrupt handler: {e}"))?;
    let scratch = tempfile::Builder::new()
        .prefix("lockmgr-bench-")
        .tempdir_in(scratch_base())
        .map_err(|e| format!("cannot create a scratch directory: {e}"))?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let mut workers: Vec<Worker> = Vec::new();
    for (i, spec) in specs.into_iter().enumerate() {
        if harness_sys::terminating() {
            break;
        }
        let label = spec.describe();
        eprintln!("bench: starting {label}");
        let dir = scratch.path().join(format!("w{i}"));
        let is_sanlock = spec
            .plugin
            .as_ref()
            .is_some_and(|p| p.profile == Profile::Sanlock);
        if is_sanlock {
            eprintln!(
                "bench:   starting a sanlock daemon (-w 0: NO watchdog); its first drvInit joins \
                 the lockspace (~20 s, not timed)"
            );
        }
        match Worker::start(&exe, spec, args, &disks, &dir) {
            Ok(mut worker) => match worker.receive(timeout) {
                Ok(Reply::Ready { detail }) => {
                    eprintln!("bench:   ready: {detail}");
                    if is_sanlock {
                        notes.push(format!("{label}: {detail}"));
                    }
                    workers.push(worker);
                }
                Ok(other) => {
                    errors.push(format!("{label}: unexpected first answer {other:?}"));
                    let _ = worker.stop();
                }
                Err(err) => {
                    let log = worker.stop();
                    errors.push(format!("{label}: {err}{}", log_suffix(&log)));
                }
            },
            Err(err) => errors.push(format!("{label}: {err}")),
        }
    }
    let result = measure(
        &mut workers,
        args,
        &disks,
        rounds,
        batch,
        timeout,
        &mut errors,
    );
    for worker in workers {
        let label = worker.spec.describe();
        let failed = worker.failed.clone();
        let log = worker.stop();
        if let Some(err) = failed {
            errors.push(format!("{label}: {err}{}", log_suffix(&log)));
        }
    }
    if harness_sys::terminating() {
        return Err("interrupted: every worker and daemon killed, scratch removed".into());
    }
    let samples = result?;
    let mut series = Vec::new();
    for ((label, mode, pinned, disks), mut ns) in samples {
        if ns.is_empty() {
            continue;
        }
        ns.sort_unstable();
        let sum: u128 = ns.iter().map(|&v| u128::from(v)).sum();
        let count = ns.len();
        series.push(Series {
            plugin: label,
            mode,
            pinned,
            disks,
            cycles: count,
            median_ns: percentile(&ns, 50),
            p99_ns: percentile(&ns, 99),
            mean_ns: u64::try_from(sum / count as u128).unwrap_or(u64::MAX),
            min_ns: ns[0],
        });
    }
    let ratios = ratios(&series, &plugins);
    Ok(BenchReport {
        iterations: rounds * batch,
        rounds,
        pinned_cpu: args.cpu,
        unpinned_cpus: harness_sys::online_cpus(),
        series,
        ratios,
        errors,
        notes,
        floor: args
            .floor_command
            .as_ref()
            .map_or_else(|| BUILTIN_FLOOR.to_owned(), |c| format!("`{c}`")),
    })
}

fn log_suffix(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        String::new()
    } else {
        format!(
            " (worker log: {})",
            lines[lines.len().saturating_sub(3)..].join(" | ")
        )
    }
}

type SeriesKey = (String, String, bool, usize);

fn measure(
    workers: &mut [Worker],
    args: &BenchArgs,
    disks: &[usize],
    rounds: usize,
    batch: usize,
    timeout: Duration,
    errors: &mut Vec<String>,
) -> Result<BTreeMap<SeriesKey, Vec<u64>>, String> {
    if workers.is_empty() {
        return Err(format!(
            "no worker could start: {}",
            if errors.is_empty() {
                "nothing to run".to_owned()
            } else {
                errors.join("; ")
            }
        ));
    }
    let mut samples: BTreeMap<SeriesKey, Vec<u64>> = BTreeMap::new();
    if args.warmup > 0 {
        eprintln!("bench: warm-up, {} cycles per worker and N", args.warmup);
        for worker in workers.iter_mut() {
            for &n in disks {
                if let Err(err) = worker.run(n, args.warmup, timeout) {
                    worker.failed = Some(format!("warm-up at N={n}: {err}"));
                    break;
                }
            }
        }
    }
    let started = Instant::now();
    for round in 0..rounds {
        for &n in disks {
            let count = workers.len();
            for k in 0..count {
                let worker = &mut workers[(k + round) % count];
                if worker.failed.is_some() || harness_sys::terminating() {
                    continue;
                }
                match worker.run(n, batch, timeout) {
                    Ok(ns) => samples
                        .entry((
                            worker.spec.label(),
                            worker.spec.mode_str(),
                            worker.spec.pinned,
                            n,
                        ))
                        .or_default()
                        .extend(ns),
                    Err(err) => {
                        worker.failed = Some(format!("round {} at N={n}: {err}", round + 1))
                    }
                }
            }
        }
        let live = workers.iter().filter(|w| w.failed.is_none()).count();
        eprintln!(
            "bench: round {}/{rounds} done ({live} workers, {:.1} s)",
            round + 1,
            started.elapsed().as_secs_f64()
        );
    }
    for worker in workers.iter() {
        if let Some(err) = &worker.failed {
            eprintln!("bench: {} failed: {err}", worker.spec.describe());
        }
    }
    let _ = errors;
    Ok(samples)
}

/// Nearest-rank percentile (`pct` in 1..=100) of sorted values.
fn percentile(sorted: &[u64], pct: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (pct * sorted.len()).div_ceil(100);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// An issue's target for a ratio: its text and whether a median meets it.
type Target = (&'static str, fn(f64) -> bool);

/// `numerator ÷ denominator` (medians and p99s), described by the numerator's mode, disks and
/// pinning, with the target when one applies: its text and whether a median meets it.
fn ratio(numerator: &Series, denominator: &Series, target: Option<Target>) -> Ratio {
    let median = numerator.median_ns as f64 / denominator.median_ns.max(1) as f64;
    Ratio {
        what: format!("{}/{}", numerator.plugin, denominator.plugin),
        mode: numerator.mode.clone(),
        disks: numerator.disks,
        pinned: numerator.pinned,
        median,
        p99: numerator.p99_ns as f64 / denominator.p99_ns.max(1) as f64,
        target: target.map(|(text, _)| text.to_owned()),
        met: target.map(|(_, meets)| meets(median)),
    }
}

fn ratios(series: &[Series], plugins: &[PluginSpec]) -> Vec<Ratio> {
    let label_of = |profile: Profile| {
        plugins
            .iter()
            .find(|p| p.profile == profile)
            .map(|p| p.label.clone())
    };
    let find = |plugin: &str, mode: &str, pinned: bool, disks: usize| {
        series.iter().find(|s| {
            s.plugin == plugin && s.mode == mode && s.pinned == pinned && s.disks == disks
        })
    };
    let mut out = Vec::new();
    let file = label_of(Profile::File);
    let lockd = label_of(Profile::Lockd);
    let max_disks = series.iter().map(|s| s.disks).max().unwrap_or(0);
    for s in series.iter().filter(|s| Some(&s.plugin) == file.as_ref()) {
        let at_target = s.disks == 64 || (max_disks < 64 && s.disks == max_disks);
        if let Some(lockd) = lockd
            .as_deref()
            .and_then(|l| find(l, &s.mode, s.pinned, s.disks))
        {
            let target: Target = (">= 10", |m| m >= 10.0);
            out.push(ratio(lockd, s, at_target.then_some(target)));
        }
        if let Some(floor) = find("floor", "-", s.pinned, s.disks) {
            let target: Target = ("<= 2", |m| m <= 2.0);
            out.push(ratio(s, floor, at_target.then_some(target)));
        }
    }
    // dlm.so against the DLM floor (`--floor-command dlm-floor …`): the target, 1.5×,
    // holds at every N.
    let dlm = label_of(Profile::Dlm);
    for s in series.iter().filter(|s| Some(&s.plugin) == dlm.as_ref()) {
        if let Some(floor) = find("floor", "-", s.pinned, s.disks) {
            out.push(ratio(s, floor, Some(("<= 1.5", |m| m <= 1.5))));
        }
    }
    // sanlock.so beside file.so (direct mode: both lock per disk path, no lockspace option).
    let sanlock = label_of(Profile::Sanlock);
    for s in series
        .iter()
        .filter(|s| Some(&s.plugin) == sanlock.as_ref())
    {
        if let Some(file) = file
            .as_ref()
            .and_then(|l| find(l, "direct", s.pinned, s.disks))
        {
            out.push(ratio(s, file, None));
        }
    }
    out
}

fn human(ns: u64) -> String {
    let us = ns as f64 / 1000.0;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

/// The table and the ratio lines.
pub fn render(report: &BenchReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nresume/pause cycle: New(0, uri) + N×AddResource + Acquire(state) + Free, then \
         New(0, NULL) + N×AddResource + Release(&state) + Free"
    );
    let _ = writeln!(
        out,
        "{} cycles per row and placement, in {} interleaved rounds; floor = {}",
        report.iterations, report.rounds, report.floor
    );
    let cpus = report
        .unpinned_cpus
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let pinned_head = format!("pinned (taskset -c {})", report.pinned_cpu);
    let unpinned_head = format!("unpinned (CPUs {cpus})");
    let _ = writeln!(
        out,
        "\n{:<10} {:<10} {:>5}   {:^25}   {:^25}",
        "", "", "", pinned_head, unpinned_head
    );
    let _ = writeln!(
        out,
        "{:<10} {:<10} {:>5}   {:>12} {:>12}   {:>12} {:>12}",
        "plugin", "mode", "disks", "median", "p99", "median", "p99"
    );
    let mut rows: Vec<(String, String, usize)> = Vec::new();
    for s in &report.series {
        let key = (s.plugin.clone(), s.mode.clone(), s.disks);
        if !rows.contains(&key) {
            rows.push(key);
        }
    }
    // The floor, then nop (what the harness itself costs), then the plugins.
    let order = |plugin: &str| match plugin {
        "floor" => 0,
        "nop" => 1,
        _ => 2,
    };
    rows.sort_by(|a, b| (order(&a.0), &a.0, &a.1, a.2).cmp(&(order(&b.0), &b.0, &b.1, b.2)));
    for (plugin, mode, disks) in &rows {
        let cell = |pinned: bool| {
            report
                .series
                .iter()
                .find(|s| {
                    &s.plugin == plugin
                        && &s.mode == mode
                        && s.disks == *disks
                        && s.pinned == pinned
                })
                .map_or_else(
                    || ("-".to_owned(), "-".to_owned()),
                    |s| (human(s.median_ns), human(s.p99_ns)),
                )
        };
        let (pm, pp) = cell(true);
        let (um, up) = cell(false);
        let _ = writeln!(
            out,
            "{plugin:<10} {mode:<10} {disks:>5}   {pm:>12} {pp:>12}   {um:>12} {up:>12}"
        );
    }
    if !report.ratios.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<30}   {:>19}   {:>19}",
            "ratios: median (p99)", "pinned", "unpinned"
        );
        let mut keys: Vec<(String, String, usize)> = Vec::new();
        for r in &report.ratios {
            let key = (r.what.clone(), r.mode.clone(), r.disks);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys.sort_by(|a, b| (&a.1, &a.0, a.2).cmp(&(&b.1, &b.0, b.2)));
        for (what, mode, disks) in &keys {
            let find = |pinned: bool| {
                report.ratios.iter().find(|r| {
                    &r.what == what && &r.mode == mode && r.disks == *disks && r.pinned == pinned
                })
            };
            let text = |r: Option<&Ratio>| {
                r.map_or_else(
                    || "-".to_owned(),
                    |r| format!("{:.2}× ({:.2}×)", r.median, r.p99),
                )
            };
            let (pinned, unpinned) = (find(true), find(false));
            let target = pinned
                .or(unpinned)
                .and_then(|r| r.target.clone())
                .map_or_else(String::new, |t| {
                    let verdict = |r: Option<&Ratio>| match r.and_then(|r| r.met) {
                        Some(true) => "met",
                        Some(false) => "NOT met",
                        None => "-",
                    };
                    format!(
                        "   target {t}×: pinned {}, unpinned {}",
                        verdict(pinned),
                        verdict(unpinned)
                    )
                });
            let label = format!("{what:<12} {mode:<10} N={disks}");
            let _ = writeln!(
                out,
                "{label:<30}   {:>19}   {:>19}{target}",
                text(pinned),
                text(unpinned)
            );
        }
    }
    for note in &report.notes {
        let _ = writeln!(out, "\n{note}");
    }
    for err in &report.errors {
        let _ = writeln!(out, "\nnot measured: {err}");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The worker.

/// `__bench-worker`: sets up one plugin (or the floor), then runs batches on command.
pub fn worker_command(args: &WorkerArgs) -> u8 {
    let mut out = match crate::sys::take_stdout_for_events() {
        Ok(file) => file,
        Err(err) => {
            eprintln!("lockmgr-loader-test: cannot set up the reply stream: {err}");
            return crate::EXIT_FAIL;
        }
    };
    // One write per line: the pipe is unbuffered, and a batch's samples are thousands of tokens.
    let mut reply = |r: &Reply| {
        let mut line = serde_json::to_vec(r).unwrap_or_default();
        line.push(b'\n');
        let _ = out.write_all(&line);
        let _ = out.flush();
    };
    let cpus = match args.cpu {
        Some(cpu) => vec![cpu],
        None => harness_sys::online_cpus(),
    };
    if let Err(err) = harness_sys::set_affinity(&cpus) {
        reply(&Reply::Error {
            message: format!("pinning to CPUs {cpus:?}: {err}"),
        });
        return crate::EXIT_FAIL;
    }
    let mut subject = match Subject::set_up(args) {
        Ok(subject) => subject,
        Err(message) => {
            reply(&Reply::Error { message });
            return crate::EXIT_FAIL;
        }
    };
    // libvirtd always has libvirt.so.0 loaded. Without it, the host harness's lookup of
    // libvirt's error functions before every callback searches the library path (~50 µs a
    // call), which would be charged to plugins that do not link libvirt (file.so, nop.so) and
    // not to lockd.so, which does. (After set_up: the private /run is entered single-threaded.)
    let libvirt_loaded = !args.floor && harness_sys::preload(c"libvirt.so.0");
    reply(&Reply::Ready {
        detail: format!(
            "{}{}",
            subject.describe(&cpus),
            if libvirt_loaded {
                "; libvirt.so.0 loaded, as in libvirtd"
            } else {
                ""
            }
        ),
    });
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["run", n, count] => {
                let (Ok(n), Ok(count)) = (n.parse::<usize>(), count.parse::<usize>()) else {
                    reply(&Reply::Error {
                        message: format!("bad command '{line}'"),
                    });
                    continue;
                };
                match subject.run(n, count) {
                    Ok(ns) => reply(&Reply::Samples { ns }),
                    Err(message) => reply(&Reply::Error { message }),
                }
            }
            ["quit"] => break,
            _ => reply(&Reply::Error {
                message: format!("bad command '{line}'"),
            }),
        }
    }
    match subject.finish() {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("{err}");
            crate::EXIT_FAIL
        }
    }
}

enum Subject {
    Plugin(Box<PluginSubject>),
    Floor(FloorSubject),
}

struct PluginSubject {
    plugin: Option<Plugin>,
    env: PluginEnv,
    /// Per disk count: the registered owner, its domain, its disks, its last state.
    owners: BTreeMap<usize, BenchOwner>,
    /// Disk counts the plugin refused to register (sanlock: more than 8), with its message:
    /// not timed.
    refused: BTreeMap<usize, String>,
    mode: Option<LockMode>,
}

struct BenchOwner {
    process: ForkedOwner,
    domain: Domain,
    disks: Vec<Resource>,
    state: Option<String>,
}

struct FloorSubject {
    server: Child,
    stream: UnixStream,
}

fn bench_uuid(n: usize) -> Uuid {
    let mut bytes = *b"lockmgr-bench-\0\0";
    bytes[14] = u8::try_from(n & 0xff).unwrap_or(0);
    bytes[15] = u8::try_from((n >> 8) & 0xff).unwrap_or(0);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid(bytes)
}

impl Subject {
    fn set_up(args: &WorkerArgs) -> Result<Subject, String> {
        let layout = Layout::create(&args.scratch)
            .map_err(|e| format!("scratch {}: {e}", args.scratch.display()))?;
        let max = args.disks.iter().copied().max().unwrap_or(1);
        let disk_dir = args
            .disk_dir
            .clone()
            .unwrap_or_else(|| layout.disks.clone());
        if args.floor {
            let socket = layout.run.join("floor.sock");
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut server = Command::new(exe)
                .arg("__bench-floor")
                .arg("--socket")
                .arg(&socket)
                .arg("--dir")
                .arg(&layout.disks)
                .arg("--files")
                .arg(max.to_string())
                .stdin(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start the floor's peer: {e}"))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let stream = loop {
                if let Ok(stream) = UnixStream::connect(&socket) {
                    break stream;
                }
                if Instant::now() > deadline || matches!(server.try_wait(), Ok(Some(_))) {
                    let _ = server.kill();
                    let _ = server.wait();
                    return Err("the floor's peer did not come up".into());
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            return Ok(Subject::Floor(FloorSubject { server, stream }));
        }
        let path = args.plugin.clone().ok_or("--plugin or --floor")?;
        let profile = args
            .profile
            .as_deref()
            .and_then(Profile::from_name)
            .unwrap_or_else(|| Profile::discover(&path));
        let lockspace = args.mode == Some(LockMode::Lockspace);
        let tools = args.tools.tools();
        let env = daemons::prepare(profile, &path, &tools, &layout, lockspace)
            .map_err(|e| format!("setting up {profile}: {e}"))?;
        let mut plugin = Plugin::open(&path).map_err(|e| e.to_string())?;
        plugin
            .init(&env.config)
            .map_err(|e| format!("drvInit: {e}"))?;
        let mut owners = BTreeMap::new();
        let mut refused = BTreeMap::new();
        for (i, &n) in args.disks.iter().enumerate() {
            let mut disks = Vec::new();
            for d in 0..n {
                let file = disk_dir.join(format!("n{n}-{d:03}.img"));
                std::fs::write(&file, b"").map_err(|e| format!("{}: {e}", file.display()))?;
                disks.push(Resource::Disk {
                    path: file,
                    access: Access::Exclusive,
                });
            }
            let mut domain = Domain {
                uuid: bench_uuid(n),
                name: format!("bench-{n}"),
                id: u32::try_from(i + 1).unwrap_or(1),
                pid: 0,
                uri: Some("qemu:///system".into()),
            };
            let process = host::start_owner(&plugin, &domain, &disks, LockFailureAction::Default)
                .map_err(|e| format!("registering the owner of {n} disks: {e}"))?;
            if let RegisterOutcome::Failed { error, .. } = &process.outcome {
                // sanlock.so takes at most 8 resources per domain: larger N are reported as
                // refused (with its message) and not timed.
                if profile == Profile::Sanlock && n > SANLOCK_MAX_RESOURCES {
                    refused.insert(n, error.to_string());
                    continue;
                }
                return Err(format!(
                    "registering the owner of {n} disks, in the pre-exec child: {error}"
                ));
            }
            domain.pid = process.pid();
            owners.insert(
                n,
                BenchOwner {
                    process,
                    domain,
                    disks,
                    state: None,
                },
            );
        }
        Ok(Subject::Plugin(Box::new(PluginSubject {
            plugin: Some(plugin),
            env,
            owners,
            refused,
            mode: args.mode,
        })))
    }

    fn describe(&self, cpus: &[usize]) -> String {
        let placement = format!("CPUs {cpus:?}");
        match self {
            Subject::Floor(floor) => {
                format!("floor peer pid {}; {placement}", floor.server.id())
            }
            Subject::Plugin(p) => format!(
                "{}; {}; owners {}; {placement}{}",
                p.env.describe(),
                p.mode.map_or("no lockspace option", LockMode::as_str),
                p.owners
                    .iter()
                    .map(|(n, o)| format!("{n} disks: pid {}", o.process.pid()))
                    .collect::<Vec<_>>()
                    .join(", "),
                p.refused
                    .iter()
                    .map(|(n, why)| format!("; N={n} not timed: refused: {why}"))
                    .collect::<String>()
            ),
        }
    }

    fn run(&mut self, n: usize, count: usize) -> Result<Vec<u64>, String> {
        let mut out = Vec::with_capacity(count);
        match self {
            Subject::Floor(floor) => {
                let n16 = u16::try_from(n).map_err(|_| "too many disks".to_owned())?;
                let [lo, hi] = n16.to_le_bytes();
                let mut answer = [0u8; 1];
                for _ in 0..count {
                    let started = Instant::now();
                    for op in [b'L', b'U'] {
                        floor
                            .stream
                            .write_all(&[op, lo, hi])
                            .and_then(|()| floor.stream.read_exact(&mut answer))
                            .map_err(|e| format!("floor round trip: {e}"))?;
                        if answer[0] != b'k' {
                            return Err("the floor's peer could not lock its files".into());
                        }
                    }
                    out.push(elapsed_ns(started));
                }
            }
            Subject::Plugin(p) if p.refused.contains_key(&n) => {}
            Subject::Plugin(p) => {
                let plugin = p.plugin.as_ref().ok_or("plugin not loaded")?;
                let owner = p
                    .owners
                    .get_mut(&n)
                    .ok_or_else(|| format!("no owner for {n} disks"))?;
                let resume = owner.domain.clone();
                let mut pause = owner.domain.clone();
                pause.uri = None;
                for _ in 0..count {
                    let started = Instant::now();
                    {
                        let mut manager = plugin
                            .new_manager(&resume, NewFlags::default())
                            .map_err(|e| format!("resume New: {e}"))?;
                        for disk in &owner.disks {
                            manager
                                .add_resource(disk)
                                .map_err(|e| format!("resume AddResource: {e}"))?;
                        }
                        manager
                            .acquire(
                                owner.state.as_deref(),
                                AcquireFlags::default(),
                                LockFailureAction::Default,
                                false,
                            )
                            .map_err(|e| format!("resume Acquire ({n} disks): {e}"))?;
                    }
                    {
                        let mut manager = plugin
                            .new_manager(&pause, NewFlags::default())
                            .map_err(|e| format!("pause New: {e}"))?;
                        for disk in &owner.disks {
                            manager
                                .add_resource(disk)
                                .map_err(|e| format!("pause AddResource: {e}"))?;
                        }
                        owner.state = manager
                            .release(true)
                            .map_err(|e| format!("pause Release ({n} disks): {e}"))?;
                    }
                    out.push(elapsed_ns(started));
                }
            }
        }
        Ok(out)
    }

    fn finish(self) -> Result<(), String> {
        match self {
            Subject::Floor(mut floor) => {
                drop(floor.stream);
                let _ = floor.server.kill();
                let _ = floor.server.wait();
                Ok(())
            }
            Subject::Plugin(mut p) => {
                p.owners.clear();
                let mut problems = Vec::new();
                if let Some(mut plugin) = p.plugin.take() {
                    if let Err(err) = plugin.deinit() {
                        problems.push(err.to_string());
                    }
                }
                if let Err(err) = p.env.stop() {
                    problems.push(err);
                }
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(problems.join("; "))
                }
            }
        }
    }
}

fn elapsed_ns(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `__bench-floor`: accepts one connection; `L n` locks the first n files (OFD write lock on
/// byte 0), `U n` unlocks them; each answered with one byte.
pub fn floor_command(args: &FloorArgs) -> u8 {
    match floor_serve(args) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("lockmgr-loader-test __bench-floor: {err}");
            crate::EXIT_FAIL
        }
    }
}

fn floor_serve(args: &FloorArgs) -> Result<(), String> {
    let mut files = Vec::with_capacity(args.files);
    for i in 0..args.files {
        let path = args.dir.join(format!("floor-{i:03}.img"));
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        files.push(file);
    }
    let _ = std::fs::remove_file(&args.socket);
    let listener =
        UnixListener::bind(&args.socket).map_err(|e| format!("{}: {e}", args.socket.display()))?;
    let (mut stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    let mut request = [0u8; 3];
    loop {
        if stream.read_exact(&mut request).is_err() {
            return Ok(());
        }
        let n = usize::from(u16::from_le_bytes([request[1], request[2]])).min(files.len());
        let mut ok = true;
        for file in &files[..n] {
            let done = if request[0] == b'L' {
                harness_sys::ofd_lock(file.as_fd(), true)
            } else {
                harness_sys::ofd_unlock(file.as_fd()).map(|()| true)
            };
            ok &= done.unwrap_or(false);
        }
        stream
            .write_all(if ok { b"k" } else { b"e" })
            .map_err(|e| format!("reply: {e}"))?;
    }
}

/// Where the bench's scratch tree goes: `$TMPDIR` if set, else `/dev/shm`. lockmgrd keeps its
/// lock table under `/run`, which is tmpfs on a normal host; a disk-backed scratch dir would
/// time this machine's disk instead of the lock manager (the floor shares the same tree).
fn scratch_base() -> std::path::PathBuf {
    std::env::var_os("TMPDIR")
        .map(std::path::PathBuf::from)
        .filter(|dir| dir.is_dir())
        .or_else(|| Some(std::path::PathBuf::from("/dev/shm")).filter(|dir| dir.is_dir()))
        .unwrap_or_else(std::env::temp_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 99), 99);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[1, 2, 3], 50), 2);
        assert_eq!(percentile(&[], 50), 0);
    }

    #[test]
    fn bench_uuids_are_plausible() {
        assert!(bench_uuid(1).is_plausible());
        assert_ne!(bench_uuid(1), bench_uuid(64));
    }
}
