//! The DLM backend: cluster-wide locks through the Linux DLM (corosync + dlm_controld + dlm.ko).
//!
//! Resource names are the 64-hex-digit SHA-256 of the disk path (exactly `DLM_RESNAME_MAXLEN`;
//! leases: of `lease:<lockspace>:<key>`); exclusive → EX, shared → PR. Requests never queue
//! (`LKF_NOQUEUE`): a conflict is an immediate refusal. Locks are `LKF_PERSISTENT`: when the
//! daemon stops or crashes they become orphans that keep protecting the disks until the
//! restarted daemon adopts them (`LKF_ORPHAN`, same name and mode).
//!
//! **Nothing the DLM does blocks the daemon for long.** Even a NOQUEUE request waits when its
//! resource is mastered on a node that has just failed: until that node is fenced and the
//! lockspace recovered, seconds. So every DLM call runs on a worker thread with a lockspace
//! handle of its own, and the server waits for a lock at most [`ANSWER_WITHIN`]: then it refuses
//! the request (the domain can be started again once the cluster has recovered) and the worker,
//! when the DLM finally answers, drops whatever it was granted. Unlocks are done by the worker
//! that holds the lock, waited for at most as long. Until a worker is done with them, such locks
//! are *in doubt* ([`Backend::in_doubt`]): the table records them as unsettled, so a crash
//! meanwhile leaks nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use lockmgr_dlm::{Error as DlmError, LockFlags, LockId, Lockspace, Mode as DlmMode};
use lockmgr_proto::{Mode, ResourceSpec};

use crate::backend::{Backend, BackendError, Target, UnlockFailed};

/// How often the health probe takes its lock.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long the server waits for the DLM to answer one lock request. A healthy cluster answers
/// in milliseconds; longer means the resource's master node has failed and recovery (fencing
/// included) is under way.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// The most lockspace handles (worker threads): each request the DLM leaves hanging holds one.
const MAX_WORKERS: usize = 16;

/// A lock held through one of the workers' handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DlmLock {
    worker: usize,
    lkid: LockId,
}

/// The DLM backend, over the lockspace handles of its workers.
#[derive(Debug)]
pub struct DlmBackend {
    name: String,
    cluster: String,
    workers: Vec<Worker>,
    doubts: Arc<Doubts>,
}

/// The locks in doubt, shared with the workers.
#[derive(Debug, Default)]
struct Doubts {
    entries: Mutex<BTreeMap<u64, (ResourceSpec, Mode)>>,
    next: AtomicU64,
    generation: AtomicU64,
}

impl Doubts {
    fn entries(&self) -> MutexGuard<'_, BTreeMap<u64, (ResourceSpec, Mode)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, spec: &ResourceSpec, mode: Mode) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.entries().insert(id, (spec.clone(), mode));
        self.generation.fetch_add(1, Ordering::Relaxed);
        id
    }

    fn settle(&self, id: u64) {
        self.entries().remove(&id);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }
}

/// A lock request's rendezvous between the server, which may give up waiting, and the worker.
#[derive(Debug, Default)]
struct Answer {
    state: Mutex<AnswerState>,
    done: Condvar,
}

impl Answer {
    /// Waits until the worker answers, at most `limit` (`None`: as long as it takes); returns
    /// the state still locked, so that the caller can give up on it (Abandoned) atomically.
    fn wait(&self, limit: Option<Duration>) -> MutexGuard<'_, AnswerState> {
        let waiting = |s: &mut AnswerState| matches!(s, AnswerState::Waiting);
        let state = lock_state(self);
        match limit {
            Some(limit) => self
                .done
                .wait_timeout_while(state, limit, waiting)
                .map_or_else(|poisoned| poisoned.into_inner().0, |(state, _)| state),
            None => self
                .done
                .wait_while(state, waiting)
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        }
    }

    /// The worker's answer, for whoever waits.
    fn give(&self, result: Result<LockId, DlmError>) {
        *lock_state(self) = AnswerState::Done(result);
        self.done.notify_all();
    }
}

#[derive(Debug, Default)]
enum AnswerState {
    #[default]
    Waiting,
    Done(Result<LockId, DlmError>),
    /// The server stopped waiting: the worker drops what it gets, then settles this doubt.
    Abandoned(u64),
}

#[derive(Debug)]
enum Job {
    Lock {
        resource: String,
        mode: DlmMode,
        answer: Arc<Answer>,
        spec: ResourceSpec,
    },
    Unlock {
        lkid: LockId,
        spec: ResourceSpec,
        doubt: u64,
        answer: Arc<Answer>,
    },
    Adopt {
        resource: String,
        mode: DlmMode,
        persistent: bool,
        answer: Arc<Answer>,
    },
}

/// A thread with its own lockspace handle, doing one DLM call at a time.
#[derive(Debug)]
struct Worker {
    jobs: Sender<Job>,
    /// Lock requests given and not answered yet.
    in_flight: Arc<AtomicU64>,
    /// Unlocks given and not done yet.
    unlocking: Arc<AtomicU64>,
}

impl Worker {
    fn spawn(index: usize, lockspace: Lockspace, doubts: Arc<Doubts>) -> std::io::Result<Worker> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let in_flight = Arc::new(AtomicU64::new(0));
        let unlocking = Arc::new(AtomicU64::new(0));
        let (locks, unlocks) = (Arc::clone(&in_flight), Arc::clone(&unlocking));
        std::thread::Builder::new()
            .name(format!("dlm-worker-{index}"))
            .spawn(move || {
                for job in queue {
                    run_job(&lockspace, job, &doubts, &locks, &unlocks);
                }
            })?;
        Ok(Worker {
            jobs,
            in_flight,
            unlocking,
        })
    }

    /// Whether a job given to it earlier may still be hanging in the DLM.
    fn backlogged(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0 || self.unlocking.load(Ordering::Acquire) > 0
    }
}

fn run_job(
    lockspace: &Lockspace,
    job: Job,
    doubts: &Doubts,
    in_flight: &AtomicU64,
    unlocking: &AtomicU64,
) {
    match job {
        Job::Lock {
            resource,
            mode,
            answer,
            spec,
        } => {
            let result = lockspace.lock(
                resource.as_bytes(),
                mode,
                LockFlags::NOQUEUE | LockFlags::PERSISTENT,
            );
            let mut state = lock_state(&answer);
            match &*state {
                AnswerState::Abandoned(doubt) => {
                    let doubt = *doubt;
                    drop(state);
                    if let Ok(lkid) = result {
                        crate::log(&format!(
                            "the DLM granted {} after its request was refused for taking too long: released",
                            spec.describe()
                        ));
                        unlock_until_done(lockspace, lkid, &spec);
                    }
                    doubts.settle(doubt);
                }
                _ => {
                    *state = AnswerState::Done(result);
                    answer.done.notify_all();
                }
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        Job::Unlock {
            lkid,
            spec,
            doubt,
            answer,
        } => {
            unlock_until_done(lockspace, lkid, &spec);
            doubts.settle(doubt);
            unlocking.fetch_sub(1, Ordering::AcqRel);
            answer.give(Ok(lkid));
        }
        Job::Adopt {
            resource,
            mode,
            persistent,
            answer,
        } => {
            let result = lockspace.adopt_orphan(resource.as_bytes(), mode, persistent);
            answer.give(result);
        }
    }
}

/// Unlocks, retrying every second while the DLM refuses (a stopped lockspace): the lock stays in
/// doubt, recorded, until then.
fn unlock_until_done(lockspace: &Lockspace, lkid: LockId, spec: &ResourceSpec) {
    let mut logged = false;
    while let Err(err) = lockspace.unlock(lkid) {
        if matches!(err, DlmError::UnknownLock { .. }) {
            return;
        }
        if !logged {
            crate::log(&format!(
                "cannot release {}: {err}; retrying every second",
                spec.describe()
            ));
            logged = true;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    if logged {
        crate::log(&format!("released {}", spec.describe()));
    }
}

fn lock_state(answer: &Answer) -> MutexGuard<'_, AnswerState> {
    answer
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let doubts = Arc::new(Doubts::default());
        let first = Worker::spawn(0, lockspace, Arc::clone(&doubts))
            .map_err(|e| BackendError::Io(format!("cannot start a DLM worker thread: {e}")))?;
        Ok(DlmBackend {
            name: name.to_owned(),
            cluster,
            workers: vec![first],
            doubts,
        })
    }

    /// The cluster's name (from configfs).
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    fn busy(&self, spec: &ResourceSpec, target: &Target) -> BackendError {
        BackendError::Busy(format!(
            "{} is locked on another node of cluster '{}' (DLM resource {} in lockspace '{}')",
            spec.describe(),
            self.cluster,
            target.id,
            self.name
        ))
    }

    /// A worker with nothing in flight, started when every one may be stuck.
    fn idle_worker(&mut self, spec: &ResourceSpec) -> Result<usize, BackendError> {
        if let Some(index) = self.workers.iter().position(|w| !w.backlogged()) {
            return Ok(index);
        }
        if self.workers.len() >= MAX_WORKERS {
            return Err(BackendError::Io(format!(
                "cannot lock {}: {MAX_WORKERS} DLM requests are waiting for the cluster to recover \
                 from a node failure; try again once it has",
                spec.describe()
            )));
        }
        let index = self.workers.len();
        let lockspace = Lockspace::open(&self.name).map_err(io)?;
        let worker = Worker::spawn(index, lockspace, Arc::clone(&self.doubts))
            .map_err(|e| BackendError::Io(format!("cannot start a DLM worker thread: {e}")))?;
        self.workers.push(worker);
        Ok(index)
    }

    fn send(&self, worker: usize, job: Job) -> Result<(), BackendError> {
        self.workers[worker]
            .jobs
            .send(job)
            .map_err(|_| BackendError::Io(format!("DLM worker {worker} is gone")))
    }

    /// Waits for an adoption done by worker 0 (restore, before the daemon serves: no deadline).
    fn adopt(
        &self,
        target: &Target,
        mode: Mode,
        persistent: bool,
    ) -> Result<Result<LockId, DlmError>, BackendError> {
        let answer = Arc::new(Answer::default());
        let job = Job::Adopt {
            resource: target.id.clone(),
            mode: dlm_mode(mode),
            persistent,
            answer: Arc::clone(&answer),
        };
        self.send(0, job)?;
        match std::mem::take(&mut *answer.wait(None)) {
            AnswerState::Done(result) => Ok(result),
            AnswerState::Waiting | AnswerState::Abandoned(_) => {
                unreachable!("only a lock request is abandoned")
            }
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

    fn lock(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Result<DlmLock, BackendError> {
        let worker = self.idle_worker(spec)?;
        let answer = Arc::new(Answer::default());
        self.workers[worker]
            .in_flight
            .fetch_add(1, Ordering::AcqRel);
        let sent = self.send(
            worker,
            Job::Lock {
                resource: target.id.clone(),
                mode: dlm_mode(mode),
                answer: Arc::clone(&answer),
                spec: spec.clone(),
            },
        );
        if let Err(err) = sent {
            self.workers[worker]
                .in_flight
                .fetch_sub(1, Ordering::AcqRel);
            return Err(err);
        }
        let mut state = answer.wait(Some(ANSWER_WITHIN));
        match std::mem::take(&mut *state) {
            AnswerState::Done(Ok(lkid)) => Ok(DlmLock { worker, lkid }),
            AnswerState::Done(Err(DlmError::Busy { .. })) => Err(self.busy(spec, target)),
            AnswerState::Done(Err(err)) => Err(io(err)),
            AnswerState::Waiting | AnswerState::Abandoned(_) => {
                // In doubt until the worker hears back: it may yet be granted.
                *state = AnswerState::Abandoned(self.doubts.add(spec, mode));
                Err(BackendError::Io(format!(
                    "the DLM did not answer within {} s for {} (DLM resource {}): a node of \
                     cluster '{}' has probably failed and the lockspace is recovering; try again \
                     in a few seconds",
                    ANSWER_WITHIN.as_secs(),
                    spec.describe(),
                    target.id,
                    self.cluster
                )))
            }
        }
    }

    fn unlock(
        &mut self,
        _target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
        handle: DlmLock,
    ) -> Result<(), UnlockFailed<DlmLock>> {
        // In doubt, recorded as unsettled, until its worker is done. Waited for like a lock, so
        // that a released disk is free when the Release returns (another host may take it at
        // once: a migration's destination), but at most ANSWER_WITHIN.
        let doubt = self.doubts.add(spec, mode);
        let answer = Arc::new(Answer::default());
        let job = Job::Unlock {
            lkid: handle.lkid,
            spec: spec.clone(),
            doubt,
            answer: Arc::clone(&answer),
        };
        let worker = &self.workers[handle.worker];
        // Behind a job that may hang, waiting would only add up: one wait per stuck worker.
        let wait = !worker.backlogged();
        worker.unlocking.fetch_add(1, Ordering::AcqRel);
        if let Err(error) = self.send(handle.worker, job) {
            self.workers[handle.worker]
                .unlocking
                .fetch_sub(1, Ordering::AcqRel);
            self.doubts.settle(doubt);
            return Err(UnlockFailed { error, handle });
        }
        if !wait {
            return Ok(());
        }
        let unanswered = matches!(*answer.wait(Some(ANSWER_WITHIN)), AnswerState::Waiting);
        if unanswered {
            crate::log(&format!(
                "the DLM did not confirm the release of {} within {} s; it stays recorded until it does",
                spec.describe(),
                ANSWER_WITHIN.as_secs()
            ));
        }
        Ok(())
    }

    fn reclaim(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Result<DlmLock, BackendError> {
        match self.adopt(target, mode, true)? {
            Ok(lkid) => Ok(DlmLock { worker: 0, lkid }),
            // No orphan (e.g. this node rebooted): take it afresh if still free.
            Err(DlmError::NoOrphan { .. }) => self.lock(target, spec, mode),
            Err(DlmError::OrphanModeMismatch { .. }) => Err(BackendError::Io(format!(
                "the orphan lock on {} has another mode than the lock table says",
                spec.describe()
            ))),
            Err(err) => Err(io(err)),
        }
    }

    fn discard(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Result<(), BackendError> {
        match self.adopt(target, mode, false)? {
            Ok(lkid) => self
                .unlock(target, spec, mode, DlmLock { worker: 0, lkid })
                .map_err(|failed| failed.error),
            Err(DlmError::NoOrphan { .. }) => Ok(()),
            Err(err) => Err(BackendError::Io(format!("{}: {err}", spec.describe()))),
        }
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
