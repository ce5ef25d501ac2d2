//! The boot storm on one host: D domains × K disks acquiring at once, as libvirtd starting D
//! domains, per plugin.
//!
//! A storm worker loads the plugin as libvirtd does and registers every domain first (the
//! forked pre-exec child of each, one after the other: timed, not part of the storm). A storm
//! is then: every domain's New(0, uri) + K×AddResource + Acquire(NULL, 0) + Free issued at once
//! from threads of the one host process (one thread per domain unless `--storm-threads`),
//! released at a barrier; per domain, the time from the storm's start to its Acquire's
//! return; the storm's wall time until the last one returned. Then every domain detaches
//! (New(0, NULL) + K×AddResource + Release(NULL) + Free), concurrently too, timed as the
//! release storm.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex, OnceLock};
use std::time::Instant;

use lockmgr::host::Plugin;
use lockmgr::{LockFailureAction, Uuid};
use serde::{Deserialize, Serialize};

use crate::bench::libvirtd::{Owner, numbered_uuid, register};
use crate::bench::report::{StormRatio, percentile};
use crate::bench::worker::{WorkerArgs, elapsed_ns, load_plugin};
use crate::daemons::PluginEnv;
use crate::daemons::{PluginSpec, Profile};
use crate::sequences;

/// A storm worker's subject.
pub(super) struct StormSubject {
    plugin: Option<Plugin>,
    env: PluginEnv,
    domains: Vec<Owner>,
    threads: usize,
    register_ns: u64,
}

/// One storm, as the worker reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StormSample {
    /// Per domain: from the storm's start to its Acquire's return, ns.
    pub(super) acquire_ns: Vec<u64>,
    /// From the storm's start until every domain held its disks, ns.
    pub(super) wall_ns: u64,
    /// The release storm's wall time, ns.
    pub(super) release_wall_ns: u64,
    /// Registering every domain (pre-exec children, one after the other), ns.
    pub(super) register_ns: u64,
}

fn storm_uuid(i: usize) -> Uuid {
    numbered_uuid(b"lockmgr-storm", i)
}

impl StormSubject {
    pub(super) fn set_up(args: &WorkerArgs) -> Result<StormSubject, String> {
        let loaded = load_plugin(args)?;
        let count = args.storm_domains.unwrap_or(0).max(1);
        let started = Instant::now();
        let mut domains = Vec::with_capacity(count);
        for i in 0..count {
            let disks = loaded.disks(args.storm_disks, |k| format!("storm-{i:04}-{k}.img"))?;
            domains.push(register(
                &loaded.plugin,
                storm_uuid(i),
                i,
                format!("storm-{i}"),
                disks,
                &format!("storm domain {i}"),
            )?);
        }
        Ok(StormSubject {
            plugin: Some(loaded.plugin),
            env: loaded.env,
            domains,
            threads: args.storm_threads,
            register_ns: elapsed_ns(started),
        })
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "{}; {} domains × {} disks registered in {:.1} ms; {} threads",
            self.env.describe(),
            self.domains.len(),
            self.domains.first().map_or(0, |d| d.disks.len()),
            self.register_ns as f64 / 1e6,
            self.thread_count()
        )
    }

    fn thread_count(&self) -> usize {
        match self.threads {
            0 => self.domains.len(),
            t => t.min(self.domains.len()),
        }
        .max(1)
    }

    /// Runs `op` for every domain from the storm's threads, all released at once: per domain the
    /// time from the start to its return, and the wall time.
    fn burst(
        &self,
        op: impl Fn(&Plugin, &Owner) -> Result<(), String> + Sync,
    ) -> Result<(Vec<u64>, u64), String> {
        let plugin = self.plugin.as_ref().ok_or("plugin not loaded")?;
        let threads = self.thread_count();
        let next = AtomicUsize::new(0);
        let barrier = Barrier::new(threads + 1);
        let start: OnceLock<Instant> = OnceLock::new();
        let times = Mutex::new(Vec::with_capacity(self.domains.len()));
        let errors = Mutex::new(Vec::new());
        let domains = &self.domains;
        let wall = std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    barrier.wait();
                    let Some(&t0) = start.get() else { return };
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(domain) = domains.get(i) else {
                            break;
                        };
                        match op(plugin, domain) {
                            Ok(()) => {
                                let ns = elapsed_ns(t0);
                                if let Ok(mut t) = times.lock() {
                                    t.push(ns);
                                }
                            }
                            Err(err) => {
                                if let Ok(mut e) = errors.lock() {
                                    e.push(format!("{}: {err}", domain.domain.name));
                                }
                            }
                        }
                    }
                });
            }
            let t0 = Instant::now();
            let _ = start.set(t0);
            barrier.wait();
            t0
        });
        let wall_ns = elapsed_ns(wall);
        let errors = errors.into_inner().unwrap_or_default();
        if let Some(first) = errors.first() {
            return Err(format!(
                "{} of {} domains failed, first: {first}",
                errors.len(),
                self.domains.len()
            ));
        }
        Ok((times.into_inner().unwrap_or_default(), wall_ns))
    }

    /// One storm: acquire everything at once, then release everything at once.
    pub(super) fn storm(&mut self) -> Result<StormSample, String> {
        let (mut acquire_ns, wall_ns) = self.burst(|plugin, d| {
            sequences::start(plugin, &d.domain, &d.disks, LockFailureAction::Default)
                .map_err(|e| e.worded("", |e| format!("Acquire: {e}")))
        })?;
        let (_, release_wall_ns) = self.burst(|plugin, d| {
            sequences::detach(plugin, &d.domain, &d.disks)
                .map_err(|e| e.worded("", |e| format!("Release: {e}")))
        })?;
        acquire_ns.sort_unstable();
        Ok(StormSample {
            acquire_ns,
            wall_ns,
            release_wall_ns,
            register_ns: self.register_ns,
        })
    }

    pub(super) fn finish(mut self) -> Result<(), String> {
        self.domains.clear();
        self.env.unload(self.plugin.take(), "")
    }
}

/// One row of the storm table: a plugin and mode over every storm.
#[derive(Debug, Clone, Serialize)]
pub struct StormRow {
    /// The plugin's label.
    pub plugin: String,
    /// `lockspace`, `direct` or `-`.
    pub mode: String,
    /// Domains per storm.
    pub domains: usize,
    /// Disks per domain.
    pub disks: usize,
    /// Storms run.
    pub storms: usize,
    /// Median wall time of a storm (start to the last domain holding its disks), ns.
    pub wall_median_ns: u64,
    /// Slowest storm's wall time, ns.
    pub wall_max_ns: u64,
    /// Per domain (over every storm): start to its Acquire's return, median, ns.
    pub domain_p50_ns: u64,
    /// The same, 99th percentile, ns.
    pub domain_p99_ns: u64,
    /// Median wall time of the release storm, ns.
    pub release_wall_median_ns: u64,
    /// Registering every domain once (pre-exec children one after the other), ns.
    pub register_ns: u64,
}

/// Summarizes one worker's storms.
pub(super) fn row(plugin: String, mode: String, disks: usize, samples: &[StormSample]) -> StormRow {
    let mut walls: Vec<u64> = samples.iter().map(|s| s.wall_ns).collect();
    walls.sort_unstable();
    let mut releases: Vec<u64> = samples.iter().map(|s| s.release_wall_ns).collect();
    releases.sort_unstable();
    let mut domains: Vec<u64> = samples
        .iter()
        .flat_map(|s| s.acquire_ns.iter().copied())
        .collect();
    domains.sort_unstable();
    StormRow {
        plugin,
        mode,
        domains: samples.first().map_or(0, |s| s.acquire_ns.len()),
        disks,
        storms: samples.len(),
        wall_median_ns: percentile(&walls, 50),
        wall_max_ns: walls.last().copied().unwrap_or(0),
        domain_p50_ns: percentile(&domains, 50),
        domain_p99_ns: percentile(&domains, 99),
        release_wall_median_ns: percentile(&releases, 50),
        register_ns: samples.first().map_or(0, |s| s.register_ns),
    }
}

/// lockd ÷ file per mode (target: file.so ≥ 10× faster, on the wall time) and file ÷ nop (what
/// file.so adds to the harness's own cost).
pub(super) fn ratios(rows: &[StormRow], plugins: &[PluginSpec]) -> Vec<StormRatio> {
    let label_of = |profile: Profile| {
        plugins
            .iter()
            .find(|p| p.profile == profile)
            .map(|p| p.label.clone())
    };
    let find = |label: &Option<String>, mode: &str| {
        rows.iter()
            .find(|r| Some(&r.plugin) == label.as_ref() && (r.mode == mode || mode == "*"))
    };
    let (file, lockd, nop) = (
        label_of(Profile::File),
        label_of(Profile::Lockd),
        label_of(Profile::Nop),
    );
    let ratio = |what: String, mode: &str, a: &StormRow, b: &StormRow, target: bool| {
        let wall = a.wall_median_ns as f64 / b.wall_median_ns.max(1) as f64;
        StormRatio {
            what,
            mode: mode.to_owned(),
            wall,
            p50: a.domain_p50_ns as f64 / b.domain_p50_ns.max(1) as f64,
            p99: a.domain_p99_ns as f64 / b.domain_p99_ns.max(1) as f64,
            target: target.then(|| ">= 10".to_owned()),
            met: target.then_some(wall >= 10.0),
        }
    };
    let mut out = Vec::new();
    for f in rows.iter().filter(|r| Some(&r.plugin) == file.as_ref()) {
        if let Some(l) = find(&lockd, &f.mode) {
            out.push(ratio(
                format!("{}/{}", l.plugin, f.plugin),
                &f.mode,
                l,
                f,
                true,
            ));
        }
        if let Some(n) = find(&nop, "*") {
            out.push(ratio(
                format!("{}/{}", f.plugin, n.plugin),
                &f.mode,
                f,
                n,
                false,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storm_uuids_are_plausible_and_distinct() {
        assert!(storm_uuid(0).is_plausible());
        assert_ne!(storm_uuid(1), storm_uuid(256));
        assert_ne!(storm_uuid(0), storm_uuid(199));
    }
}
