//! The coordinator: one worker process per (plugin, mode, pinning), driven in interleaved rounds,
//! its samples collected into series.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::bench::args::{BenchArgs, LockMode, Pinning, Suite};
use crate::bench::floor::{BUILTIN_FLOOR, FloorKind};
use crate::bench::pool::{Job, Launch, Worker, WorkerSpec, in_turn, start_workers, stop_workers};
use crate::bench::render::render;
use crate::bench::report::{BenchReport, Series, percentile, ratios};
use crate::bench::storm::{self, StormSample};
use crate::bench::worker::Reply;
use crate::daemons::{self, PluginSpec, Profile};
use crate::harness_sys;

/// sanlock.so's limit of resources per domain (`SANLK_MAX_RESOURCES`).
pub(super) const SANLOCK_MAX_RESOURCES: usize = 8;

/// `bench`.
pub fn command(args: &BenchArgs) -> u8 {
    match run_bench(args) {
        Ok(report) => {
            let printed =
                crate::output::emit_report(&report, args.json, args.json_file.as_deref(), render);
            if let Err(err) = printed {
                eprintln!("lockmgr-loader-test bench: {err}");
                return crate::EXIT_FAIL;
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

/// What `bench` says when an interrupt ended the run.
const INTERRUPTED: &str = "interrupted: every worker and daemon killed, scratch removed";

fn run_bench(args: &BenchArgs) -> Result<BenchReport, String> {
    let plugins = bench_plugins(args)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    harness_sys::kill_groups_on_interrupt()
        .map_err(|e| format!("cannot set up the interrupt handler: {e}"))?;
    let scratch = tempfile::Builder::new()
        .prefix("lockmgr-bench-")
        .tempdir_in(scratch_base())
        .map_err(|e| format!("cannot create a scratch directory: {e}"))?;
    let mut run = BenchRun {
        launch: Launch {
            exe: &exe,
            args,
            scratch: scratch.path(),
        },
        plugins: &plugins,
        timeout: Duration::from_secs(args.timeout.max(1)),
        report: BenchReport {
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
        },
    };
    if args.wants(Suite::Cycle) {
        run.cycles()?;
    }
    if args.wants(Suite::Storm) && !harness_sys::terminating() {
        run.storms();
    }
    if args.wants(Suite::Scale) && !harness_sys::terminating() {
        run.scale();
    }
    if harness_sys::terminating() {
        return Err(INTERRUPTED.into());
    }
    Ok(run.report)
}

/// One `bench` run: what its suites share, and the report they fill.
struct BenchRun<'a> {
    launch: Launch<'a>,
    plugins: &'a [PluginSpec],
    timeout: Duration,
    report: BenchReport,
}

impl BenchRun<'_> {
    /// The cycle suite (and with `ipc-floor`, the IPC-inclusive floor and its parts in the same
    /// rounds).
    fn cycles(&mut self) -> Result<(), String> {
        let (args, plugins, timeout) = (self.launch.args, self.plugins, self.timeout);
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
        let report = &mut self.report;
        if ipc {
            report.floors = [FloorKind::Ipc, FloorKind::OfdRaw, FloorKind::Rtt]
                .into_iter()
                .map(|k| (k.label().to_owned(), k.describe().to_owned()))
                .collect();
        }
        let mut workers = start_workers(&self.launch, specs, &disks, timeout, report);
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
            return Err(INTERRUPTED.into());
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
    fn storms(&mut self) {
        let (args, plugins) = (self.launch.args, self.plugins);
        let report = &mut self.report;
        let specs = unpinned_specs(
            plugins,
            &[Profile::Nop, Profile::File, Profile::Lockd, Profile::Dlm],
            &args.modes,
            Job::Storm,
        );
        if specs.is_empty() {
            report
                .errors
                .push("storm: no nop, file, lockd or dlm plugin to storm".into());
            return;
        }
        eprintln!(
            "bench: boot storm, {} domains × {} disks, {} storms per plugin and mode",
            args.storm_domains, args.storm_disks, args.storm_rounds
        );
        let storm_timeout = self.timeout.max(Duration::from_secs(600));
        let mut workers = start_workers(&self.launch, specs, &[], storm_timeout, report);
        let mut samples: Vec<Vec<StormSample>> = vec![Vec::new(); workers.len()];
        let rounds = args.storm_rounds.max(1);
        let started = Instant::now();
        for round in 0..rounds {
            in_turn(&mut workers, round, |index, worker| {
                match worker.ask("storm", storm_timeout) {
                    Ok(Reply::Storm(sample)) => samples[index].push(sample),
                    Ok(other) => {
                        worker.failed = Some(format!("storm: unexpected answer {other:?}"));
                    }
                    Err(err) => worker.failed = Some(format!("storm {}: {err}", round + 1)),
                }
            });
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

    /// Scale: one worker per lockmgrd-based plugin (file.so per mode, dlm.so), one after the
    /// other.
    fn scale(&mut self) {
        let args = self.launch.args;
        let report = &mut self.report;
        let specs = unpinned_specs(
            self.plugins,
            &[Profile::File, Profile::Dlm],
            &args.modes,
            Job::Scale,
        );
        if specs.is_empty() {
            report
                .errors
                .push("scale: no file.so or dlm.so among the plugins".into());
            return;
        }
        let scale_timeout = self.timeout.max(Duration::from_secs(1800));
        for spec in specs {
            if harness_sys::terminating() {
                return;
            }
            eprintln!(
                "bench: scale, {}, up to {} locks",
                spec.describe(),
                args.scale_locks
            );
            let mut workers = start_workers(&self.launch, vec![spec], &[], scale_timeout, report);
            if let Some(worker) = workers.first_mut() {
                match worker.ask("scale", scale_timeout) {
                    Ok(Reply::Scale(mut result)) => {
                        result.plugin = worker.spec.label();
                        result.mode = worker.spec.mode_str();
                        report.scale.push(result);
                    }
                    Ok(other) => {
                        worker.failed = Some(format!("scale: unexpected answer {other:?}"));
                    }
                    Err(err) => worker.failed = Some(format!("scale: {err}")),
                }
            }
            stop_workers(workers, &mut report.errors);
        }
    }
}

/// One unpinned `job` worker per plugin of `profiles`, and per mode of `modes` for a plugin
/// that has a lockspace mode.
fn unpinned_specs(
    plugins: &[PluginSpec],
    profiles: &[Profile],
    modes: &[LockMode],
    job: Job,
) -> Vec<WorkerSpec> {
    let mut specs = Vec::new();
    for plugin in plugins.iter().filter(|p| profiles.contains(&p.profile)) {
        let modes: Vec<Option<LockMode>> = if plugin.profile.has_lockspace_mode() {
            modes.iter().copied().map(Some).collect()
        } else {
            vec![None]
        };
        for mode in modes {
            specs.push(WorkerSpec {
                job,
                ..WorkerSpec::cycle(Some(plugin.clone()), mode, false)
            });
        }
    }
    specs
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
            in_turn(workers, round, |_, worker| {
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
                        worker.failed = Some(format!("round {} at N={n}: {err}", round + 1));
                    }
                }
            });
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
