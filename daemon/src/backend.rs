//! What a lock backend does for the daemon: name a resource, take and drop one lock on it.
//!
//! The daemon owns the bookkeeping (owners, sharing between domains of this host, all-or-none);
//! a backend only knows how to lock one target without waiting.
//!
//! A backend whose requests can hang (the DLM, while a failed node's locks are recovered)
//! answers later: [`Backend::start_lock`] and [`Backend::start_unlock`] give a [`Ticket`], the
//! answer comes through [`Backend::take_answers`] once [`Backend::answers_fd`] polls readable,
//! and the server serves everyone else meanwhile. The defaults answer at once, through the
//! blocking [`Backend::lock`] and [`Backend::unlock`].

use lockmgr_proto::{Mode, OwnerInfo, ResourceSpec};

/// The backend's object for a resource: a lock file, a DLM resource name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Unique within the backend; the daemon's table key.
    pub id: String,
}

/// Why a backend could not lock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// Held by a process or host outside this daemon.
    #[error("{0}")]
    Busy(String),
    /// The resource cannot be locked as configured (bad lease offset, missing lease file…).
    #[error("{0}")]
    Config(String),
    /// An OS error.
    #[error("{0}")]
    Io(String),
}

/// An unlock that failed: why, and the lock, still held, to try again later.
#[derive(Debug)]
pub struct UnlockFailed<H> {
    /// Why.
    pub error: BackendError,
    /// The lock, still held.
    pub handle: H,
}

/// How long a request may wait for the backend before it is refused. A healthy cluster answers
/// in milliseconds; longer means a resource's master node has failed and recovery (fencing
/// included) is under way.
pub const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Names one request a backend answers later.
pub type Ticket = u64;

/// A request's answer: given now, or later under a ticket.
#[derive(Debug)]
pub enum Answer<T> {
    /// Answered.
    Now(T),
    /// Answered later through [`Backend::take_answers`].
    Later(Ticket),
}

/// What a ticket's answer says.
#[derive(Debug)]
pub enum Outcome<H> {
    /// A lock request's result.
    Locked(Result<H, BackendError>),
    /// An unlock is done.
    Unlocked,
}

/// A lock backend.
pub trait Backend {
    /// What the backend keeps for one held lock.
    type Handle: std::fmt::Debug;

    /// `file` or `dlm`.
    fn name(&self) -> &'static str;

    /// Maps a resource to its target (no lock taken).
    fn resolve(&self, spec: &ResourceSpec) -> Result<Target, BackendError>;

    /// Takes the lock without waiting.
    fn lock(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Result<Self::Handle, BackendError>;

    /// Drops it (`spec` and `mode` as it was taken); on failure the lock is still held and
    /// comes back to be retried.
    fn unlock(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
        handle: Self::Handle,
    ) -> Result<(), UnlockFailed<Self::Handle>>;

    /// Tells the other hosts which domain holds a lock just taken, for their refusals: never a
    /// condition of any grant, and best effort. The default says nothing.
    fn name_holder(&mut self, handle: &Self::Handle, spec: &ResourceSpec, holder: &OwnerInfo) {
        let _ = (handle, spec, holder);
    }

    /// Starts a lock request; the default answers at once through [`Backend::lock`].
    fn start_lock(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Answer<Result<Self::Handle, BackendError>> {
        Answer::Now(self.lock(target, spec, mode))
    }

    /// Hands the lock requests started since the last call to the lock manager (a backend may
    /// gather them, to send the locks of one Acquire together). The default has none waiting.
    fn submit(&mut self) {}

    /// Starts an unlock; the default unlocks at once through [`Backend::unlock`]. An unlock
    /// answered later is in doubt ([`Backend::in_doubt`]) until it is done.
    fn start_unlock(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
        handle: Self::Handle,
    ) -> Result<Answer<()>, UnlockFailed<Self::Handle>> {
        self.unlock(target, spec, mode, handle).map(Answer::Now)
    }

    /// Gives up waiting for a lock request: true if the backend will drop the lock should it
    /// be granted (in doubt until then); false if the answer is already on its way, to be
    /// taken with [`Backend::take_answers`] like any other.
    fn abandon(&mut self, ticket: Ticket) -> bool {
        let _ = ticket;
        false
    }

    /// Why a lock request was given up after waiting `waited` for its answer.
    fn too_late(
        &self,
        target: &Target,
        spec: &ResourceSpec,
        waited: std::time::Duration,
    ) -> BackendError {
        BackendError::Io(format!(
            "the {} lock manager did not answer within {} s for {} ({}); try again in a few seconds",
            self.name(),
            waited.as_secs(),
            spec.describe(),
            target.id
        ))
    }

    /// Polls readable when answers are waiting (backends that answer later).
    fn answers_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// The answers that arrived since the last call.
    fn take_answers(&mut self) -> Vec<(Ticket, Outcome<Self::Handle>)> {
        Vec::new()
    }

    /// Where [`Backend::reclaim`] should take this lock back among the others after a restart
    /// (ascending), when the order matters: the DLM finds an orphan by scanning the node's
    /// list of orphans, so adopting 10,000 of them in another order than the kernel listed
    /// them costs a scan of thousands each. Persisted with the lock. The default: any order.
    fn reclaim_order(&self, handle: &Self::Handle) -> Option<(u32, u64)> {
        let _ = handle;
        None
    }

    /// After a restart: takes back a lock the previous daemon held for a domain that still
    /// runs. File locks died with the old daemon and are simply taken again; DLM persistent
    /// locks survived as orphans and are adopted.
    fn reclaim(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Result<Self::Handle, BackendError> {
        self.lock(target, spec, mode)
    }

    /// [`Backend::reclaim`] of many locks, in this order, with one result each; the default
    /// takes them one by one.
    fn reclaim_all(
        &mut self,
        locks: &[(&Target, &ResourceSpec, Mode)],
    ) -> Vec<Result<Self::Handle, BackendError>> {
        locks
            .iter()
            .map(|(target, spec, mode)| self.reclaim(target, spec, *mode))
            .collect()
    }

    /// After a restart: drops whatever the previous daemon left of a lock whose domain stopped
    /// meanwhile (a DLM orphan would otherwise protect a disk nobody uses, forever).
    fn discard(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Result<(), BackendError> {
        let _ = (target, spec, mode);
        Ok(())
    }

    /// Locks the backend may still hold for no domain: a request abandoned at its deadline that
    /// the lock manager may yet grant, an unlock still on its way. The table records them as
    /// unsettled, so that a restart drops them.
    fn in_doubt(&self) -> Vec<(ResourceSpec, Mode)> {
        Vec::new()
    }

    /// Changes whenever [`Backend::in_doubt`] does.
    fn in_doubt_generation(&self) -> u64 {
        0
    }

    /// Starts watching the cluster side, for backends whose locks can be lost while held.
    fn start_health_probe(&self) -> Option<std::sync::Arc<crate::health::Health>> {
        None
    }

    /// Whether the backend's locks outlive the daemon (DLM persistent locks do, as orphans), so
    /// that the table records an Acquire's intent before asking; file locks die with the daemon.
    fn durable_state(&self) -> bool;
}
