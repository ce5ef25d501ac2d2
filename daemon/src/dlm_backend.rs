//! The DLM backend: cluster-wide locks through the Linux DLM (corosync + dlm_controld + dlm.ko).
//!
//! Resource names are the 64-hex-digit SHA-256 of the disk path (exactly `DLM_RESNAME_MAXLEN`;
//! leases: of `lease:<lockspace>:<key>`); exclusive → EX, shared → PR. Requests never queue
//! (`LKF_NOQUEUE`): a conflict is an immediate refusal. Locks are `LKF_PERSISTENT`: when the
//! daemon stops or crashes they become orphans that keep protecting the disks until the
//! restarted daemon adopts them (`LKF_ORPHAN`, same name and mode).

use lockmgr_dlm::{Error as DlmError, LockFlags, LockId, Lockspace, Mode as DlmMode};
use lockmgr_proto::{Mode, ResourceSpec};

use crate::backend::{Backend, BackendError, Target, UnlockFailed};

/// How often the health probe takes its lock.
const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The DLM backend, over one open lockspace of this node.
#[derive(Debug)]
pub struct DlmBackend {
    lockspace: Lockspace,
    cluster: String,
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
        Ok(DlmBackend { lockspace, cluster })
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
            self.lockspace.name()
        ))
    }
}

impl Backend for DlmBackend {
    type Handle = LockId;

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
    ) -> Result<LockId, BackendError> {
        match self.lockspace.lock(
            target.id.as_bytes(),
            dlm_mode(mode),
            LockFlags::NOQUEUE | LockFlags::PERSISTENT,
        ) {
            Ok(id) => Ok(id),
            Err(DlmError::Busy { .. }) => Err(self.busy(spec, target)),
            Err(err) => Err(io(err)),
        }
    }

    fn unlock(&mut self, _target: &Target, handle: LockId) -> Result<(), UnlockFailed<LockId>> {
        self.lockspace.unlock(handle).map_err(|err| UnlockFailed {
            error: io(err),
            handle,
        })
    }

    fn reclaim(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Result<LockId, BackendError> {
        match self
            .lockspace
            .adopt_orphan(target.id.as_bytes(), dlm_mode(mode), true)
        {
            Ok(id) => Ok(id),
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
        match self
            .lockspace
            .adopt_orphan(target.id.as_bytes(), dlm_mode(mode), false)
        {
            Ok(id) => self.unlock(target, id).map_err(|failed| failed.error),
            Err(DlmError::NoOrphan { .. }) => Ok(()),
            Err(err) => Err(BackendError::Io(format!("{}: {err}", spec.describe()))),
        }
    }

    fn durable_state(&self) -> bool {
        true
    }

    fn start_health_probe(&self) -> Option<std::sync::Arc<crate::health::Health>> {
        // Its own handle: a request blocked on a stopped lockspace must not block the server.
        let name = self.lockspace.name().to_owned();
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
