//! An Acquire that carries a lock state (a resume, a migration's destination) waits a moment
//! for a holder whose Release comes late, where a fresh start is refused at once; past the grace
//! it is refused as busy. Order of events, no timing.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::*;
use lockmgr_proto::{ErrorKind, FailureAction, Mode, Reply, Request};

fn acquire_with_state(
    daemon: &Daemon,
    owner: &Owner,
    disks: &[lockmgr_proto::ResourceSpec],
    state: &str,
) -> Reply {
    daemon.call(Request::Acquire {
        owner: owner.info.clone(),
        resources: disks.to_vec(),
        action: FailureAction::Poweroff,
        state: Some(state.to_owned()),
    })
}

/// What a migration cookie carries: the source's lock state.
fn state_of(daemon: &Daemon, owner: &Owner) -> String {
    expect_ok(daemon.call(Request::Inquire {
        owner: owner.info.clone(),
    }))
    .expect("an Inquire returns a state")
}

#[test]
fn a_handover_waits_for_a_late_release() {
    let daemon = Daemon::start();
    let (source, destination) = (Owner::new("mig-src", 1), Owner::new("mig-dst", 2));
    let lun = [disk("/img/lun.img", Mode::Exclusive)];
    expect_ok(acquire(&daemon, &source, &lun));
    let state = state_of(&daemon, &source);
    // A fresh start is refused at once while the source holds the disk.
    expect_error(acquire(&daemon, &destination, &lun), ErrorKind::Busy);

    let (events, order) = mpsc::channel();
    std::thread::scope(|scope| {
        let events_of_destination = events.clone();
        let (daemon, destination, lun, state) = (&daemon, &destination, &lun, &state);
        scope.spawn(move || {
            let reply = acquire_with_state(daemon, destination, lun, state);
            events_of_destination
                .send(format!("destination: {reply:?}"))
                .unwrap();
        });
        // The source's Release arrives after the destination asked (a daemon without the grace
        // has refused the destination by then).
        std::thread::sleep(Duration::from_millis(400));
        expect_ok(daemon.call(Request::Release {
            owner: source.info.clone(),
            resources: lun.to_vec(),
        }));
        events.send("source released".to_owned()).unwrap();
    });
    let seen: Vec<String> = order.try_iter().collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[0], "source released",
        "the destination was answered before the source released: {seen:?}"
    );
    assert!(seen[1].starts_with("destination: Ok"), "{seen:?}");
    let locks = daemon.locks();
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert_eq!(locks[0].owners, ["mig-dst"]);
}

#[test]
fn a_handover_is_refused_when_the_holder_keeps_the_disk() {
    let daemon = Daemon::start();
    let (holder, other) = (Owner::new("holder", 1), Owner::new("resumed", 2));
    let lun = [disk("/img/lun.img", Mode::Exclusive)];
    expect_ok(acquire(&daemon, &holder, &lun));
    let state = state_of(&daemon, &holder);
    let refused = expect_error(
        acquire_with_state(&daemon, &other, &lun, &state),
        ErrorKind::Busy,
    );
    assert!(refused.contains("domain 'holder'"), "{refused}");
    // The daemon served other requests meanwhile and still does.
    assert_eq!(daemon.locks()[0].owners, ["holder"]);
}
