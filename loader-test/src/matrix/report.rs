//! What a matrix run reports: the verdicts, the cells, the rows and columns, the exit status.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
pub(super) enum CellEvent {
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
