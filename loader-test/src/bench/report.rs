//! What `bench` reports: the series (percentiles of a cycle) and the ratios between them, with
//! their targets.

use serde::Serialize;

use crate::bench::scale::ScaleResult;
use crate::bench::storm::StormRow;
use crate::daemons::{PluginSpec, Profile};

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
    /// With `--suite ipc-floor`: the other floors' labels and what each measures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub floors: Vec<(String, String)>,
    /// With `--suite storm`: one row per plugin and mode.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub storm: Vec<StormRow>,
    /// With `--suite storm`: lockd ÷ file per mode, with the target.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub storm_ratios: Vec<StormRatio>,
    /// With `--suite scale`: one result per mode of file.so.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scale: Vec<ScaleResult>,
}

/// A ratio between two boot storms.
#[derive(Debug, Clone, Serialize)]
pub struct StormRatio {
    /// `lockd/file`, `file/nop`.
    pub what: String,
    /// The mode of both.
    pub mode: String,
    /// Ratio of the median wall times.
    pub wall: f64,
    /// Ratio of the per-domain medians.
    pub p50: f64,
    /// Ratio of the per-domain p99s.
    pub p99: f64,
    /// The target for the wall-time ratio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Whether the wall-time ratio meets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
}

/// Nearest-rank percentile (`pct` in 1..=100) of sorted values.
pub(super) fn percentile(sorted: &[u64], pct: usize) -> u64 {
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
pub(super) fn ratio(numerator: &Series, denominator: &Series, target: Option<Target>) -> Ratio {
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

pub(super) fn ratios(series: &[Series], plugins: &[PluginSpec]) -> Vec<Ratio> {
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
        // The IPC-inclusive floor (`--suite ipc-floor`): the target, file.so N=64 ≤ 2×
        // (raw OFD locks for 64 + two socket round trips).
        if let Some(floor) = find("ipc-floor", "-", s.pinned, s.disks) {
            let target: Target = ("<= 2", |m| m <= 2.0);
            out.push(ratio(s, floor, at_target.then_some(target)));
        }
    }
    // What the IPC-inclusive floor is made of: ipc-floor ÷ (ofd-raw + 2rtt), both measured.
    for s in series.iter().filter(|s| s.plugin == "ipc-floor") {
        if let (Some(ofd), Some(rtt)) = (
            find("ofd-raw", "-", s.pinned, s.disks),
            find("2rtt", "-", s.pinned, s.disks),
        ) {
            let sum = Series {
                plugin: "(ofd+2rtt)".into(),
                median_ns: ofd.median_ns + rtt.median_ns,
                p99_ns: ofd.p99_ns + rtt.p99_ns,
                ..ofd.clone()
            };
            let mut r = ratio(s, &sum, None);
            r.what = "ipc/(ofd+2rtt)".into();
            out.push(r);
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
}
