//! The daemon's lock table: owners (domains), what each holds, all-or-none acquisition,
//! sharing between domains of this host, and the snapshot persisted across restarts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use lockmgr::proto::{self, ErrorKind, FailureAction, LockStatus, Mode, OwnerInfo, ResourceSpec};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendError, Target};
use crate::process;
use crate::sys;

/// A refusal, as sent back to the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub kind: ErrorKind,
    /// The message for the operator.
    pub message: String,
}

impl Refusal {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Refusal {
            kind,
            message: message.into(),
        }
    }
}

impl From<BackendError> for Refusal {
    fn from(err: BackendError) -> Self {
        let kind = match err {
            BackendError::Busy(_) => ErrorKind::Busy,
            BackendError::Config(_) => ErrorKind::Config,
            BackendError::Io(_) => ErrorKind::Internal,
        };
        Refusal::new(kind, err.to_string())
    }
}

/// A registered domain.
#[derive(Debug)]
struct Owner {
    info: OwnerInfo,
    /// Process start time (clock ticks since boot), against pid reuse.
    start_time: u64,
    pidfd: OwnedFd,
    action: FailureAction,
    /// Whether it acquired since it was registered: a state string given to its first Acquire
    /// is libvirt's leftover from an earlier run of the domain, not a pause of this one.
    acquired: bool,
}

/// One lock this daemon holds, possibly shared by several domains of this host.
#[derive(Debug)]
struct Held<H> {
    target: Target,
    spec: ResourceSpec,
    mode: Mode,
    holders: BTreeSet<String>,
    handle: H,
}

/// What survives a daemon restart (`<state_dir>/locks.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Format version.
    pub format: u32,
    /// Backend that wrote it (a daemon refuses another backend's file).
    pub backend: String,
    /// Registered domains.
    pub owners: Vec<SnapshotOwner>,
    /// Held locks.
    pub locks: Vec<SnapshotLock>,
}

/// A domain in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotOwner {
    /// The domain.
    pub info: OwnerInfo,
    /// Process start time of its pid.
    pub start_time: u64,
    /// Its `<on_lockfailure>`.
    pub action: FailureAction,
}

/// A lock in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLock {
    /// The resource as requested.
    pub spec: ResourceSpec,
    /// How it is held.
    pub mode: Mode,
    /// UUIDs of the holding domains.
    pub holders: Vec<String>,
}

/// A [`Snapshot`] borrowed from the live table: writing it copies nothing.
#[derive(Debug, Serialize)]
pub struct SnapshotView<'a> {
    format: u32,
    backend: &'a str,
    owners: Vec<SnapshotOwnerView<'a>>,
    locks: Vec<SnapshotLockView<'a>>,
}

#[derive(Debug, Serialize)]
struct SnapshotOwnerView<'a> {
    info: &'a OwnerInfo,
    start_time: u64,
    action: FailureAction,
}

#[derive(Debug, Serialize)]
struct SnapshotLockView<'a> {
    spec: &'a ResourceSpec,
    mode: Mode,
    holders: Vec<&'a str>,
}

/// The current snapshot format.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// A lock that could not be taken back after a restart, and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostLock {
    /// The domain that held it.
    pub owner: String,
    /// The resource.
    pub resource: String,
    /// Why it was lost and which action was applied.
    pub outcome: String,
}

/// The table.
#[derive(Debug)]
pub struct LockTable<B: Backend> {
    backend: B,
    /// Bumped by every change worth persisting.
    generation: u64,
    owners: HashMap<String, Owner>,
    held: BTreeMap<String, Held<B::Handle>>,
}

impl<B: Backend> LockTable<B> {
    /// An empty table over `backend`.
    pub fn new(backend: B) -> Self {
        LockTable {
            backend,
            generation: 0,
            owners: HashMap::new(),
            held: BTreeMap::new(),
        }
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Whether changes must be synced before replying.
    pub fn durable(&self) -> bool {
        self.backend.durable_state()
    }

    /// The pidfds to watch, with the owning domain's uuid.
    pub fn watched(&self) -> Vec<(RawFd, String)> {
        self.owners
            .iter()
            .map(|(uuid, o)| (o.pidfd.as_raw_fd(), uuid.clone()))
            .collect()
    }

    /// Registers (or refreshes) a domain; its process must be alive.
    pub fn register(&mut self, info: &OwnerInfo) -> Result<(), Refusal> {
        self.ensure_owner(info).map(|_| ())
    }

    fn ensure_owner(&mut self, info: &OwnerInfo) -> Result<&mut Owner, Refusal> {
        if info.pid == 0 {
            return Err(Refusal::new(
                ErrorKind::Invalid,
                format!("domain '{}' has no pid", info.name),
            ));
        }
        if let Some(existing) = self.owners.get(&info.uuid) {
            if existing.info.pid != info.pid {
                if process::is_alive(&existing.pidfd) {
                    return Err(Refusal::new(
                        ErrorKind::Busy,
                        format!(
                            "domain '{}' ({}) is already running on this host as pid {}",
                            existing.info.name, existing.info.uuid, existing.info.pid
                        ),
                    ));
                }
                // The old QEMU died and its death is not processed yet: clean up first.
                let uuid = info.uuid.clone();
                self.owner_died(&uuid);
            }
        }
        if !self.owners.contains_key(&info.uuid) {
            let pidfd = sys::pidfd_open(info.pid).map_err(|e| {
                Refusal::new(
                    ErrorKind::Invalid,
                    format!(
                        "domain '{}': process {} is not running ({e})",
                        info.name, info.pid
                    ),
                )
            })?;
            let start_time = process::start_time(info.pid).map_err(|e| {
                Refusal::new(
                    ErrorKind::Invalid,
                    format!(
                        "domain '{}': cannot read /proc/{}/stat: {e}",
                        info.name, info.pid
                    ),
                )
            })?;
            let owner = Owner {
                info: info.clone(),
                start_time,
                pidfd,
                action: FailureAction::Default,
                acquired: false,
            };
            self.owners.insert(info.uuid.clone(), owner);
            self.generation += 1;
        }
        let owner = self.owners.get_mut(&info.uuid).expect("inserted above");
        if owner.info.uri.as_ref() != info.uri.as_ref().or(owner.info.uri.as_ref())
            || owner.info.name != info.name
            || owner.info.id != info.id
        {
            self.generation += 1;
        }
        // libvirt sends uri only for start/resume/attach; keep the last one it gave.
        if info.uri.is_some() {
            owner.info.uri.clone_from(&info.uri);
        }
        owner.info.name.clone_from(&info.name);
        owner.info.id = info.id;
        Ok(owner)
    }

    fn holder_name(&self, uuid: &str) -> String {
        self.owners.get(uuid).map_or_else(
            || format!("uuid {uuid}"),
            |o| format!("domain '{}' (pid {})", o.info.name, o.info.pid),
        )
    }

    /// Takes every resource for `info`, all or none.
    pub fn acquire(
        &mut self,
        info: &OwnerInfo,
        resources: &[ResourceSpec],
        action: FailureAction,
        state: Option<&str>,
    ) -> Result<(), Refusal> {
        if let Some(state) = state {
            if let Err(why) = proto::decode_state(state) {
                let resuming = self.owners.get(&info.uuid).is_some_and(|o| o.acquired);
                if resuming {
                    return Err(Refusal::new(ErrorKind::Invalid, why));
                }
                // libvirt keeps <lockstate> after a paused domain is destroyed and hands it to
                // the next start; refusing it would keep the domain down until libvirtd restarts.
                crate::log(&format!(
                    "domain '{}' starts with a lock state from an earlier run that is not valid ({why}); ignored",
                    info.name
                ));
            }
        }
        let owner = self.ensure_owner(info)?;
        let action_changed = owner.action != action;
        owner.action = action;
        if action_changed {
            self.generation += 1;
        }
        let uuid = info.uuid.as_str();

        // Plan without touching anything: what to join, what to lock, what conflicts.
        let mut to_lock: Vec<(Target, &ResourceSpec)> = Vec::new();
        let mut to_join: Vec<String> = Vec::new();
        let mut seen = BTreeSet::new();
        for spec in resources {
            let target = self.backend.resolve(spec)?;
            if !seen.insert(target.id.clone()) {
                continue;
            }
            match self.held.get(&target.id) {
                Some(held) if held.holders.contains(uuid) => {
                    if held.mode != spec.mode {
                        return Err(Refusal::new(
                            ErrorKind::Invalid,
                            format!(
                                "{} is already held by this domain in another mode",
                                spec.describe()
                            ),
                        ));
                    }
                }
                Some(held) if held.mode == Mode::Shared && spec.mode == Mode::Shared => {
                    to_join.push(target.id)
                }
                Some(held) => {
                    let holders: Vec<String> =
                        held.holders.iter().map(|h| self.holder_name(h)).collect();
                    let how = if held.mode == Mode::Exclusive {
                        "exclusively"
                    } else {
                        "shared"
                    };
                    return Err(Refusal::new(
                        ErrorKind::Busy,
                        format!(
                            "{} is locked {how} by {} on this host",
                            spec.describe(),
                            holders.join(", ")
                        ),
                    ));
                }
                None => to_lock.push((target, spec)),
            }
        }

        let mut taken: Vec<(Target, &ResourceSpec, B::Handle)> = Vec::with_capacity(to_lock.len());
        for (target, spec) in to_lock {
            match self.backend.lock(&target, spec, spec.mode) {
                Ok(handle) => taken.push((target, spec, handle)),
                Err(err) => {
                    for (target, _, handle) in taken {
                        let _ = self.backend.unlock(&target, handle);
                    }
                    return Err(err.into());
                }
            }
        }
        for id in to_join {
            if let Some(held) = self.held.get_mut(&id) {
                held.holders.insert(uuid.to_owned());
            }
        }
        for (target, spec, handle) in taken {
            let holders = BTreeSet::from([uuid.to_owned()]);
            let id = target.id.clone();
            self.held.insert(
                id,
                Held {
                    target,
                    spec: spec.clone(),
                    mode: spec.mode,
                    holders,
                    handle,
                },
            );
        }
        if let Some(owner) = self.owners.get_mut(uuid) {
            owner.acquired = true;
        }
        self.generation += 1;
        Ok(())
    }

    /// Drops `resources` held by `info` (idempotent); returns the state string of what was
    /// held among them.
    pub fn release(
        &mut self,
        info: &OwnerInfo,
        resources: &[ResourceSpec],
    ) -> Result<String, Refusal> {
        // The state names what was asked for, not what this call happened to drop: libvirt
        // sends two Releases at once on suspend and keeps the answer of the later one.
        let requested: Vec<_> = resources
            .iter()
            .map(|spec| (spec.mode, spec.fingerprint()))
            .collect();
        for spec in resources {
            let target = self.backend.resolve(spec)?;
            let Some(held) = self.held.get_mut(&target.id) else {
                continue;
            };
            if !held.holders.remove(&info.uuid) {
                continue;
            }
            self.generation += 1;
            if held.holders.is_empty() {
                let held = self.held.remove(&target.id).expect("present");
                self.backend.unlock(&held.target, held.handle)?;
            }
        }
        Ok(proto::encode_state(&requested))
    }

    /// The state string of everything `info` holds now.
    pub fn inquire(&self, info: &OwnerInfo) -> String {
        let held: Vec<_> = self
            .held
            .values()
            .filter(|h| h.holders.contains(&info.uuid))
            .map(|h| (h.mode, h.spec.fingerprint()))
            .collect();
        proto::encode_state(&held)
    }

    /// The owner's process exited: free everything it held, at once.
    pub fn owner_died(&mut self, uuid: &str) -> usize {
        let mut freed = 0;
        let ids: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.holders.contains(uuid))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let held = self.held.get_mut(&id).expect("listed");
            held.holders.remove(uuid);
            freed += 1;
            if held.holders.is_empty() {
                let held = self.held.remove(&id).expect("listed");
                if let Err(err) = self.backend.unlock(&held.target, held.handle) {
                    eprintln!(
                        "lockmgrd: releasing {} after its owner died: {err}",
                        held.spec.describe()
                    );
                }
            }
        }
        self.owners.remove(uuid);
        self.generation += 1;
        freed
    }

    /// The cluster side failed: applies `<on_lockfailure>` to every domain holding a lock.
    pub fn apply_lock_failure(&self) -> Vec<String> {
        self.owners
            .iter()
            .filter(|(uuid, _)| self.held.values().any(|h| h.holders.contains(*uuid)))
            .map(|(_, owner)| {
                process::apply_failure_action(&owner.pidfd, &owner.info, owner.action)
            })
            .collect()
    }

    /// Starts the backend's health probe, if it has one.
    pub fn start_health_probe(&self) -> Option<std::sync::Arc<crate::health::Health>> {
        self.backend.start_health_probe()
    }

    /// The lock table, for `Status`.
    pub fn status(&self) -> (Vec<String>, Vec<LockStatus>) {
        let mut owners: Vec<String> = self
            .owners
            .values()
            .map(|o| format!("{} ({}) pid {}", o.info.name, o.info.uuid, o.info.pid))
            .collect();
        owners.sort();
        let locks = self
            .held
            .values()
            .map(|h| LockStatus {
                resource: h.spec.describe(),
                target: h.target.id.clone(),
                mode: h.mode,
                owners: h
                    .holders
                    .iter()
                    .map(|u| {
                        self.owners
                            .get(u)
                            .map_or_else(|| u.clone(), |o| o.info.name.clone())
                    })
                    .collect(),
            })
            .collect();
        (owners, locks)
    }

    /// A number that changes whenever the table changes in a way worth persisting.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What to persist, borrowed from the table (serialized as a [`Snapshot`]).
    pub fn snapshot(&self) -> SnapshotView<'_> {
        SnapshotView {
            format: SNAPSHOT_FORMAT,
            backend: self.backend.name(),
            owners: self
                .owners
                .values()
                .map(|o| SnapshotOwnerView {
                    info: &o.info,
                    start_time: o.start_time,
                    action: o.action,
                })
                .collect(),
            locks: self
                .held
                .values()
                .map(|h| SnapshotLockView {
                    spec: &h.spec,
                    mode: h.mode,
                    holders: h.holders.iter().map(String::as_str).collect(),
                })
                .collect(),
        }
    }

    /// After a restart: re-register the domains of `snapshot` that still run (same pid and
    /// start time) and take their locks again. A lock someone else took meanwhile is lost:
    /// its owners' `<on_lockfailure>` actions are applied and reported.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Vec<LostLock> {
        let mut lost = Vec::new();
        for saved in &snapshot.owners {
            let alive = sys::pidfd_open(saved.info.pid)
                .ok()
                .filter(|_| process::start_time(saved.info.pid).ok() == Some(saved.start_time));
            match alive {
                Some(pidfd) => {
                    let owner = Owner {
                        info: saved.info.clone(),
                        start_time: saved.start_time,
                        pidfd,
                        action: saved.action,
                        // It was running before the restart: a state string now is a resume's.
                        acquired: true,
                    };
                    self.owners.insert(saved.info.uuid.clone(), owner);
                }
                None => crate::log(&format!(
                    "domain '{}' (pid {}) stopped while the daemon was down; its locks are not taken back",
                    saved.info.name, saved.info.pid
                )),
            }
        }
        for saved in &snapshot.locks {
            let holders: Vec<&String> = saved
                .holders
                .iter()
                .filter(|u| self.owners.contains_key(*u))
                .collect();
            if holders.is_empty() {
                let discarded = self
                    .backend
                    .resolve(&saved.spec)
                    .and_then(|t| self.backend.discard(&t, &saved.spec, saved.mode));
                if let Err(err) = discarded {
                    eprintln!(
                        "lockmgrd: cannot drop the left-over lock on {}: {err}",
                        saved.spec.describe()
                    );
                }
                continue;
            }
            let taken = self.backend.resolve(&saved.spec).and_then(|t| {
                let handle = self.backend.reclaim(&t, &saved.spec, saved.mode)?;
                Ok((t, handle))
            });
            match taken {
                Ok((target, handle)) => {
                    let id = target.id.clone();
                    let holders = holders.into_iter().cloned().collect();
                    self.held.insert(
                        id,
                        Held {
                            target,
                            spec: saved.spec.clone(),
                            mode: saved.mode,
                            holders,
                            handle,
                        },
                    );
                }
                Err(err) => {
                    for uuid in holders {
                        let owner = &self.owners[uuid];
                        let outcome =
                            process::apply_failure_action(&owner.pidfd, &owner.info, owner.action);
                        lost.push(LostLock {
                            owner: owner.info.name.clone(),
                            resource: saved.spec.describe(),
                            outcome: format!("{err}; {outcome}"),
                        });
                    }
                }
            }
        }
        self.generation += 1;
        lost
    }

    /// Checks whether the owner behind a pidfd really exited (the pidfd polled readable).
    pub fn owner_exited(&self, uuid: &str) -> bool {
        self.owners
            .get(uuid)
            .is_none_or(|o| !process::is_alive(&o.pidfd))
    }

    /// For tests: the raw fd of an owner's pidfd.
    pub fn pidfd_of(&self, uuid: &str) -> Option<RawFd> {
        self.owners.get(uuid).map(|o| o.pidfd.as_fd().as_raw_fd())
    }
}
