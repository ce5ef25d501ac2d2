//! Scale: file.so or dlm.so + lockmgrd holding many locks on one host.
//!
//! The worker registers `ceil(L / per_owner)` domains (real forked owners: lockmgrd checks
//! their pids and pidfds), each with up to `per_owner` disks, and one probe domain with one
//! disk. It then fills lockmgrd's table in steps (0, L/10, L/2, L held locks: each step one
//! Acquire per domain of the disks it adds, at most 1024 per request) and at each step times
//! the probe domain's Acquire (New + AddResource + Acquire(state) + Free) and Release
//! (New + AddResource + Release(&state) + Free) separately, and reads lockmgrd's VmRSS. With
//! all L held by live owners it SIGKILLs lockmgrd, starts it again and times the restart: until
//! the new instance answers a request (it serves only once it has restored its table and taken
//! every lock back: file.so's OFD locks afresh, dlm.so's by adopting the orphans the SIGKILL
//! left in the kernel), and asks it what it took back (its Status reply's `restored`). At the end every domain
//! releases its locks before lockmgrd stops, so that no orphan outlives the run.

use std::time::Instant;

use lockmgr::host::Plugin;
use lockmgr::{LockFailureAction, Resource};
use lockmgr_proto::{Reply, Restored};
use serde::{Deserialize, Serialize};

use crate::bench::libvirtd::{Owner, disk_image, numbered_uuid, register};
use crate::bench::report::percentile;
use crate::bench::worker::{WorkerArgs, elapsed_ns, load_plugin};
use crate::daemons::{PluginEnv, Profile};
use crate::sequences;

/// A scale worker's subject.
pub(super) struct ScaleSubject {
    plugin: Option<Plugin>,
    env: PluginEnv,
    owners: Vec<Owner>,
    probe: Owner,
    probe_state: Option<String>,
    locks: usize,
    probes: usize,
}

/// One table size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleLevel {
    /// Locks held by the other domains while the probe ran.
    pub held: usize,
    /// `filled` or `after restart`.
    pub when: String,
    /// Probe cycles.
    pub probes: usize,
    /// The probe's Acquire, median, ns.
    pub acquire_p50_ns: u64,
    /// The probe's Acquire, p99, ns.
    pub acquire_p99_ns: u64,
    /// The probe's Release, median, ns.
    pub release_p50_ns: u64,
    /// The probe's Release, p99, ns.
    pub release_p99_ns: u64,
    /// The filling Acquire requests that brought the table to this size (wall), ns.
    pub fill_ns: u64,
    /// lockmgrd's VmRSS after the probes, kB.
    pub rss_kb: u64,
}

/// What a scale worker reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleResult {
    /// The plugin's label (set by the coordinator).
    #[serde(default)]
    pub plugin: String,
    /// `lockspace` or `direct` (set by the coordinator).
    #[serde(default)]
    pub mode: String,
    /// Locks held at the end.
    pub locks: usize,
    /// Owner domains holding them (plus the probe).
    pub owners: usize,
    /// Per table size.
    pub levels: Vec<ScaleLevel>,
    /// From SIGKILL's reaping to the new lockmgrd answering its first request, ns.
    pub restart_ns: u64,
    /// Of which: until its socket accepted a connection, ns.
    pub restart_socket_ns: u64,
    /// What the new instance took back, as its Status reply says.
    pub restored: Restored,
    /// lockmgrd's VmRSS right after the restart, kB.
    pub rss_after_restart_kb: u64,
}

/// The table sizes probed: 0, L/10, L/2, L.
pub(super) fn levels(locks: usize) -> Vec<usize> {
    let mut out = vec![0, locks / 10, locks / 2, locks];
    out.dedup();
    out
}

fn vm_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Registers scale domain `i`, `name`, with `disks`.
fn register_scale(
    plugin: &Plugin,
    i: usize,
    name: String,
    disks: Vec<Resource>,
) -> Result<Owner, String> {
    let what = name.clone();
    register(
        plugin,
        numbered_uuid(b"lockmgr-scale", i),
        i,
        name,
        disks,
        &what,
    )
    .map_err(String::from)
}

impl ScaleSubject {
    pub(super) fn set_up(args: &WorkerArgs) -> Result<ScaleSubject, String> {
        let loaded = load_plugin(args)?;
        if !matches!(loaded.profile, Profile::File | Profile::Dlm) {
            return Err(format!(
                "scale measures a plugin with lockmgrd (file.so, dlm.so), not {}",
                loaded.profile
            ));
        }
        let locks = args.scale_locks.unwrap_or(0);
        let per_owner = args.scale_per_owner.clamp(1, lockmgr_proto::MAX_RESOURCES);
        let mut owners = Vec::new();
        let mut made = 0;
        while made < locks {
            let i = owners.len();
            let count = per_owner.min(locks - made);
            let disks = loaded.disks(count, |k| format!("scale-{i:03}-{k:04}.img"))?;
            owners.push(register_scale(
                &loaded.plugin,
                i,
                format!("scale-{i}"),
                disks,
            )?);
            made += count;
        }
        let probe = register_scale(
            &loaded.plugin,
            owners.len(),
            "scale-probe".into(),
            vec![disk_image(&loaded.disk_dir, "scale-probe.img")?],
        )?;
        Ok(ScaleSubject {
            plugin: Some(loaded.plugin),
            env: loaded.env,
            owners,
            probe,
            probe_state: None,
            locks,
            probes: args.scale_probes.max(1),
        })
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "{}; {} owner domains for {} locks, one probe domain",
            self.env.describe(),
            self.owners.len(),
            self.locks
        )
    }

    fn daemon_pid(&self) -> u32 {
        self.env.daemon.as_ref().map_or(0, |d| d.pid())
    }

    /// Acquires disks `from..to` of the concatenation of every owner's disks, one request per
    /// owner.
    fn fill(&self, from: usize, to: usize) -> Result<(), String> {
        let plugin = self.plugin.as_ref().ok_or("plugin not loaded")?;
        let mut base = 0;
        for owner in &self.owners {
            let end = base + owner.disks.len();
            let (lo, hi) = (from.max(base), to.min(end));
            if lo < hi {
                sequences::start(
                    plugin,
                    &owner.domain,
                    &owner.disks[lo - base..hi - base],
                    LockFailureAction::Default,
                )
                .map_err(|e| {
                    e.worded("", |e| {
                        format!("{} acquiring {} disks: {e}", owner.domain.name, hi - lo)
                    })
                })?;
            }
            base = end;
        }
        Ok(())
    }

    /// `probes` acquire + release cycles of the probe domain: the times of each.
    fn probe(&mut self) -> Result<(Vec<u64>, Vec<u64>), String> {
        let plugin = self.plugin.as_ref().ok_or("plugin not loaded")?;
        let mut acquires = Vec::with_capacity(self.probes);
        let mut releases = Vec::with_capacity(self.probes);
        let resume = self.probe.domain.clone();
        let mut pause = resume.clone();
        pause.uri = None;
        for _ in 0..self.probes {
            let started = Instant::now();
            sequences::resume_with_state(
                plugin,
                &resume,
                &self.probe.disks,
                self.probe_state.as_deref(),
                LockFailureAction::Default,
            )
            .map_err(|e| e.worded("probe ", |e| format!("probe Acquire: {e}")))?;
            acquires.push(elapsed_ns(started));
            let started = Instant::now();
            self.probe_state = sequences::pause(plugin, &pause, &self.probe.disks)
                .map_err(|e| e.worded("probe ", |e| format!("probe Release: {e}")))?
                .map(|s| s.text());
            releases.push(elapsed_ns(started));
        }
        acquires.sort_unstable();
        releases.sort_unstable();
        Ok((acquires, releases))
    }

    fn level(&mut self, held: usize, when: &str, fill_ns: u64) -> Result<ScaleLevel, String> {
        let (acquires, releases) = self.probe()?;
        Ok(ScaleLevel {
            held,
            when: when.to_owned(),
            probes: acquires.len(),
            acquire_p50_ns: percentile(&acquires, 50),
            acquire_p99_ns: percentile(&acquires, 99),
            release_p50_ns: percentile(&releases, 50),
            release_p99_ns: percentile(&releases, 99),
            fill_ns,
            rss_kb: vm_rss_kb(self.daemon_pid()),
        })
    }

    /// Kills lockmgrd with every lock held and starts it again: (until it answers, until its
    /// socket accepted, what it took back).
    fn restart(&mut self) -> Result<(u64, u64, Restored), String> {
        let daemon = self
            .env
            .daemon
            .as_mut()
            .ok_or("this plugin's profile has no daemon")?;
        daemon.crash()?;
        let started = Instant::now();
        daemon.start_accepting()?;
        let socket_ns = elapsed_ns(started);
        match daemon.wait_serving()? {
            Some(Reply::Status { restored, .. }) => {
                let answered_ns = elapsed_ns(started);
                let restored = restored
                    .ok_or("the restarted lockmgrd says it found no lock table to take back")?;
                Ok((answered_ns, socket_ns, restored))
            }
            other => Err(format!("lockmgrd answered Status with {other:?}")),
        }
    }

    pub(super) fn run(&mut self) -> Result<ScaleResult, String> {
        let mut out = Vec::new();
        let mut held = 0;
        for target in levels(self.locks) {
            let started = Instant::now();
            self.fill(held, target)?;
            let fill_ns = if target > held {
                elapsed_ns(started)
            } else {
                0
            };
            held = target;
            out.push(self.level(held, "filled", fill_ns)?);
        }
        let (restart_ns, restart_socket_ns, restored) = self.restart()?;
        let rss_after_restart_kb = vm_rss_kb(self.daemon_pid());
        out.push(self.level(held, "after restart", 0)?);
        Ok(ScaleResult {
            plugin: String::new(),
            mode: String::new(),
            locks: self.locks,
            owners: self.owners.len(),
            levels: out,
            restart_ns,
            restart_socket_ns,
            restored,
            rss_after_restart_kb,
        })
    }

    /// Releases every domain's locks, then stops the owners and lockmgrd. Released first: a
    /// lockmgrd stopped with locks held leaves them behind as it must (DLM orphans keep
    /// protecting the disks), and the next run on this node would find its disks taken.
    pub(super) fn finish(mut self) -> Result<(), String> {
        let mut first_error = None;
        if let Some(plugin) = &self.plugin {
            for owner in self.owners.iter().chain([&self.probe]) {
                let mut detached = owner.domain.clone();
                detached.uri = None;
                if let Err(err) = sequences::detach(plugin, &detached, &owner.disks) {
                    first_error.get_or_insert_with(|| {
                        err.worded("", |e| format!("releasing {}: {e}", owner.domain.name))
                    });
                }
            }
        }
        self.owners.clear();
        self.env.unload(self.plugin.take(), "")?;
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_grow_to_the_total() {
        assert_eq!(levels(10_000), vec![0, 1000, 5000, 10_000]);
        assert_eq!(levels(5), vec![0, 2, 5]);
        assert_eq!(levels(0), vec![0]);
    }
}
