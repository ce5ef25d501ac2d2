//! What survives a daemon restart (`<state_dir>/locks.json`): the persisted snapshot, its
//! consistency check, and taking the table back from it.

use super::*;

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
    /// The journal that continues this snapshot (`locks.journal` with this number in its first
    /// line; another number is an older journal, already in here). Absent before format 3.
    #[serde(default)]
    pub journal: u64,
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
    /// The backend's name for it (the key of journal records). Absent before format 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The resource as requested.
    pub spec: ResourceSpec,
    /// How it is held.
    pub mode: Mode,
    /// UUIDs of the holding domains.
    pub holders: Vec<String>,
    /// Where a restart takes it back among the others ([`Backend::reclaim_order`]). Absent
    /// when any order will do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaim_order: Option<(u32, u64)>,
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
    /// Set by the store: the journal that will continue it.
    pub journal: u64,
}

/// What changed since the last record: one line of the journal (`locks.journal`), replayed in
/// order onto the snapshot at the next start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalRecord {
    /// Domains added or changed (`Some`) or gone (`None`), by uuid.
    pub owners: Vec<(String, Option<SnapshotOwner>)>,
    /// Locks taken or changed (`Some`) or dropped (`None`), by target.
    pub locks: Vec<(String, Option<SnapshotLock>)>,
    /// Every unsettled lock now (few: whatever requests are under way).
    pub unsettled: Vec<SnapshotUnsettled>,
}

#[derive(Debug, Serialize)]
struct SnapshotOwnerView<'a> {
    info: &'a OwnerInfo,
    start_time: u64,
    action: FailureAction,
}

#[derive(Debug, Serialize)]
struct SnapshotLockView<'a> {
    target: &'a str,
    spec: &'a ResourceSpec,
    mode: Mode,
    holders: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reclaim_order: Option<(u32, u64)>,
}

/// The current snapshot format (format 1, without `unsettled`, and 2, without a journal, are
/// still read).
pub const SNAPSHOT_FORMAT: u32 = 3;

impl<B: Backend> LockTable<B> {
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
                    target: &h.target.id,
                    spec: &h.spec,
                    mode: h.mode,
                    holders: h.holders.iter().map(String::as_str).collect(),
                    reclaim_order: self.backend.reclaim_order(&h.handle),
                })
                .collect(),
            unsettled: self.unsettled(),
            journal: 0,
        }
    }

    /// Every lock the backend may hold for no domain: intents, failed unlocks, the backend's
    /// requests in doubt.
    pub(super) fn unsettled(&self) -> Vec<SnapshotUnsettled> {
        self.pending
            .values()
            .flatten()
            .map(|(spec, mode)| (spec.clone(), *mode))
            .chain(self.stuck.iter().map(|s| (s.spec.clone(), s.mode)))
            .chain(self.backend.in_doubt())
            .map(|(spec, mode)| SnapshotUnsettled { spec, mode })
            .collect()
    }

    /// The journal record of what changed since the last one (and forgets those changes).
    pub(super) fn journal_record(&mut self) -> JournalRecord {
        let owners = self
            .owners
            .take_changes()
            .into_iter()
            .map(|uuid| {
                let owner = self.owners.get(&uuid).map(|o| SnapshotOwner {
                    info: o.info.clone(),
                    start_time: o.start_time,
                    action: o.action,
                });
                (uuid, owner)
            })
            .collect();
        let locks = self
            .held
            .take_changes()
            .into_iter()
            .map(|id| {
                let lock = self.held.get(&id).map(|h| SnapshotLock {
                    target: Some(id.clone()),
                    spec: h.spec.clone(),
                    mode: h.mode,
                    holders: h.holders.iter().cloned().collect(),
                    reclaim_order: self.backend.reclaim_order(&h.handle),
                });
                (id, lock)
            })
            .collect();
        JournalRecord {
            owners,
            locks,
            unsettled: self.unsettled(),
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
        // In the backend's order (the DLM's list of orphans), those without one last; the
        // locks of running domains all at once, then what is left of the others.
        let mut in_order: Vec<&SnapshotLock> = snapshot.locks.iter().collect();
        in_order.sort_by_key(|saved| (saved.reclaim_order.is_none(), saved.reclaim_order));
        let mut wanted = Vec::new();
        let mut dropped = Vec::new();
        for saved in in_order {
            let holders: BTreeSet<String> = saved
                .holders
                .iter()
                .filter(|u| self.owners.contains_key(*u))
                .cloned()
                .collect();
            if holders.is_empty() {
                dropped.push(saved);
                continue;
            }
            match self.backend.resolve(&saved.spec) {
                Ok(target) => wanted.push((saved, target, holders)),
                Err(err) => lost.extend(self.lose(saved, &err)),
            }
        }
        let asked: Vec<(&Target, &ResourceSpec, Mode)> = wanted
            .iter()
            .map(|(saved, target, _)| (target, &saved.spec, saved.mode))
            .collect();
        let reclaimed = self.backend.reclaim_all(&asked);
        for ((saved, target, holders), result) in wanted.into_iter().zip(reclaimed) {
            match result {
                Ok(handle) => {
                    self.held.insert(
                        target.id.clone(),
                        Held {
                            target,
                            spec: saved.spec.clone(),
                            mode: saved.mode,
                            holders,
                            handle,
                            since_ms: now_ms(),
                        },
                    );
                    failpoint::hit("restore:reclaimed-some");
                }
                Err(err) => lost.extend(self.lose(saved, &err)),
            }
        }
        for saved in dropped {
            self.discard(&saved.spec, saved.mode);
        }
        failpoint::hit("restore:reclaimed");
        self.generation += 1;
        lost
    }

    /// A lock of running domains that could not be taken back: its owners'
    /// `<on_lockfailure>` actions applied, for the caller to report.
    fn lose(&self, saved: &SnapshotLock, err: &BackendError) -> Vec<LostLock> {
        saved
            .holders
            .iter()
            .filter_map(|uuid| self.owners.get(uuid))
            .map(|owner| {
                let outcome =
                    process::apply_failure_action(&owner.pidfd, &owner.info, owner.action);
                LostLock {
                    owner: owner.info.name.clone(),
                    resource: saved.spec.describe(),
                    outcome: format!("{err}; {outcome}"),
                }
            })
            .collect()
    }

    /// Drops what the previous daemon may have left of a lock no running domain holds.
    pub(super) fn discard(&mut self, spec: &ResourceSpec, mode: Mode) {
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
}
