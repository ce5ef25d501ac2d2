//! Reading scenario files ([`load`], [`load_dir`]) and checking them before anything runs
//! ([`Scenario::check`]), with [`ScenarioError`] naming the file and the step at fault.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{Expect, Op, Scenario};

/// A problem in a scenario file, naming the file and the place.
#[derive(Debug, Clone)]
pub struct ScenarioError(pub String);

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScenarioError {}

impl Scenario {
    /// Checks every reference and field combination, naming the file and step at fault.
    pub fn check(&self) -> Result<(), ScenarioError> {
        let fail = |msg: String| ScenarioError(format!("{}: {msg}", self.file.display()));
        if self.steps.is_empty() {
            return Err(fail("no steps".into()));
        }
        for (name, spec) in &self.resources {
            if name.contains(['[', ']', ' ']) {
                return Err(fail(format!(
                    "resource name '{name}' may not contain brackets or spaces"
                )));
            }
            match (&spec.disk, &spec.lease) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(fail(format!(
                        "resource '{name}': give exactly one of disk = \"FILE\" or lease = \"KEY\""
                    )));
                }
            }
            let text = spec.disk.as_ref().or(spec.lease.as_ref());
            if let Some(text) = text {
                if text.contains('/') || text.is_empty() {
                    return Err(fail(format!(
                        "resource '{name}': '{text}' must be a plain file name or key"
                    )));
                }
                if spec.count.is_some() != text.contains("{i}") {
                    return Err(fail(format!(
                        "resource '{name}': use count together with {{i}} in the name"
                    )));
                }
            }
            if spec.count == Some(0) {
                return Err(fail(format!("resource '{name}': count must be at least 1")));
            }
        }
        for owner in self.owners.keys() {
            self.owner_resources(owner)
                .map_err(|e| fail(format!("owner '{owner}': {e}")))?;
        }
        let mut registered = std::collections::BTreeSet::new();
        for (index, step) in self.steps.iter().enumerate() {
            let at = |msg: String| fail(format!("step {} ({}): {msg}", index + 1, step.label()));
            match (&step.owner, step.op.needs_owner()) {
                (None, true) => return Err(at("needs owner = \"NAME\"".into())),
                (Some(_), false) => return Err(at("takes no owner".into())),
                (Some(owner), true) if !self.owners.contains_key(owner) => {
                    return Err(at(format!("unknown owner '{owner}'")));
                }
                (Some(owner), true)
                    if step.op == Op::Register && !registered.insert(owner.clone()) =>
                {
                    return Err(at(format!("owner '{owner}' is registered twice")));
                }
                (Some(owner), true) if !registered.contains(owner) => {
                    return Err(at(format!(
                        "owner '{owner}' is used before its register step (libvirt always \
                         starts QEMU through the pre-exec child first)"
                    )));
                }
                _ => {}
            }
            self.step_resources(step).map_err(at)?;
            if matches!(step.op, Op::Hotplug | Op::Unplug) && step.resources.is_none() {
                return Err(at("needs resources = [\"THE-DEVICE\"]".into()));
            }
            if step.corrupt.is_some() && step.op != Op::Resume {
                return Err(at("corrupt only applies to resume".into()));
            }
            if step.repeat.is_some() && step.op != Op::Pause {
                return Err(at("repeat only applies to pause".into()));
            }
            match (step.within_ms, step.across_nodes_within_ms) {
                (None, Some(_)) => {
                    return Err(at("across_nodes_within_ms needs within_ms".into()));
                }
                (Some(within), Some(across)) if across < within => {
                    return Err(at(format!(
                        "across_nodes_within_ms ({across}) is below within_ms ({within})"
                    )));
                }
                _ => {}
            }
            let refusal_possible = step.expect == Some(Expect::Refused)
                || step.by_plugin.values().any(|p| p.expect == Expect::Refused);
            if (step.error.is_some() || step.names.is_some()) && !refusal_possible {
                return Err(at(
                    "error / names describe a refusal: add expect = \"refused\"".into(),
                ));
            }
            if let Some(names) = &step.names {
                self.resolve(names).map_err(|e| at(format!("names: {e}")))?;
            }
            for profile in step.by_plugin.keys() {
                if !crate::daemons::Profile::KNOWN.contains(&profile.as_str()) {
                    return Err(at(format!(
                        "by_plugin.{profile}: unknown plugin profile (known: {})",
                        crate::daemons::Profile::KNOWN.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Reads and checks one scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ScenarioError(format!("{}: {e}", path.display())))?;
    let mut scenario: Scenario =
        toml::from_str(&text).map_err(|e| ScenarioError(format!("{}: {e}", path.display())))?;
    scenario.name = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    scenario.file = path.to_owned();
    scenario.check()?;
    Ok(scenario)
}

/// Every `*.toml` in `dir`, sorted by file name, each checked.
pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, ScenarioError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        ScenarioError(format!(
            "cannot read the scenario directory {}: {e}",
            dir.display()
        ))
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ScenarioError(format!(
            "no *.toml scenario files in {}",
            dir.display()
        )));
    }
    files.iter().map(|p| load(p)).collect()
}
