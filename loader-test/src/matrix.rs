//! `matrix`: every conformance scenario against every plugin, one table.
//!
//! Each scenario × plugin cell runs in a subprocess of its own (`__matrix-cell`), in a process
//! group of its own: the cell sets up the plugin's daemon (a private `/run` for virtlockd),
//! replays the scenario's steps with libvirt's call shapes, and streams one JSON event per step.
//! A plugin that crashes or hangs is a ✗ with the step it happened in; whatever the cell left
//! behind (the QEMU stand-ins, its daemon) is killed by process group, and its scratch directory
//! is removed.
//!
//! With `--remote-node`, the cells of cluster-wide plugins (dlm) put every second owner (b, d, …)
//! on another machine: their calls are made there by `lockmgr-loader-test agent`, with a daemon
//! of that machine, while a, c, … stay here (see [`crate::agent`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use lockmgr::{Domain, Lease, Resource, Uuid};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::agent::{self, RemoteNode};
use crate::daemons::{self, Layout, PluginEnv, PluginSpec, Profile, SetupError, Tools};
use crate::harness_sys;
use crate::node::{Failure, LocalNode, OwnerNode, describe_resource};
use crate::scenario::{self, Concrete, Corruption, Expect, Op, Scenario, Step};

/// `matrix --help`, long form.
pub const LONG_ABOUT: &str = "Runs every conformance scenario (tests/scenarios/*.toml) against every \
    plugin and prints one table, scenario × plugin: ✓ when every step had the outcome the \
    scenario expects, ✗ with the step and the reason otherwise, – when the scenario cannot apply \
    (no daemon to restart, no state string to corrupt), … when this machine lacks something.\n\n\
    Each cell runs in a process of its own, with the plugin's daemon started for it: virtlockd \
    for lockd.so (in a private mount namespace with an empty /run: its socket path is fixed), \
    lockmgrd for file.so (with a generated qemu-file.conf in a scratch directory), none for \
    nop.so. libvirt's sanlock.so runs against a real sanlock daemon WITHOUT a watchdog \
    (sanlock daemon -w 0), in a private mount namespace with SANLOCK_RUN_DIR in scratch: one \
    daemon for the whole run, whose lockspace the first drvInit joins (~20 s, printed, never \
    counted in a cell), plus one of its own for each cell that crashes the daemon. Owners are registered by libvirt's pre-exec child in a real fork that execs a QEMU \
    stand-in; every other call is made in the harness with libvirt's call shapes. Nothing is \
    left behind: daemons are stopped by pid, stand-ins killed, scratch directories removed.\n\n\
    A PLUGIN is a path, a name looked up like libvirt does, or PROFILE=PATH to choose the \
    daemon and config profile (nop, lockd, file, dlm, sanlock, generic) when the file name does \
    not tell it. Without --plugin: nop.so and file.so built beside this binary, and libvirt's \
    lockd.so and (when /usr/sbin/sanlock is installed) sanlock.so.";

/// `matrix --help`, examples.
pub const AFTER_HELP: &str = "Examples:\n  \
    lockmgr-loader-test matrix --plugin target/debug/libnop.so --plugin lockd --plugin target/debug/libfile.so\n  \
    lockmgr-loader-test matrix --scenario kill-owner --plugin file=/tmp/x.so --json\n\n\
    Exit status: 0 every cell ✓ or –, 1 some cell ✗, 2 usage error, 3 nothing failed but some \
    cell cannot run on this machine.";

/// Where the lock daemons are, for `matrix` and `bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct ToolArgs {
    /// virtlockd, started for lockd.so.
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/virtlockd")]
    pub virtlockd: PathBuf,
    /// lockmgrd, started for file.so (default: beside the plugin, beside this binary, or on
    /// $PATH).
    #[arg(long, value_name = "PATH")]
    pub lockmgrd: Option<PathBuf>,
    /// sanlock, started (with -w 0: no watchdog) for libvirt's sanlock.so.
    #[arg(long, value_name = "PATH", default_value = daemons::DEFAULT_SANLOCK)]
    pub sanlock: PathBuf,
    /// Internal: the directory of the run's shared sanlock daemon.
    #[arg(long, value_name = "DIR", hide = true)]
    pub sanlock_shared: Option<PathBuf>,
}

impl ToolArgs {
    /// As the profile layer wants them.
    pub fn tools(&self) -> Tools {
        Tools {
            virtlockd: self.virtlockd.clone(),
            lockmgrd: self.lockmgrd.clone(),
            sanlock: self.sanlock.clone(),
            sanlock_shared: self.sanlock_shared.clone(),
        }
    }
}

/// Arguments of `matrix`.
#[derive(clap::Args, Debug)]
pub struct MatrixArgs {
    /// A plugin (a column); repeat for each. PATH, NAME or PROFILE=PATH.
    #[arg(long = "plugin", value_name = "PLUGIN")]
    pub plugins: Vec<String>,
    /// The scenario directory (default: the source tree's tests/scenarios).
    #[arg(long, value_name = "DIR")]
    pub scenarios: Option<PathBuf>,
    /// Run only this scenario (file stem); repeat for more.
    #[arg(long = "scenario", value_name = "NAME")]
    pub only: Vec<String>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also show every step of every cell.
    #[arg(long, short)]
    pub verbose: bool,
    /// Seconds a cell may take before it is killed and marked ✗.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub timeout: u64,
    /// Also write the JSON report to this file (with the table or --json on stdout).
    #[arg(long, value_name = "FILE")]
    pub json_file: Option<PathBuf>,
    /// Put every second owner of a scenario (b, d, …) on another machine, whose
    /// `lockmgr-loader-test agent` listens at ADDR:PORT, in the cells of the --remote-profiles.
    #[arg(long, value_name = "ADDR:PORT")]
    pub remote_node: Option<String>,
    /// The plugin profiles whose cells get owners on --remote-node: plugins whose locks reach
    /// that machine (dlm; file when both run on one host, for testing the agent).
    #[arg(
        long,
        value_name = "PROFILE",
        value_delimiter = ',',
        default_value = "dlm"
    )]
    pub remote_profiles: Vec<String>,
    #[command(flatten)]
    pub tools: ToolArgs,
}

/// Arguments of `__matrix-cell`.
#[derive(clap::Args, Debug)]
pub struct CellCliArgs {
    #[arg(long)]
    scenario: PathBuf,
    #[arg(long)]
    plugin: PathBuf,
    #[arg(long)]
    profile: String,
    #[arg(long)]
    scratch: PathBuf,
    #[arg(long)]
    remote_node: Option<String>,
    #[command(flatten)]
    tools: ToolArgs,
}

/// The scenario directory of the source tree this binary was built from, else `./tests/scenarios`.
pub fn default_scenario_dir() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios");
    if built.is_dir() {
        return built.canonicalize().unwrap_or(built);
    }
    PathBuf::from("tests/scenarios")
}

/// `matrix`.
pub fn command(args: &MatrixArgs) -> u8 {
    let plugins = match daemons::plugins_from_args(&args.plugins) {
        Ok(plugins) => plugins,
        Err(err) => {
            eprintln!("lockmgr-loader-test matrix: {err}");
            return if harness_sys::terminating() { 130 } else { 2 };
        }
    };
    let mut remote_profiles = Vec::new();
    for name in &args.remote_profiles {
        match Profile::from_name(name) {
            Some(profile) => remote_profiles.push(profile),
            None => {
                eprintln!(
                    "lockmgr-loader-test matrix: --remote-profiles {name}: unknown profile \
                     (known: {})",
                    Profile::KNOWN.join(", ")
                );
                return 2;
            }
        }
    }
    let options = MatrixOptions {
        plugins,
        scenarios: args.scenarios.clone().unwrap_or_else(default_scenario_dir),
        only: args.only.clone(),
        tools: args.tools.tools(),
        timeout: Duration::from_secs(args.timeout.max(1)),
        remote_node: args.remote_node.clone(),
        remote_profiles,
    };
    let report = match run_matrix(&options) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("lockmgr-loader-test matrix: {err}");
            return if harness_sys::terminating() { 130 } else { 2 };
        }
    };
    let json = match serde_json::to_string_pretty(&report) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("lockmgr-loader-test matrix: cannot encode JSON: {err}");
            return crate::EXIT_FAIL;
        }
    };
    if let Some(path) = &args.json_file {
        if let Err(err) = std::fs::write(path, format!("{json}\n")) {
            eprintln!(
                "lockmgr-loader-test matrix: cannot write {}: {err}",
                path.display()
            );
            return crate::EXIT_FAIL;
        }
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", render_table(&report, args.verbose));
    }
    exit_code(&report)
}

/// `__matrix-cell`.
pub fn cell_command(args: &CellCliArgs) -> u8 {
    let mut events = match crate::sys::take_stdout_for_events() {
        Ok(file) => file,
        Err(err) => {
            eprintln!("lockmgr-loader-test: cannot set up the event stream: {err}");
            return crate::EXIT_FAIL;
        }
    };
    let Some(profile) = Profile::from_name(&args.profile) else {
        eprintln!("lockmgr-loader-test: unknown profile {}", args.profile);
        return 2;
    };
    run_cell(
        &CellArgs {
            scenario: args.scenario.clone(),
            plugin: args.plugin.clone(),
            profile,
            scratch: args.scratch.clone(),
            tools: args.tools.tools(),
            remote_node: args.remote_node.clone(),
        },
        &mut events,
    );
    0
}

/// The verdict of one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every step had its expected outcome.
    Pass,
    /// A step had another outcome, or the plugin crashed or hung.
    Fail,
    /// The scenario cannot apply to this plugin (no daemon to restart, no state string).
    NotApplicable,
    /// This machine lacks something the plugin needs (not root, no daemon binary, no DLM).
    CannotRun,
}

impl Verdict {
    /// The mark in the table.
    pub fn mark(self) -> &'static str {
        match self {
            Verdict::Pass => "✓",
            Verdict::Fail => "✗",
            Verdict::NotApplicable => "–",
            Verdict::CannotRun => "…",
        }
    }
}

/// One step as it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    /// 1-based, as in the file.
    pub index: usize,
    /// `acquire by b [disk]`.
    pub label: String,
    /// The expected outcome (`granted`, `refused`, `ok`, `failed`).
    pub expected: String,
    /// What happened (same words, or `n/a`).
    pub outcome: String,
    /// Whether the outcome was the expected one.
    pub ok: bool,
    /// Details: the plugin's error text, the state string, the time measured.
    pub detail: String,
    /// Wall time of the step, in milliseconds.
    pub ms: f64,
    /// Why this plugin's expectation differs from the default, when it does.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub plugin_note: Option<String>,
    /// The scenario's note on the step.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
}

/// What a cell subprocess streams.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
enum CellEvent {
    Setup { detail: String },
    Start { index: usize, label: String },
    Step(StepReport),
    End { verdict: Verdict, reason: String },
}

/// One scenario × plugin result.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Scenario name (file stem).
    pub scenario: String,
    /// Plugin column label.
    pub plugin: String,
    /// The verdict.
    pub verdict: Verdict,
    /// One line: why ✗ / – / …, or the plugin-specific expectations a ✓ relied on.
    pub reason: String,
    /// The plugin's environment (config, daemon pid).
    pub setup: String,
    /// Every step that ran.
    pub steps: Vec<StepReport>,
    /// Wall time of the cell.
    pub seconds: f64,
    /// What the plugin and its host process wrote to stderr.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub output: String,
}

/// The whole matrix, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct MatrixReport {
    /// The columns.
    pub plugins: Vec<PluginColumn>,
    /// The rows.
    pub scenarios: Vec<ScenarioRow>,
    /// Every cell, row by row.
    pub cells: Vec<Cell>,
}

/// A column of the matrix.
#[derive(Debug, Serialize)]
pub struct PluginColumn {
    /// The label.
    pub label: String,
    /// The `.so`.
    pub path: PathBuf,
    /// The profile (daemon and config) used.
    pub profile: String,
    /// Where owners b, d, … ran (the agent's ADDR:PORT), when not here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_node: Option<String>,
    /// How the column's daemon was set up, when the table should say it (sanlock: no
    /// watchdog, the time its lockspace took to join).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A row of the matrix.
#[derive(Debug, Serialize)]
pub struct ScenarioRow {
    /// File stem.
    pub name: String,
    /// The title.
    pub title: String,
    /// What it proves.
    pub description: String,
    /// The file.
    pub file: PathBuf,
}

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

/// The sanlock daemon of a whole matrix run, its lockspace joined.
struct SharedSanlock {
    dirs: daemons::SanlockDirs,
    daemon: daemons::Daemon,
    pid: u32,
    note: String,
}

impl SharedSanlock {
    /// Starts the daemon and has the plugin join its lockspace once, in a subprocess
    /// (`__sanlock-join`), timing that first drvInit.
    fn start(
        exe: &Path,
        plugin: &PluginSpec,
        tools: &Tools,
        scratch: &Path,
    ) -> Result<SharedSanlock, SetupError> {
        let dirs = daemons::SanlockDirs::new(&scratch.join("sanlock-shared"));
        eprintln!(
            "sanlock: starting one sanlock daemon for the run (sanlock daemon -w 0: NO watchdog), \
             SANLOCK_RUN_DIR {}",
            dirs.run.display()
        );
        let mut daemon = daemons::start_sanlock_grouped(tools, &dirs)?;
        let pid = daemon.pid();
        harness_sys::track_group(pid);
        eprintln!(
            "sanlock: daemon pid {pid}; the first drvInit of {} joins lockspace {} (sanlock \
             takes ~20 s) …",
            plugin.path.display(),
            daemons::LIBVIRT_SANLOCK_LOCKSPACE
        );
        let output = Command::new(exe)
            .arg("__sanlock-join")
            .arg("--plugin")
            .arg(&plugin.path)
            .arg("--shared")
            .arg(&dirs.root)
            .args(tools.to_args())
            .stdin(Stdio::null())
            .output();
        let mut probe = String::new();
        let joined: Result<f64, String> = match output {
            Err(err) => Err(format!("cannot run __sanlock-join: {err}")),
            Ok(output) => {
                let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
                let mut lines = text.lines();
                let first = lines.next().unwrap_or_default().parse::<f64>();
                probe = lines.next().unwrap_or_default().to_owned();
                match (output.status.success(), first) {
                    (true, Ok(seconds)) => Ok(seconds),
                    _ => Err(format!(
                        "joining the lockspace failed: {text}{} (daemon log: {})",
                        String::from_utf8_lossy(&output.stderr).trim(),
                        daemon.log_tail()
                    )),
                }
            }
        };
        let seconds = match joined {
            Ok(seconds) => seconds,
            Err(message) => {
                let _ = daemon.stop();
                harness_sys::untrack_group(pid);
                return Err(SetupError {
                    cannot_run: false,
                    message,
                });
            }
        };
        eprintln!("sanlock: lockspace joined in {seconds:.1} s");
        let note = format!(
            "one sanlock daemon for the run (pid {pid}), `sanlock daemon -w 0`: NO watchdog, so \
             nothing is fenced; SANLOCK_RUN_DIR and disk_lease_dir in scratch; auto_disk_leases \
             = 1, host_id = 1; the first drvInit joined lockspace {} in {seconds:.1} s (not \
             counted in any cell's time); {probe}",
            daemons::LIBVIRT_SANLOCK_LOCKSPACE
        );
        Ok(SharedSanlock {
            dirs,
            daemon,
            pid,
            note,
        })
    }
}

/// Arguments of `__sanlock-join`.
#[derive(clap::Args, Debug)]
pub struct SanlockJoinArgs {
    #[arg(long)]
    plugin: PathBuf,
    /// The shared daemon's directory ([`daemons::SanlockDirs`]).
    #[arg(long)]
    shared: PathBuf,
    #[command(flatten)]
    tools: ToolArgs,
}

/// What the plugin does with `<on_lockfailure>restart</on_lockfailure>`: one registration in a
/// forked pre-exec child with that action (a disk in the run's scratch), as one line.
fn probe_restart_action(plugin: &Path, dirs: &daemons::SanlockDirs) -> String {
    let probe = || -> Result<String, String> {
        let mut loaded = lockmgr::host::Plugin::open(plugin).map_err(|e| e.to_string())?;
        loaded.init(&dirs.config).map_err(|e| e.to_string())?;
        let disk = dirs.root.join("on-lockfailure-restart.img");
        std::fs::write(&disk, b"").map_err(|e| format!("{}: {e}", disk.display()))?;
        let domain = Domain {
            uuid: owner_uuid("on-lockfailure", "restart"),
            name: "matrix-on-lockfailure-restart".into(),
            id: 1,
            pid: 0,
            uri: Some("qemu:///system".into()),
        };
        let resources = [Resource::Disk {
            path: disk,
            access: lockmgr::Access::Exclusive,
        }];
        let mut owner = lockmgr::host::start_owner(
            &loaded,
            &domain,
            &resources,
            lockmgr::LockFailureAction::Restart,
        )
        .map_err(|e| e.to_string())?;
        let text = match &owner.outcome {
            lockmgr::host::RegisterOutcome::Failed { error, .. } => {
                format!("<on_lockfailure>restart</on_lockfailure> refused at registration: {error}")
            }
            lockmgr::host::RegisterOutcome::Registered { .. } => {
                "<on_lockfailure>restart</on_lockfailure> accepted at registration".to_owned()
            }
        };
        let _ = owner.kill();
        let _ = loaded.deinit();
        Ok(text)
    };
    probe().unwrap_or_else(|e| format!("<on_lockfailure>restart</on_lockfailure> not probed: {e}"))
}

/// `__sanlock-join`: the first drvInit against a fresh sanlock daemon; prints its seconds.
pub fn sanlock_join_command(args: &SanlockJoinArgs) -> u8 {
    let dirs = daemons::SanlockDirs::new(&args.shared);
    harness_sys::set_sanlock_env(&dirs.run);
    // As in the cells and libvirtd: libvirt.so.0 is loaded before the plugin.
    harness_sys::preload(c"libvirt.so.0");
    let tools = args.tools.tools();
    match daemons::join_lockspace(&args.plugin, &tools, &dirs) {
        Ok(took) => {
            println!("{:.3}", took.as_secs_f64());
            println!("{}", probe_restart_action(&args.plugin, &dirs));
            0
        }
        Err(err) => {
            eprintln!("{err}");
            crate::EXIT_FAIL
        }
    }
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
    harness_sys::signal_process_group(pid, libc::SIGKILL);
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

/// Arguments of `__matrix-cell`.
#[derive(Debug)]
pub struct CellArgs {
    /// The scenario file.
    pub scenario: PathBuf,
    /// The plugin.
    pub plugin: PathBuf,
    /// Its profile.
    pub profile: Profile,
    /// An empty scratch directory for this cell.
    pub scratch: PathBuf,
    /// Where the daemons are.
    pub tools: Tools,
    /// The agent running owners b, d, … (none: every owner here).
    pub remote_node: Option<String>,
}

/// Entry point of `__matrix-cell`: runs one scenario against one plugin, streaming events.
pub fn run_cell(args: &CellArgs, events: &mut dyn Write) {
    let mut emit = |event: CellEvent| {
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        let _ = events.write_all(&line);
        let _ = events.flush();
    };
    let (verdict, reason) = match run_cell_inner(args, &mut emit) {
        Ok(notes) => (Verdict::Pass, notes),
        Err(end) => (end.verdict, end.reason),
    };
    emit(CellEvent::End { verdict, reason });
}

struct End {
    verdict: Verdict,
    reason: String,
}

impl End {
    fn fail(reason: impl Into<String>) -> Self {
        End {
            verdict: Verdict::Fail,
            reason: reason.into(),
        }
    }
}

/// Runs the cell; a pass returns the plugin-specific expectations it relied on.
fn run_cell_inner(args: &CellArgs, emit: &mut dyn FnMut(CellEvent)) -> Result<String, End> {
    let scenario = scenario::load(&args.scenario).map_err(|e| End::fail(e.to_string()))?;
    if args.profile.daemon().is_none() && scenario.restarts_daemon() {
        return Err(End {
            verdict: Verdict::NotApplicable,
            reason: format!(
                "{} has no lock daemon to restart",
                daemons::libvirt_name(&args.plugin)
            ),
        });
    }
    let layout = Layout::create(&args.scratch)
        .map_err(|e| End::fail(format!("scratch {}: {e}", args.scratch.display())))?;
    let lockspace = scenario.lockspace || scenario.has_leases();
    let env = daemons::prepare(args.profile, &args.plugin, &args.tools, &layout, lockspace)
        .map_err(|e| End {
            verdict: if e.cannot_run {
                Verdict::CannotRun
            } else {
                Verdict::Fail
            },
            reason: format!("setting up {}: {e}", args.profile),
        })?;
    let mut setup = format!(
        "{}{}",
        env.describe(),
        if lockspace {
            format!("; lockspace {}", layout.lockspace.display())
        } else {
            "; disks locked directly".into()
        }
    );
    // Owners b, d, … run on the agent's node when one is given (only if there is a b).
    let remote = match &args.remote_node {
        Some(address) if scenario.owners.len() > 1 => {
            let (node, detail) = RemoteNode::connect(
                address,
                &agent::Setup {
                    plugin: args.plugin.clone(),
                    profile: args.profile.as_str().to_owned(),
                    lockspace: lockspace.then(|| layout.lockspace.clone()),
                    cell: format!("{} × {}", scenario.name, args.profile),
                },
            )
            .map_err(End::fail)?;
            let remote_owners: Vec<&str> = scenario
                .owners
                .keys()
                .enumerate()
                .filter(|(i, _)| i % 2 == 1)
                .map(|(_, name)| name.as_str())
                .collect();
            setup.push_str(&format!(
                "; owners {} on {} ({detail})",
                remote_owners.join(", "),
                node.name()
            ));
            Some(node)
        }
        _ => None,
    };
    emit(CellEvent::Setup { detail: setup });
    let mut runner = Runner::new(&scenario, args, env, remote)?;
    let result = runner.run_steps(emit);
    let cleanup = runner.finish();
    let notes = result?;
    cleanup.map_err(End::fail)?;
    Ok(notes.join("; "))
}

/// Per-owner bookkeeping, as libvirt keeps it per domain.
struct OwnerState {
    domain: Domain,
    /// Whether the owner runs on the agent's node (its calls made there).
    remote: bool,
    /// The state string of the last pause (libvirt's `priv->lockState`).
    saved_state: Option<String>,
}

/// The last `kill` step: when, and on which node.
struct LastKill {
    at: Instant,
    wall: SystemTime,
    uuid: Uuid,
    remote: bool,
}

struct Runner<'a> {
    scenario: &'a Scenario,
    profile: Profile,
    local: LocalNode,
    remote: Option<RemoteNode>,
    owners: BTreeMap<String, OwnerState>,
    last_kill: Option<LastKill>,
    plugin_notes: Vec<String>,
    /// A `restart-daemon` step ran (sanlock's ✗ explains what a restart loses).
    daemon_restarted: bool,
    /// A note about how the current step was judged (e.g. a bound across nodes), kept when the
    /// step passes.
    step_note: Option<String>,
}

/// The result of running a step's calls: success text, or the failure.
enum Outcome {
    Done(Result<String, Failure>),
    /// The expected outcome came, but only after the step's `within_ms` bound.
    Late(String),
    NotApplicable(String),
}

/// Makes `file` a sanlock lease named `key` in libvirt's lockspace (`sanlock direct init`, as
/// an administrator prepares a `<lease>` for sanlock.so).
fn init_sanlock_lease(tools: &Tools, key: &str, file: &Path) -> Result<(), String> {
    let spec = format!(
        "{}:{key}:{}:0",
        daemons::LIBVIRT_SANLOCK_LOCKSPACE,
        file.display()
    );
    let output = Command::new(&tools.sanlock)
        .args(["direct", "init", "-r", &spec])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", tools.sanlock.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "sanlock direct init -r {spec} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The libvirt error code of sanlock.so's refusals (`VIR_ERR_SYSTEM_ERROR`).
const SANLOCK_REFUSAL_CODE: i32 = 38;

fn owner_uuid(scenario: &str, owner: &str) -> Uuid {
    let digest = Sha256::digest(format!("lockmgr-matrix/{scenario}/{owner}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // A random (version 4) UUID: never 16 equal bytes, which lockd refuses.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid(bytes)
}

impl<'a> Runner<'a> {
    fn new(
        scenario: &'a Scenario,
        args: &CellArgs,
        env: PluginEnv,
        remote: Option<RemoteNode>,
    ) -> Result<Self, End> {
        // Disk images and lease files exist before anything runs (lockd needs both).
        for name in scenario.resources.keys() {
            for resource in scenario.expanded(name).unwrap_or_default() {
                let file = match (&resource.disk, &resource.lease) {
                    (Some(disk), _) => env.layout.disks.join(disk),
                    (None, Some(key)) => env.layout.lockspace.join(key),
                    (None, None) => continue,
                };
                std::fs::write(&file, b"")
                    .map_err(|e| End::fail(format!("creating {}: {e}", file.display())))?;
                if let (Profile::Sanlock, Some(key)) = (args.profile, &resource.lease) {
                    init_sanlock_lease(&args.tools, key, &file).map_err(End::fail)?;
                }
            }
        }
        let owners = scenario
            .owners
            .keys()
            .enumerate()
            .map(|(i, name)| {
                let domain = Domain {
                    uuid: owner_uuid(&scenario.name, name),
                    name: format!("matrix-{name}"),
                    id: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    pid: 0,
                    uri: None,
                };
                (
                    name.clone(),
                    OwnerState {
                        domain,
                        remote: remote.is_some() && i % 2 == 1,
                        saved_state: None,
                    },
                )
            })
            .collect();
        let local = LocalNode::new(&args.plugin, env).map_err(End::fail)?;
        Ok(Runner {
            scenario,
            profile: args.profile,
            local,
            remote,
            owners,
            last_kill: None,
            plugin_notes: Vec::new(),
            daemon_restarted: false,
            step_note: None,
        })
    }

    /// The step's label, with the node for an owner of the agent's node (`acquire by b@10.99.0.2`).
    fn label(&self, step: &Step) -> String {
        let label = step.label();
        match (&step.owner, &self.remote) {
            (Some(owner), Some(remote)) if self.is_remote(owner) => label.replacen(
                &format!("by {owner}"),
                &format!("by {owner}@{}", remote.host()),
                1,
            ),
            _ => label,
        }
    }

    fn is_remote(&self, owner: &str) -> bool {
        self.owners.get(owner).is_some_and(|o| o.remote)
    }

    /// The node that makes `owner`'s calls.
    fn node(&mut self, owner: &str) -> &mut dyn OwnerNode {
        match (self.is_remote(owner), self.remote.as_mut()) {
            (true, Some(remote)) => remote,
            _ => &mut self.local,
        }
    }

    /// Runs every step; returns the notes of plugin-specific expectations that were met.
    fn run_steps(&mut self, emit: &mut dyn FnMut(CellEvent)) -> Result<Vec<String>, End> {
        let scenario = self.scenario;
        for (i, step) in scenario.steps.iter().enumerate() {
            let index = i + 1;
            let label = self.label(step);
            emit(CellEvent::Start {
                index,
                label: label.clone(),
            });
            let (expect, plugin_note) = step.expectation(self.profile.as_str());
            let started = Instant::now();
            self.step_note = None;
            let (outcome, timing) = self.run_with_retry(step, expect);
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let mut report = StepReport {
                index,
                label: label.clone(),
                expected: expect.word(step.op).into(),
                outcome: String::new(),
                ok: false,
                detail: String::new(),
                ms,
                plugin_note: plugin_note.clone(),
                note: step.note.clone(),
            };
            let verdict = match outcome {
                Outcome::NotApplicable(reason) => {
                    report.outcome = "n/a".into();
                    report.detail = reason.clone();
                    emit(CellEvent::Step(report));
                    return Err(End {
                        verdict: Verdict::NotApplicable,
                        reason: format!("step {index} ({label}): {reason}"),
                    });
                }
                Outcome::Late(timing) => {
                    report.outcome = format!("late {}", expect.word(step.op));
                    report.detail = timing.clone();
                    Err(format!(
                        "expected {} within {} ms, got {timing}",
                        expect.word(step.op),
                        step.within_ms.unwrap_or(0)
                    ))
                }
                Outcome::Done(result) => self.judge(step, expect, result, &mut report),
            };
            if let Some(timing) = timing {
                report.detail = format!("{timing}; {}", report.detail);
            }
            if let (Some(note), true) = (&plugin_note, report.ok) {
                self.plugin_notes.push(format!(
                    "step {index} ({label}) {} as expected for {}: {note}",
                    report.outcome, self.profile
                ));
            }
            if let (Some(note), true) = (self.step_note.take(), report.ok) {
                self.plugin_notes
                    .push(format!("step {index} ({label}) {}: {note}", report.outcome));
            }
            emit(CellEvent::Step(report));
            if let Err(why) = verdict {
                let note = step
                    .note
                    .as_ref()
                    .map_or_else(String::new, |n| format!(" — {n}"));
                return Err(End::fail(format!("step {index} ({label}{note}): {why}")));
            }
        }
        Ok(std::mem::take(&mut self.plugin_notes))
    }

    /// Runs the step; with `within_ms`, again until the expected outcome or the bound.
    ///
    /// After a `kill` on one node, a step of an owner on the other node is judged in two parts:
    /// the killed owner's daemon must have freed its locks within `within_ms` of the SIGKILL (the
    /// bound is the daemon's, read from its log), and the other node must have been granted
    /// within `across_nodes_within_ms` (the grant also pays the lock manager's round trips
    /// between the nodes and the agent's).
    fn run_with_retry(&mut self, step: &Step, expect: Expect) -> (Outcome, Option<String>) {
        let Some(bound_ms) = step.within_ms else {
            return (self.exec(step), None);
        };
        let owner_remote = step.owner.as_deref().is_some_and(|o| self.is_remote(o));
        let across = self
            .last_kill
            .as_ref()
            .is_some_and(|kill| kill.remote != owner_remote);
        let end_bound_ms = if across {
            step.across_nodes_within_ms.unwrap_or(bound_ms)
        } else {
            bound_ms
        };
        let since = self
            .last_kill
            .as_ref()
            .map_or_else(Instant::now, |kill| kill.at);
        let from = match (&self.last_kill, across) {
            (None, _) => "after the first try",
            (Some(_), false) => "after the SIGKILL",
            (Some(_), true) => "after the SIGKILL on the other node",
        };
        let end_bound = Duration::from_millis(end_bound_ms);
        let deadline = since + end_bound;
        let mut tries = 0;
        loop {
            tries += 1;
            let try_started = Instant::now();
            let outcome = self.exec(step);
            let try_ms = try_started.elapsed().as_secs_f64() * 1000.0;
            let reached = match &outcome {
                Outcome::Done(result) => result.is_ok() == (expect == Expect::Ok),
                Outcome::Late(_) | Outcome::NotApplicable(_) => true,
            };
            let elapsed = since.elapsed();
            if reached || Instant::now() >= deadline {
                let word = match (&outcome, step.op.takes_locks()) {
                    (Outcome::Done(Ok(_)), true) => "granted",
                    (Outcome::Done(Err(_)), true) => "refused",
                    (Outcome::Done(Ok(_)), false) => "ok",
                    _ => "still failing",
                };
                let within = match (elapsed <= end_bound, across) {
                    (true, false) => format!("within the {end_bound_ms} ms bound"),
                    (false, false) => format!("OVER the {end_bound_ms} ms bound"),
                    (true, true) => format!("within the {end_bound_ms} ms bound across nodes"),
                    (false, true) => format!("OVER the {end_bound_ms} ms bound across nodes"),
                };
                let mut timing = format!(
                    "{word} {:.1} ms {from} ({within}; {tries} tr{}, the last one took {try_ms:.1} ms)",
                    elapsed.as_secs_f64() * 1000.0,
                    if tries == 1 { "y" } else { "ies" }
                );
                let mut daemon_late = false;
                if across && reached {
                    let (text, late) = self.daemon_part(bound_ms);
                    timing.push_str(&format!("; {text}"));
                    daemon_late = late;
                    if !late && step.across_nodes_within_ms.is_some() {
                        self.step_note = Some(format!(
                            "across nodes, {:.1} ms after the SIGKILL (bound {end_bound_ms} ms: \
                             the grant on the other node also pays round trips between the \
                             nodes); {text}",
                            elapsed.as_secs_f64() * 1000.0
                        ));
                    }
                }
                if !reached || (elapsed <= end_bound && !daemon_late) {
                    return (outcome, Some(timing));
                }
                return (Outcome::Late(timing), None);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The daemon's own part of a release seen across nodes: when the killed owner's daemon
    /// reported it (lockmgrd's `events`), against `bound_ms` from the SIGKILL. Measurable when
    /// that daemon runs here (the same clock); otherwise said so. Returns the text and whether
    /// it was over the bound.
    fn daemon_part(&mut self, bound_ms: u64) -> (String, bool) {
        let Some(kill) = &self.last_kill else {
            return (String::new(), false);
        };
        if kill.remote {
            return (
                "the killed owner's daemon runs on the other node (another clock): its release \
                 is not timed separately"
                    .into(),
                false,
            );
        }
        let (uuid, wall) = (kill.uuid, kill.wall);
        match self.local.daemon_released_at(&uuid.to_string()) {
            Some(released) => {
                let ms = released.duration_since(wall).map_or(0, |d| d.as_millis());
                let late = ms > u128::from(bound_ms);
                (
                    format!(
                        "this host's daemon reported the release {ms} ms after the SIGKILL ({} \
                         the {bound_ms} ms bound)",
                        if late { "OVER" } else { "within" }
                    ),
                    late,
                )
            }
            None => (
                "this host's daemon reported no release for the killed owner (none, or not \
                 lockmgrd)"
                    .into(),
                false,
            ),
        }
    }

    fn judge(
        &mut self,
        step: &Step,
        expect: Expect,
        result: Result<String, Failure>,
        report: &mut StepReport,
    ) -> Result<(), String> {
        let (ok_word, refused_word) = (Expect::Ok.word(step.op), Expect::Refused.word(step.op));
        match (expect, result) {
            (Expect::Ok, Ok(detail)) => {
                report.outcome = ok_word.into();
                report.ok = true;
                report.detail = detail;
                Ok(())
            }
            (Expect::Ok, Err(failure)) => {
                report.outcome = refused_word.into();
                report.detail = failure.message.clone();
                Err(format!(
                    "expected {ok_word}, got {refused_word}: {}",
                    failure.message
                ))
            }
            (Expect::Refused, Ok(detail)) => {
                report.outcome = ok_word.into();
                report.detail = detail.clone();
                let why = match self.profile {
                    // libvirt's sanlock.so: New probes whether the pid is registered; the
                    // restarted daemon knows no process, so Acquire logs "Process not
                    // registered, not acquiring lock" and returns 0 having taken nothing.
                    Profile::Sanlock if self.daemon_restarted => {
                        "; the restarted sanlock daemon has lost every registration and \
                         lockspace, so sanlock.so finds the domain not registered and returns 0 \
                         without acquiring anything, while a's QEMU runs on unprotected (a real \
                         host's watchdog would have reset it when sanlock died)"
                    }
                    // sanlock.so does not hand the state string to sanlock_acquire.
                    Profile::Sanlock if step.corrupt.is_some() => {
                        "; sanlock.so parses the state string but does not pass it to \
                         sanlock_acquire, so a damaged one changes nothing"
                    }
                    _ => "",
                };
                Err(format!(
                    "expected {refused_word}, got {ok_word} ({detail}){why}"
                ))
            }
            (Expect::Refused, Err(failure)) => {
                report.outcome = refused_word.into();
                report.detail = failure.message.clone();
                if let Some(problem) = self.check_refusal(step, &failure) {
                    return Err(format!("{refused_word} as expected, but {problem}"));
                }
                report.ok = true;
                Ok(())
            }
        }
    }

    /// What is wrong with a refusal's error, per the step's `error` and `names`.
    fn check_refusal(&mut self, step: &Step, failure: &Failure) -> Option<String> {
        let message = failure.message.to_lowercase();
        match step.error.as_deref() {
            Some("busy") => {
                let code = failure.reported.as_ref().map(|r| r.code);
                // libvirt's sanlock.so reports every refused sanlock_acquire as a system error
                // (virReportSystemError: code 38, "Failed to acquire lock: <strerror>"), naming
                // no disk: a declared difference of the sanlock profile, said in the footnote.
                if self.profile == Profile::Sanlock
                    && code == Some(SANLOCK_REFUSAL_CODE)
                    && message.contains("failed to acquire lock")
                {
                    let note = format!(
                        "sanlock.so refuses with VIR_ERR_SYSTEM_ERROR (code 38) \"{}\", not \
                         VIR_ERR_RESOURCE_BUSY (libvirt prints no \"resource busy\"), and names \
                         no disk: accepted as sanlock's way of refusing",
                        failure.message.trim_start_matches("drvAcquire failed: ")
                    );
                    if !self.plugin_notes.contains(&note) {
                        self.plugin_notes.push(note);
                    }
                    return None;
                }
                if code != Some(87) {
                    return Some(format!(
                        "the error is not VIR_ERR_RESOURCE_BUSY (code {}; libvirt would not \
                         print \"resource busy\"): {}",
                        code.map_or("none".into(), |c| c.to_string()),
                        failure.message
                    ));
                }
            }
            Some(text) if !message.contains(&text.to_lowercase()) => {
                return Some(format!(
                    "the error does not mention '{text}': {}",
                    failure.message
                ));
            }
            _ => {}
        }
        if let Some(reference) = &step.names {
            let resources = self.scenario.resolve(reference).unwrap_or_default();
            let named = resources
                .iter()
                .any(|r| self.identifiers(r).iter().any(|id| message.contains(id)));
            if !named {
                return Some(format!(
                    "the error does not name {reference} (its path, file name, sha256 or key): {}",
                    failure.message
                ));
            }
        }
        None
    }

    /// The ways an error message may name a resource, lower-cased.
    fn identifiers(&self, resource: &Concrete) -> Vec<String> {
        match (&resource.disk, &resource.lease) {
            (Some(disk), _) => {
                let path = self.local.env().layout.disks.join(disk);
                let text = path.display().to_string();
                let hash = Sha256::digest(text.as_bytes());
                let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
                vec![text.to_lowercase(), disk.to_lowercase(), hex]
            }
            (None, Some(key)) => vec![key.to_lowercase()],
            (None, None) => Vec::new(),
        }
    }

    fn resources(&self, step: &Step) -> Vec<Resource> {
        let concrete = self.scenario.step_resources(step).unwrap_or_default();
        concrete.iter().map(|c| self.resource(c)).collect()
    }

    /// The resource as libvirt passes it; owners on the agent's node get the very same paths
    /// (the lock manager names resources after them).
    fn resource(&self, concrete: &Concrete) -> Resource {
        let access = concrete.mode.access();
        let layout = &self.local.env().layout;
        match (&concrete.disk, &concrete.lease) {
            (Some(disk), _) => Resource::Disk {
                path: layout.disks.join(disk),
                access,
            },
            // sanlock: a lease is a sanlock resource at an offset of a lease file, in a
            // lockspace the host has joined (the one libvirt joined for its disk leases).
            (None, lease) if self.profile == Profile::Sanlock => {
                let key = lease.clone().unwrap_or_default();
                Resource::Lease {
                    lease: Lease {
                        path: Some(layout.lockspace.join(&key)),
                        key,
                        lockspace: Some(daemons::LIBVIRT_SANLOCK_LOCKSPACE.into()),
                        offset: Some(0),
                    },
                    access,
                }
            }
            (None, lease) => Resource::Lease {
                lease: Lease {
                    key: lease.clone().unwrap_or_default(),
                    lockspace: Some(daemons::LEASE_LOCKSPACE.into()),
                    path: Some(layout.leases.clone()),
                    offset: Some(0),
                },
                access,
            },
        }
    }

    fn exec(&mut self, step: &Step) -> Outcome {
        let owner = step.owner.clone().unwrap_or_default();
        let resources = self.resources(step);
        let count = resources.len();
        let summary = if count == 1 {
            describe_resource(&resources[0])
        } else {
            format!("{count} resources")
        };
        match step.op {
            Op::Register => {
                let domain = self.owners[&owner].domain.clone();
                let result = self.node(&owner).register(&owner, &domain, &resources);
                Outcome::Done(result.map(|(pid, detail)| {
                    if let Some(state) = self.owners.get_mut(&owner) {
                        state.domain.pid = pid;
                    }
                    detail
                }))
            }
            Op::Acquire | Op::Hotplug => Outcome::Done(
                self.node(&owner)
                    .acquire(&owner, &resources, None)
                    .map(|()| format!("{summary} locked")),
            ),
            Op::Resume => self.resume(step, &owner, &resources, &summary),
            Op::Pause => Outcome::Done((|| {
                let mut last = None;
                let times = step.repeat.unwrap_or(1).max(1);
                for _ in 0..times {
                    last = self.node(&owner).release(&owner, &resources, true)?;
                }
                let detail = format!(
                    "{summary} released{}; state {}",
                    if times > 1 {
                        format!(" ({times} Release calls, the last state kept)")
                    } else {
                        String::new()
                    },
                    describe_state(last.as_deref())
                );
                if let Some(state) = self.owners.get_mut(&owner) {
                    state.saved_state = last;
                }
                Ok(detail)
            })()),
            Op::Detach | Op::Unplug => Outcome::Done(
                self.node(&owner)
                    .release(&owner, &resources, false)
                    .map(|_| format!("{summary} released")),
            ),
            Op::Inquire => Outcome::Done(
                self.node(&owner)
                    .inquire(&owner, &resources)
                    .map(|state| format!("state {}", describe_state(state.as_deref()))),
            ),
            Op::Kill => Outcome::Done(self.kill(&owner)),
            Op::RestartLibvirtd => Outcome::Done(self.restart_libvirtd()),
            Op::RestartDaemon => match self.local.restart_daemon().inspect(|_| {
                self.daemon_restarted = true;
            }) {
                Ok(Some(detail)) => Outcome::Done(Ok(detail)),
                Ok(None) => Outcome::NotApplicable(format!("{} has no lock daemon", self.profile)),
                Err(failure) => Outcome::Done(Err(failure)),
            },
        }
    }

    fn resume(
        &mut self,
        step: &Step,
        owner: &str,
        resources: &[Resource],
        summary: &str,
    ) -> Outcome {
        let saved = self.owners[owner].saved_state.clone();
        let state = match (step.corrupt, saved) {
            (Some(_), None) => {
                return Outcome::NotApplicable(
                    "the plugin returned no state string at pause, so libvirt never passes one \
                     back: there is nothing to corrupt"
                        .into(),
                );
            }
            (Some(how), Some(text)) => Some(corrupt(&text, how)),
            (None, saved) => saved,
        };
        let result = self
            .node(owner)
            .acquire(owner, resources, state.as_deref())
            .map(|()| {
                format!(
                    "{summary} locked with state {}",
                    describe_state(state.as_deref())
                )
            });
        if result.is_ok() && step.corrupt.is_none() {
            // libvirt frees the saved state after a successful resume, and keeps it otherwise.
            if let Some(owner) = self.owners.get_mut(owner) {
                owner.saved_state = None;
            }
        }
        Outcome::Done(result.map_err(|mut f: Failure| {
            if step.corrupt.is_some() {
                f.message = format!("{} (given {})", f.message, describe_state(state.as_deref()));
            }
            f
        }))
    }

    fn kill(&mut self, owner: &str) -> Result<String, Failure> {
        let (uuid, remote) = {
            let state = &self.owners[owner];
            (state.domain.uuid, state.remote)
        };
        self.last_kill = Some(LastKill {
            at: Instant::now(),
            wall: SystemTime::now(),
            uuid,
            remote,
        });
        self.node(owner).kill(owner)
    }

    /// libvirtd restarts on every node of the cell.
    fn restart_libvirtd(&mut self) -> Result<String, Failure> {
        let mut detail = self.local.restart_libvirtd()?;
        if let Some(remote) = self.remote.as_mut() {
            let there = remote.restart_libvirtd()?;
            detail = format!("{detail}; on {}: {there}", remote.name());
        }
        Ok(detail)
    }

    /// Kills the owners, deinits the plugin, stops the daemon, on every node; reports what went
    /// wrong.
    fn finish(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Err(err) = self.local.finish() {
            problems.push(err);
        }
        if let Some(remote) = self.remote.as_mut() {
            if let Err(err) = remote.finish() {
                problems.push(format!("on {}: {err}", remote.name()));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

fn describe_state(state: Option<&str>) -> String {
    match state {
        None => "NULL".into(),
        Some(text) if text.len() > 60 => format!("'{}…' ({} bytes)", &text[..57], text.len()),
        Some(text) => format!("'{text}'"),
    }
}

/// Damages a state string the way the scenario asks, keeping it XML-safe.
fn corrupt(state: &str, how: Corruption) -> String {
    match how {
        Corruption::Truncate => {
            let mut end = state.len() / 2;
            while !state.is_char_boundary(end) {
                end -= 1;
            }
            state[..end].to_owned()
        }
        Corruption::Flip => {
            let chars: Vec<char> = state.chars().collect();
            let middle = chars.len() / 2;
            chars
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    if i != middle {
                        c
                    } else if c == 'A' {
                        'B'
                    } else if c.is_ascii_digit() {
                        if c == '0' { '1' } else { '0' }
                    } else {
                        'A'
                    }
                })
                .collect()
        }
        Corruption::Garbage => match state.split_once(':') {
            Some((prefix, _)) => format!("{prefix}:not-a-state-string"),
            None => "not-a-state-string".into(),
        },
    }
}

/// The table, with footnotes.
pub fn render_table(report: &MatrixReport, verbose: bool) -> String {
    let mut out = String::new();
    let name_width = report
        .scenarios
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(8)
        .max(8);
    let widths: Vec<usize> = report
        .plugins
        .iter()
        .map(|p| p.label.chars().count().max(7))
        .collect();
    let _ = write!(out, "\n{:<name_width$}", "scenario");
    for (plugin, width) in report.plugins.iter().zip(&widths) {
        let _ = write!(out, "  {:<width$}", plugin.label);
    }
    out.push('\n');
    let mut notes: Vec<String> = Vec::new();
    for scenario in &report.scenarios {
        let _ = write!(out, "{:<name_width$}", scenario.name);
        for (plugin, width) in report.plugins.iter().zip(&widths) {
            let cell = report
                .cells
                .iter()
                .find(|c| c.scenario == scenario.name && c.plugin == plugin.label);
            let text = match cell {
                None => "?".to_owned(),
                Some(cell) if cell.reason.is_empty() => cell.verdict.mark().to_owned(),
                Some(cell) => {
                    notes.push(format!(
                        "{} × {}: {}{}",
                        plugin.label,
                        scenario.name,
                        match cell.verdict {
                            Verdict::Pass => "",
                            Verdict::Fail => "",
                            Verdict::NotApplicable => "not applicable: ",
                            Verdict::CannotRun => "cannot run here: ",
                        },
                        cell.reason
                    ));
                    format!("{} {}", cell.verdict.mark(), notes.len())
                }
            };
            let pad = width.saturating_sub(text.chars().count());
            let _ = write!(out, "  {text}{}", " ".repeat(pad));
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "\n✓ as expected   ✗ not as expected   – not applicable   … cannot run on this machine"
    );
    for plugin in &report.plugins {
        if let Some(note) = &plugin.note {
            let _ = writeln!(out, "{}: {note}", plugin.label);
        }
        if let Some(node) = &plugin.remote_node {
            let _ = writeln!(
                out,
                "{}: owners a, c, … on this host, b, d, … on {node} (its lockmgr-loader-test agent)",
                plugin.label
            );
        }
    }
    for (i, note) in notes.iter().enumerate() {
        let _ = writeln!(out, "{:>3}. {note}", i + 1);
    }
    if verbose {
        for cell in &report.cells {
            let _ = writeln!(
                out,
                "\n{} × {} — {} ({:.2} s)\n  setup: {}",
                cell.scenario,
                cell.plugin,
                cell.verdict.mark(),
                cell.seconds,
                cell.setup
            );
            for step in &cell.steps {
                let _ = writeln!(
                    out,
                    "  {} {:>2}. {:<36} expected {:<8} got {:<8} {:>8.2} ms  {}",
                    if step.ok { "✓" } else { "✗" },
                    step.index,
                    step.label,
                    step.expected,
                    step.outcome,
                    step.ms,
                    step.detail
                );
            }
            if !cell.output.trim().is_empty() {
                for line in cell.output.lines().take(20) {
                    let _ = writeln!(out, "    | {line}");
                }
            }
        }
    }
    out
}

/// `0` all ✓ or –, `1` some ✗, `3` nothing failed but some cell cannot run here.
pub fn exit_code(report: &MatrixReport) -> u8 {
    let any = |v: Verdict| report.cells.iter().any(|c| c.verdict == v);
    if any(Verdict::Fail) {
        crate::EXIT_FAIL
    } else if any(Verdict::CannotRun) {
        crate::EXIT_INCOMPLETE
    } else {
        crate::EXIT_PASS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruptions_change_the_string_and_stay_xml_safe() {
        let state = "lockmgr1:abcDEF123xyz";
        for how in [Corruption::Truncate, Corruption::Flip, Corruption::Garbage] {
            let bad = corrupt(state, how);
            assert_ne!(bad, state, "{how:?}");
            assert!(lockmgr::check_state_string(&bad).is_ok(), "{how:?}: {bad}");
        }
        assert_eq!(
            corrupt(state, Corruption::Garbage),
            "lockmgr1:not-a-state-string"
        );
        assert_eq!(corrupt("ab", Corruption::Flip), "aA");
    }

    #[test]
    fn owner_uuids_are_plausible_and_distinct() {
        let a = owner_uuid("s", "a");
        let b = owner_uuid("s", "b");
        assert_ne!(a, b);
        assert!(a.is_plausible() && b.is_plausible());
    }
}
