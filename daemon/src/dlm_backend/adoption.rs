//! Taking orphans back after a restart: the adoptions of one restore go to worker 0 as one job,
//! in the order the kernel lists the orphans (see [`Backend::reclaim_order`]).

use lockmgr_dlm::Error as DlmError;
use lockmgr_proto::{Mode, ResourceSpec};

use super::worker::{Job, Orphan, WorkerAnswer};
use super::{DlmBackend, DlmLock, dlm_mode, io};
use crate::backend::{Backend, BackendError, Target};

impl DlmBackend {
    /// Adopts orphans in this order, in one job of worker 0, and waits for them all (restore,
    /// before the daemon serves: no deadline). One result per orphan.
    pub(super) fn adopt_all(
        &mut self,
        orphans: &[(&Target, Mode)],
        persistent: bool,
    ) -> Result<Vec<Result<DlmLock, DlmError>>, BackendError> {
        let ticket = self.new_ticket();
        let orphans: Vec<Orphan> = orphans
            .iter()
            .map(|(target, mode)| Orphan {
                ticket: self.new_ticket(),
                resource: target.id.clone(),
                mode: dlm_mode(*mode),
                persistent,
            })
            .collect();
        let count = orphans.len();
        self.send(0, Job::Adopt { ticket, orphans })?;
        match self.wait_for(ticket, None) {
            Some(WorkerAnswer::Adopted(results)) if results.len() == count => Ok(results),
            _ => Err(BackendError::Io("DLM worker 0 is gone".into())),
        }
    }

    /// Adopts one orphan.
    pub(super) fn adopt(
        &mut self,
        target: &Target,
        mode: Mode,
        persistent: bool,
    ) -> Result<Result<DlmLock, DlmError>, BackendError> {
        self.adopt_all(&[(target, mode)], persistent)?
            .pop()
            .ok_or_else(|| BackendError::Io("DLM worker 0 gave no answer".into()))
    }

    /// A lock taken back after a restart from its adoption: with no orphan (e.g. this node
    /// rebooted) it is taken afresh if still free.
    pub(super) fn reclaimed(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
        adopted: Result<DlmLock, DlmError>,
    ) -> Result<DlmLock, BackendError> {
        match adopted {
            Ok(lock) => Ok(lock),
            Err(DlmError::NoOrphan { .. }) => self.lock(target, spec, mode),
            Err(DlmError::OrphanModeMismatch { .. }) => Err(BackendError::Io(format!(
                "the orphan lock on {} has another mode than the lock table says",
                spec.describe()
            ))),
            Err(err) => Err(io(err)),
        }
    }
}
