//! Requests the backend answers later: their answers, their deadlines, and waiting for one
//! (tests and tools; the server never waits).

use super::*;

/// Names a request in flight.
pub type OpId = u64;

/// How far a request got.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress<T> {
    /// Answered.
    Done(T),
    /// Waiting for the backend: its answer comes from [`LockTable::take_finished`].
    Waiting(OpId),
    /// It needs what a request in flight holds (why): ask again once one finishes.
    Blocked(String),
}

impl<T> Progress<T> {
    /// The answer, changed by `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Progress<U> {
        match self {
            Progress::Done(answer) => Progress::Done(f(answer)),
            Progress::Waiting(op) => Progress::Waiting(op),
            Progress::Blocked(why) => Progress::Blocked(why),
        }
    }
}

/// What an Acquire must do: the targets to lock and the shared locks of this host to join.
#[derive(Debug)]
pub(super) struct AcquirePlan<'r> {
    pub(super) to_lock: Vec<(Target, &'r ResourceSpec)>,
    pub(super) to_join: Vec<String>,
}

/// A request waiting for the backend.
#[derive(Debug)]
pub(super) struct Op<H> {
    pub(super) uuid: String,
    /// Tickets not answered yet.
    pub(super) waiting: BTreeSet<Ticket>,
    pub(super) kind: OpKind<H>,
}

#[derive(Debug)]
pub(super) enum OpKind<H> {
    Acquire(Box<AcquireOp<H>>),
    /// A Release: the state string to answer.
    Release(String),
}

/// An Acquire in flight: what it takes, what it got so far.
#[derive(Debug)]
pub(super) struct AcquireOp<H> {
    pub(super) info: OwnerInfo,
    pub(super) before: OwnerBefore,
    /// Shared locks of this host the domain joins once everything is taken.
    pub(super) to_join: Vec<String>,
    /// The resources it reserved (target ids).
    pub(super) reserved: Vec<String>,
    /// What each ticket asks for.
    pub(super) asked: HashMap<Ticket, (Target, ResourceSpec)>,
    pub(super) taken: Vec<Held<H>>,
    /// The first refusal: the locks taken are given back once every answer is in.
    pub(super) refused: Option<BackendError>,
}

impl<B: Backend> LockTable<B> {
    /// Takes every resource for `info`, all or none, recorded before it is answered; waits for
    /// a backend that answers later (tests, tools: the server uses [`LockTable::start_acquire`]).
    pub fn acquire(
        &mut self,
        info: &OwnerInfo,
        resources: &[ResourceSpec],
        action: FailureAction,
        state: Option<&str>,
    ) -> Result<(), Refusal> {
        let progress = self.start_acquire(info, resources, action, state)?;
        self.wait(progress).map(|_| ())
    }

    /// Drops `resources` held by `info`; see [`LockTable::start_release`]. Waits for a backend
    /// that answers later.
    pub fn release(
        &mut self,
        info: &OwnerInfo,
        resources: &[ResourceSpec],
    ) -> Result<String, Refusal> {
        let progress = self.start_release(info, resources)?.map(Some);
        Ok(self.wait(progress)?.unwrap_or_default())
    }

    /// Waits for a request in flight to finish (no deadline).
    fn wait(&mut self, progress: Progress<Option<String>>) -> Result<Option<String>, Refusal> {
        let op = match progress {
            Progress::Done(answer) => return Ok(answer),
            Progress::Blocked(why) => return Err(Refusal::new(ErrorKind::Busy, why)),
            Progress::Waiting(op) => op,
        };
        let mut others = Vec::new();
        loop {
            if let Some(fd) = self.backend.answers_fd() {
                let _ = sys::poll_readable(&[fd], 100);
            }
            let mut answer = None;
            for (id, result) in self.take_finished() {
                if id == op {
                    answer = Some(result);
                } else {
                    others.push((id, result));
                }
            }
            if let Some(result) = answer {
                self.finished.extend(others);
                return result;
            }
        }
    }

    /// The answers the backend gave since the last call, and the requests they finished.
    pub fn take_finished(&mut self) -> Vec<(OpId, Result<Option<String>, Refusal>)> {
        for (ticket, outcome) in self.backend.take_answers() {
            let Some(op_id) = self.tickets.remove(&ticket) else {
                // An unlock nobody waits for (owner death, a rollback), or of a request given up.
                if let Outcome::Locked(Ok(handle)) = outcome {
                    crate::log(&format!(
                        "internal error: a lock was granted for no request ({handle:?}); it stays until the next restart"
                    ));
                }
                continue;
            };
            let Some(op) = self.ops.get_mut(&op_id) else {
                continue;
            };
            op.waiting.remove(&ticket);
            if let OpKind::Acquire(acquire) = &mut op.kind {
                let asked = acquire.asked.remove(&ticket);
                match (outcome, asked) {
                    (Outcome::Locked(Ok(handle)), Some((target, spec))) => {
                        acquire
                            .taken
                            .push(Held::granted(target, spec, &op.uuid, handle));
                        failpoint::hit("acquire:locked-some");
                    }
                    (Outcome::Locked(Err(err)), _) => {
                        acquire.refused.get_or_insert(err);
                    }
                    _ => {}
                }
            }
            if op.waiting.is_empty() {
                self.finish(op_id);
            }
        }
        std::mem::take(&mut self.finished)
    }

    /// The server stops waiting for request `op` (its deadline passed, `waited`): the lock
    /// requests not answered yet are given up (the backend drops whatever it grants later), and
    /// the request finishes as soon as the answers already on their way are in. A Release is
    /// answered at once: its unlocks go on, recorded as unsettled until done.
    pub fn give_up(&mut self, op_id: OpId, waited: std::time::Duration) {
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        match &mut op.kind {
            OpKind::Release(_) => {
                crate::log(&format!(
                    "the lock manager did not confirm a release of domain {} within {} s; it stays recorded until it does",
                    op.uuid,
                    waited.as_secs()
                ));
                op.waiting.clear();
            }
            OpKind::Acquire(acquire) => {
                for ticket in std::mem::take(&mut op.waiting) {
                    if !self.backend.abandon(ticket) {
                        // Already answered: taken with the next answers.
                        op.waiting.insert(ticket);
                        continue;
                    }
                    self.tickets.remove(&ticket);
                    if let Some((target, spec)) = acquire.asked.remove(&ticket) {
                        acquire
                            .refused
                            .get_or_insert_with(|| self.backend.too_late(&target, &spec, waited));
                    }
                }
            }
        }
        if op.waiting.is_empty() {
            self.finish(op_id);
        }
    }

    fn finish(&mut self, op_id: OpId) {
        let Some(op) = self.ops.remove(&op_id) else {
            return;
        };
        let result = match op.kind {
            OpKind::Acquire(acquire) => self.finish_acquire(op_id, *acquire).map(|()| None),
            OpKind::Release(state) => {
                self.finish_release(op_id);
                Ok(Some(state))
            }
        };
        self.finished.push((op_id, result));
    }
}
