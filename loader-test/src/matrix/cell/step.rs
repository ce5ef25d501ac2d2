//! One step of a cell: libvirt's call for it, on the owner's node, and the judgement of its
//! outcome against the scenario's expectation.

use std::time::{Duration, Instant, SystemTime};

use lockmgr::{Lease, Resource};
use sha2::{Digest, Sha256};

use crate::daemons::{self, Profile};
use crate::matrix::cell::{LastKill, Outcome, Runner, corrupt, describe_state};
use crate::matrix::report::StepReport;
use crate::matrix::sanlock::SANLOCK_REFUSAL_CODE;
use crate::node::{Failure, OwnerNode, describe_resource};
use crate::scenario::{Concrete, Expect, Op, Step};

impl<'a> Runner<'a> {
    /// Runs the step; with `within_ms`, again until the expected outcome or the bound.
    ///
    /// After a `kill` on one node, a step of an owner on the other node is judged in two parts:
    /// the killed owner's daemon must have freed its locks within `within_ms` of the SIGKILL (the
    /// bound is the daemon's, read from its log), and the other node must have been granted
    /// within `across_nodes_within_ms` (the grant also pays the lock manager's round trips
    /// between the nodes and the agent's).
    pub(super) fn run_with_retry(
        &mut self,
        step: &Step,
        expect: Expect,
    ) -> (Outcome, Option<String>) {
        let Some(bound_ms) = step.within_ms else {
            return (self.exec(step), None);
        };
        let owner_remote = step.owner.as_deref().is_some_and(|o| self.is_remote(o));
        let across = self
            .last_kill
            .as_ref()
            .is_some_and(|kill| kill.remote != owner_remote);
        let end_bound_ms = if across {
            step.across_nodes_within_ms.unwrap_or(bound_ms)
        } else {
            bound_ms
        };
        let since = self
            .last_kill
            .as_ref()
            .map_or_else(Instant::now, |kill| kill.at);
        let from = match (&self.last_kill, across) {
            (None, _) => "after the first try",
            (Some(_), false) => "after the SIGKILL",
            (Some(_), true) => "after the SIGKILL on the other node",
        };
        let end_bound = Duration::from_millis(end_bound_ms);
        let deadline = since + end_bound;
        let mut tries = 0;
        loop {
            tries += 1;
            let try_started = Instant::now();
            let outcome = self.exec(step);
            let try_ms = try_started.elapsed().as_secs_f64() * 1000.0;
            let reached = match &outcome {
                Outcome::Done(result) => result.is_ok() == (expect == Expect::Ok),
                Outcome::Late(_) | Outcome::NotApplicable(_) => true,
            };
            let elapsed = since.elapsed();
            if reached || Instant::now() >= deadline {
                let word = match (&outcome, step.op.takes_locks()) {
                    (Outcome::Done(Ok(_)), true) => "granted",
                    (Outcome::Done(Err(_)), true) => "refused",
                    (Outcome::Done(Ok(_)), false) => "ok",
                    _ => "still failing",
                };
                let within = match (elapsed <= end_bound, across) {
                    (true, false) => format!("within the {end_bound_ms} ms bound"),
                    (false, false) => format!("OVER the {end_bound_ms} ms bound"),
                    (true, true) => format!("within the {end_bound_ms} ms bound across nodes"),
                    (false, true) => format!("OVER the {end_bound_ms} ms bound across nodes"),
                };
                let mut timing = format!(
                    "{word} {:.1} ms {from} ({within}; {tries} tr{}, the last one took {try_ms:.1} ms)",
                    elapsed.as_secs_f64() * 1000.0,
                    if tries == 1 { "y" } else { "ies" }
                );
                let mut daemon_late = false;
                if across && reached {
                    let (text, late) = self.daemon_part(bound_ms);
                    timing.push_str(&format!("; {text}"));
                    daemon_late = late;
                    if !late && step.across_nodes_within_ms.is_some() {
                        self.step_note = Some(format!(
                            "across nodes, {:.1} ms after the SIGKILL (bound {end_bound_ms} ms: \
                             the grant on the other node also pays round trips between the \
                             nodes); {text}",
                            elapsed.as_secs_f64() * 1000.0
                        ));
                    }
                }
                if !reached || (elapsed <= end_bound && !daemon_late) {
                    return (outcome, Some(timing));
                }
                return (Outcome::Late(timing), None);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The daemon's own part of a release seen across nodes: when the killed owner's daemon
    /// reported it (lockmgrd's `events`), against `bound_ms` from the SIGKILL. Measurable when
    /// that daemon runs here (the same clock); otherwise said so. Returns the text and whether
    /// it was over the bound.
    fn daemon_part(&mut self, bound_ms: u64) -> (String, bool) {
        let Some(kill) = &self.last_kill else {
            return (String::new(), false);
        };
        if kill.remote {
            return (
                "the killed owner's daemon runs on the other node (another clock): its release \
                 is not timed separately"
                    .into(),
                false,
            );
        }
        let (uuid, wall) = (kill.uuid, kill.wall);
        match self.local.daemon_released_at(&uuid.to_string()) {
            Some(released) => {
                let ms = released.duration_since(wall).map_or(0, |d| d.as_millis());
                let late = ms > u128::from(bound_ms);
                (
                    format!(
                        "this host's daemon reported the release {ms} ms after the SIGKILL ({} \
                         the {bound_ms} ms bound)",
                        if late { "OVER" } else { "within" }
                    ),
                    late,
                )
            }
            None => (
                "this host's daemon reported no release for the killed owner (none, or not \
                 lockmgrd)"
                    .into(),
                false,
            ),
        }
    }

    pub(super) fn judge(
        &mut self,
        step: &Step,
        expect: Expect,
        result: Result<String, Failure>,
        report: &mut StepReport,
    ) -> Result<(), String> {
        let (ok_word, refused_word) = (Expect::Ok.word(step.op), Expect::Refused.word(step.op));
        match (expect, result) {
            (Expect::Ok, Ok(detail)) => {
                report.outcome = ok_word.into();
                report.ok = true;
                report.detail = detail;
                Ok(())
            }
            (Expect::Ok, Err(failure)) => {
                report.outcome = refused_word.into();
                report.detail = failure.message.clone();
                Err(format!(
                    "expected {ok_word}, got {refused_word}: {}",
                    failure.message
                ))
            }
            (Expect::Refused, Ok(detail)) => {
                report.outcome = ok_word.into();
                report.detail = detail.clone();
                let why = match self.profile {
                    // libvirt's sanlock.so: New probes whether the pid is registered; the
                    // restarted daemon knows no process, so Acquire logs "Process not
                    // registered, not acquiring lock" and returns 0 having taken nothing.
                    Profile::Sanlock if self.daemon_restarted => {
                        "; the restarted sanlock daemon has lost every registration and \
                         lockspace, so sanlock.so finds the domain not registered and returns 0 \
                         without acquiring anything, while a's QEMU runs on unprotected (a real \
                         host's watchdog would have reset it when sanlock died)"
                    }
                    // sanlock.so does not hand the state string to sanlock_acquire.
                    Profile::Sanlock if step.corrupt.is_some() => {
                        "; sanlock.so parses the state string but does not pass it to \
                         sanlock_acquire, so a damaged one changes nothing"
                    }
                    _ => "",
                };
                Err(format!(
                    "expected {refused_word}, got {ok_word} ({detail}){why}"
                ))
            }
            (Expect::Refused, Err(failure)) => {
                report.outcome = refused_word.into();
                report.detail = failure.message.clone();
                if let Some(problem) = self.check_refusal(step, &failure) {
                    return Err(format!("{refused_word} as expected, but {problem}"));
                }
                report.ok = true;
                Ok(())
            }
        }
    }

    /// What is wrong with a refusal's error, per the step's `error` and `names`.
    fn check_refusal(&mut self, step: &Step, failure: &Failure) -> Option<String> {
        let message = failure.message.to_lowercase();
        match step.error.as_deref() {
            Some("busy") => {
                let code = failure.reported.as_ref().map(|r| r.code);
                // libvirt's sanlock.so reports every refused sanlock_acquire as a system error
                // (virReportSystemError: code 38, "Failed to acquire lock: <strerror>"), naming
                // no disk: a declared difference of the sanlock profile, said in the footnote.
                if self.profile == Profile::Sanlock
                    && code == Some(SANLOCK_REFUSAL_CODE)
                    && message.contains("failed to acquire lock")
                {
                    let note = format!(
                        "sanlock.so refuses with VIR_ERR_SYSTEM_ERROR (code 38) \"{}\", not \
                         VIR_ERR_RESOURCE_BUSY (libvirt prints no \"resource busy\"), and names \
                         no disk: accepted as sanlock's way of refusing",
                        failure.message.trim_start_matches("drvAcquire failed: ")
                    );
                    if !self.plugin_notes.contains(&note) {
                        self.plugin_notes.push(note);
                    }
                    return None;
                }
                if code != Some(87) {
                    return Some(format!(
                        "the error is not VIR_ERR_RESOURCE_BUSY (code {}; libvirt would not \
                         print \"resource busy\"): {}",
                        code.map_or("none".into(), |c| c.to_string()),
                        failure.message
                    ));
                }
            }
            Some(text) if !message.contains(&text.to_lowercase()) => {
                return Some(format!(
                    "the error does not mention '{text}': {}",
                    failure.message
                ));
            }
            _ => {}
        }
        if let Some(reference) = &step.names {
            let resources = self.scenario.resolve(reference).unwrap_or_default();
            let named = resources
                .iter()
                .any(|r| self.identifiers(r).iter().any(|id| message.contains(id)));
            if !named {
                return Some(format!(
                    "the error does not name {reference} (its path, file name, sha256 or key): {}",
                    failure.message
                ));
            }
        }
        None
    }

    /// The ways an error message may name a resource, lower-cased.
    fn identifiers(&self, resource: &Concrete) -> Vec<String> {
        match (&resource.disk, &resource.lease) {
            (Some(disk), _) => {
                let path = self.local.env().layout.disks.join(disk);
                let text = path.display().to_string();
                let hash = Sha256::digest(text.as_bytes());
                let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
                vec![text.to_lowercase(), disk.to_lowercase(), hex]
            }
            (None, Some(key)) => vec![key.to_lowercase()],
            (None, None) => Vec::new(),
        }
    }

    pub(super) fn resources(&self, step: &Step) -> Vec<Resource> {
        let concrete = self.scenario.step_resources(step).unwrap_or_default();
        concrete.iter().map(|c| self.resource(c)).collect()
    }

    /// The resource as libvirt passes it; owners on the agent's node get the very same paths
    /// (the lock manager names resources after them).
    pub(super) fn resource(&self, concrete: &Concrete) -> Resource {
        let access = concrete.mode.access();
        let layout = &self.local.env().layout;
        match (&concrete.disk, &concrete.lease) {
            (Some(disk), _) => Resource::Disk {
                path: layout.disks.join(disk),
                access,
            },
            // sanlock: a lease is a sanlock resource at an offset of a lease file, in a
            // lockspace the host has joined (the one libvirt joined for its disk leases).
            (None, lease) if self.profile == Profile::Sanlock => {
                let key = lease.clone().unwrap_or_default();
                Resource::Lease {
                    lease: Lease {
                        path: Some(layout.lockspace.join(&key)),
                        key,
                        lockspace: Some(daemons::LIBVIRT_SANLOCK_LOCKSPACE.into()),
                        offset: Some(0),
                    },
                    access,
                }
            }
            (None, lease) => Resource::Lease {
                lease: Lease {
                    key: lease.clone().unwrap_or_default(),
                    lockspace: Some(daemons::LEASE_LOCKSPACE.into()),
                    path: Some(layout.leases.clone()),
                    offset: Some(0),
                },
                access,
            },
        }
    }

    pub(super) fn exec(&mut self, step: &Step) -> Outcome {
        let owner = step.owner.clone().unwrap_or_default();
        let resources = self.resources(step);
        let count = resources.len();
        let summary = if count == 1 {
            describe_resource(&resources[0])
        } else {
            format!("{count} resources")
        };
        match step.op {
            Op::Register => {
                let domain = self.owners[&owner].domain.clone();
                let result = self.node(&owner).register(&owner, &domain, &resources);
                Outcome::Done(result.map(|(pid, detail)| {
                    if let Some(state) = self.owners.get_mut(&owner) {
                        state.domain.pid = pid;
                    }
                    detail
                }))
            }
            Op::Acquire | Op::Hotplug => Outcome::Done(
                self.node(&owner)
                    .acquire(&owner, &resources, None)
                    .map(|()| format!("{summary} locked")),
            ),
            Op::Resume => self.resume(step, &owner, &resources, &summary),
            Op::Pause => Outcome::Done((|| {
                let mut last = None;
                let times = step.repeat.unwrap_or(1).max(1);
                for _ in 0..times {
                    last = self.node(&owner).release(&owner, &resources, true)?;
                }
                let detail = format!(
                    "{summary} released{}; state {}",
                    if times > 1 {
                        format!(" ({times} Release calls, the last state kept)")
                    } else {
                        String::new()
                    },
                    describe_state(last.as_deref())
                );
                if let Some(state) = self.owners.get_mut(&owner) {
                    state.saved_state = last;
                }
                Ok(detail)
            })()),
            Op::Detach | Op::Unplug => Outcome::Done(
                self.node(&owner)
                    .release(&owner, &resources, false)
                    .map(|_| format!("{summary} released")),
            ),
            Op::Inquire => Outcome::Done(
                self.node(&owner)
                    .inquire(&owner, &resources)
                    .map(|state| format!("state {}", describe_state(state.as_deref()))),
            ),
            Op::Kill => Outcome::Done(self.kill(&owner)),
            Op::RestartLibvirtd => Outcome::Done(self.restart_libvirtd()),
            Op::RestartDaemon => match self.local.restart_daemon().inspect(|_| {
                self.daemon_restarted = true;
            }) {
                Ok(Some(detail)) => Outcome::Done(Ok(detail)),
                Ok(None) => Outcome::NotApplicable(format!("{} has no lock daemon", self.profile)),
                Err(failure) => Outcome::Done(Err(failure)),
            },
        }
    }

    fn resume(
        &mut self,
        step: &Step,
        owner: &str,
        resources: &[Resource],
        summary: &str,
    ) -> Outcome {
        let saved = self.owners[owner].saved_state.clone();
        let state = match (step.corrupt, saved) {
            (Some(_), None) => {
                return Outcome::NotApplicable(
                    "the plugin returned no state string at pause, so libvirt never passes one \
                     back: there is nothing to corrupt"
                        .into(),
                );
            }
            (Some(how), Some(text)) => Some(corrupt(&text, how)),
            (None, saved) => saved,
        };
        let result = self
            .node(owner)
            .acquire(owner, resources, state.as_deref())
            .map(|()| {
                format!(
                    "{summary} locked with state {}",
                    describe_state(state.as_deref())
                )
            });
        if result.is_ok() && step.corrupt.is_none() {
            // libvirt frees the saved state after a successful resume, and keeps it otherwise.
            if let Some(owner) = self.owners.get_mut(owner) {
                owner.saved_state = None;
            }
        }
        Outcome::Done(result.map_err(|mut f: Failure| {
            if step.corrupt.is_some() {
                f.message = format!("{} (given {})", f.message, describe_state(state.as_deref()));
            }
            f
        }))
    }

    pub(super) fn kill(&mut self, owner: &str) -> Result<String, Failure> {
        let (uuid, remote) = {
            let state = &self.owners[owner];
            (state.domain.uuid, state.remote)
        };
        self.last_kill = Some(LastKill {
            at: Instant::now(),
            wall: SystemTime::now(),
            uuid,
            remote,
        });
        self.node(owner).kill(owner)
    }

    /// libvirtd restarts on every node of the cell.
    fn restart_libvirtd(&mut self) -> Result<String, Failure> {
        let mut detail = self.local.restart_libvirtd()?;
        if let Some(remote) = self.remote.as_mut() {
            let there = remote.restart_libvirtd()?;
            detail = format!("{detail}; on {}: {there}", remote.name());
        }
        Ok(detail)
    }
}
