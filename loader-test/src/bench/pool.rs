//! The coordinator's side of its worker processes: what each is for, starting one (and waiting
//! for it to be ready), the line protocol with it, the order in which a round asks them, and
//! stopping them with their logs.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::bench::args::{BenchArgs, LockMode};
use crate::bench::floor::FloorKind;
use crate::bench::report::BenchReport;
use crate::bench::worker::Reply;
use crate::daemons::{PluginSpec, Profile};
use crate::harness_sys;

/// Numbers the workers' scratch directories (`w0`, `w1`, …) over the whole run.
static WORKER_DIRS: AtomicUsize = AtomicUsize::new(0);

/// What starting a worker takes: this executable, the run's arguments, its scratch tree.
pub(super) struct Launch<'a> {
    pub(super) exe: &'a Path,
    pub(super) args: &'a BenchArgs,
    pub(super) scratch: &'a Path,
}

/// What a worker is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Job {
    /// Cycles (`run N COUNT`).
    Cycle,
    /// Boot storms (`storm`).
    Storm,
    /// The scale run (`scale`).
    Scale,
}

#[derive(Debug, Clone)]
pub(super) struct WorkerSpec {
    pub(super) plugin: Option<PluginSpec>,
    pub(super) mode: Option<LockMode>,
    pub(super) pinned: bool,
    /// Without a plugin: which floor.
    pub(super) floor: FloorKind,
    pub(super) job: Job,
}

impl WorkerSpec {
    pub(super) fn cycle(
        plugin: Option<PluginSpec>,
        mode: Option<LockMode>,
        pinned: bool,
    ) -> WorkerSpec {
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

    pub(super) fn mode_str(&self) -> String {
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

/// A worker process, as the coordinator holds it.
pub(super) struct Worker {
    pub(super) spec: WorkerSpec,
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::Receiver<Reply>,
    stderr: std::thread::JoinHandle<String>,
    /// Why it stopped being asked, once it failed.
    pub(super) failed: Option<String>,
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

    /// A batch of `cycles` cycles with `disks` disks: their times.
    pub(super) fn run(
        &mut self,
        disks: usize,
        cycles: usize,
        timeout: Duration,
    ) -> Result<Vec<u64>, String> {
        match self.ask(&format!("run {disks} {cycles}"), timeout)? {
            Reply::Samples { ns } => Ok(ns),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// One command, and its answer.
    pub(super) fn ask(&mut self, command: &str, timeout: Duration) -> Result<Reply, String> {
        writeln!(self.stdin, "{command}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("the worker stopped listening: {e}"))?;
        self.receive(timeout)
    }

    /// Asks the worker to clean up and exit; then sweeps its process group.
    fn stop(mut self) -> String {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        drop(self.stdin);
        let pid = self.child.id();
        let exited =
            harness_sys::wait_exit_keep_zombie(pid, Duration::from_secs(15)).unwrap_or(false);
        harness_sys::signal_process_group(pid, rustix::process::Signal::KILL);
        harness_sys::untrack_group(pid);
        let _ = self.child.wait();
        let mut log = self.stderr.join().unwrap_or_default();
        if !exited {
            log.push_str("\n(the worker did not exit within 15 s and was killed)");
        }
        log
    }
}

/// Starts one worker per spec and waits for each to be ready; those that cannot start are
/// reported in `errors`.
pub(super) fn start_workers(
    launch: &Launch<'_>,
    specs: Vec<WorkerSpec>,
    disks: &[usize],
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
        let dir = launch
            .scratch
            .join(format!("w{}", WORKER_DIRS.fetch_add(1, Ordering::Relaxed)));
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
        match Worker::start(launch.exe, spec, launch.args, disks, &dir) {
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
pub(super) fn stop_workers(workers: Vec<Worker>, errors: &mut Vec<String>) {
    for worker in workers {
        let label = worker.spec.describe();
        let failed = worker.failed.clone();
        let log = worker.stop();
        if let Some(err) = failed {
            errors.push(format!("{label}: {err}{}", log_suffix(&log)));
        }
    }
}

/// Asks each live worker (not failed, no interrupt) in turn, `ask(its index, it)`: the order
/// rotates by one each round, so that no worker is always first.
pub(super) fn in_turn(
    workers: &mut [Worker],
    round: usize,
    mut ask: impl FnMut(usize, &mut Worker),
) {
    let count = workers.len();
    for k in 0..count {
        let index = (k + round) % count;
        let worker = &mut workers[index];
        if worker.failed.is_some() || harness_sys::terminating() {
            continue;
        }
        ask(index, worker);
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
