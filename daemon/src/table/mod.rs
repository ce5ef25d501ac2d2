//! The daemon's lock table: owners (domains), what each holds, all-or-none acquisition,
//! sharing between domains of this host, and the snapshot persisted across restarts.
//!
//! Every change is recorded before it is answered, and a refused request leaves no trace: an
//! Acquire records its intent (the locks it is about to take) before it asks the backend, then
//! the committed table before it answers; a Release records the table without the lock, with the
//! lock as *unsettled*, before it unlocks. A restart drops whatever unsettled lock the backend
//! still has. So at every instant each lock the backend holds for this daemon is in the table
//! on disk or will be dropped at the next start (crash points: [`crate::failpoint`]).
//!
//! A request the backend answers later is *in flight* ([`Progress::Waiting`]): the table keeps
//! it, with the resources it is taking reserved, and finishes it when the answers arrive
//! ([`LockTable::take_finished`]) or when the server gives up on it ([`LockTable::give_up`]).
//! Meanwhile other domains are served; a request that needs what one in flight holds (the same
//! domain, a resource being taken) is [`Progress::Blocked`] and tried again once it finishes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use lockmgr_proto::{
    self as proto, DomainStatus, ErrorKind, FailureAction, LockStatus, Mode, OwnerInfo,
    ResourceSpec,
};
use serde::{Deserialize, Serialize};

use crate::backend::{Answer, Backend, BackendError, Outcome, Target, Ticket, UnlockFailed};
use crate::failpoint;
use crate::persist::StateFile;
use crate::process;
use crate::sys;

mod in_flight;
mod locking;
mod owners;
mod snapshot;
mod tracked;

use in_flight::{AcquireOp, AcquirePlan, Op, OpKind};
pub use in_flight::{OpId, Progress};
use tracked::Tracked;

pub use snapshot::{
    JournalRecord, SNAPSHOT_FORMAT, Snapshot, SnapshotLock, SnapshotOwner, SnapshotUnsettled,
    SnapshotView,
};

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
    /// When this daemon took it (or took it back after a restart), ms since the epoch.
    since_ms: u64,
}

impl<H> Held<H> {
    /// A lock just granted to domain `uuid`, in the mode it asked for.
    fn granted(target: Target, spec: ResourceSpec, uuid: &str, handle: H) -> Self {
        Held {
            target,
            mode: spec.mode,
            spec,
            holders: BTreeSet::from([uuid.to_owned()]),
            handle,
            since_ms: now_ms(),
        }
    }
}

/// Now, in ms since the epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
    /// The unsettled locks last written in a journal record (`None`: not known).
    saved_unsettled: Option<Vec<SnapshotUnsettled>>,
    /// The last save error logged, so a failing disk is logged once, not every second.
    save_error: Option<String>,
    owners: Tracked<Owner>,
    held: Tracked<Held<B::Handle>>,
    /// Locks between the backend and the table, per request: an Acquire's intent while it asks
    /// the backend, a Release's locks between recording and unlocking (durable backends only).
    pending: BTreeMap<OpId, Vec<(ResourceSpec, Mode)>>,
    /// Locks whose unlock failed.
    stuck: Vec<Stuck<B::Handle>>,
    /// Requests waiting for the backend.
    ops: BTreeMap<OpId, Op<B::Handle>>,
    /// Which request each ticket answers.
    tickets: HashMap<Ticket, OpId>,
    /// Resources (target ids) an Acquire in flight is taking.
    reserved: HashMap<String, OpId>,
    next_op: OpId,
    /// Requests finished and not yet taken by [`LockTable::take_finished`].
    finished: Vec<(OpId, Result<Option<String>, Refusal>)>,
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
            saved_unsettled: None,
            save_error: None,
            owners: Tracked::default(),
            held: Tracked::default(),
            pending: BTreeMap::new(),
            stuck: Vec::new(),
            ops: BTreeMap::new(),
            tickets: HashMap::new(),
            reserved: HashMap::new(),
            next_op: 1,
            finished: Vec::new(),
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

    /// Whether the backend's locks outlive the daemon, so that intents are recorded first.
    pub fn durable(&self) -> bool {
        self.backend.durable_state()
    }

    /// The state file.
    pub fn store(&self) -> &StateFile {
        &self.store
    }

    /// Hands the backend the requests it gathered: the one place requests leave, once per turn
    /// of the server, after the records that announce them are written.
    pub fn submit(&mut self) {
        self.backend.submit();
    }

    /// What was written of the table since the daemon started.
    pub fn record_counts(&self) -> proto::Recorded {
        self.store.counts()
    }

    /// Polls readable when the backend has answers ([`LockTable::take_finished`]).
    pub fn answers_fd(&self) -> Option<RawFd> {
        self.backend.answers_fd()
    }

    /// Records the table: a journal record of what changed, or (at start, after a failed write,
    /// and when the journal has grown as large as the table) the whole table, which starts a
    /// new journal.
    pub fn save(&mut self) -> Result<(), Refusal> {
        // Read before the snapshot: a change in between is caught by the next save.
        let in_doubt = self.backend.in_doubt_generation();
        let written = if self.store.wants_whole_table() {
            let written = self
                .store
                .encode(self.snapshot())
                .and_then(|body| self.store.save(&body));
            if written.is_ok() {
                self.owners.take_changes();
                self.held.take_changes();
            }
            self.saved_unsettled = None;
            written
        } else {
            // A failed append makes the store write the whole table next time: nothing is lost
            // with the changes taken here.
            let record = self.journal_record();
            let written = self.store.append(&record);
            self.saved_unsettled = written.is_ok().then_some(record.unsettled);
            written
        };
        match written {
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
        if self.saved == Some(self.generation) {
            let in_doubt = self.backend.in_doubt_generation();
            if self.saved_in_doubt == Some(in_doubt) {
                return Ok(());
            }
            // An unlock that came and went (in doubt, then done) changes nothing on disk.
            if self.saved_unsettled.as_ref() == Some(&self.unsettled()) {
                self.saved_in_doubt = Some(in_doubt);
                return Ok(());
            }
        }
        self.save()
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
                since_ms: Some(h.since_ms),
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
            since_ms: None,
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
}
