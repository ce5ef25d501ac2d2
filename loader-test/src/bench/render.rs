//! The text `bench` prints: the series, the ratios against their targets, the setup.

use std::fmt::Write as _;

use crate::bench::report::{BenchReport, Ratio};

/// How a column's cells (its heading too) align, and in how many characters.
#[derive(Clone, Copy)]
enum Align {
    Left(usize),
    Right(usize),
}

/// The storm table: plugin, mode, then six timings.
#[rustfmt::skip]
const STORM_COLUMNS: [(&str, Align); 8] = {
    use Align::{Left, Right};
    [
        ("plugin", Left(10)), ("mode", Left(10)), ("wall median", Right(12)), ("wall max", Right(12)),
        ("domain p50", Right(12)), ("domain p99", Right(12)), ("release wall", Right(13)),
        ("register", Right(12)),
    ]
};

/// The scale table: locks held, when, five timings, the daemon's RSS.
#[rustfmt::skip]
const SCALE_COLUMNS: [(&str, Align); 8] = {
    use Align::{Left, Right};
    [
        ("held", Right(8)), ("", Left(14)), ("acquire p50", Right(12)), ("acquire p99", Right(12)),
        ("release p50", Right(12)), ("release p99", Right(12)), ("fill", Right(12)),
        ("lockmgrd RSS", Right(13)),
    ]
};

/// Writes one line of a table: each cell aligned in its column, one space between columns.
fn table_line(out: &mut String, columns: &[(&str, Align)], cells: &[impl std::fmt::Display]) {
    let line = columns
        .iter()
        .zip(cells)
        .map(|((_, align), cell)| match *align {
            Align::Left(width) => format!("{cell:<width$}"),
            Align::Right(width) => format!("{cell:>width$}"),
        })
        .collect::<Vec<_>>()
        .join(" ");
    let _ = writeln!(out, "{line}");
}

/// Writes a table's line of headings.
fn table_head(out: &mut String, columns: &[(&str, Align)]) {
    let headings: Vec<&str> = columns.iter().map(|(heading, _)| *heading).collect();
    table_line(out, columns, &headings);
}

fn human(ns: u64) -> String {
    let us = ns as f64 / 1000.0;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

/// Everything `bench` prints: the cycle table with its ratios, then the storm and the scale
/// sections when they ran.
pub fn render(report: &BenchReport) -> String {
    let mut out = String::new();
    if !report.series.is_empty() {
        out.push_str(&render_cycles(report));
    }
    if !report.storm.is_empty() {
        out.push_str(&render_storm(report));
    }
    for scale in &report.scale {
        out.push_str(&render_scale(scale));
    }
    for note in &report.notes {
        let _ = writeln!(out, "\n{note}");
    }
    for err in &report.errors {
        let _ = writeln!(out, "\nnot measured: {err}");
    }
    out
}

fn render_storm(report: &BenchReport) -> String {
    let mut out = String::new();
    let first = &report.storm[0];
    let _ = writeln!(
        out,
        "\nboot storm: {} domains × {} disks acquiring at once (each New(0, uri) + {}×AddResource + \
         Acquire(NULL, 0) + Free, from threads of one host process, released together), {} \
         storms per row, interleaved; per domain: from the storm's start to its Acquire's return",
        first.domains, first.disks, first.disks, first.storms
    );
    table_head(&mut out, &STORM_COLUMNS);
    let order = |plugin: &str| match plugin {
        "nop" => 0,
        _ => 1,
    };
    let mut rows: Vec<_> = report.storm.iter().collect();
    rows.sort_by(|a, b| {
        (order(&a.plugin), &a.plugin, &a.mode).cmp(&(order(&b.plugin), &b.plugin, &b.mode))
    });
    for r in rows {
        let mut cells = vec![r.plugin.clone(), r.mode.clone()];
        cells.extend(
            [
                r.wall_median_ns,
                r.wall_max_ns,
                r.domain_p50_ns,
                r.domain_p99_ns,
                r.release_wall_median_ns,
                r.register_ns,
            ]
            .map(human),
        );
        table_line(&mut out, &STORM_COLUMNS, &cells);
    }
    if !report.storm_ratios.is_empty() {
        let _ = writeln!(out, "\nstorm ratios: wall (per-domain p50, p99)");
        for r in &report.storm_ratios {
            let target = match (&r.target, r.met) {
                (Some(t), Some(met)) => format!(
                    "   target {t}× (file.so ≥ 10× faster): {}",
                    if met { "met" } else { "NOT met" }
                ),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "{:<12} {:<10} {:>9.2}× ({:.2}×, {:.2}×){target}",
                r.what, r.mode, r.wall, r.p50, r.p99
            );
        }
    }
    out
}

fn render_scale(scale: &crate::bench::scale::ScaleResult) -> String {
    let mut out = String::new();
    let probes = scale.levels.first().map_or(0, |l| l.probes);
    let mode = match scale.mode.as_str() {
        "-" => String::new(),
        mode => format!(" ({mode} mode)"),
    };
    let _ = writeln!(
        out,
        "\nscale: {}{mode} + lockmgrd, up to {} locks held by {} live domains; probe: one more \
         domain's Acquire and Release of 1 disk (New + AddResource + op + Free), {probes} each per row",
        scale.plugin, scale.locks, scale.owners
    );
    table_head(&mut out, &SCALE_COLUMNS);
    for l in &scale.levels {
        let mut cells = vec![l.held.to_string(), l.when.clone()];
        cells.extend(
            [
                l.acquire_p50_ns,
                l.acquire_p99_ns,
                l.release_p50_ns,
                l.release_p99_ns,
            ]
            .map(human),
        );
        cells.push(if l.fill_ns == 0 {
            "-".to_owned()
        } else {
            human(l.fill_ns)
        });
        // At least 13 wide: the column adds no padding.
        cells.push(format!("{:>10} kB", l.rss_kb));
        table_line(&mut out, &SCALE_COLUMNS, &cells);
    }
    let empty = scale
        .levels
        .iter()
        .find(|l| l.held == 0 && l.when == "filled");
    let full = scale
        .levels
        .iter()
        .filter(|l| l.when == "filled")
        .max_by_key(|l| l.held);
    if let (Some(empty), Some(full)) = (empty, full) {
        if full.held > 0 {
            let _ = writeln!(
                out,
                "flat? at {} held ÷ at 0: acquire p50 {:.2}×, release p50 {:.2}×",
                full.held,
                full.acquire_p50_ns as f64 / empty.acquire_p50_ns.max(1) as f64,
                full.release_p50_ns as f64 / empty.release_p50_ns.max(1) as f64
            );
        }
    }
    let restart = scale.restart_ns as f64 / 1e9;
    let _ = writeln!(
        out,
        "restart with {} locks held by live owners: SIGKILL, start, {} until it answered (its socket \
         accepted after {}); restored {}; RSS {} kB after   target < 2 s: {}",
        scale.locks,
        human(scale.restart_ns),
        human(scale.restart_socket_ns),
        scale.restored,
        scale.rss_after_restart_kb,
        if restart < 2.0 && u64::try_from(scale.locks).is_ok_and(|all| scale.restored.locks >= all)
        {
            "met"
        } else {
            "NOT met"
        }
    );
    out
}

/// The cycle table and its ratio lines.
fn render_cycles(report: &BenchReport) -> String {
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
    for (label, what) in &report.floors {
        let _ = writeln!(out, "{label} = {what}");
    }
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
        "ipc-floor" => 1,
        "ofd-raw" => 2,
        "2rtt" => 3,
        "nop" => 4,
        _ => 5,
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
    out
}
