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
//!
//! The parts: the file's format ([`Scenario`], [`Step`] and what they hold) here; resolving
//! resource references into [`Concrete`] resources in `resolve`; reading and checking files
//! ([`load`], [`load_dir`], [`Scenario::check`]) in `loading`.

mod loading;
mod resolve;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use loading::{load, load_dir};
pub use resolve::Concrete;

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

#[cfg(test)]
mod tests;
