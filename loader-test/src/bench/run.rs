//! The coordinator: one worker process per (plugin, mode, pinning), driven in interleaved rounds,
//! its samples collected into series.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::bench::args::{BenchArgs, LockMode, Pinning, Suite};
use crate::bench::floor::{BUILTIN_FLOOR, FloorKind};
use crate::bench::render::render;
use crate::bench::report::{BenchReport, Series, percentile, ratios};
use crate::bench::storm::{self, StormSample};
use crate::bench::worker::Reply;
use crate::daemons::{self, PluginSpec, Profile};
use crate::harness_sys;

/// Numbers the workers' scratch directories (`w0`, `w1`, …) over the whole run.
static WORKER_DIRS: AtomicUsize = AtomicUsize::new(0);

/// sanlock.so's limit of resources per domain (`SANLK_MAX_RESOURCES`).
pub(super) const SANLOCK_MAX_RESOURCES: usize = 8;

/// What a worker is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    /// Cycles (`run N COUNT`).
    Cycle,
    /// Boot storms (`storm`).
    Storm,
    /// The scale run (`scale`).
    Scale,
}

#[derive(Debug, Clone)]
struct WorkerSpec {
    plugin: Option<PluginSpec>,
    mode: Option<LockMode>,
    pinned: bool,
    /// Without a plugin: which floor.
    floor: FloorKind,
    job: Job,
}

impl WorkerSpec {
    fn cycle(plugin: Option<PluginSpec>, mode: Option<LockMode>, pinned: bool) -> WorkerSpec {
        WorkerSpec {
            plugin,
            mode,
            pinned,
            floor: FloorKind::Classic,
            job: Job::Cycle,
        }
    }

    pub(super) fn label(&self) -> String {
        self.plugin
            .as_ref()
            .map_or_else(|| self.floor.label().to_owned(), |p| p.label.clone())
    }

    fn mode_str(&self) -> String {
        self.mode.map_or_else(|| "-".into(), |m| m.as_str().into())
    }

    pub(super) fn describe(&self) -> String {
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
    pub(super) fn start(
        exe: &Path,
        spec: WorkerSpec,
        args: &BenchArgs,
        disks: &[usize],
        scratch: &Path,
    ) -> Result<Worker, String> {
        std::fs::create_dir_all(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
        let external = match (&spec.plugin, &args.floor_command) {
            (None, Some(line)) if spec.floor == FloorKind::Classic => {
                Some(line.split_whitespace().collect::<Vec<_>>())
            }
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
                if spec.floor != FloorKind::Classic {
                    command.arg("--floor-kind").arg(spec.floor.as_str());
                }
            }
            (None, Some(_)) => {}
        }
        if let Some(mode) = spec.mode {
            command.arg("--mode").arg(mode.as_str());
        }
        if spec.pinned {
            command.arg("--cpu").arg(args.cpu.to_string());
        }
        if !disks.is_empty() {
            let disks: Vec<String> = disks.iter().map(ToString::to_string).collect();
            command.arg("--disks").arg(disks.join(","));
        }
        if let Some(dir) = &args.disk_dir {
            command.arg("--disk-dir").arg(dir);
        }
        if external.is_none() {
            command.args(args.tools.tools().to_args());
        }
        match spec.job {
            Job::Cycle => {}
            Job::Storm => {
                command
                    .arg("--storm-domains")
                    .arg(args.storm_domains.max(1).to_string())
                    .arg("--storm-disks")
                    .arg(args.storm_disks.to_string())
                    .arg("--storm-threads")
                    .arg(args.storm_threads.to_string());
            }
            Job::Scale => {
                command
                    .arg("--scale-locks")
                    .arg(args.scale_locks.to_string())
                    .arg("--scale-per-owner")
                    .arg(args.scale_per_owner.to_string())
                    .arg("--scale-probes")
                    .arg(args.scale_probes.to_string());
            }
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

    pub(super) fn run(
        &mut self,
        disks: usize,
        cycles: usize,
        timeout: Duration,
    ) -> Result<Vec<u64>, String> {
        writeln!(self.stdin, "run {disks} {cycles}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("the worker stopped listening: {e}"))?;
        match self.receive(timeout)? {
            Reply::Samples { ns } => Ok(ns),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// One command whose answer is not a batch of samples (`storm`, `scale`).
    fn ask(&mut self, command: &str, timeout: Duration) -> Result<Reply, String> {
        writeln!(self.stdin, "{command}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("the worker stopped listening: {e}"))?;
        self.receive(timeout)
    }

    /// Asks the worker to clean up and exit; then sweeps its process group.
    pub(super) fn stop(mut self) -> String {
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
            if report.series.is_empty() && report.storm.is_empty() && report.scale.is_empty() {
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
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    harness_sys::kill_groups_on_interrupt()
        .map_err(|e| format!("cannot set up the interrupt handler: {e}"))?;
    let scratch = tempfile::Builder::new()
        .prefix("lockmgr-bench-")
        .tempdir_in(scratch_base())
        .map_err(|e| format!("cannot create a scratch directory: {e}"))?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let mut report = BenchReport {
        iterations: 0,
        rounds: 0,
        pinned_cpu: args.cpu,
        unpinned_cpus: harness_sys::online_cpus(),
        series: Vec::new(),
        ratios: Vec::new(),
        errors: Vec::new(),
        notes: Vec::new(),
        floor: args
            .floor_command
            .as_ref()
            .map_or_else(|| BUILTIN_FLOOR.to_owned(), |c| format!("`{c}`")),
        floors: Vec::new(),
        storm: Vec::new(),
        storm_ratios: Vec::new(),
        scale: Vec::new(),
    };
    if args.wants(Suite::Cycle) {
        run_cycles(args, &plugins, &exe, scratch.path(), timeout, &mut report)?;
    }
    if args.wants(Suite::Storm) && !harness_sys::terminating() {
        run_storms(args, &plugins, &exe, scratch.path(), timeout, &mut report);
    }
    if args.wants(Suite::Scale) && !harness_sys::terminating() {
        run_scale(args, &plugins, &exe, scratch.path(), timeout, &mut report);
    }
    if harness_sys::terminating() {
        return Err("interrupted: every worker and daemon killed, scratch removed".into());
    }
    Ok(report)
}

/// Starts one worker per spec and waits for each to be ready; those that cannot start are
/// reported in `errors`.
fn start_workers(
    exe: &Path,
    specs: Vec<WorkerSpec>,
    args: &BenchArgs,
    disks: &[usize],
    scratch: &Path,
    timeout: Duration,
    report: &mut BenchReport,
) -> Vec<Worker> {
    let mut workers: Vec<Worker> = Vec::new();
    for spec in specs {
        if harness_sys::terminating() {
            break;
        }
        let label = spec.describe();
        eprintln!("bench: starting {label}");
        let dir = scratch.join(format!("w{}", WORKER_DIRS.fetch_add(1, Ordering::Relaxed)));
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
        match Worker::start(exe, spec, args, disks, &dir) {
            Ok(mut worker) => match worker.receive(timeout) {
                Ok(Reply::Ready { detail }) => {
                    eprintln!("bench:   ready: {detail}");
                    if is_sanlock {
                        report.notes.push(format!("{label}: {detail}"));
                    }
                    workers.push(worker);
                }
                Ok(other) => {
                    report
                        .errors
                        .push(format!("{label}: unexpected first answer {other:?}"));
                    let _ = worker.stop();
                }
                Err(err) => {
                    let log = worker.stop();
                    report
                        .errors
                        .push(format!("{label}: {err}{}", log_suffix(&log)));
                }
            },
            Err(err) => report.errors.push(format!("{label}: {err}")),
        }
    }
    workers
}

/// Stops every worker, reporting those that failed.
fn stop_workers(workers: Vec<Worker>, errors: &mut Vec<String>) {
    for worker in workers {
        let label = worker.spec.describe();
        let failed = worker.failed.clone();
        let log = worker.stop();
        if let Some(err) = failed {
            errors.push(format!("{label}: {err}{}", log_suffix(&log)));
        }
    }
}

/// The cycle suite (and with `ipc-floor`, the IPC-inclusive floor and its parts in the same
/// rounds).
fn run_cycles(
    args: &BenchArgs,
    plugins: &[PluginSpec],
    exe: &Path,
    scratch: &Path,
    timeout: Duration,
    report: &mut BenchReport,
) -> Result<(), String> {
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
    let ipc = args.wants(Suite::IpcFloor);
    let mut specs = Vec::new();
    for &pinned in pinnings {
        if !args.no_floor {
            specs.push(WorkerSpec::cycle(None, None, pinned));
        }
        if ipc {
            for floor in [FloorKind::Ipc, FloorKind::OfdRaw, FloorKind::Rtt] {
                specs.push(WorkerSpec {
                    floor,
                    ..WorkerSpec::cycle(None, None, pinned)
                });
            }
        }
        for plugin in plugins {
            if plugin.profile.has_lockspace_mode() {
                for &mode in &args.modes {
                    specs.push(WorkerSpec::cycle(Some(plugin.clone()), Some(mode), pinned));
                }
            } else {
                specs.push(WorkerSpec::cycle(Some(plugin.clone()), None, pinned));
            }
        }
    }
    if ipc {
        report.floors = [FloorKind::Ipc, FloorKind::OfdRaw, FloorKind::Rtt]
            .into_iter()
            .map(|k| (k.label().to_owned(), k.describe().to_owned()))
            .collect();
    }
    let mut workers = start_workers(exe, specs, args, &disks, scratch, timeout, report);
    let result = measure(
        &mut workers,
        args,
        &disks,
        rounds,
        batch,
        timeout,
        &mut report.errors,
    );
    stop_workers(workers, &mut report.errors);
    if harness_sys::terminating() {
        return Err("interrupted: every worker and daemon killed, scratch removed".into());
    }
    let samples = result?;
    for ((label, mode, pinned, disks), mut ns) in samples {
        if ns.is_empty() {
            continue;
        }
        ns.sort_unstable();
        let sum: u128 = ns.iter().map(|&v| u128::from(v)).sum();
        let count = ns.len();
        report.series.push(Series {
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
    report.ratios = ratios(&report.series, plugins);
    report.iterations = rounds * batch;
    report.rounds = rounds;
    Ok(())
}

/// The boot storm: one worker per plugin and mode (unpinned), `--storm-rounds` storms each,
/// interleaved.
fn run_storms(
    args: &BenchArgs,
    plugins: &[PluginSpec],
    exe: &Path,
    scratch: &Path,
    timeout: Duration,
    report: &mut BenchReport,
) {
    let mut specs = Vec::new();
    for plugin in plugins
        .iter()
        .filter(|p| matches!(p.profile, Profile::Nop | Profile::File | Profile::Lockd))
    {
        let modes: Vec<Option<LockMode>> = if plugin.profile.has_lockspace_mode() {
            args.modes.iter().copied().map(Some).collect()
        } else {
            vec![None]
        };
        for mode in modes {
            specs.push(WorkerSpec {
                job: Job::Storm,
                ..WorkerSpec::cycle(Some(plugin.clone()), mode, false)
            });
        }
    }
    if specs.is_empty() {
        report
            .errors
            .push("storm: no nop, file or lockd plugin to storm".into());
        return;
    }
    eprintln!(
        "bench: boot storm, {} domains × {} disks, {} storms per plugin and mode",
        args.storm_domains, args.storm_disks, args.storm_rounds
    );
    let storm_timeout = timeout.max(Duration::from_secs(600));
    let mut workers = start_workers(exe, specs, args, &[], scratch, storm_timeout, report);
    let mut samples: Vec<Vec<StormSample>> = vec![Vec::new(); workers.len()];
    let rounds = args.storm_rounds.max(1);
    let started = Instant::now();
    for round in 0..rounds {
        let count = workers.len();
        for k in 0..count {
            let index = (k + round) % count;
            let worker = &mut workers[index];
            if worker.failed.is_some() || harness_sys::terminating() {
                continue;
            }
            match worker.ask("storm", storm_timeout) {
                Ok(Reply::Storm(sample)) => samples[index].push(sample),
                Ok(other) => worker.failed = Some(format!("storm: unexpected answer {other:?}")),
                Err(err) => worker.failed = Some(format!("storm {}: {err}", round + 1)),
            }
        }
        eprintln!(
            "bench: storm round {}/{rounds} done ({:.1} s)",
            round + 1,
            started.elapsed().as_secs_f64()
        );
    }
    for (worker, samples) in workers.iter().zip(&samples) {
        if !samples.is_empty() {
            report.storm.push(storm::row(
                worker.spec.label(),
                worker.spec.mode_str(),
                args.storm_disks,
                samples,
            ));
        }
    }
    stop_workers(workers, &mut report.errors);
    report.storm_ratios = storm::ratios(&report.storm, plugins);
}

/// Scale: file.so's workers (one per mode), one after the other.
fn run_scale(
    args: &BenchArgs,
    plugins: &[PluginSpec],
    exe: &Path,
    scratch: &Path,
    timeout: Duration,
    report: &mut BenchReport,
) {
    let Some(file) = plugins.iter().find(|p| p.profile == Profile::File) else {
        report
            .errors
            .push("scale: no file.so among the plugins".into());
        return;
    };
    let scale_timeout = timeout.max(Duration::from_secs(1800));
    for &mode in &args.modes {
        if harness_sys::terminating() {
            return;
        }
        eprintln!(
            "bench: scale, file.so {} mode, up to {} locks",
            mode.as_str(),
            args.scale_locks
        );
        let spec = WorkerSpec {
            job: Job::Scale,
            ..WorkerSpec::cycle(Some(file.clone()), Some(mode), false)
        };
        let mut workers = start_workers(exe, vec![spec], args, &[], scratch, scale_timeout, report);
        if let Some(worker) = workers.first_mut() {
            match worker.ask("scale", scale_timeout) {
                Ok(Reply::Scale(mut result)) => {
                    result.plugin = worker.spec.label();
                    result.mode = worker.spec.mode_str();
                    report.scale.push(result);
                }
                Ok(other) => worker.failed = Some(format!("scale: unexpected answer {other:?}")),
                Err(err) => worker.failed = Some(format!("scale: {err}")),
            }
        }
        stop_workers(workers, &mut report.errors);
    }
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
