//! One cell, inside its subprocess: the plugin's environment, the owners, the scenario's steps
//! in order, one event per step.

mod step;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use lockmgr::{Domain, Uuid};
use sha2::{Digest, Sha256};

use crate::agent::{self, RemoteNode};
use crate::daemons::{self, Layout, PluginEnv, Profile, Tools};
use crate::matrix::report::{CellEvent, StepReport, Verdict};
use crate::matrix::sanlock::init_sanlock_lease;
use crate::node::{Failure, LocalNode, OwnerNode};
use crate::scenario::{self, Corruption, Scenario, Step};

/// Arguments of `__matrix-cell`.
#[derive(Debug)]
pub struct CellArgs {
    /// The scenario file.
    pub scenario: PathBuf,
    /// The plugin.
    pub plugin: PathBuf,
    /// Its profile.
    pub profile: Profile,
    /// An empty scratch directory for this cell.
    pub scratch: PathBuf,
    /// Where the daemons are.
    pub tools: Tools,
    /// The agent running owners b, d, … (none: every owner here).
    pub remote_node: Option<String>,
}

/// Entry point of `__matrix-cell`: runs one scenario against one plugin, streaming events.
pub fn run_cell(args: &CellArgs, events: &mut dyn Write) {
    let mut emit = |event: CellEvent| {
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        let _ = events.write_all(&line);
        let _ = events.flush();
    };
    let (verdict, reason) = match run_cell_inner(args, &mut emit) {
        Ok(notes) => (Verdict::Pass, notes),
        Err(end) => (end.verdict, end.reason),
    };
    emit(CellEvent::End { verdict, reason });
}

pub(super) struct End {
    verdict: Verdict,
    reason: String,
}

impl End {
    fn fail(reason: impl Into<String>) -> Self {
        End {
            verdict: Verdict::Fail,
            reason: reason.into(),
        }
    }
}

/// Runs the cell; a pass returns the plugin-specific expectations it relied on.
fn run_cell_inner(args: &CellArgs, emit: &mut dyn FnMut(CellEvent)) -> Result<String, End> {
    let scenario = scenario::load(&args.scenario).map_err(|e| End::fail(e.to_string()))?;
    if args.profile.daemon().is_none() && scenario.restarts_daemon() {
        return Err(End {
            verdict: Verdict::NotApplicable,
            reason: format!(
                "{} has no lock daemon to restart",
                daemons::libvirt_name(&args.plugin)
            ),
        });
    }
    let layout = Layout::create(&args.scratch)
        .map_err(|e| End::fail(format!("scratch {}: {e}", args.scratch.display())))?;
    let lockspace = scenario.lockspace || scenario.has_leases();
    let env = daemons::prepare(args.profile, &args.plugin, &args.tools, &layout, lockspace)
        .map_err(|e| End {
            verdict: if e.cannot_run {
                Verdict::CannotRun
            } else {
                Verdict::Fail
            },
            reason: format!("setting up {}: {e}", args.profile),
        })?;
    let mut setup = format!(
        "{}{}",
        env.describe(),
        if lockspace {
            format!("; lockspace {}", layout.lockspace.display())
        } else {
            "; disks locked directly".into()
        }
    );
    // Owners b, d, … run on the agent's node when one is given (only if there is a b).
    let remote = match &args.remote_node {
        Some(address) if scenario.owners.len() > 1 => {
            let (node, detail) = RemoteNode::connect(
                address,
                &agent::Setup {
                    plugin: args.plugin.clone(),
                    profile: args.profile.as_str().to_owned(),
                    lockspace: lockspace.then(|| layout.lockspace.clone()),
                    cell: format!("{} × {}", scenario.name, args.profile),
                },
            )
            .map_err(End::fail)?;
            let remote_owners: Vec<&str> = scenario
                .owners
                .keys()
                .enumerate()
                .filter(|(i, _)| i % 2 == 1)
                .map(|(_, name)| name.as_str())
                .collect();
            setup.push_str(&format!(
                "; owners {} on {} ({detail})",
                remote_owners.join(", "),
                node.name()
            ));
            Some(node)
        }
        _ => None,
    };
    emit(CellEvent::Setup { detail: setup });
    let mut runner = Runner::new(&scenario, args, env, remote)?;
    let result = runner.run_steps(emit);
    let cleanup = runner.finish();
    let notes = result?;
    cleanup.map_err(End::fail)?;
    Ok(notes.join("; "))
}

/// Per-owner bookkeeping, as libvirt keeps it per domain.
struct OwnerState {
    domain: Domain,
    /// Whether the owner runs on the agent's node (its calls made there).
    remote: bool,
    /// The state string of the last pause (libvirt's `priv->lockState`).
    saved_state: Option<String>,
}

/// The last `kill` step: when, and on which node.
pub(super) struct LastKill {
    at: Instant,
    wall: SystemTime,
    uuid: Uuid,
    remote: bool,
}

pub(super) struct Runner<'a> {
    scenario: &'a Scenario,
    profile: Profile,
    local: LocalNode,
    remote: Option<RemoteNode>,
    owners: BTreeMap<String, OwnerState>,
    last_kill: Option<LastKill>,
    plugin_notes: Vec<String>,
    /// A `restart-daemon` step ran (sanlock's ✗ explains what a restart loses).
    daemon_restarted: bool,
    /// A note about how the current step was judged (e.g. a bound across nodes), kept when the
    /// step passes.
    step_note: Option<String>,
}

/// The result of running a step's calls: success text, or the failure.
pub(super) enum Outcome {
    Done(Result<String, Failure>),
    /// The expected outcome came, but only after the step's `within_ms` bound.
    Late(String),
    NotApplicable(String),
}

pub(super) fn owner_uuid(scenario: &str, owner: &str) -> Uuid {
    let digest = Sha256::digest(format!("lockmgr-matrix/{scenario}/{owner}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // Never 16 equal bytes, which lockd refuses.
    Uuid::version4(bytes)
}

impl<'a> Runner<'a> {
    pub(super) fn new(
        scenario: &'a Scenario,
        args: &CellArgs,
        env: PluginEnv,
        remote: Option<RemoteNode>,
    ) -> Result<Self, End> {
        // Disk images and lease files exist before anything runs (lockd needs both).
        for name in scenario.resources.keys() {
            for resource in scenario.expanded(name).unwrap_or_default() {
                let file = match (&resource.disk, &resource.lease) {
                    (Some(disk), _) => env.layout.disks.join(disk),
                    (None, Some(key)) => env.layout.lockspace.join(key),
                    (None, None) => continue,
                };
                std::fs::write(&file, b"")
                    .map_err(|e| End::fail(format!("creating {}: {e}", file.display())))?;
                if let (Profile::Sanlock, Some(key)) = (args.profile, &resource.lease) {
                    init_sanlock_lease(&args.tools, key, &file).map_err(End::fail)?;
                }
            }
        }
        let owners = scenario
            .owners
            .keys()
            .enumerate()
            .map(|(i, name)| {
                let domain = Domain {
                    uuid: owner_uuid(&scenario.name, name),
                    name: format!("matrix-{name}"),
                    id: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    pid: 0,
                    uri: None,
                };
                (
                    name.clone(),
                    OwnerState {
                        domain,
                        remote: remote.is_some() && i % 2 == 1,
                        saved_state: None,
                    },
                )
            })
            .collect();
        let local = LocalNode::new(&args.plugin, env).map_err(End::fail)?;
        Ok(Runner {
            scenario,
            profile: args.profile,
            local,
            remote,
            owners,
            last_kill: None,
            plugin_notes: Vec::new(),
            daemon_restarted: false,
            step_note: None,
        })
    }

    /// The step's label, with the node for an owner of the agent's node (`acquire by b@10.99.0.2`).
    pub(super) fn label(&self, step: &Step) -> String {
        let label = step.label();
        match (&step.owner, &self.remote) {
            (Some(owner), Some(remote)) if self.is_remote(owner) => label.replacen(
                &format!("by {owner}"),
                &format!("by {owner}@{}", remote.host()),
                1,
            ),
            _ => label,
        }
    }

    pub(super) fn is_remote(&self, owner: &str) -> bool {
        self.owners.get(owner).is_some_and(|o| o.remote)
    }

    /// The node that makes `owner`'s calls.
    pub(super) fn node(&mut self, owner: &str) -> &mut dyn OwnerNode {
        match (self.is_remote(owner), self.remote.as_mut()) {
            (true, Some(remote)) => remote,
            _ => &mut self.local,
        }
    }

    /// Runs every step; returns the notes of plugin-specific expectations that were met.
    fn run_steps(&mut self, emit: &mut dyn FnMut(CellEvent)) -> Result<Vec<String>, End> {
        let scenario = self.scenario;
        for (i, step) in scenario.steps.iter().enumerate() {
            let index = i + 1;
            let label = self.label(step);
            emit(CellEvent::Start {
                index,
                label: label.clone(),
            });
            let (expect, plugin_note) = step.expectation(self.profile.as_str());
            let started = Instant::now();
            self.step_note = None;
            let (outcome, timing) = self.run_with_retry(step, expect);
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let mut report = StepReport {
                index,
                label: label.clone(),
                expected: expect.word(step.op).into(),
                outcome: String::new(),
                ok: false,
                detail: String::new(),
                ms,
                plugin_note: plugin_note.clone(),
                note: step.note.clone(),
            };
            let verdict = match outcome {
                Outcome::NotApplicable(reason) => {
                    report.outcome = "n/a".into();
                    report.detail = reason.clone();
                    emit(CellEvent::Step(report));
                    return Err(End {
                        verdict: Verdict::NotApplicable,
                        reason: format!("step {index} ({label}): {reason}"),
                    });
                }
                Outcome::Late(timing) => {
                    report.outcome = format!("late {}", expect.word(step.op));
                    report.detail = timing.clone();
                    Err(format!(
                        "expected {} within {} ms, got {timing}",
                        expect.word(step.op),
                        step.within_ms.unwrap_or(0)
                    ))
                }
                Outcome::Done(result) => self.judge(step, expect, result, &mut report),
            };
            if let Some(timing) = timing {
                report.detail = format!("{timing}; {}", report.detail);
            }
            if let (Some(note), true) = (&plugin_note, report.ok) {
                self.plugin_notes.push(format!(
                    "step {index} ({label}) {} as expected for {}: {note}",
                    report.outcome, self.profile
                ));
            }
            if let (Some(note), true) = (self.step_note.take(), report.ok) {
                self.plugin_notes
                    .push(format!("step {index} ({label}) {}: {note}", report.outcome));
            }
            emit(CellEvent::Step(report));
            if let Err(why) = verdict {
                let note = step
                    .note
                    .as_ref()
                    .map_or_else(String::new, |n| format!(" — {n}"));
                return Err(End::fail(format!("step {index} ({label}{note}): {why}")));
            }
        }
        Ok(std::mem::take(&mut self.plugin_notes))
    }
}

impl<'a> Runner<'a> {
    /// Kills the owners, deinits the plugin, stops the daemon, on every node; reports what went
    /// wrong.
    fn finish(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Err(err) = self.local.finish() {
            problems.push(err);
        }
        if let Some(remote) = self.remote.as_mut() {
            if let Err(err) = remote.finish() {
                problems.push(format!("on {}: {err}", remote.name()));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

pub(super) fn describe_state(state: Option<&str>) -> String {
    match state {
        None => "NULL".into(),
        Some(text) if text.len() > 60 => format!("'{}…' ({} bytes)", &text[..57], text.len()),
        Some(text) => format!("'{text}'"),
    }
}

/// Damages a state string the way the scenario asks, keeping it XML-safe.
pub(super) fn corrupt(state: &str, how: Corruption) -> String {
    match how {
        Corruption::Truncate => {
            let mut end = state.len() / 2;
            while !state.is_char_boundary(end) {
                end -= 1;
            }
            state[..end].to_owned()
        }
        Corruption::Flip => {
            let chars: Vec<char> = state.chars().collect();
            let middle = chars.len() / 2;
            chars
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    if i != middle {
                        c
                    } else if c == 'A' {
                        'B'
                    } else if c.is_ascii_digit() {
                        if c == '0' { '1' } else { '0' }
                    } else {
                        'A'
                    }
                })
                .collect()
        }
        Corruption::Garbage => match state.split_once(':') {
            Some((prefix, _)) => format!("{prefix}:not-a-state-string"),
            None => "not-a-state-string".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruptions_change_the_string_and_stay_xml_safe() {
        let state = "lockmgr1:abcDEF123xyz";
        for how in [Corruption::Truncate, Corruption::Flip, Corruption::Garbage] {
            let bad = corrupt(state, how);
            assert_ne!(bad, state, "{how:?}");
            assert!(lockmgr::check_state_string(&bad).is_ok(), "{how:?}: {bad}");
        }
        assert_eq!(
            corrupt(state, Corruption::Garbage),
            "lockmgr1:not-a-state-string"
        );
        assert_eq!(corrupt("ab", Corruption::Flip), "aA");
    }

    #[test]
    fn owner_uuids_are_plausible_and_distinct() {
        let a = owner_uuid("s", "a");
        let b = owner_uuid("s", "b");
        assert_ne!(a, b);
        assert!(a.is_plausible() && b.is_plausible());
    }
}
