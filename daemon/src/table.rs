//! The daemon's lock table: owners (domains), what each holds, all-or-none acquisition,
//! sharing between domains of this host, and the snapshot persisted across restarts.
//!
//! Every change is recorded before it is answered, and a refused request leaves no trace: an
//! Acquire records its intent (the locks it is about to take) before it asks the backend, then
//! the committed table before it answers; a Release records the table without the lock, with the
//! lock as *unsettled*, before it unlocks. A restart drops whatever unsettled lock the backend
//! still has. So at every instant each lock the backend holds for this daemon is in the table
//! on disk or will be dropped at the next start (crash points: [`crate::failpoint`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use lockmgr_proto::{
    self as proto, DomainStatus, ErrorKind, FailureAction, LockStatus, Mode, OwnerInfo,
    ResourceSpec,
};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendError, Target, UnlockFailed};
use crate::failpoint;
use crate::persist::StateFile;
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

/// What an owner was before a request changed it, to put back when the request is refused.
#[derive(Debug)]
enum OwnerBefore {
    Absent,
    Present {
        info: OwnerInfo,
        action: FailureAction,
        acquired: bool,
    },
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

/// A lock whose unlock failed: still held through the backend, retried until it goes.
#[derive(Debug)]
struct Stuck<H> {
    target: Target,
    spec: ResourceSpec,
    mode: Mode,
    handle: H,
    error: String,
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
    /// Locks the backend may hold that no domain does (an Acquire or a Release was under way):
    /// dropped at restore. Absent in format 1.
    #[serde(default)]
    pub unsettled: Vec<SnapshotUnsettled>,
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

/// An unsettled lock in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotUnsettled {
    /// The resource.
    pub spec: ResourceSpec,
    /// The mode it was (or was about to be) taken in.
    pub mode: Mode,
}

impl Snapshot {
    /// Checks what JSON cannot: every holder is a listed owner, every lock has a holder, an
    /// exclusive lock has one, nothing is listed twice.
    pub fn check(&self) -> Result<(), String> {
        let mut uuids = BTreeSet::new();
        for owner in &self.owners {
            if !uuids.insert(owner.info.uuid.as_str()) {
                return Err(format!("domain {} is listed twice", owner.info.uuid));
            }
        }
        let mut resources = std::collections::HashSet::new();
        for lock in &self.locks {
            let what = lock.spec.describe();
            if !resources.insert((&lock.spec.kind, &lock.spec.name)) {
                return Err(format!("{what} is listed twice"));
            }
            if lock.holders.is_empty() {
                return Err(format!("{what} has no holder"));
            }
            if lock.mode == Mode::Exclusive && lock.holders.len() > 1 {
                return Err(format!(
                    "{what} is exclusive but has {} holders",
                    lock.holders.len()
                ));
            }
            if let Some(stranger) = lock.holders.iter().find(|u| !uuids.contains(u.as_str())) {
                return Err(format!(
                    "{what} is held by domain {stranger}, which is not in the owner list"
                ));
            }
        }
        if let Some(both) = self
            .unsettled
            .iter()
            .find(|u| resources.contains(&(&u.spec.kind, &u.spec.name)))
        {
            return Err(format!(
                "{} is listed both as held and as unsettled",
                both.spec.describe()
            ));
        }
        Ok(())
    }
}

/// A [`Snapshot`] borrowed from the live table: writing it copies nothing.
#[derive(Debug, Serialize)]
pub struct SnapshotView<'a> {
    format: u32,
    backend: &'a str,
    owners: Vec<SnapshotOwnerView<'a>>,
    locks: Vec<SnapshotLockView<'a>>,
    unsettled: Vec<SnapshotUnsettled>,
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

/// The current snapshot format (format 1, without `unsettled`, is still read).
pub const SNAPSHOT_FORMAT: u32 = 2;

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
    store: StateFile,
    /// Bumped by every change worth persisting.
    generation: u64,
    /// The generation last written to the store.
    saved: Option<u64>,
    /// The backend's [`Backend::in_doubt_generation`] last written.
    saved_in_doubt: Option<u64>,
    /// The last save error logged, so a failing disk is logged once, not every second.
    save_error: Option<String>,
    owners: HashMap<String, Owner>,
    held: BTreeMap<String, Held<B::Handle>>,
    /// Locks between the backend and the table: an Acquire's intent while it asks the backend,
    /// a Release's locks between recording and unlocking (durable backends only).
    pending: Vec<(ResourceSpec, Mode)>,
    /// Locks whose unlock failed.
    stuck: Vec<Stuck<B::Handle>>,
}

impl<B: Backend> LockTable<B> {
    /// An empty table over `backend`, recorded in `store`.
    pub fn new(backend: B, store: StateFile) -> Self {
        LockTable {
            backend,
            store,
            generation: 0,
            saved: None,
            saved_in_doubt: None,
            save_error: None,
            owners: HashMap::new(),
            held: BTreeMap::new(),
            pending: Vec::new(),
            stuck: Vec::new(),
        }
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The backend, for tests and diagnostics.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Whether changes must be synced before replying.
    pub fn durable(&self) -> bool {
        self.backend.durable_state()
    }

    /// The state file.
    pub fn store(&self) -> &StateFile {
        &self.store
    }

    /// Writes the table.
    pub fn save(&mut self) -> Result<(), Refusal> {
        // Read before the snapshot: a change in between is caught by the next save.
        let in_doubt = self.backend.in_doubt_generation();
        match self.store.save(&self.snapshot()) {
            Ok(()) => {
                if self.save_error.take().is_some() {
                    crate::log(&format!(
                        "the lock table is recorded again in {}",
                        self.store.path().display()
                    ));
                }
                self.saved = Some(self.generation);
                self.saved_in_doubt = Some(in_doubt);
                Ok(())
            }
            Err(err) => {
                let message = format!("cannot record the lock table: {err}");
                if self.save_error.as_ref() != Some(&message) {
                    crate::log(&message);
                    self.save_error = Some(message.clone());
                }
                Err(Refusal::new(ErrorKind::Internal, message))
            }
        }
    }

    /// Writes the table if it changed since it was last written.
    pub fn save_if_dirty(&mut self) -> Result<(), Refusal> {
        if self.saved == Some(self.generation)
            && self.saved_in_doubt == Some(self.backend.in_doubt_generation())
        {
            return Ok(());
        }
        self.save()
    }

    /// The pidfds to watch, with the owning domain's uuid.
    pub fn watched(&self) -> Vec<(RawFd, String)> {
        self.owners
            .iter()
            .map(|(uuid, o)| (o.pidfd.as_raw_fd(), uuid.clone()))
            .collect()
    }

    /// Registers (or refreshes) a domain; its process must be alive. Recorded before it returns.
    pub fn register(&mut self, info: &OwnerInfo) -> Result<(), Refusal> {
        self.check_identity(info, true)?;
        self.transaction(&info.uuid, |table| {
            table.upsert_owner(info)?;
            table.save_if_dirty()
        })
    }

    /// Runs `change` on behalf of domain `uuid`; if it is refused, the domain is put back as it
    /// was, and the table is written again only if `change` had written it (an intent).
    fn transaction<T>(
        &mut self,
        uuid: &str,
        change: impl FnOnce(&mut Self) -> Result<T, Refusal>,
    ) -> Result<T, Refusal> {
        let before = match self.owners.get(uuid) {
            None => OwnerBefore::Absent,
            Some(o) => OwnerBefore::Present {
                info: o.info.clone(),
                action: o.action,
                acquired: o.acquired,
            },
        };
        let (generation, saved) = (self.generation, self.saved);
        let result = change(self);
        if result.is_err() {
            match before {
                OwnerBefore::Absent => {
                    self.owners.remove(uuid);
                }
                OwnerBefore::Present {
                    info,
                    action,
                    acquired,
                } => {
                    if let Some(owner) = self.owners.get_mut(uuid) {
                        owner.info = info;
                        owner.action = action;
                        owner.acquired = acquired;
                    }
                }
            }
            self.pending.clear();
            if self.saved == saved {
                self.generation = generation;
            } else {
                // An intent was written: clear it (if this fails too, the next start drops it).
                let _ = self.save();
            }
        }
        result
    }

    /// Settles who `info.uuid` is before a request: an owner whose process exited is cleaned
    /// up first; a live one must be the process the request names. `starting`: the request may
    /// start the domain (register, acquire), so a mismatch means it already runs.
    fn check_identity(&mut self, info: &OwnerInfo, starting: bool) -> Result<(), Refusal> {
        let Some(existing) = self.owners.get(&info.uuid) else {
            return Ok(());
        };
        if !process::is_alive(&existing.pidfd) {
            // Its death is not processed yet: clean up first.
            let (name, pid) = (existing.info.name.clone(), existing.info.pid);
            let freed = self.owner_died(&info.uuid);
            crate::log(&format!(
                "domain '{name}' (pid {pid}) had exited; freed {freed} lock(s) before serving its next request"
            ));
            return Ok(());
        }
        if existing.info.pid == info.pid {
            return Ok(());
        }
        Err(if starting {
            Refusal::new(
                ErrorKind::Busy,
                format!(
                    "domain '{}' ({}) is already running on this host as pid {}",
                    existing.info.name, existing.info.uuid, existing.info.pid
                ),
            )
        } else {
            Refusal::new(
                ErrorKind::Denied,
                format!(
                    "domain '{}' ({}) runs as pid {} on this host; a request for pid {} ('{}') may not touch its locks",
                    existing.info.name, existing.info.uuid, existing.info.pid, info.pid, info.name
                ),
            )
        })
    }

    /// Adds the domain (checking its process) or refreshes what libvirt may change.
    fn upsert_owner(&mut self, info: &OwnerInfo) -> Result<&mut Owner, Refusal> {
        if !self.owners.contains_key(&info.uuid) {
            let owner = new_owner(info)?;
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

    /// Takes every resource for `info`, all or none; recorded before it returns.
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
        self.check_identity(info, true)?;
        self.transaction(&info.uuid, |table| {
            table.acquire_for(info, resources, action)
        })
    }

    fn acquire_for(
        &mut self,
        info: &OwnerInfo,
        resources: &[ResourceSpec],
        action: FailureAction,
    ) -> Result<(), Refusal> {
        let owner = self.upsert_owner(info)?;
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
            if let Some(stuck) = self.stuck.iter().find(|s| s.target == target) {
                return Err(Refusal::new(
                    ErrorKind::Internal,
                    format!(
                        "{} is still being released (its unlock failed: {}); try again later",
                        spec.describe(),
                        stuck.error
                    ),
                ));
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

        if !to_lock.is_empty() && self.backend.durable_state() {
            self.pending = to_lock
                .iter()
                .map(|(_, spec)| ((*spec).clone(), spec.mode))
                .collect();
            self.generation += 1;
            self.save()?;
            failpoint::hit("acquire:intent-recorded");
        }

        let mut taken: Vec<Held<B::Handle>> = Vec::with_capacity(to_lock.len());
        for (target, spec) in to_lock {
            match self.backend.lock(&target, spec, spec.mode) {
                Ok(handle) => {
                    taken.push(Held {
                        target,
                        spec: spec.clone(),
                        mode: spec.mode,
                        holders: BTreeSet::from([uuid.to_owned()]),
                        handle,
                    });
                    failpoint::hit("acquire:locked-some");
                }
                Err(err) => {
                    self.unlock_all(taken);
                    return Err(err.into());
                }
            }
        }
        failpoint::hit("acquire:locked");

        for id in &to_join {
            if let Some(held) = self.held.get_mut(id) {
                held.holders.insert(uuid.to_owned());
            }
        }
        let taken_ids: Vec<String> = taken.iter().map(|h| h.target.id.clone()).collect();
        for held in taken {
            self.held.insert(held.target.id.clone(), held);
        }
        if let Some(owner) = self.owners.get_mut(uuid) {
            owner.acquired = true;
        }
        self.pending.clear();
        self.generation += 1;
        if let Err(refusal) = self.save() {
            for id in &to_join {
                if let Some(held) = self.held.get_mut(id) {
                    held.holders.remove(uuid);
                }
            }
            let undone = taken_ids
                .iter()
                .filter_map(|id| self.held.remove(id))
                .collect();
            self.unlock_all(undone);
            return Err(refusal);
        }
        failpoint::hit("acquire:committed");
        Ok(())
    }

    /// Unlocks locks no domain holds any more; failures are kept and retried.
    fn unlock_all(&mut self, locks: Vec<Held<B::Handle>>) {
        for held in locks {
            self.unlock_one(held.target, held.spec, held.mode, held.handle);
        }
    }

    fn unlock_one(&mut self, target: Target, spec: ResourceSpec, mode: Mode, handle: B::Handle) {
        if let Err(UnlockFailed { error, handle }) =
            self.backend.unlock(&target, &spec, mode, handle)
        {
            crate::log(&format!(
                "cannot release {}: {error}; retrying until it goes",
                spec.describe()
            ));
            self.stuck.push(Stuck {
                target,
                spec,
                mode,
                handle,
                error: error.to_string(),
            });
            self.generation += 1;
        }
    }

    /// Tries the failed unlocks again.
    pub fn retry_stuck(&mut self) {
        if self.stuck.is_empty() {
            return;
        }
        for stuck in std::mem::take(&mut self.stuck) {
            match self
                .backend
                .unlock(&stuck.target, &stuck.spec, stuck.mode, stuck.handle)
            {
                Ok(()) => {
                    crate::log(&format!(
                        "released {} (its unlock had failed: {})",
                        stuck.spec.describe(),
                        stuck.error
                    ));
                    self.generation += 1;
                }
                Err(UnlockFailed { error, handle }) => self.stuck.push(Stuck {
                    handle,
                    error: error.to_string(),
                    ..stuck
                }),
            }
        }
    }

    /// Drops `resources` held by `info` (idempotent); returns the state string of what was
    /// requested. Recorded before anything is unlocked.
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
        let state = proto::encode_state(&requested);
        self.check_identity(info, false)?;
        let targets = resources
            .iter()
            .map(|spec| self.backend.resolve(spec))
            .collect::<Result<Vec<_>, _>>()?;
        let uuid = info.uuid.as_str();
        let mut left: Vec<String> = Vec::new();
        let mut freed: Vec<Held<B::Handle>> = Vec::new();
        for target in targets {
            let Some(held) = self.held.get_mut(&target.id) else {
                continue;
            };
            if !held.holders.remove(uuid) {
                continue;
            }
            left.push(target.id.clone());
            if held.holders.is_empty() {
                freed.extend(self.held.remove(&target.id));
            }
        }
        if left.is_empty() {
            return Ok(state);
        }
        let generation = self.generation;
        self.generation += 1;
        if self.backend.durable_state() {
            self.pending = freed.iter().map(|h| (h.spec.clone(), h.mode)).collect();
        }
        if let Err(refusal) = self.save() {
            for held in freed {
                self.held.insert(held.target.id.clone(), held);
            }
            for id in &left {
                if let Some(held) = self.held.get_mut(id) {
                    held.holders.insert(uuid.to_owned());
                }
            }
            self.pending.clear();
            self.generation = generation;
            return Err(refusal);
        }
        failpoint::hit("release:recorded");
        for held in freed {
            self.unlock_one(held.target, held.spec, held.mode, held.handle);
            failpoint::hit("release:unlocked-some");
        }
        failpoint::hit("release:unlocked");
        if !self.pending.is_empty() {
            self.pending.clear();
            self.generation += 1;
            // Best effort: if it fails, the next start drops the (released) unsettled locks.
            let _ = self.save();
        }
        Ok(state)
    }

    /// The state string of everything `info` holds now.
    pub fn inquire(&mut self, info: &OwnerInfo) -> Result<String, Refusal> {
        self.check_identity(info, false)?;
        let held: Vec<_> = self
            .held
            .values()
            .filter(|h| h.holders.contains(&info.uuid))
            .map(|h| (h.mode, h.spec.fingerprint()))
            .collect();
        Ok(proto::encode_state(&held))
    }

    /// The owner's process exited: free everything it held, at once, then record it (a crash
    /// in between is harmless: a restart drops the locks of domains that are gone).
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
                self.unlock_one(held.target, held.spec, held.mode, held.handle);
                failpoint::hit("owner-death:unlocked-some");
            }
        }
        failpoint::hit("owner-death:unlocked");
        self.owners.remove(uuid);
        self.generation += 1;
        // Best effort: the server retries a failed save.
        let _ = self.save();
        freed
    }

    /// The cluster side failed: applies `<on_lockfailure>` to every domain holding a lock;
    /// returns each domain's name and what was done.
    pub fn apply_lock_failure(&self) -> Vec<(String, String)> {
        self.owners
            .iter()
            .filter(|(uuid, _)| self.held.values().any(|h| h.holders.contains(*uuid)))
            .map(|(_, owner)| {
                let outcome =
                    process::apply_failure_action(&owner.pidfd, &owner.info, owner.action);
                (owner.info.name.clone(), outcome)
            })
            .collect()
    }

    /// Whether any domain holds a lock.
    pub fn holds_locks(&self) -> bool {
        !self.held.is_empty()
    }

    /// The domains that hold a lock and whose process still runs: the writers a lost lock
    /// would leave behind (self-fencing waits for this list to empty).
    pub fn live_lock_holders(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .owners
            .iter()
            .filter(|(uuid, owner)| {
                process::is_alive(&owner.pidfd)
                    && self.held.values().any(|h| h.holders.contains(*uuid))
            })
            .map(|(_, owner)| format!("'{}' (pid {})", owner.info.name, owner.info.pid))
            .collect();
        names.sort();
        names
    }

    /// Starts the backend's health probe, if it has one.
    pub fn start_health_probe(&self) -> Option<std::sync::Arc<crate::health::Health>> {
        self.backend.start_health_probe()
    }

    /// The lock table, for `Status`.
    pub fn status(&self) -> (Vec<DomainStatus>, Vec<LockStatus>) {
        let mut owners: Vec<DomainStatus> = self
            .owners
            .values()
            .map(|o| DomainStatus {
                name: o.info.name.clone(),
                uuid: o.info.uuid.clone(),
                pid: o.info.pid,
            })
            .collect();
        owners.sort();
        let mut locks: Vec<LockStatus> = self
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
        locks.extend(self.stuck.iter().map(|s| LockStatus {
            resource: s.spec.describe(),
            target: s.target.id.clone(),
            mode: s.mode,
            owners: vec![format!("(no domain: its unlock failed: {})", s.error)],
        }));
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
            unsettled: self
                .pending
                .iter()
                .map(|(spec, mode)| (spec.clone(), *mode))
                .chain(self.stuck.iter().map(|s| (s.spec.clone(), s.mode)))
                .chain(self.backend.in_doubt())
                .map(|(spec, mode)| SnapshotUnsettled { spec, mode })
                .collect(),
        }
    }

    /// After a restart: re-register the domains of `snapshot` that still run (same pid and
    /// start time), drop the unsettled locks, and take the domains' locks again. A lock someone
    /// else took meanwhile is lost: its owners' `<on_lockfailure>` actions are applied and
    /// reported. The caller records the result.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Vec<LostLock> {
        let mut lost = Vec::new();
        for saved in &snapshot.owners {
            let alive = sys::pidfd_open(saved.info.pid).ok().filter(|pidfd| {
                process::is_alive(pidfd)
                    && process::start_time(saved.info.pid).ok() == Some(saved.start_time)
            });
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
        for unsettled in &snapshot.unsettled {
            self.discard(&unsettled.spec, unsettled.mode);
        }
        for saved in &snapshot.locks {
            let holders: Vec<&String> = saved
                .holders
                .iter()
                .filter(|u| self.owners.contains_key(*u))
                .collect();
            if holders.is_empty() {
                self.discard(&saved.spec, saved.mode);
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
                    failpoint::hit("restore:reclaimed-some");
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
        failpoint::hit("restore:reclaimed");
        self.generation += 1;
        lost
    }

    /// Drops what the previous daemon may have left of a lock no running domain holds.
    fn discard(&mut self, spec: &ResourceSpec, mode: Mode) {
        let discarded = self
            .backend
            .resolve(spec)
            .and_then(|t| self.backend.discard(&t, spec, mode));
        if let Err(err) = discarded {
            crate::log(&format!(
                "cannot drop the left-over lock on {}: {err}",
                spec.describe()
            ));
        }
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

/// A domain seen for the first time: its process must run, and be one that can exit.
fn new_owner(info: &OwnerInfo) -> Result<Owner, Refusal> {
    let invalid = |why: String| {
        Refusal::new(
            ErrorKind::Invalid,
            format!("domain '{}' ({}): {why}", info.name, info.uuid),
        )
    };
    if info.pid == 0 {
        return Err(invalid("no pid".into()));
    }
    if let Some(why) = process::never_an_owner(info.pid) {
        return Err(invalid(format!(
            "{why}, not a QEMU: its locks could never be freed"
        )));
    }
    let pidfd = sys::pidfd_open(info.pid).map_err(|e| {
        invalid(match e.raw_os_error() {
            Some(libc::ESRCH) => format!("process {} is not running", info.pid),
            _ => format!("cannot watch process {}: {e}", info.pid),
        })
    })?;
    if !process::is_alive(&pidfd) {
        return Err(invalid(format!("process {} has exited", info.pid)));
    }
    let start_time = process::start_time(info.pid)
        .map_err(|e| invalid(format!("cannot read /proc/{}/stat: {e}", info.pid)))?;
    Ok(Owner {
        info: info.clone(),
        start_time,
        pidfd,
        action: FailureAction::Default,
        acquired: false,
    })
}
