//! Requests the backend answers late (`LOCKMGRD_STALL`, as a DLM request waits while its master
//! node is fenced) hold up nobody: other domains are served and owner deaths handled meanwhile,
//! a request past its deadline is refused and leaves nothing, and a request that needs what one
//! in flight is taking waits for it instead of being refused.
//!
//! Every check is on the order of events, not on how long they took.
#![cfg(feature = "failpoints")]

mod common;

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use lockmgr_proto::{ErrorKind, Mode, Reply, Request, ResourceSpec};

fn stalled_daemon(matching: &str, ms: u64) -> Daemon {
    started_with(&format!("LOCKMGRD_STALL={matching}:{ms}"))
}

/// A daemon whose backend stalls as `stall` says; fails loudly if the binary cannot.
fn started_with(stall: &str) -> Daemon {
    let daemon = Daemon::start_wrapped(&["env", stall]);
    // Its socket is bound before the backend is made (and says so): wait for the line.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("test mode: lock requests") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        daemon.log().contains("test mode: lock requests"),
        "{} was built without the failpoints feature (did another build overwrite it?): {}",
        env!("CARGO_BIN_EXE_lockmgrd"),
        daemon.log()
    );
    daemon
}

/// An Acquire on its own connection, in a thread.
fn acquire_in_background(
    daemon: &Daemon,
    owner: &Owner,
    resources: Vec<ResourceSpec>,
) -> JoinHandle<Reply> {
    let mut client = daemon.client();
    let request = Request::Acquire {
        owner: owner.info.clone(),
        resources,
        action: lockmgr_proto::FailureAction::Poweroff,
        state: None,
    };
    std::thread::spawn(move || client.call(&request).expect("call"))
}

/// Waits until the daemon has taken `request` in (it shows in no reply; give it a moment to be
/// read), so that what follows happens while it is in flight.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

/// A domain's Acquire stalls; meanwhile another domain acquires and a third one's owner dies.
/// Err says what the stalled request held up.
fn stalled_request_scenario(stall: &str) -> Result<(), String> {
    let daemon = started_with(stall);
    let (slow, quick, mut dying) = (
        Owner::new("slow", 1),
        Owner::new("quick", 2),
        Owner::new("dying", 3),
    );
    expect_ok(acquire(
        &daemon,
        &dying,
        &[disk("/img/dying.img", Mode::Exclusive)],
    ));
    let stalled =
        acquire_in_background(&daemon, &slow, vec![disk("/img/slow.img", Mode::Exclusive)]);
    settle();
    // Another domain is served while the stalled request waits.
    expect_ok(acquire(
        &daemon,
        &quick,
        &[disk("/img/quick.img", Mode::Exclusive)],
    ));
    if stalled.is_finished() {
        return Err("the stalled Acquire was answered before the other domain's".into());
    }
    // An owner's death is handled while the stalled request waits.
    dying.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon
        .locks()
        .iter()
        .any(|l| l.resource == "disk /img/dying.img")
    {
        assert!(
            Instant::now() < deadline,
            "the dead owner's lock was never freed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    if stalled.is_finished() {
        return Err("the stalled Acquire was answered before the owner's death was handled".into());
    }
    // Within its deadline, the stalled request is granted.
    expect_ok(stalled.join().unwrap());
    let mut held: Vec<String> = daemon.locks().into_iter().map(|l| l.resource).collect();
    held.sort();
    assert_eq!(held, ["disk /img/quick.img", "disk /img/slow.img"]);
    Ok(())
}

#[test]
fn a_stalled_request_holds_up_nobody() {
    stalled_request_scenario("LOCKMGRD_STALL=slow.img:2000").unwrap();
}

/// The control: the same scenario against a backend that answers on the server's thread (as
/// every DLM call did before requests were asynchronous) must report the hold-up.
#[test]
fn control_a_server_blocked_by_its_backend_is_caught() {
    let error = stalled_request_scenario("LOCKMGRD_STALL=slow.img:2000:block")
        .expect_err("the scenario did not notice a server blocked by its backend");
    assert!(
        error.contains("the stalled Acquire was answered before"),
        "{error}"
    );
}

#[test]
fn a_request_past_its_deadline_is_refused_and_leaves_nothing() {
    let daemon = stalled_daemon("hung.img", 60_000);
    let (a, b) = (Owner::new("vm-a", 1), Owner::new("vm-b", 2));
    let refused = expect_error(
        acquire(
            &daemon,
            &a,
            &[
                disk("/img/ok.img", Mode::Exclusive),
                disk("/img/hung.img", Mode::Exclusive),
            ],
        ),
        ErrorKind::Internal,
    );
    assert!(
        refused.contains("did not answer within 3 s for disk /img/hung.img"),
        "{refused}"
    );
    // All or none: the lock it did get is given back.
    assert!(daemon.locks().is_empty(), "{:?}", daemon.locks());
    expect_ok(acquire(
        &daemon,
        &b,
        &[disk("/img/ok.img", Mode::Exclusive)],
    ));
    // The same domain may try again (and is refused again, for the same reason).
    let again = expect_error(
        acquire(&daemon, &a, &[disk("/img/hung.img", Mode::Exclusive)]),
        ErrorKind::Internal,
    );
    assert!(again.contains("did not answer within"), "{again}");
}

#[test]
fn a_request_for_a_resource_being_taken_waits_for_it() {
    let daemon = stalled_daemon("shared.img", 1500);
    let (a, b, c) = (
        Owner::new("vm-a", 1),
        Owner::new("vm-b", 2),
        Owner::new("vm-c", 3),
    );
    let first = acquire_in_background(&daemon, &a, vec![disk("/img/shared.img", Mode::Shared)]);
    settle();
    // Shared with the request in flight: waits for it, then joins its lock.
    let second = acquire_in_background(&daemon, &b, vec![disk("/img/shared.img", Mode::Shared)]);
    settle();
    // Exclusive against it: waits for it, then is refused as against any holder.
    let third = acquire_in_background(&daemon, &c, vec![disk("/img/shared.img", Mode::Exclusive)]);
    expect_ok(first.join().unwrap());
    expect_ok(second.join().unwrap());
    let refused = expect_error(third.join().unwrap(), ErrorKind::Busy);
    assert!(refused.contains("is locked shared by"), "{refused}");
    let locks = daemon.locks();
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert_eq!(locks[0].owners, ["vm-a", "vm-b"]);
}
