//! After a restart the table takes its locks back in the backend's order, all at once: the DLM
//! finds each orphan by scanning the node's list of orphans, so 10,000 adopted in any other
//! order than the kernel listed them cost a scan of thousands each (18 s instead of 0.8 s on
//! the test bed). The order is persisted with each lock, through the journal and the whole table.
//!
//! The backend is a model kept in memory; the cluster test bed's scale bench measures the same
//! restart against the real DLM.

mod common;

use common::{Owner, disk};
use lockmgr_proto::{FailureAction, Mode, ResourceSpec};
use lockmgrd::backend::{Backend, BackendError, Target, UnlockFailed};
use lockmgrd::persist::StateFile;
use lockmgrd::table::LockTable;

/// Handles of this many lockspace handles, as the DLM backend's workers.
const HANDLES: u64 = 3;

/// A lock manager that grants everything; lock `n` (counted from 1) goes to handle `n % 3`, and
/// handles are listed last-first, as the kernel lists a dead daemon's orphans.
#[derive(Debug, Default)]
struct Orphans {
    granted: u64,
    /// The targets `reclaim_all` was asked for, in its order.
    reclaimed: Vec<String>,
    /// Calls of `reclaim_all`.
    batches: usize,
    /// Locks released: a restore of running domains releases none.
    unlocked: Vec<u64>,
}

impl Backend for Orphans {
    type Handle = u64;

    fn name(&self) -> &'static str {
        "orphans"
    }

    fn resolve(&self, spec: &ResourceSpec) -> Result<Target, BackendError> {
        common::model_target(spec)
    }

    fn lock(&mut self, _: &Target, _: &ResourceSpec, _: Mode) -> Result<u64, BackendError> {
        self.granted += 1;
        Ok(self.granted)
    }

    fn unlock(
        &mut self,
        _: &Target,
        _: &ResourceSpec,
        _: Mode,
        handle: u64,
    ) -> Result<(), UnlockFailed<u64>> {
        self.unlocked.push(handle);
        Ok(())
    }

    fn reclaim_order(&self, handle: &u64) -> Option<(u32, u64)> {
        let handle_index = u32::try_from(handle % HANDLES).unwrap();
        Some((u32::MAX - handle_index, *handle))
    }

    fn reclaim_all(
        &mut self,
        locks: &[(&Target, &ResourceSpec, Mode)],
    ) -> Vec<Result<u64, BackendError>> {
        self.batches += 1;
        locks
            .iter()
            .map(|(target, spec, mode)| {
                self.reclaimed.push(target.id.clone());
                self.lock(target, spec, *mode)
            })
            .collect()
    }

    fn durable_state(&self) -> bool {
        true
    }
}

/// The order the model's kernel lists the orphans of locks `1..=count` in.
fn orphan_list(count: u64) -> Vec<u64> {
    let mut locks: Vec<u64> = (1..=count).collect();
    locks.sort_by_key(|n| (std::cmp::Reverse(n % HANDLES), *n));
    locks
}

/// Disk `n`'s path: named so that their sorted order is not the order they were locked in.
fn disk_path(n: u64) -> String {
    format!("/disks/{:03}", 1000 - n)
}

/// A new daemon's table over `dir`, restored from what the last one left.
fn restart(dir: &tempfile::TempDir) -> LockTable<Orphans> {
    let mut state = StateFile::in_claimed_dir(dir.path());
    let snapshot = state.load("orphans").unwrap().expect("a table on disk");
    let mut table = LockTable::new(Orphans::default(), state);
    let lost = table.restore(&snapshot);
    assert!(lost.is_empty(), "{lost:?}");
    assert_eq!(
        table.backend().unlocked,
        Vec::<u64>::new(),
        "nothing released"
    );
    table
}

#[test]
fn a_restart_takes_the_locks_back_in_the_orphan_list_order_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let domains = [Owner::new("vm-1", 1), Owner::new("vm-2", 2)];
    let mut table = LockTable::new(Orphans::default(), StateFile::in_claimed_dir(dir.path()));
    table.save().unwrap();
    // 12 locks in 4 Acquires of 3 disks, alternating domains: journal records only.
    for acquire in 0..4u64 {
        let owner = &domains[usize::try_from(acquire % 2).unwrap()];
        let disks: Vec<ResourceSpec> = (1..=3)
            .map(|k| disk(&disk_path(acquire * 3 + k), Mode::Exclusive))
            .collect();
        table
            .start_acquire(&owner.info, &disks, FailureAction::Default, None)
            .unwrap();
    }
    assert_eq!(table.backend().granted, 12);
    drop(table);

    let expected: Vec<String> = orphan_list(12).into_iter().map(disk_path).collect();
    let mut table = restart(&dir);
    assert_eq!(table.backend().batches, 1, "one reclaim_all for every lock");
    assert_eq!(table.backend().reclaimed, expected, "read from the journal");

    // The taken-back locks have new handles (1..=12 in the order above): the whole table
    // written after the restore carries their new order.
    table.save().unwrap();
    drop(table);
    let table = restart(&dir);
    let again: Vec<String> = orphan_list(12)
        .into_iter()
        .map(|n| expected[usize::try_from(n - 1).unwrap()].clone())
        .collect();
    assert_eq!(
        table.backend().reclaimed,
        again,
        "read from the whole table"
    );
}
