//! Group commit: the records of a batch of requests are made durable by one sync, and no lock
//! request reaches a backend that sends at submit (the DLM backend) before the sync of the
//! record that announces it.
//!
//! The backend is a model kept in memory (the table's bookkeeping only); the cluster test bed
//! runs the same path against the real DLM.

mod common;

use common::{Owner, disk};
use lockmgr_proto::{FailureAction, Mode, Recorded, ResourceSpec};
use lockmgrd::backend::{Answer, Backend, BackendError, Outcome, Target, Ticket, UnlockFailed};
use lockmgrd::persist::StateFile;
use lockmgrd::table::{LockTable, Progress};

/// A lock manager that grants everything it is sent. With `at_submit`, a request waits until
/// `submit` and is answered later, as the DLM backend's are; without, it is taken at once.
#[derive(Debug, Default)]
struct Model {
    at_submit: bool,
    next_ticket: Ticket,
    unsent: Vec<Ticket>,
    /// How many requests `submit` has handed on.
    sent: usize,
    answers: Vec<Ticket>,
}

impl Backend for Model {
    type Handle = u64;

    fn start_lock(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Answer<Result<u64, BackendError>> {
        if !self.at_submit {
            return Answer::Now(self.lock(target, spec, mode));
        }
        self.next_ticket += 1;
        self.unsent.push(self.next_ticket);
        Answer::Later(self.next_ticket)
    }

    fn submit(&mut self) {
        self.sent += self.unsent.len();
        self.answers.append(&mut self.unsent);
    }

    fn sends_at_submit(&self) -> bool {
        self.at_submit
    }

    fn take_answers(&mut self) -> Vec<(Ticket, Outcome<u64>)> {
        std::mem::take(&mut self.answers)
            .into_iter()
            .map(|ticket| (ticket, Outcome::Locked(Ok(ticket))))
            .collect()
    }

    fn name(&self) -> &'static str {
        "model"
    }

    fn resolve(&self, spec: &ResourceSpec) -> Result<Target, BackendError> {
        Ok(Target {
            id: spec.name.clone(),
        })
    }

    fn lock(&mut self, _: &Target, _: &ResourceSpec, _: Mode) -> Result<u64, BackendError> {
        self.sent += 1;
        Ok(1)
    }

    fn unlock(
        &mut self,
        _: &Target,
        _: &ResourceSpec,
        _: Mode,
        _: u64,
    ) -> Result<(), UnlockFailed<u64>> {
        Ok(())
    }

    fn durable_state(&self) -> bool {
        true
    }
}

/// A table over `backend` whose whole table is already written (the daemon writes it at start):
/// from here on every change is a journal record.
fn table(dir: &tempfile::TempDir, backend: Model) -> LockTable<Model> {
    let mut table = LockTable::new(backend, StateFile::in_claimed_dir(dir.path(), true));
    table.save().unwrap();
    table
}

/// `count` domains whose processes run (the table checks their pids).
fn domains(count: u8) -> Vec<Owner> {
    (1..=count)
        .map(|n| Owner::new(&format!("vm-{n}"), n))
        .collect()
}

/// Every domain starts an Acquire of its own disk, as in one server turn; whether each is
/// waiting for the backend.
fn acquire_each(table: &mut LockTable<Model>, domains: &[Owner]) -> Vec<bool> {
    domains
        .iter()
        .map(|owner| {
            let own_disk = [disk(
                &format!("/disks/{}", owner.info.name),
                Mode::Exclusive,
            )];
            let progress =
                table.start_acquire(&owner.info, &own_disk, FailureAction::Default, None);
            matches!(progress, Ok(Progress::Waiting(_)))
        })
        .collect()
}

#[test]
fn one_sync_makes_a_batch_durable_before_its_requests_leave() {
    let dir = tempfile::tempdir().unwrap();
    let domains = domains(8);
    let mut table = table(
        &dir,
        Model {
            at_submit: true,
            ..Model::default()
        },
    );
    let start = table.record_counts();

    let waiting = acquire_each(&mut table, &domains);
    assert!(waiting.iter().all(|w| *w), "{waiting:?}");
    let intents = table.record_counts();
    assert_eq!(intents.records - start.records, 8, "one intent per Acquire");
    assert_eq!(intents.syncs, start.syncs, "nothing synced yet");
    assert!(table.unsynced());
    assert_eq!(
        table.backend().sent,
        0,
        "no request before its intent is durable"
    );

    table.submit().unwrap();
    assert_eq!(table.record_counts().syncs, start.syncs + 1);
    assert!(!table.unsynced());
    assert_eq!(table.backend().sent, 8);

    let finished = table.take_finished();
    assert_eq!(finished.len(), 8);
    assert!(
        finished.iter().all(|(_, result)| result.is_ok()),
        "{finished:?}"
    );
    // The grants are recorded; their replies wait for the next sync.
    assert!(table.unsynced());
    table.sync().unwrap();
    let end = table.record_counts();
    assert_eq!(
        (end.records - start.records, end.syncs - start.syncs),
        (16, 2),
        "8 intents and 8 grants in 2 syncs: {end:?}"
    );
}

#[test]
fn the_control_a_backend_that_acts_at_once_syncs_every_record() {
    // Taken at once, a lock must have its intent on disk first: one sync per record, which is
    // what the counts above would show if the batch were not grouped.
    let dir = tempfile::tempdir().unwrap();
    let domains = domains(8);
    let mut table = table(&dir, Model::default());
    let start = table.record_counts();
    acquire_each(&mut table, &domains);
    let end = table.record_counts();
    assert!(!table.unsynced());
    assert_eq!(table.backend().sent, 8);
    let Recorded { records, syncs, .. } = end;
    assert_eq!(records - start.records, 16, "{end:?}");
    assert_eq!(syncs - start.syncs, 16, "{end:?}");
}
