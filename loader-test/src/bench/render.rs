//! The text `bench` prints: the series, the ratios against their targets, the setup.

use std::fmt::Write as _;

use crate::bench::report::{BenchReport, Ratio};

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
