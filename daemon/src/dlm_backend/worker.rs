//! The worker threads: each owns a lockspace handle and sends the requests of one job at once
//! (then reads their completions); answers go back to the server through a channel and a socket
//! it polls.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lockmgr_dlm::{
    Error as DlmError, LockFlags, LockId, LockRequest as DlmRequest, Lockspace, Mode as DlmMode,
    Unlock,
};
use lockmgr_proto::{Mode, ResourceSpec};

use super::DlmLock;
use super::holder::HolderName;
use crate::backend::Ticket;

/// The locks in doubt, shared with the workers.
#[derive(Debug, Default)]
pub(super) struct Doubts {
    pub(super) entries: Mutex<BTreeMap<u64, (ResourceSpec, Mode)>>,
    next: AtomicU64,
    pub(super) generation: AtomicU64,
}

impl Doubts {
    pub(super) fn entries(&self) -> MutexGuard<'_, BTreeMap<u64, (ResourceSpec, Mode)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn add(&self, spec: &ResourceSpec, mode: Mode) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.entries().insert(id, (spec.clone(), mode));
        self.generation.fetch_add(1, Ordering::Relaxed);
        id
    }

    pub(super) fn settle(&self, id: u64) {
        self.entries().remove(&id);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the server and the workers share about lock requests in flight.
#[derive(Debug)]
pub(super) struct Shared {
    /// Lock requests not answered yet: `Some(doubt)` once the server gave up on one.
    pub(super) lock_requests: Mutex<HashMap<Ticket, Option<u64>>>,
    pub(super) answers: Sender<(Ticket, WorkerAnswer)>,
    pub(super) wake: UnixStream,
}

impl Shared {
    pub(super) fn lock_requests(&self) -> MutexGuard<'_, HashMap<Ticket, Option<u64>>> {
        self.lock_requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn answer(&self, ticket: Ticket, answer: WorkerAnswer) {
        self.queue(ticket, answer);
        self.wake();
    }

    /// An answer for the server, which is told with [`Shared::wake`].
    fn queue(&self, ticket: Ticket, answer: WorkerAnswer) {
        // The server may be gone (shutdown): nobody to tell.
        let _ = self.answers.send((ticket, answer));
    }

    fn wake(&self) {
        // Full: the server has a wake-up to read already.
        let _ = (&self.wake).write(&[1]);
    }
}

/// A worker's answer.
#[derive(Debug)]
pub(super) enum WorkerAnswer {
    /// With a refusal, the holder named in the resource's value block, if any.
    Locked(Result<DlmLock, DlmError>, Option<HolderName>),
    Unlocked,
    /// One result per orphan of the job, in its order.
    Adopted(Vec<Result<DlmLock, DlmError>>),
}

#[derive(Debug)]
pub(super) enum Job {
    /// Lock requests, all in flight together (one hand-off to this thread for all of them).
    Locks(Vec<LockRequest>),
    /// Unlocks of locks this worker holds, all in flight together.
    Unlocks(Vec<UnlockRequest>),
    /// Writes who holds each exclusive lock into its resource's value block, all at once.
    Publish(Vec<PublishRequest>),
    /// Adoptions, one after the other in this order (the kernel's own order of orphans makes
    /// each one as cheap as the first), answered together.
    Adopt {
        ticket: Ticket,
        orphans: Vec<Orphan>,
    },
}

/// One orphan to adopt.
#[derive(Debug)]
pub(super) struct Orphan {
    /// Its place among this worker's locks (see [`DlmLock`]).
    pub(super) ticket: Ticket,
    pub(super) resource: String,
    pub(super) mode: DlmMode,
    /// Whether the adopted lock stays PERSISTENT (else it is only adopted to be released).
    pub(super) persistent: bool,
}

/// One lock request.
#[derive(Debug)]
pub(super) struct LockRequest {
    pub(super) ticket: Ticket,
    pub(super) resource: String,
    pub(super) mode: DlmMode,
    pub(super) spec: ResourceSpec,
}

/// One holder name to write.
#[derive(Debug)]
pub(super) struct PublishRequest {
    pub(super) lkid: LockId,
    pub(super) spec: ResourceSpec,
    pub(super) holder: HolderName,
}

/// One unlock, in doubt (recorded) until it is done.
#[derive(Debug)]
pub(super) struct UnlockRequest {
    pub(super) ticket: Ticket,
    pub(super) lkid: LockId,
    pub(super) spec: ResourceSpec,
    pub(super) doubt: u64,
}

/// A thread with its own lockspace handle, doing one job at a time.
#[derive(Debug)]
pub(super) struct Worker {
    pub(super) jobs: Sender<Job>,
    /// Jobs given and not done yet.
    pub(super) queued: Arc<AtomicU64>,
}

impl Worker {
    pub(super) fn spawn(
        index: usize,
        lockspace: Lockspace,
        doubts: Arc<Doubts>,
        shared: Arc<Shared>,
    ) -> std::io::Result<Worker> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queued = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&queued);
        std::thread::Builder::new()
            .name(format!("dlm-worker-{index}"))
            .spawn(move || {
                // The handle's fd never changes: read once, not per lock granted.
                let this = ThisWorker {
                    index,
                    fd: lockspace.fd(),
                };
                for job in queue {
                    run_job(this, &lockspace, job, &doubts, &shared);
                    count.fetch_sub(1, Ordering::AcqRel);
                }
            })?;
        Ok(Worker { jobs, queued })
    }

    pub(super) fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }
}

/// A worker, as the locks it holds name it.
#[derive(Debug, Clone, Copy)]
struct ThisWorker {
    index: usize,
    fd: RawFd,
}

impl ThisWorker {
    /// A lock taken through this worker's handle: `ticket` is its request's place among them.
    fn holds(self, lkid: LockId, ticket: Ticket) -> DlmLock {
        DlmLock {
            worker: self.index,
            lkid,
            orphan_position: (self.fd, ticket),
        }
    }
}

fn run_job(this: ThisWorker, lockspace: &Lockspace, job: Job, doubts: &Doubts, shared: &Shared) {
    match job {
        Job::Locks(requests) => {
            let asked: Vec<DlmRequest<'_>> = requests
                .iter()
                .map(|request| DlmRequest {
                    resource: request.resource.as_bytes(),
                    mode: request.mode,
                    flags: LockFlags::NOQUEUE | LockFlags::PERSISTENT,
                })
                .collect();
            let results = lockspace.lock_all(&asked);
            for (request, result) in requests.into_iter().zip(results) {
                answer_lock(this, lockspace, request, result, doubts, shared);
            }
            shared.wake();
        }
        Job::Unlocks(requests) => {
            let asked: Vec<Unlock> = requests
                .iter()
                .map(|request| Unlock {
                    lkid: request.lkid,
                    // An exclusive holder's release clears the holder it named (see
                    // [`HolderName`]).
                    invalidate_value: lockspace.mode_of(request.lkid) == Some(DlmMode::Ex),
                })
                .collect();
            let results = lockspace.unlock_all(&asked);
            for (request, result) in requests.into_iter().zip(results) {
                let UnlockRequest {
                    ticket,
                    lkid,
                    spec,
                    doubt,
                } = request;
                if let Err(err) = result {
                    retry_unlock(lockspace, lkid, &spec, &err);
                }
                doubts.settle(doubt);
                shared.queue(ticket, WorkerAnswer::Unlocked);
            }
            shared.wake();
        }
        Job::Publish(requests) => {
            let values: Vec<_> = requests
                .iter()
                .map(|request| (request.lkid, request.holder.encode()))
                .collect();
            for (request, result) in requests.iter().zip(lockspace.publish_all(&values)) {
                if let Err(err) = result {
                    crate::log(&format!(
                        "cannot record the holder of {} in its DLM value block: {err}",
                        request.spec.describe()
                    ));
                }
            }
        }
        Job::Adopt { ticket, orphans } => {
            let results = orphans
                .into_iter()
                .map(|orphan| {
                    lockspace
                        .adopt_orphan(orphan.resource.as_bytes(), orphan.mode, orphan.persistent)
                        .map(|lkid| this.holds(lkid, orphan.ticket))
                })
                .collect();
            shared.answer(ticket, WorkerAnswer::Adopted(results));
        }
    }
}

/// The DLM's answer to one lock request of a batch: queued for the server (the batch wakes it
/// once).
fn answer_lock(
    this: ThisWorker,
    lockspace: &Lockspace,
    request: LockRequest,
    result: Result<LockId, DlmError>,
    doubts: &Doubts,
    shared: &Shared,
) {
    let LockRequest {
        ticket,
        resource,
        spec,
        ..
    } = request;
    // Who holds it, for the refusal: information only, so any failure just leaves it out.
    let holder = match &result {
        Err(DlmError::Busy { .. }) => lockspace
            .read_value(resource.as_bytes())
            .ok()
            .flatten()
            .and_then(|value| HolderName::decode(&value)),
        _ => None,
    };
    // Under the map's lock: the server either gave up before (we drop the lock) or sees the
    // answer, never neither.
    let mut requests = shared.lock_requests();
    match requests.remove(&ticket) {
        Some(Some(doubt)) => {
            drop(requests);
            if let Ok(lkid) = result {
                crate::log(&format!(
                    "the DLM granted {} after its request was refused for taking too long: released",
                    spec.describe()
                ));
                unlock_until_done(lockspace, lkid, &spec);
            }
            doubts.settle(doubt);
        }
        _ => shared.queue(
            ticket,
            WorkerAnswer::Locked(result.map(|lkid| this.holds(lkid, ticket)), holder),
        ),
    }
}

/// Unlocks, retrying every second while the DLM refuses (a stopped lockspace): the lock stays in
/// doubt, recorded, until then.
fn unlock_until_done(lockspace: &Lockspace, lkid: LockId, spec: &ResourceSpec) {
    if let Err(err) = unlock(lockspace, lkid) {
        retry_unlock(lockspace, lkid, spec, &err);
    }
}

/// An exclusive holder's release clears the holder it named (see [`HolderName`]).
fn unlock(lockspace: &Lockspace, lkid: LockId) -> Result<(), DlmError> {
    match lockspace.mode_of(lkid) {
        Some(DlmMode::Ex) => lockspace.unlock_invalidating_value(lkid),
        _ => lockspace.unlock(lkid),
    }
}

/// After a failed unlock (`first`): tries again every second until the DLM releases the lock.
fn retry_unlock(lockspace: &Lockspace, lkid: LockId, spec: &ResourceSpec, first: &DlmError) {
    if matches!(first, DlmError::UnknownLock { .. }) {
        return;
    }
    crate::log(&format!(
        "cannot release {}: {first}; retrying every second",
        spec.describe()
    ));
    loop {
        std::thread::sleep(Duration::from_secs(1));
        match unlock(lockspace, lkid) {
            Ok(()) => break,
            Err(DlmError::UnknownLock { .. }) => return,
            Err(_) => {}
        }
    }
    crate::log(&format!("released {}", spec.describe()));
}
