//! The coordinator: one subprocess per scenario × plugin cell, supervised, its events collected.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemons::{PluginSpec, Profile, SetupError, Tools};
use crate::harness_sys;
use crate::matrix::report::{Cell, CellEvent, MatrixReport, PluginColumn, ScenarioRow, Verdict};
use crate::matrix::sanlock::SharedSanlock;
use crate::scenario::{self, Scenario};

/// Options of `matrix`.
#[derive(Debug)]
pub struct MatrixOptions {
    /// The plugins (columns).
    pub plugins: Vec<PluginSpec>,
    /// Where the scenario files are.
    pub scenarios: PathBuf,
    /// Only these scenarios (by name), when not empty.
    pub only: Vec<String>,
    /// Where the daemons are.
    pub tools: Tools,
    /// Per-cell time limit.
    pub timeout: Duration,
    /// The agent that runs owners b, d, … of the `remote_profiles` columns.
    pub remote_node: Option<String>,
    /// The profiles whose cells use `remote_node`.
    pub remote_profiles: Vec<Profile>,
}

impl MatrixOptions {
    /// The agent for `plugin`'s cells, if its owners are split across machines.
    fn remote_for(&self, plugin: &PluginSpec) -> Option<&str> {
        self.remote_node
            .as_deref()
            .filter(|_| self.remote_profiles.contains(&plugin.profile))
    }
}

/// Runs the whole matrix; progress goes to stderr.
pub fn run_matrix(options: &MatrixOptions) -> Result<MatrixReport, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    let mut scenarios = scenario::load_dir(&options.scenarios).map_err(|e| e.to_string())?;
    if !options.only.is_empty() {
        for name in &options.only {
            if !scenarios.iter().any(|s| &s.name == name) {
                return Err(format!(
                    "no scenario '{name}' in {} (have: {})",
                    options.scenarios.display(),
                    scenarios
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        scenarios.retain(|s| options.only.contains(&s.name));
    }
    harness_sys::kill_groups_on_interrupt()
        .map_err(|e| format!("cannot set up the interrupt handler: {e}"))?;
    let scratch = tempfile::Builder::new()
        .prefix("lockmgr-matrix-")
        .tempdir()
        .map_err(|e| format!("cannot create a scratch directory: {e}"))?;
    let mut cells = Vec::new();
    let mut sanlock: Option<Result<SharedSanlock, SetupError>> = None;
    let total = scenarios.len() * options.plugins.len();
    for scenario in &scenarios {
        for plugin in &options.plugins {
            let dir = scratch
                .path()
                .join(format!("{}-{}", scenario.name, plugin.label));
            // sanlock's cells share one daemon whose lockspace is joined once (~20 s), except
            // those that crash the daemon: they get their own.
            let mut tools = options.tools.clone();
            let shared = plugin.profile == Profile::Sanlock
                && !scenario.restarts_daemon()
                && options.remote_for(plugin).is_none();
            if shared {
                let ready = sanlock.get_or_insert_with(|| {
                    SharedSanlock::start(&exe, plugin, &options.tools, scratch.path())
                });
                match ready {
                    Ok(ready) => tools.sanlock_shared = Some(ready.dirs.root.clone()),
                    Err(err) => {
                        eprintln!(
                            "[{:>3}/{total}] {:<32} {:<8} {} {err}",
                            cells.len() + 1,
                            scenario.name,
                            plugin.label,
                            if err.cannot_run { "…" } else { "✗" }
                        );
                        cells.push(Cell {
                            scenario: scenario.name.clone(),
                            plugin: plugin.label.clone(),
                            verdict: if err.cannot_run {
                                Verdict::CannotRun
                            } else {
                                Verdict::Fail
                            },
                            reason: format!("setting up sanlock: {err}"),
                            setup: String::new(),
                            steps: Vec::new(),
                            seconds: 0.0,
                            output: String::new(),
                        });
                        continue;
                    }
                }
            }
            eprint!(
                "[{:>3}/{total}] {:<32} {:<8} ",
                cells.len() + 1,
                scenario.name,
                plugin.label
            );
            let cell = run_cell_subprocess(&exe, scenario, plugin, &tools, &dir, options);
            eprintln!(
                "{} {}",
                cell.verdict.mark(),
                if cell.verdict == Verdict::Pass {
                    format!("({:.1} s)", cell.seconds)
                } else {
                    cell.reason.clone()
                }
            );
            let _ = std::fs::remove_dir_all(&dir);
            cells.push(cell);
            if harness_sys::terminating() {
                if let Some(Ok(shared)) = sanlock.as_mut() {
                    let _ = shared.daemon.stop();
                }
                return Err(
                    "interrupted: the running cell and its daemon were killed, scratch removed"
                        .into(),
                );
            }
        }
    }
    let sanlock_note = sanlock.map(|shared| match shared {
        Ok(mut shared) => {
            let stopped = shared.daemon.stop();
            harness_sys::untrack_group(shared.pid);
            match stopped {
                Ok(()) => shared.note,
                Err(err) => format!("{}; BUT: {err}", shared.note),
            }
        }
        Err(err) => format!("the run's sanlock daemon could not be set up: {err}"),
    });
    let restart_note = "cells that crash the daemon (restart-daemon) start a daemon of their own \
                        and join its lockspace first";
    Ok(MatrixReport {
        plugins: options
            .plugins
            .iter()
            .map(|p| PluginColumn {
                label: p.label.clone(),
                path: p.path.clone(),
                profile: p.profile.as_str().into(),
                remote_node: options.remote_for(p).map(str::to_owned),
                note: (p.profile == Profile::Sanlock).then(|| match &sanlock_note {
                    Some(note) => format!("{note}; {restart_note}"),
                    None => {
                        format!("sanlock daemon -w 0 (NO watchdog), one per cell; {restart_note}")
                    }
                }),
            })
            .collect(),
        scenarios: scenarios
            .iter()
            .map(|s| ScenarioRow {
                name: s.name.clone(),
                title: s.title.clone(),
                description: s.description.trim().to_owned(),
                file: s.file.clone(),
            })
            .collect(),
        cells,
    })
}

fn run_cell_subprocess(
    exe: &Path,
    scenario: &Scenario,
    plugin: &PluginSpec,
    tools: &Tools,
    dir: &Path,
    options: &MatrixOptions,
) -> Cell {
    let started = Instant::now();
    let mut cell = Cell {
        scenario: scenario.name.clone(),
        plugin: plugin.label.clone(),
        verdict: Verdict::Fail,
        reason: String::new(),
        setup: String::new(),
        steps: Vec::new(),
        seconds: 0.0,
        output: String::new(),
    };
    if let Err(err) = std::fs::create_dir_all(dir) {
        cell.reason = format!("cannot create {}: {err}", dir.display());
        return cell;
    }
    let child = Command::new(exe)
        .arg("__matrix-cell")
        .arg("--scenario")
        .arg(&scenario.file)
        .arg("--plugin")
        .arg(&plugin.path)
        .arg("--profile")
        .arg(plugin.profile.as_str())
        .arg("--scratch")
        .arg(dir)
        .args(
            options
                .remote_for(plugin)
                .map(|address| ["--remote-node", address])
                .into_iter()
                .flatten(),
        )
        .args(tools.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => {
            cell.reason = format!("cannot start {}: {err}", exe.display());
            return cell;
        }
    };
    let pid = child.id();
    harness_sys::track_group(pid);
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let stdout = child.stdout.take().expect("stdout is piped");
    let events_reader = std::thread::spawn(move || {
        let mut events = Vec::new();
        let mut stray = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<CellEvent>(&line) {
                Ok(event) => events.push(event),
                Err(_) => stray.push_str(&format!("{line}\n")),
            }
        }
        (events, stray)
    });
    let exited = harness_sys::wait_exit_keep_zombie(pid, options.timeout);
    // Sweep whatever the cell left in its process group (QEMU stand-ins, a daemon), while the
    // unreaped cell keeps the group id from being reused.
    harness_sys::signal_process_group(pid, rustix::process::Signal::KILL);
    harness_sys::untrack_group(pid);
    let status = child.wait();
    let (events, stray) = events_reader.join().unwrap_or_default();
    cell.output = stray + &stderr_reader.join().unwrap_or_default();
    let mut running: Option<String> = None;
    let mut end: Option<(Verdict, String)> = None;
    for event in events {
        match event {
            CellEvent::Setup { detail } => cell.setup = detail,
            CellEvent::Start { index, label } => running = Some(format!("step {index} ({label})")),
            CellEvent::Step(step) => {
                running = None;
                cell.steps.push(step);
            }
            CellEvent::End { verdict, reason } => end = Some((verdict, reason)),
        }
    }
    cell.seconds = started.elapsed().as_secs_f64();
    let place = running.map_or_else(String::new, |step| format!(" during {step}"));
    match (exited, end) {
        (Ok(false), _) => {
            cell.verdict = Verdict::Fail;
            cell.reason = format!(
                "timed out after {} s{place}; killed",
                options.timeout.as_secs()
            );
        }
        (Err(err), _) => cell.reason = format!("waiting for the cell: {err}"),
        (Ok(true), Some((verdict, reason))) => {
            cell.verdict = verdict;
            cell.reason = reason;
        }
        (Ok(true), None) => {
            use std::os::unix::process::ExitStatusExt;
            let how = match status {
                Ok(status) => match status.signal() {
                    Some(signal) => format!(
                        "killed by signal {signal} ({})",
                        crate::sys::signal_name(signal)
                    ),
                    None => format!("exited with status {}", status.code().unwrap_or(-1)),
                },
                Err(err) => format!("could not be waited for: {err}"),
            };
            cell.verdict = Verdict::Fail;
            cell.reason = format!("the plugin's host process {how}{place}");
        }
    }
    cell
}
