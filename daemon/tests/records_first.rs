//! Every request's record is written before the request reaches the lock manager: the intents of
//! the Acquires of one server turn are in the journal before `submit` hands their locks to the
//! backend (as the DLM backend's are handed to its workers), and each grant is recorded before
//! its reply.
//!
//! The backend is a model kept in memory (the table's bookkeeping only); the cluster test bed
//! runs the same path against the real DLM.

mod common;

use common::{Owner, disk};
use lockmgr_proto::{FailureAction, Mode, Recorded, ResourceSpec};
use lockmgrd::backend::{Answer, Backend, BackendError, Outcome, Target, Ticket, UnlockFailed};
use lockmgrd::persist::StateFile;
use lockmgrd::table::{LockTable, Progress};

/// A lock manager that grants everything it is sent; a request waits until `submit` and is
/// answered later, as the DLM backend's are.
#[derive(Debug, Default)]
struct Model {
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
        _: &Target,
        _: &ResourceSpec,
        _: Mode,
    ) -> Answer<Result<u64, BackendError>> {
        self.next_ticket += 1;
        self.unsent.push(self.next_ticket);
        Answer::Later(self.next_ticket)
    }

    fn submit(&mut self) {
        self.sent += self.unsent.len();
        self.answers.append(&mut self.unsent);
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
        common::model_target(spec)
    }

    fn lock(&mut self, _: &Target, _: &ResourceSpec, _: Mode) -> Result<u64, BackendError> {
        unreachable!("the table starts every lock with start_lock")
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
    let mut table = LockTable::new(backend, StateFile::in_claimed_dir(dir.path()));
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

/// The journal's lines on disk.
fn journal_lines(dir: &tempfile::TempDir) -> usize {
    std::fs::read_to_string(dir.path().join("locks.journal"))
        .unwrap()
        .lines()
        .count()
}

#[test]
fn the_intents_of_a_turn_are_written_before_its_requests_leave() {
    let dir = tempfile::tempdir().unwrap();
    let domains = domains(8);
    let mut table = table(&dir, Model::default());
    let start = table.record_counts();
    let lines = journal_lines(&dir);

    let waiting = acquire_each(&mut table, &domains);
    assert!(waiting.iter().all(|w| *w), "{waiting:?}");
    assert_eq!(table.record_counts().records - start.records, 8);
    assert_eq!(
        journal_lines(&dir) - lines,
        8,
        "one intent per Acquire, on disk"
    );
    assert_eq!(
        table.backend().sent,
        0,
        "no request before the turn's submit"
    );

    table.submit();
    assert_eq!(table.backend().sent, 8);

    let finished = table.take_finished();
    assert_eq!(finished.len(), 8);
    assert!(
        finished.iter().all(|(_, result)| result.is_ok()),
        "{finished:?}"
    );
    let Recorded { records, .. } = table.record_counts();
    assert_eq!(records - start.records, 16, "8 intents, 8 grants");
    assert_eq!(
        journal_lines(&dir) - lines,
        16,
        "every grant recorded before its reply"
    );
}
