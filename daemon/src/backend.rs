//! What a lock backend does for the daemon: name a resource, take and drop one lock on it.
//!
//! The daemon owns the bookkeeping (owners, sharing between domains of this host, all-or-none);
//! a backend only knows how to lock one target without waiting.

use lockmgr_proto::{Mode, ResourceSpec};

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

    /// Whether the lock table must be on stable storage before a reply (locks that outlive
    /// the daemon, as DLM persistent locks do); file locks die with the daemon.
    fn durable_state(&self) -> bool;
}
