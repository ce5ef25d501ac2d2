//! Conformance scenario files (`tests/scenarios/*.toml`): what they say and how they are checked
//! before anything runs. The format is described in `docs/matrix-and-bench.md`.
//!
//! ```toml
//! title = "exclusive vs exclusive across two owners"
//!
//! [resources]
//! disk = { disk = "vm.img" }              # mode = "exclusive" unless said otherwise
//!
//! [owners]                                # each owner is a domain; its resources are its XML
//! a = ["disk"]
//! b = ["disk"]
//!
//! [[steps]]
//! do = "register"                         # libvirt's pre-exec child, in a real fork
//! owner = "a"
//!
//! [[steps]]
//! do = "acquire"
//! owner = "b"
//! expect = "refused"
//! error = "busy"                          # libvirt would print "resource busy: …"
//! names = "disk"                          # and the message names that resource
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One scenario file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The file's stem, e.g. `exclusive-vs-exclusive` (set by [`load`], not written).
    #[serde(skip)]
    pub name: String,
    /// The file it came from (set by [`load`]).
    #[serde(skip)]
    pub file: PathBuf,
    /// One line for the table.
    pub title: String,
    /// What the scenario proves, and why.
    #[serde(default)]
    pub description: String,
    /// Configure the plugin with a lockspace directory (`file_lockspace_dir`): lock
    /// `<dir>/<sha256 of the path>` instead of the disk itself. Required for leases with lockd.
    #[serde(default)]
    pub lockspace: bool,
    /// The resources: disks (image files in the scenario's scratch directory) and leases.
    pub resources: BTreeMap<String, ResourceSpec>,
    /// Each owner (a domain) and its resources, as in its domain XML.
    pub owners: BTreeMap<String, Vec<String>>,
    /// What happens, in order.
    pub steps: Vec<Step>,
}

/// A resource as written: a disk or a lease, with the mode the domain uses it in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// A disk image file name (in the scratch directory). With `count`, `{i}` is replaced by
    /// the index, zero-padded to three digits.
    #[serde(default)]
    pub disk: Option<String>,
    /// A lease key (`<lease><key>`), in the scenario's lockspace.
    #[serde(default)]
    pub lease: Option<String>,
    /// `exclusive` (default), `shared` (`<shareable/>`) or `readonly` (`<readonly/>`).
    #[serde(default)]
    pub mode: Mode,
    /// Expands to `count` resources, named `NAME[0]` … `NAME[count-1]`.
    #[serde(default)]
    pub count: Option<usize>,
}

/// The access mode of a resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// No flag: exclusive read-write.
    #[default]
    Exclusive,
    /// `<shareable/>`.
    Shared,
    /// `<readonly/>`.
    Readonly,
}

impl Mode {
    /// The framework's access.
    pub fn access(self) -> lockmgr::Access {
        match self {
            Mode::Exclusive => lockmgr::Access::Exclusive,
            Mode::Shared => lockmgr::Access::Shared,
            Mode::Readonly => lockmgr::Access::ReadOnly,
        }
    }
}

/// What a step does, named after what libvirt does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// `virsh start`, phase 1: the pre-exec child, `Acquire(NULL, REGISTER_ONLY|RESTRICT, &fd)`
    /// in a forked process that then execs a QEMU stand-in; its pid becomes the owner's pid.
    Register,
    /// `virsh start`, phase 2 (CPUs start): `New(0, uri)` + AddResource… + `Acquire(NULL, 0)`.
    Acquire,
    /// `virsh suspend`: `New(0, NULL)` + AddResource… + `Release(&state)`; the state string is
    /// kept for the owner's next resume, as libvirt keeps it.
    Pause,
    /// `virsh resume`: `New(0, uri)` + AddResource… + `Acquire(saved state, 0)`; the state is
    /// dropped after a successful resume and kept after a failed one.
    Resume,
    /// Detach (or the rollback of a failed attach): `New(0, NULL)` + AddResource… +
    /// `Release(NULL)`.
    Detach,
    /// `virsh attach-disk --live`: an Acquire whose context carries only the new device.
    Hotplug,
    /// `virsh detach-disk --live`: a `Release(NULL)` whose context carries only that device.
    Unplug,
    /// Migration's cookie: `New(0, NULL)` + AddResource… + `Inquire(&state)`.
    Inquire,
    /// `kill -9` of QEMU: SIGKILL the owner's process. libvirt makes no call at all.
    Kill,
    /// libvirtd restarts: `drvDeinit` + dlclose, then a fresh dlopen + `drvInit`, in the same
    /// harness process (the owners keep running).
    RestartLibvirtd,
    /// The plugin's lock daemon crashes and is started again (SIGKILL, then a new instance).
    RestartDaemon,
}

impl Op {
    /// Whether the step's success is a lock being taken (shown as granted / refused).
    pub fn takes_locks(self) -> bool {
        matches!(self, Op::Acquire | Op::Resume | Op::Hotplug)
    }

    /// Whether the step needs `owner`.
    pub fn needs_owner(self) -> bool {
        !matches!(self, Op::RestartLibvirtd | Op::RestartDaemon)
    }

    /// The name as written in scenario files.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Register => "register",
            Op::Acquire => "acquire",
            Op::Pause => "pause",
            Op::Resume => "resume",
            Op::Detach => "detach",
            Op::Hotplug => "hotplug",
            Op::Unplug => "unplug",
            Op::Inquire => "inquire",
            Op::Kill => "kill",
            Op::RestartLibvirtd => "restart-libvirtd",
            Op::RestartDaemon => "restart-daemon",
        }
    }
}

/// The outcome a step is expected to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// The call succeeded (for Acquire: the locks were granted).
    #[serde(alias = "granted")]
    Ok,
    /// The call returned -1 (for Acquire: the locks were refused).
    #[serde(alias = "refused", alias = "fails")]
    Refused,
}

impl Expect {
    /// How the outcome reads for `op`.
    pub fn word(self, op: Op) -> &'static str {
        match (self, op.takes_locks()) {
            (Expect::Ok, true) => "granted",
            (Expect::Refused, true) => "refused",
            (Expect::Ok, false) => "ok",
            (Expect::Refused, false) => "failed",
        }
    }
}

/// How to damage a saved state string before a resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Corruption {
    /// Keep the first half.
    Truncate,
    /// Change one character in the middle of the string to another letter or digit.
    Flip,
    /// Replace everything after the first `:` (or the whole string) with XML-safe junk.
    Garbage,
}

/// A different expectation for one plugin profile, with the reason.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginExpect {
    /// The outcome expected from that plugin.
    pub expect: Expect,
    /// Why this plugin legitimately differs (shown in the report).
    pub why: String,
}

/// One step as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// What happens.
    #[serde(rename = "do")]
    pub op: Op,
    /// Whose domain (every op but the two restarts).
    #[serde(default)]
    pub owner: Option<String>,
    /// The resources in the context, when not all of the owner's (hotplug / unplug: the one
    /// device). Names, `NAME[i]` or `NAME[a..b]` (b excluded) for counted resources.
    #[serde(default)]
    pub resources: Option<Vec<String>>,
    /// The expected outcome (default: ok / granted).
    #[serde(default)]
    pub expect: Option<Expect>,
    /// For an expected refusal: `busy` = libvirt's "resource busy" (VIR_ERR_RESOURCE_BUSY), or
    /// any other text the plugin's error message must contain (case-insensitive).
    #[serde(default)]
    pub error: Option<String>,
    /// For an expected refusal: the message must name this resource (its path, file name, the
    /// sha256 of its path, or its lease key).
    #[serde(default)]
    pub names: Option<String>,
    /// Retry until the expected outcome, for at most this long, and report the time measured
    /// from the last `kill` (or from the step's start).
    #[serde(default)]
    pub within_ms: Option<u64>,
    /// With `within_ms`, when the last `kill` hit an owner on another machine than this step's
    /// (matrix `--remote-node`): the bound for this step's outcome, while `within_ms` still bounds
    /// the killed owner's daemon freeing its locks (read from that daemon's log). The grant across
    /// machines also pays the lock manager's round trips between them and the agent's.
    #[serde(default)]
    pub across_nodes_within_ms: Option<u64>,
    /// Resume only: damage the saved state string first. A plugin that returns no state makes
    /// the scenario not applicable (libvirt never passes a state back to it).
    #[serde(default)]
    pub corrupt: Option<Corruption>,
    /// Pause only: release this many times in a row, keeping the last state (`virsh suspend`
    /// makes two Release calls).
    #[serde(default)]
    pub repeat: Option<usize>,
    /// Another outcome for the plugin profile named by the key (`nop`, `lockd`, `file`, …).
    #[serde(default)]
    pub by_plugin: BTreeMap<String, PluginExpect>,
    /// Free text shown with the step.
    #[serde(default)]
    pub note: Option<String>,
}

impl Step {
    /// The expectation for `profile`, and the reason when it differs from the default.
    pub fn expectation(&self, profile: &str) -> (Expect, Option<String>) {
        match self.by_plugin.get(profile) {
            Some(special) => (special.expect, Some(special.why.clone())),
            None => (self.expect.unwrap_or(Expect::Ok), None),
        }
    }

    /// `acquire by b [disk]`-style label for reports.
    pub fn label(&self) -> String {
        let mut label = self.op.as_str().to_owned();
        if let Some(owner) = &self.owner {
            label.push_str(&format!(" by {owner}"));
        }
        if let Some(resources) = &self.resources {
            label.push_str(&format!(" [{}]", resources.join(", ")));
        }
        label
    }
}

/// A resource after expansion of `count`: what the plugin is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concrete {
    /// `disk` or `disks[7]`.
    pub name: String,
    /// Disk image file name, or `None` for a lease.
    pub disk: Option<String>,
    /// Lease key, or `None` for a disk.
    pub lease: Option<String>,
    /// The mode.
    pub mode: Mode,
}

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
    /// Every resource, expanded, by declared name (counted resources in index order).
    pub fn expanded(&self, name: &str) -> Option<Vec<Concrete>> {
        let spec = self.resources.get(name)?;
        let one = |index: Option<usize>| {
            let fill = |text: &Option<String>| {
                text.as_ref().map(|t| match index {
                    Some(i) => t.replace("{i}", &format!("{i:03}")),
                    None => t.clone(),
                })
            };
            Concrete {
                name: index.map_or_else(|| name.to_owned(), |i| format!("{name}[{i}]")),
                disk: fill(&spec.disk),
                lease: fill(&spec.lease),
                mode: spec.mode,
            }
        };
        Some(match spec.count {
            Some(count) => (0..count).map(|i| one(Some(i))).collect(),
            None => vec![one(None)],
        })
    }

    /// Resolves a reference (`disk`, `disks`, `disks[3]`, `disks[0..99]`).
    pub fn resolve(&self, reference: &str) -> Result<Vec<Concrete>, String> {
        let (base, range) = match reference.split_once('[') {
            Some((base, rest)) => {
                let inner = rest
                    .strip_suffix(']')
                    .ok_or_else(|| format!("'{reference}': missing ']'"))?;
                (base, Some(inner))
            }
            None => (reference, None),
        };
        let all = self
            .expanded(base)
            .ok_or_else(|| format!("unknown resource '{base}'"))?;
        let Some(range) = range else {
            return Ok(all);
        };
        if self.resources.get(base).and_then(|r| r.count).is_none() {
            return Err(format!(
                "'{reference}': '{base}' has no count, so it cannot be indexed"
            ));
        }
        let parse = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("'{reference}': '{s}' is not an index"))
        };
        let (start, end) = match range.split_once("..") {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let i = parse(range)?;
                (i, i + 1)
            }
        };
        if start >= end || end > all.len() {
            return Err(format!(
                "'{reference}': range {start}..{end} is outside 0..{}",
                all.len()
            ));
        }
        Ok(all[start..end].to_vec())
    }

    /// The resources of `owner`, expanded, in declaration order.
    pub fn owner_resources(&self, owner: &str) -> Result<Vec<Concrete>, String> {
        let refs = self
            .owners
            .get(owner)
            .ok_or_else(|| format!("unknown owner '{owner}'"))?;
        let mut out = Vec::new();
        for reference in refs {
            out.extend(self.resolve(reference)?);
        }
        Ok(out)
    }

    /// The resources of a step's context: its own list, or all of the owner's.
    pub fn step_resources(&self, step: &Step) -> Result<Vec<Concrete>, String> {
        match (&step.resources, &step.owner) {
            (Some(list), _) => {
                let mut out = Vec::new();
                for reference in list {
                    out.extend(self.resolve(reference)?);
                }
                Ok(out)
            }
            (None, Some(owner)) => self.owner_resources(owner),
            (None, None) => Ok(Vec::new()),
        }
    }

    /// Whether any resource is a lease.
    pub fn has_leases(&self) -> bool {
        self.resources.values().any(|r| r.lease.is_some())
    }

    /// Whether a step restarts the plugin's daemon.
    pub fn restarts_daemon(&self) -> bool {
        self.steps.iter().any(|s| s.op == Op::RestartDaemon)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let mut s: Scenario = toml::from_str(text).map_err(|e| ScenarioError(e.to_string()))?;
        s.name = "t".into();
        s.file = PathBuf::from("t.toml");
        s.check()?;
        Ok(s)
    }

    const BASE: &str = r#"
        title = "t"
        [resources]
        disk = { disk = "vm.img" }
        many = { disk = "d-{i}.img", count = 5, mode = "shared" }
        [owners]
        a = ["disk", "many"]
        b = ["many[1..3]"]
    "#;

    const REGISTER_A: &str = "\n[[steps]]\ndo = \"register\"\nowner = \"a\"\n\n";

    #[test]
    fn counted_resources_expand_and_slice() {
        let s = parse(&format!(
            "{BASE}\n[[steps]]\ndo = \"register\"\nowner = \"a\"\n"
        ))
        .unwrap();
        let a = s.owner_resources("a").unwrap();
        assert_eq!(a.len(), 6);
        assert_eq!(a[1].name, "many[0]");
        assert_eq!(a[1].disk.as_deref(), Some("d-000.img"));
        assert_eq!(a[1].mode, Mode::Shared);
        let b = s.owner_resources("b").unwrap();
        assert_eq!(
            b.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["many[1]", "many[2]"]
        );
        assert_eq!(s.resolve("many[4]").unwrap().len(), 1);
        assert!(s.resolve("many[5]").is_err());
        assert!(s.resolve("disk[0]").is_err());
    }

    #[test]
    fn mistakes_are_named_with_the_step() {
        let bad_owner = parse(&format!(
            "{BASE}\n[[steps]]\ndo = \"acquire\"\nowner = \"zz\"\n"
        ))
        .unwrap_err();
        assert!(
            bad_owner.0.contains("step 1 (acquire by zz)"),
            "{bad_owner}"
        );
        let no_refusal = parse(&format!(
            "{BASE}{REGISTER_A}[[steps]]\ndo = \"acquire\"\nowner = \"a\"\nerror = \"busy\"\n"
        ))
        .unwrap_err();
        assert!(
            no_refusal.0.contains("expect = \"refused\""),
            "{no_refusal}"
        );
        let hotplug = parse(&format!(
            "{BASE}{REGISTER_A}[[steps]]\ndo = \"hotplug\"\nowner = \"a\"\n"
        ))
        .unwrap_err();
        assert!(hotplug.0.contains("needs resources"), "{hotplug}");
        let unknown_field = parse(&format!(
            "{BASE}{REGISTER_A}[[steps]]\ndo = \"acquire\"\nowner = \"a\"\nexpects = \"ok\"\n"
        ))
        .unwrap_err();
        assert!(unknown_field.0.contains("expects"), "{unknown_field}");
        let profile = parse(&format!(
            "{BASE}{REGISTER_A}[[steps]]\ndo = \"acquire\"\nowner = \"a\"\nby_plugin.lockdd = {{ expect = \"refused\", why = \"x\" }}\n"
        ))
        .unwrap_err();
        assert!(profile.0.contains("unknown plugin profile"), "{profile}");
        let unregistered = parse(&format!(
            "{BASE}\n[[steps]]\ndo = \"acquire\"\nowner = \"a\"\n"
        ))
        .unwrap_err();
        assert!(
            unregistered.0.contains("before its register step"),
            "{unregistered}"
        );
        let across_alone = parse(&format!(
            "{BASE}{REGISTER_A}[[steps]]\ndo = \"acquire\"\nowner = \"a\"\nacross_nodes_within_ms = 500\n"
        ))
        .unwrap_err();
        assert!(
            across_alone
                .0
                .contains("step 2 (acquire by a): across_nodes_within_ms needs within_ms"),
            "{across_alone}"
        );
        let across_below = parse(&format!(
            "{BASE}{REGISTER_A}[[steps]]\ndo = \"acquire\"\nowner = \"a\"\nwithin_ms = 100\nacross_nodes_within_ms = 50\n"
        ))
        .unwrap_err();
        assert!(
            across_below.0.contains("is below within_ms"),
            "{across_below}"
        );
    }

    #[test]
    fn per_plugin_expectations_override_the_default() {
        let s = parse(&format!(
            "{BASE}{REGISTER_A}[[steps]]\ndo = \"acquire\"\nowner = \"a\"\nexpect = \"refused\"\n\
             by_plugin.lockd = {{ expect = \"granted\", why = \"drops locks\" }}\n"
        ))
        .unwrap();
        assert_eq!(s.steps[1].expectation("file"), (Expect::Refused, None));
        assert_eq!(
            s.steps[1].expectation("lockd"),
            (Expect::Ok, Some("drops locks".into()))
        );
    }

    #[test]
    fn the_shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios");
        let scenarios = load_dir(&dir).unwrap();
        assert!(scenarios.len() >= 13, "{} scenarios", scenarios.len());
    }
}
