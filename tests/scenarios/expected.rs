//! What the conformance tests expect of `lockmgr-loader-test matrix` over the scenarios of this
//! folder, shared by loader-test's tests/matrix.rs (nop, lockd and file on this host) and the test
//! bed's tests/dlm_matrix.rs (dlm with owners on two nodes): which scenarios test exclusion, and
//! the report's cells by scenario and plugin. Each test includes this file with `#[path]`.

use std::collections::BTreeMap;

/// The scenarios in which a plugin that locks nothing lets a second domain in.
pub const EXCLUSION: [&str; 10] = [
    "double-release",
    "exclusive-vs-exclusive",
    "exclusive-vs-exclusive-lockspace",
    "hotplug",
    "hundred-disks",
    "kill-owner",
    "lease-conflict",
    "pause-resume",
    "restart-libvirtd",
    "shared-vs-exclusive",
];
/// Scenarios a plugin that locks nothing passes.
pub const NO_EXCLUSION: [&str; 3] = ["read-only", "register-only", "shared-shared"];
/// Scenarios that need a daemon or a state string.
pub const NEEDS_DAEMON_OR_STATE: [&str; 2] = ["corrupted-state", "restart-daemon"];

/// The cells of a `matrix --json` report, by (scenario, plugin label).
pub fn cells(report: &serde_json::Value) -> BTreeMap<(String, String), serde_json::Value> {
    report["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .map(|c| {
            (
                (
                    c["scenario"].as_str().unwrap().to_owned(),
                    c["plugin"].as_str().unwrap().to_owned(),
                ),
                c.clone(),
            )
        })
        .collect()
}
