//! The table `matrix` prints: one row per scenario, one column per plugin, and footnotes.

use std::fmt::Write as _;

use crate::matrix::report::{MatrixReport, Verdict};

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
