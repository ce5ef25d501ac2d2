//! The DLM backend: cluster-wide locks through the Linux DLM (corosync + dlm_controld + dlm.ko).
//!
//! Resource names are the 64-hex-digit SHA-256 of the disk path (exactly `DLM_RESNAME_MAXLEN`;
//! leases: of `lease:<lockspace>:<key>`); exclusive → EX, shared → PR. Requests never queue
//! (`LKF_NOQUEUE`): a conflict is an immediate refusal. Locks are `LKF_PERSISTENT`: when the
//! daemon stops or crashes they become orphans that keep protecting the disks until the
//! restarted daemon adopts them (`LKF_ORPHAN`, same name and mode).
//!
//! **Nothing the DLM does blocks the daemon.** Even a NOQUEUE request waits when its resource
//! is mastered on a node that has just failed: until that node is fenced and the lockspace
//! recovered, seconds. So every DLM call runs on a worker thread with a lockspace handle of its
//! own, and its answer comes back to the server's event loop ([`Backend::answers_fd`]): the
//! server serves every other domain meanwhile, and gives up on a request at its deadline (the
//! worker then drops whatever the DLM grants too late). A worker sends all the locks of its
//! batch at once and reads their completions from its lockspace fd as they come
//! ([`Lockspace::lock_all`]): they are in flight together, so locks mastered on other nodes cost
//! about one round trip for the batch, not one each. The locks of one Acquire go to one worker
//! (up to 64; a larger Acquire is split among as many), the Acquires of other domains to other
//! workers. Unlocks are done the same way by the worker that holds the lock. Until a worker is done with them, such locks are *in doubt* ([`Backend::in_doubt`]):
//! the table records them as unsettled, so a crash meanwhile leaks nothing.

use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind as IoErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockmgr_dlm::{Error as DlmError, LockFlags, LockId, Lockspace, Mode as DlmMode};
use lockmgr_proto::{Mode, OwnerInfo, ResourceSpec};

mod adoption;
mod holder;
mod worker;

use holder::HolderName;
use worker::{
    Doubts, Job, LockRequest, PublishRequest, Shared, UnlockRequest, Worker, WorkerAnswer,
};

use crate::backend::{
    ANSWER_WITHIN, Answer, Backend, BackendError, Outcome, Target, Ticket, UnlockFailed,
};

/// How often the health probe takes its lock.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// The most lockspace handles (worker threads): the batches in flight at once.
const MAX_WORKERS: usize = 64;
/// The most lock requests of one Acquire a worker takes (all in flight together).
const LOCKS_PER_WORKER: usize = 64;

/// A lock held through one of the workers' handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DlmLock {
    worker: usize,
    lkid: LockId,
    /// Where the kernel will list it among this node's orphans should the daemon end: by the
    /// fd of the handle it was requested (or adopted) through, then in request order (tickets
    /// grow in the order requests are handed to a worker).
    orphan_position: (RawFd, Ticket),
}

/// The DLM backend, over the lockspace handles of its workers.
#[derive(Debug)]
pub struct DlmBackend {
    name: String,
    cluster: String,
    /// This node's id, for the holder names it writes.
    node: u32,
    workers: Vec<Worker>,
    doubts: Arc<Doubts>,
    shared: Arc<Shared>,
    answers: Receiver<(Ticket, WorkerAnswer)>,
    /// Readable when a worker has answered.
    wake: UnixStream,
    /// Answers read while waiting for another one (restore).
    early: Vec<(Ticket, WorkerAnswer)>,
    /// What each lock ticket asked for.
    asked: HashMap<Ticket, (Target, ResourceSpec)>,
    /// Lock requests started and not yet handed to a worker ([`Backend::submit`]).
    unsent: Vec<LockRequest>,
    /// Unlocks started and not yet handed to the worker holding each lock.
    unsent_unlocks: BTreeMap<usize, Vec<UnlockRequest>>,
    /// Holder names to write, per worker holding the lock, not yet handed to it.
    unsent_publishes: BTreeMap<usize, Vec<PublishRequest>>,
    /// Lock requests no worker could take, answered with the next answers.
    unsendable: Vec<(Ticket, BackendError)>,
    next_ticket: Ticket,
}

fn dlm_mode(mode: Mode) -> DlmMode {
    match mode {
        Mode::Exclusive => DlmMode::Ex,
        Mode::Shared => DlmMode::Pr,
    }
}

fn io(err: DlmError) -> BackendError {
    BackendError::Io(err.to_string())
}

impl DlmBackend {
    /// Joins (or creates, mode 0600) lockspace `name` on this node. Fails clearly when this node
    /// has no running cluster.
    pub fn join(name: &str) -> Result<Self, BackendError> {
        let cluster = lockmgr_dlm::cluster_name().map_err(|e| {
            BackendError::Config(format!(
                "no DLM cluster on this node ({e}); start corosync and dlm_controld first"
            ))
        })?;
        let lockspace = Lockspace::create_or_open(name, 0o600).map_err(|e| {
            BackendError::Config(format!(
                "cannot join DLM lockspace '{name}' of cluster '{cluster}': {e}"
            ))
        })?;
        let thread_error = |e: std::io::Error| {
            BackendError::Io(format!("cannot start the DLM worker threads: {e}"))
        };
        let (wake, wake_writer) = UnixStream::pair().map_err(thread_error)?;
        wake.set_nonblocking(true).map_err(thread_error)?;
        wake_writer.set_nonblocking(true).map_err(thread_error)?;
        let (sender, answers) = mpsc::channel();
        let shared = Arc::new(Shared {
            lock_requests: Mutex::new(HashMap::new()),
            answers: sender,
            wake: wake_writer,
        });
        let doubts = Arc::new(Doubts::default());
        let first = Worker::spawn(0, lockspace, Arc::clone(&doubts), Arc::clone(&shared))
            .map_err(thread_error)?;
        Ok(DlmBackend {
            name: name.to_owned(),
            cluster,
            node: lockmgr_dlm::local_node_id().unwrap_or(0),
            workers: vec![first],
            doubts,
            shared,
            answers,
            wake,
            early: Vec::new(),
            asked: HashMap::new(),
            unsent: Vec::new(),
            unsent_unlocks: BTreeMap::new(),
            unsent_publishes: BTreeMap::new(),
            unsendable: Vec::new(),
            next_ticket: 1,
        })
    }

    /// The cluster's name (from configfs).
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    fn busy(
        &self,
        spec: &ResourceSpec,
        target: &Target,
        holder: Option<&HolderName>,
    ) -> BackendError {
        let by = holder.map_or_else(String::new, |holder| {
            let node = lockmgr_quorum::node_name(holder.node)
                .map_or_else(String::new, |name| format!("'{name}' "));
            format!(
                ", exclusively by domain '{}' (uuid {}) on node {node}(id {})",
                holder.name,
                holder.uuid(),
                holder.node
            )
        });
        BackendError::Busy(format!(
            "{} is locked on another node of cluster '{}'{by} (DLM resource {} in lockspace '{}')",
            spec.describe(),
            self.cluster,
            target.id,
            self.name
        ))
    }

    /// The worker for a new request: an idle one; else a new one, up to [`MAX_WORKERS`]; else
    /// the one with the fewest jobs (a request queued behind a hung one is given up at its
    /// deadline like the hung one).
    fn pick_worker(&mut self) -> usize {
        if let Some(index) = self.workers.iter().position(|w| w.queued() == 0) {
            return index;
        }
        if self.workers.len() < MAX_WORKERS {
            let index = self.workers.len();
            let spawned = Lockspace::open(&self.name)
                .map_err(io)
                .and_then(|lockspace| {
                    Worker::spawn(
                        index,
                        lockspace,
                        Arc::clone(&self.doubts),
                        Arc::clone(&self.shared),
                    )
                    .map_err(|e| BackendError::Io(format!("cannot start a DLM worker thread: {e}")))
                });
            match spawned {
                Ok(worker) => {
                    self.workers.push(worker);
                    return index;
                }
                Err(err) => crate::log(&format!("{err}; using the workers there are")),
            }
        }
        self.workers
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.queued())
            .map_or(0, |(index, _)| index)
    }

    fn send(&self, worker: usize, job: Job) -> Result<(), BackendError> {
        let worker_ref = &self.workers[worker];
        worker_ref.queued.fetch_add(1, Ordering::AcqRel);
        if worker_ref.jobs.send(job).is_err() {
            worker_ref.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(BackendError::Io(format!("DLM worker {worker} is gone")));
        }
        Ok(())
    }

    fn new_ticket(&mut self) -> Ticket {
        self.next_ticket += 1;
        self.next_ticket - 1
    }

    /// Waits for one ticket's answer (restore, before the daemon serves), at most `limit`;
    /// other answers are kept for [`Backend::take_answers`].
    fn wait_for(&mut self, ticket: Ticket, limit: Option<Duration>) -> Option<WorkerAnswer> {
        if let Some(at) = self.early.iter().position(|(t, _)| *t == ticket) {
            return Some(self.early.remove(at).1);
        }
        let deadline = limit.map(|limit| Instant::now() + limit);
        loop {
            let next = match deadline {
                Some(deadline) => {
                    match self
                        .answers
                        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    {
                        Ok(next) => next,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                            return None;
                        }
                    }
                }
                None => self.answers.recv().ok()?,
            };
            if next.0 == ticket {
                return Some(next.1);
            }
            self.early.push(next);
        }
    }

    fn outcome(&mut self, ticket: Ticket, answer: WorkerAnswer) -> Outcome<DlmLock> {
        let asked = self.asked.remove(&ticket);
        match answer {
            WorkerAnswer::Locked(Ok(lock), _) => Outcome::Locked(Ok(lock)),
            WorkerAnswer::Locked(Err(DlmError::Busy { .. }), holder) => {
                Outcome::Locked(Err(match asked {
                    Some((target, spec)) => self.busy(&spec, &target, holder.as_ref()),
                    None => BackendError::Busy("locked on another node".into()),
                }))
            }
            WorkerAnswer::Locked(Err(err), _) => Outcome::Locked(Err(io(err))),
            // Adoptions are waited for (`adopt_all`), never taken as answers.
            WorkerAnswer::Adopted(_) => Outcome::Locked(Err(BackendError::Io(
                "an adoption was answered as a lock request".into(),
            ))),
            WorkerAnswer::Unlocked => Outcome::Unlocked,
        }
    }
}

impl Backend for DlmBackend {
    type Handle = DlmLock;

    fn name(&self) -> &'static str {
        "dlm"
    }

    fn resolve(&self, spec: &ResourceSpec) -> Result<Target, BackendError> {
        Ok(Target {
            id: spec.hashed_name(),
        })
    }

    fn start_lock(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Answer<Result<DlmLock, BackendError>> {
        let ticket = self.new_ticket();
        self.shared.lock_requests().insert(ticket, None);
        self.asked.insert(ticket, (target.clone(), spec.clone()));
        self.unsent.push(LockRequest {
            ticket,
            resource: target.id.clone(),
            mode: dlm_mode(mode),
            spec: spec.clone(),
        });
        Answer::Later(ticket)
    }

    fn submit(&mut self) {
        // Holder names: one job per worker holding the locks (before their unlocks, if any).
        for (worker, publishes) in std::mem::take(&mut self.unsent_publishes) {
            let specs: Vec<String> = publishes.iter().map(|p| p.spec.describe()).collect();
            if let Err(err) = self.send(worker, Job::Publish(publishes)) {
                crate::log(&format!(
                    "cannot record the holder of {}: {err}",
                    specs.join(", ")
                ));
            }
        }
        // Unlocks: one job per worker holding some of them.
        for (worker, unlocks) in std::mem::take(&mut self.unsent_unlocks) {
            let specs: Vec<String> = unlocks.iter().map(|u| u.spec.describe()).collect();
            if let Err(err) = self.send(worker, Job::Unlocks(unlocks)) {
                // Left in doubt, recorded: the next start drops them.
                crate::log(&format!(
                    "cannot release {}: {err}; they stay recorded and are dropped at the next start",
                    specs.join(", ")
                ));
            }
        }
        // Batches of at most LOCKS_PER_WORKER on as many workers: a batch's requests are in
        // flight together, and every batch costs one hand-off to another thread.
        let unsent = std::mem::take(&mut self.unsent);
        let batches = unsent.len().div_ceil(LOCKS_PER_WORKER).max(1);
        let per_batch = unsent.len().div_ceil(batches).max(1);
        let mut unsent = unsent.into_iter().peekable();
        while unsent.peek().is_some() {
            let batch: Vec<LockRequest> = unsent.by_ref().take(per_batch).collect();
            let tickets: Vec<Ticket> = batch.iter().map(|r| r.ticket).collect();
            let worker = self.pick_worker();
            if let Err(err) = self.send(worker, Job::Locks(batch)) {
                for ticket in tickets {
                    self.shared.lock_requests().remove(&ticket);
                    self.unsendable.push((ticket, err.clone()));
                }
            }
        }
    }

    fn start_unlock(
        &mut self,
        _target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
        handle: DlmLock,
    ) -> Result<Answer<()>, UnlockFailed<DlmLock>> {
        if handle.worker >= self.workers.len() {
            return Err(UnlockFailed {
                error: BackendError::Io(format!("DLM worker {} is gone", handle.worker)),
                handle,
            });
        }
        // In doubt, recorded as unsettled, until its worker is done.
        let doubt = self.doubts.add(spec, mode);
        let ticket = self.new_ticket();
        self.unsent_unlocks
            .entry(handle.worker)
            .or_default()
            .push(UnlockRequest {
                ticket,
                lkid: handle.lkid,
                spec: spec.clone(),
                doubt,
            });
        Ok(Answer::Later(ticket))
    }

    fn name_holder(&mut self, handle: &DlmLock, spec: &ResourceSpec, holder: &OwnerInfo) {
        if spec.mode != Mode::Exclusive {
            return;
        }
        // Sent with the next submit, with the others of the same worker: all in flight together.
        self.unsent_publishes
            .entry(handle.worker)
            .or_default()
            .push(PublishRequest {
                lkid: handle.lkid,
                spec: spec.clone(),
                holder: HolderName::new(self.node, holder),
            });
    }

    fn abandon(&mut self, ticket: Ticket) -> bool {
        let mut requests = self.shared.lock_requests();
        let Some(state) = requests.get_mut(&ticket) else {
            return false;
        };
        let Some((_, spec)) = self.asked.remove(&ticket) else {
            return false;
        };
        // In doubt until its worker hears back: it may yet be granted.
        *state = Some(self.doubts.add(&spec, spec.mode));
        true
    }

    fn too_late(&self, target: &Target, spec: &ResourceSpec, waited: Duration) -> BackendError {
        BackendError::Io(format!(
            "the DLM did not answer within {} s for {} (DLM resource {}): a node of cluster '{}' \
             has probably failed and the lockspace is recovering; try again in a few seconds",
            waited.as_secs(),
            spec.describe(),
            target.id,
            self.cluster
        ))
    }

    fn answers_fd(&self) -> Option<RawFd> {
        Some(self.wake.as_raw_fd())
    }

    fn take_answers(&mut self) -> Vec<(Ticket, Outcome<DlmLock>)> {
        let mut drain = [0u8; 256];
        loop {
            match (&self.wake).read(&mut drain) {
                Ok(n) if n == drain.len() => {}
                Err(err) if err.kind() == IoErrorKind::Interrupted => {}
                _ => break,
            }
        }
        let mut answers: Vec<(Ticket, WorkerAnswer)> = std::mem::take(&mut self.early);
        answers.extend(self.answers.try_iter());
        let mut outcomes: Vec<(Ticket, Outcome<DlmLock>)> = answers
            .into_iter()
            .map(|(ticket, answer)| (ticket, self.outcome(ticket, answer)))
            .collect();
        for (ticket, err) in std::mem::take(&mut self.unsendable) {
            self.asked.remove(&ticket);
            outcomes.push((ticket, Outcome::Locked(Err(err))));
        }
        outcomes
    }

    fn lock(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Result<DlmLock, BackendError> {
        let ticket = match self.start_lock(target, spec, mode) {
            Answer::Now(result) => return result,
            Answer::Later(ticket) => ticket,
        };
        self.submit();
        if let Some(at) = self.unsendable.iter().position(|(t, _)| *t == ticket) {
            self.asked.remove(&ticket);
            return Err(self.unsendable.remove(at).1);
        }
        match self.wait_for(ticket, Some(ANSWER_WITHIN)) {
            Some(answer) => match self.outcome(ticket, answer) {
                Outcome::Locked(result) => result,
                Outcome::Unlocked => Err(BackendError::Io("internal: an unlock's answer".into())),
            },
            None => {
                if !self.abandon(ticket) {
                    // Answered just now.
                    if let Some(answer) = self.wait_for(ticket, None) {
                        if let Outcome::Locked(result) = self.outcome(ticket, answer) {
                            return result;
                        }
                    }
                }
                Err(self.too_late(target, spec, ANSWER_WITHIN))
            }
        }
    }

    fn unlock(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
        handle: DlmLock,
    ) -> Result<(), UnlockFailed<DlmLock>> {
        if let Answer::Later(ticket) = self.start_unlock(target, spec, mode, handle)? {
            self.submit();
            if self.wait_for(ticket, Some(ANSWER_WITHIN)).is_none() {
                crate::log(&format!(
                    "the DLM did not confirm the release of {} within {} s; it stays recorded until it does",
                    spec.describe(),
                    ANSWER_WITHIN.as_secs()
                ));
            }
        }
        Ok(())
    }

    fn reclaim(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Result<DlmLock, BackendError> {
        let adopted = self.adopt(target, mode, true)?;
        self.reclaimed(target, spec, mode, adopted)
    }

    fn reclaim_all(
        &mut self,
        locks: &[(&Target, &ResourceSpec, Mode)],
    ) -> Vec<Result<DlmLock, BackendError>> {
        let orphans: Vec<(&Target, Mode)> = locks.iter().map(|(t, _, mode)| (*t, *mode)).collect();
        match self.adopt_all(&orphans, true) {
            Ok(adopted) => locks
                .iter()
                .zip(adopted)
                .map(|((target, spec, mode), adopted)| self.reclaimed(target, spec, *mode, adopted))
                .collect(),
            Err(err) => locks.iter().map(|_| Err(err.clone())).collect(),
        }
    }

    fn discard(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Result<(), BackendError> {
        match self.adopt(target, mode, false)? {
            Ok(lock) => self
                .unlock(target, spec, mode, lock)
                .map_err(|failed| failed.error),
            Err(DlmError::NoOrphan { .. }) => Ok(()),
            Err(err) => Err(BackendError::Io(format!("{}: {err}", spec.describe()))),
        }
    }

    fn reclaim_order(&self, handle: &DlmLock) -> Option<(u32, u64)> {
        // A dying process's files are closed last-opened first (the kernel runs their final
        // release as task work, newest first): the handle with the highest fd has its locks
        // listed first. Measured on the test bed, 10,000 orphans: 4.6 s in this order, 26 s
        // with the handles the other way round.
        let (fd, ticket) = handle.orphan_position;
        Some((u32::MAX - u32::try_from(fd).unwrap_or(0), ticket))
    }

    fn durable_state(&self) -> bool {
        true
    }

    fn in_doubt(&self) -> Vec<(ResourceSpec, Mode)> {
        self.doubts.entries().values().cloned().collect()
    }

    fn in_doubt_generation(&self) -> u64 {
        self.doubts.generation.load(Ordering::Relaxed)
    }

    fn start_health_probe(&self) -> Option<std::sync::Arc<crate::health::Health>> {
        // Its own handle: a request blocked on a stopped lockspace must not block the server.
        let name = self.name.clone();
        let node = lockmgr_dlm::local_node_id().unwrap_or(0);
        let resource = format!("lockmgr-probe-node{node}");
        let mut handle: Option<Lockspace> = None;
        let probe = move || {
            let lockspace = match &handle {
                Some(ls) => ls,
                None => handle.insert(Lockspace::open(&name).map_err(|e| e.to_string())?),
            };
            let id = lockspace
                .lock(resource.as_bytes(), DlmMode::Ex, LockFlags::NOQUEUE)
                .map_err(|e| e.to_string())?;
            lockspace.unlock(id).map_err(|e| e.to_string())
        };
        match crate::health::spawn_probe("dlm-probe", PROBE_INTERVAL, probe) {
            Ok(health) => Some(health),
            Err(err) => {
                crate::log(&format!("cannot start the DLM health probe: {err}"));
                None
            }
        }
    }
}
