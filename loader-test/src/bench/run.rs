//! The coordinator: one worker process per (plugin, mode, pinning), driven in interleaved rounds,
//! its samples collected into series.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::bench::args::{BenchArgs, LockMode, Pinning};
use crate::bench::floor::BUILTIN_FLOOR;
use crate::bench::render::render;
use crate::bench::report::{BenchReport, Series, percentile, ratios};
use crate::bench::worker::Reply;
use crate::daemons::{self, PluginSpec, Profile};
use crate::harness_sys;

/// sanlock.so's limit of resources per domain (`SANLK_MAX_RESOURCES`).
pub(super) const SANLOCK_MAX_RESOURCES: usize = 8;

#[derive(Debug, Clone)]
struct WorkerSpec {
    plugin: Option<PluginSpec>,
    mode: Option<LockMode>,
    pinned: bool,
}

impl WorkerSpec {
    pub(super) fn label(&self) -> String {
        self.plugin
            .as_ref()
            .map_or_else(|| "floor".to_owned(), |p| p.label.clone())
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
