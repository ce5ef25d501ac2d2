//! Human-readable tables.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::validate::{PluginReport, Status};

/// The mark and word shown for a status.
pub fn mark(status: Status) -> (&'static str, &'static str) {
    match status {
        Status::Pass => ("✓", "pass"),
        Status::Warn => ("!", "warn"),
        Status::Fail => ("✗", "FAIL"),
        Status::NeedsDaemon => ("…", "needs daemon"),
        Status::Skipped => ("-", "skipped"),
    }
}

/// One plugin's checklist.
pub fn render_report(report: &PluginReport, verbose: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n{}", report.plugin.display());
    let _ = writeln!(
        out,
        "  config {} ({})",
        report.config.display(),
        if report.config_exists {
            "exists"
        } else {
            "absent: plugin defaults"
        }
    );
    let width = report.steps.iter().map(|s| s.step.len()).max().unwrap_or(8);
    for step in &report.steps {
        let (symbol, _) = mark(step.status);
        let detail = match step.status {
            Status::Skipped => format!("skipped: {}", step.detail),
            _ => step.detail.clone(),
        };
        let _ = writeln!(out, "  {symbol} {:<width$}  {detail}", step.step);
    }
    if let Some(crash) = &report.crashed {
        let _ = writeln!(out, "  ✗ {:<width$}  {crash}", "crash");
    }
    let show_output = verbose || report.verdict == Status::Fail;
    if show_output && !report.plugin_output.trim().is_empty() {
        let _ = writeln!(out, "  plugin output:");
        for line in report
            .plugin_output
            .lines()
            .take(if verbose { usize::MAX } else { 12 })
        {
            let _ = writeln!(out, "    | {line}");
        }
    }
    let counts = [
        Status::Pass,
        Status::Warn,
        Status::Fail,
        Status::NeedsDaemon,
        Status::Skipped,
    ]
    .iter()
    .filter_map(|&status| {
        let n = report.steps.iter().filter(|s| s.status == status).count();
        (n > 0).then(|| format!("{n} {}", mark(status).1))
    })
    .collect::<Vec<_>>()
    .join(", ");
    let _ = writeln!(
        out,
        "  verdict: {} ({counts})",
        mark(report.verdict).1.to_uppercase()
    );
    out
}

/// One line per plugin.
pub fn render_summary(reports: &[PluginReport]) -> String {
    let mut out = String::from("\nsummary\n");
    for report in reports {
        let _ = writeln!(
            out,
            "  {:<14} {}",
            mark(report.verdict).1.to_uppercase(),
            report.plugin.display()
        );
    }
    out
}

/// Prints a command's report: as JSON with `json`, else as `render` makes it; and also as JSON
/// into `json_file`. The error says what could not be written.
pub fn emit_report<R: Serialize>(
    report: &R,
    json: bool,
    json_file: Option<&Path>,
    render: impl FnOnce(&R) -> String,
) -> Result<(), String> {
    let text =
        serde_json::to_string_pretty(report).map_err(|e| format!("cannot encode JSON: {e}"))?;
    if let Some(path) = json_file {
        std::fs::write(path, format!("{text}\n"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if json {
        println!("{text}");
    } else {
        print!("{}", render(report));
    }
    Ok(())
}
