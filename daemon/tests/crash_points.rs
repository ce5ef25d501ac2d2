//! Crash consistency of the lock table, at every crash point of acquire, release, owner death
//! and restore: after the restart no lock is leaked (held by the backend but by no domain of the
//! table) and none is lost (a lock a running domain was granted is held again).
//!
//! The backend here is a model of the DLM's persistent locks — locks outlive the daemon as
//! orphans that a restarted daemon adopts or drops — kept in memory so that every crash point
//! runs in milliseconds. It proves the daemon's bookkeeping only; the cluster test bed proves
//! the same against the real DLM.
#![cfg(feature = "failpoints")]

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use lockmgr_proto::{FailureAction, Mode, OwnerInfo, ResourceKind, ResourceSpec};
use lockmgrd::backend::{Backend, BackendError, Target, UnlockFailed};
use lockmgrd::failpoint;
use lockmgrd::persist::StateFile;
use lockmgrd::table::LockTable;

/// The lock manager's side: every lock, with the handle that holds it (`None`: an orphan).
#[derive(Debug, Default)]
struct World {
    next_handle: u64,
    locks: BTreeMap<String, (Mode, Option<u64>)>,
}

fn lock(world: &Mutex<World>) -> std::sync::MutexGuard<'_, World> {
    // A failed assertion must not turn the orphaning of a crashed daemon into an abort.
    world
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One daemon's connection to the world; dropping it (a crash) orphans its locks.
#[derive(Debug)]
struct PersistentLocks {
    world: Arc<Mutex<World>>,
}

impl Drop for PersistentLocks {
    fn drop(&mut self) {
        let mut world = lock(&self.world);
        for (_, holder) in world.locks.values_mut() {
            *holder = None;
        }
    }
}

impl PersistentLocks {
    fn grant(world: &mut World, id: &str, mode: Mode) -> u64 {
        world.next_handle += 1;
        let handle = world.next_handle;
        world.locks.insert(id.to_owned(), (mode, Some(handle)));
        handle
    }
}

impl Backend for PersistentLocks {
    type Handle = u64;

    fn name(&self) -> &'static str {
        "model"
    }

    fn resolve(&self, spec: &ResourceSpec) -> Result<Target, BackendError> {
        Ok(Target {
            id: spec.name.clone(),
        })
    }

    fn lock(&mut self, target: &Target, _: &ResourceSpec, mode: Mode) -> Result<u64, BackendError> {
        let mut world = lock(&self.world);
        if world.locks.contains_key(&target.id) {
            return Err(BackendError::Busy(format!("{} is locked", target.id)));
        }
        Ok(Self::grant(&mut world, &target.id, mode))
    }

    fn unlock(
        &mut self,
        target: &Target,
        _: &ResourceSpec,
        _: Mode,
        handle: u64,
    ) -> Result<(), UnlockFailed<u64>> {
        let mut world = lock(&self.world);
        match world.locks.get(&target.id) {
            Some((_, Some(h))) if *h == handle => {
                world.locks.remove(&target.id);
                Ok(())
            }
            other => panic!("unlock of {} with handle {handle}: {other:?}", target.id),
        }
    }

    fn reclaim(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Result<u64, BackendError> {
        let mut world = lock(&self.world);
        match world.locks.get(&target.id).copied() {
            Some((held, None)) if held == mode => Ok(Self::grant(&mut world, &target.id, mode)),
            Some(_) => Err(BackendError::Busy(format!("{} is locked", spec.name))),
            None => Ok(Self::grant(&mut world, &target.id, mode)),
        }
    }

    fn discard(&mut self, target: &Target, _: &ResourceSpec, _: Mode) -> Result<(), BackendError> {
        let mut world = lock(&self.world);
        if matches!(world.locks.get(&target.id), Some((_, None))) {
            world.locks.remove(&target.id);
        }
        Ok(())
    }

    fn durable_state(&self) -> bool {
        true
    }
}

struct Domain {
    child: Child,
    info: OwnerInfo,
}

impl Domain {
    fn new(n: u8) -> Domain {
        let child = Command::new("sleep").arg("60").spawn().unwrap();
        let info = OwnerInfo {
            uuid: format!("0000{n:04x}-0000-4000-8000-000000000000"),
            name: format!("vm-{n}"),
            id: u32::from(n),
            pid: child.id(),
            uri: None,
        };
        Domain { child, info }
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn disks(names: &[&str]) -> Vec<ResourceSpec> {
    names
        .iter()
        .map(|name| ResourceSpec {
            kind: ResourceKind::Disk,
            name: (*name).into(),
            mode: Mode::Exclusive,
        })
        .collect()
}

struct Bed {
    dir: tempfile::TempDir,
    world: Arc<Mutex<World>>,
}

impl Bed {
    fn daemon(&self) -> LockTable<PersistentLocks> {
        self.daemon_over(StateFile::in_claimed_dir(self.dir.path()))
    }

    fn daemon_over(&self, store: StateFile) -> LockTable<PersistentLocks> {
        let backend = PersistentLocks {
            world: Arc::clone(&self.world),
        };
        LockTable::new(backend, store)
    }

    /// A daemon started after a crash: loads the table and its journal, restores and records,
    /// as `lockmgrd` does.
    fn restarted(&self) -> LockTable<PersistentLocks> {
        let mut store = StateFile::in_claimed_dir(self.dir.path());
        let snapshot = store.load("model").unwrap();
        let mut table = self.daemon_over(store);
        if let Some(snapshot) = snapshot {
            table.restore(&snapshot);
        }
        table.save().unwrap();
        table
    }

    /// (resource, holder names) of the table, and the world's locks with whether orphaned.
    fn check(&self, table: &LockTable<PersistentLocks>) -> (Vec<(String, Vec<String>)>, String) {
        let (_, locks) = table.status();
        let mut held: Vec<(String, Vec<String>)> =
            locks.into_iter().map(|l| (l.target, l.owners)).collect();
        held.sort();
        let world = lock(&self.world);
        let orphans: Vec<&String> = world
            .locks
            .iter()
            .filter(|(_, (_, h))| h.is_none())
            .map(|(id, _)| id)
            .collect();
        assert!(orphans.is_empty(), "leaked orphans: {orphans:?}");
        let in_world: Vec<&String> = world.locks.keys().collect();
        let in_table: Vec<&String> = held.iter().map(|(id, _)| id).collect();
        assert_eq!(
            in_world, in_table,
            "the backend holds exactly the table's locks"
        );
        (
            held,
            format!("{:?}", world.locks.keys().collect::<Vec<_>>()),
        )
    }
}

/// Runs `crash` with `point` armed; it must reach the point (panic there).
fn crash_at(point: &'static str, crash: impl FnOnce()) {
    failpoint::panic_at(point);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(crash));
    failpoint::disarm();
    let payload = outcome.expect_err(&format!("{point} was never reached"));
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert_eq!(message, format!("failpoint {point}"));
}

fn held_by(held: &[(String, Vec<String>)], id: &str) -> Option<Vec<String>> {
    held.iter().find(|(i, _)| i == id).map(|(_, o)| o.clone())
}

#[test]
fn every_crash_point_leaks_nothing_and_loses_nothing() {
    // Keep the expected panics quiet; failures still print through the asserts' messages.
    std::panic::set_hook(Box::new(|info| {
        let text = info.to_string();
        if !text.contains("failpoint ") {
            eprintln!("{text}");
        }
    }));
    let mut covered = Vec::new();
    for &point in failpoint::POINTS {
        let bed = Bed {
            dir: tempfile::tempdir().unwrap(),
            world: Arc::default(),
        };
        let (a, mut b) = (Domain::new(1), Domain::new(2));
        let mut table = bed.daemon();
        let granted = |table: &mut LockTable<_>, d: &Domain, names: &[&str]| {
            table
                .acquire(&d.info, &disks(names), FailureAction::Poweroff, None)
                .unwrap();
        };
        granted(&mut table, &a, &["a1", "a2"]);
        granted(&mut table, &b, &["b1", "b2"]);

        let stage = point.split(':').next().unwrap();
        match stage {
            "acquire" => crash_at(point, || {
                let _ = table.acquire(
                    &a.info,
                    &disks(&["a3", "a4"]),
                    FailureAction::Poweroff,
                    None,
                );
            }),
            "release" => crash_at(point, || {
                let _ = table.release(&a.info, &disks(&["a1", "a2"]));
            }),
            "owner-death" => {
                let _ = b.child.kill();
                let _ = b.child.wait();
                crash_at(point, || {
                    table.owner_died(&b.info.uuid);
                });
            }
            "restore" => {
                drop(table);
                crash_at(point, || {
                    let _ = bed.restarted();
                });
                table = bed.daemon();
            }
            other => panic!("no scenario for {other}"),
        }
        // The crash: the daemon's connection goes, its locks become orphans.
        drop(table);
        let table = bed.restarted();
        let (held, world) = bed.check(&table);

        // Nothing lost: what was granted and not released is held by its running domain.
        let a_keeps: &[&str] = if stage == "release" {
            &[]
        } else {
            &["a1", "a2"]
        };
        for id in a_keeps {
            assert_eq!(
                held_by(&held, id),
                Some(vec!["vm-1".into()]),
                "{point}: {id} lost; world {world}"
            );
        }
        let b_alive = stage != "owner-death";
        for id in ["b1", "b2"] {
            let expected = b_alive.then(|| vec!["vm-2".to_owned()]);
            assert_eq!(held_by(&held, id), expected, "{point}: {id}; world {world}");
        }
        // An interrupted request may have taken effect or not, but never halfway.
        let pair = |x: &str, y: &str| (held_by(&held, x).is_some(), held_by(&held, y).is_some());
        match stage {
            "acquire" => {
                let (x, y) = pair("a3", "a4");
                assert_eq!(x, y, "{point}: all or none; world {world}");
            }
            "release" => {
                let (x, y) = pair("a1", "a2");
                assert_eq!(x, y, "{point}: all or none; world {world}");
            }
            _ => {}
        }
        covered.push(point);
        drop(a);
    }
    assert_eq!(covered, failpoint::POINTS);
}
