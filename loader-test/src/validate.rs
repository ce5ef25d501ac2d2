//! `validate`: a checklist of libvirt's contract, run against one plugin.
//!
//! The steps run in a child process (`__validate-one`) that streams one JSON event per step, so
//! a plugin that crashes is reported with the step it crashed in instead of taking loader-test
//! down.
//!
//! The parts: what a run reports ([`Status`], [`StepResult`], [`PluginReport`]) and the list of
//! steps ([`ALL_STEPS`]) here; the parent's side, which runs and watches the child, in
//! `subprocess`; the child's step runner in `runner`; the checks themselves in `checklist`.

mod checklist;
mod runner;
mod subprocess;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use runner::run_steps;
pub use subprocess::validate_in_subprocess;

/// The outcome of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Behaves as libvirt expects.
    Pass,
    /// Works, but differs from what libvirt's own plugins do.
    Warn,
    /// Breaks the contract.
    Fail,
    /// Cannot be checked: the plugin's lock daemon is not running.
    NeedsDaemon,
    /// Not run because an earlier step failed.
    Skipped,
}

/// One step's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    /// Short id, e.g. `register-child`.
    pub step: String,
    /// What the step checks.
    pub title: String,
    /// The outcome.
    pub status: Status,
    /// What happened, with the plugin's own error text when it failed.
    pub detail: String,
}

/// What the step runner streams to the parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
enum Event {
    Start { step: String },
    Done(StepResult),
}

/// The whole account of one plugin.
#[derive(Debug, Serialize)]
pub struct PluginReport {
    /// The plugin file.
    pub plugin: PathBuf,
    /// The config path passed to drvInit.
    pub config: PathBuf,
    /// Whether that config file exists (libvirt passes the path either way).
    pub config_exists: bool,
    /// Every step, in order.
    pub steps: Vec<StepResult>,
    /// Set when the plugin crashed the validating process.
    pub crashed: Option<String>,
    /// What the plugin wrote to stdout/stderr.
    pub plugin_output: String,
    /// The overall verdict.
    pub verdict: Status,
}

impl PluginReport {
    fn finish(mut self) -> Self {
        let any = |s: Status| self.steps.iter().any(|r| r.status == s);
        self.verdict = if self.crashed.is_some() || any(Status::Fail) {
            Status::Fail
        } else if any(Status::NeedsDaemon) {
            Status::NeedsDaemon
        } else if any(Status::Warn) {
            Status::Warn
        } else {
            Status::Pass
        };
        self
    }
}

/// Every step, in order, with what it checks.
pub const ALL_STEPS: [(&str, &str); 17] = [
    (
        "load",
        "access(R_OK) + dlopen(RTLD_NOW | RTLD_LOCAL) + dlsym",
    ),
    ("symbol", "virLockDriverImpl is a 72-byte table"),
    ("table", "version 1000000, flags 0 or USES_STATE"),
    ("callbacks", "all 8 callbacks non-NULL"),
    ("init", "drvInit(1000000, config, 0)"),
    (
        "init-refcount",
        "a second drvInit + drvDeinit keeps the plugin loaded",
    ),
    ("new", "New(uuid, name, id, pid, uri; NEW_STARTED) + Free"),
    ("new-unknown-param", "New refuses an unknown param"),
    (
        "add-disk",
        "AddResource: disk exclusive, shareable, readonly",
    ),
    (
        "add-lease",
        "AddResource: lease (path, offset 0, lockspace)",
    ),
    (
        "register-child",
        "forked child: New + AddResource + Acquire(REGISTER_ONLY|RESTRICT, &fd), exec",
    ),
    (
        "acquire",
        "Acquire(NULL, 0) in the parent, as libvirtd at CPU start",
    ),
    (
        "inquire",
        "Inquire(&state): NULL or a malloc'd XML-safe string",
    ),
    ("release", "Release(&state) as on pause: the state string"),
    ("reacquire", "Acquire(state, 0) as on resume"),
    ("release-detach", "Release(NULL) as on detach"),
    ("deinit", "drvDeinit, then dlclose if it returned >= 0"),
];

fn step_title(step: &str) -> &'static str {
    ALL_STEPS
        .iter()
        .find(|(id, _)| *id == step)
        .map_or("", |(_, title)| title)
}
