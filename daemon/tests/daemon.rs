//! lockmgrd as a process: conflicts between domains, owner death, restricted connections,
//! hostile clients, and what survives a daemon restart.

mod common;

use std::time::{Duration, Instant};

use common::*;
use lockmgr_proto::{ErrorKind, Event, EventKind, FailureAction, Mode, Reply, Request};

#[test]
fn exclusive_and_shared_between_domains() {
    let daemon = Daemon::start();
    let (a, b) = (Owner::new("vm-a", 1), Owner::new("vm-b", 2));
    expect_ok(acquire(&daemon, &a, &[disk("/img/x.img", Mode::Exclusive)]));
    let refused = expect_error(
        acquire(&daemon, &b, &[disk("/img/x.img", Mode::Exclusive)]),
        ErrorKind::Busy,
    );
    assert_eq!(
        refused,
        format!(
            "disk /img/x.img is locked exclusively by domain 'vm-a' (pid {}) on this host",
            a.info.pid
        )
    );
    expect_error(
        acquire(&daemon, &b, &[disk("/img/x.img", Mode::Shared)]),
        ErrorKind::Busy,
    );
    // Acquire is idempotent for the holder.
    expect_ok(acquire(&daemon, &a, &[disk("/img/x.img", Mode::Exclusive)]));

    expect_ok(acquire(
        &daemon,
        &a,
        &[disk("/img/shared.img", Mode::Shared)],
    ));
    expect_ok(acquire(
        &daemon,
        &b,
        &[disk("/img/shared.img", Mode::Shared)],
    ));
    let locks = daemon.locks();
    let shared = locks
        .iter()
        .find(|l| l.resource == "disk /img/shared.img")
        .unwrap();
    assert_eq!(shared.owners, ["vm-a", "vm-b"]);
    let c = Owner::new("vm-c", 3);
    let refused = expect_error(
        acquire(&daemon, &c, &[disk("/img/shared.img", Mode::Exclusive)]),
        ErrorKind::Busy,
    );
    assert!(
        refused.contains("locked shared by domain 'vm-a'") && refused.contains("domain 'vm-b'"),
        "{refused}"
    );
}

#[test]
fn acquire_is_all_or_none() {
    let daemon = Daemon::start();
    let (a, b) = (Owner::new("vm-a", 1), Owner::new("vm-b", 2));
    expect_ok(acquire(
        &daemon,
        &b,
        &[disk("/img/d100.img", Mode::Exclusive)],
    ));
    let hundred: Vec<_> = (1..=100)
        .map(|i| disk(&format!("/img/d{i}.img"), Mode::Exclusive))
        .collect();
    let refused = expect_error(acquire(&daemon, &a, &hundred), ErrorKind::Busy);
    assert!(
        refused.starts_with("disk /img/d100.img is locked"),
        "{refused}"
    );
    let locks = daemon.locks();
    assert_eq!(locks.len(), 1, "nothing of the 99 stays locked: {locks:?}");
    drop(b);
    // Once vm-b is gone, all 100 go through in one request.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !daemon.locks().is_empty() {
        assert!(Instant::now() < deadline, "vm-b's lock never freed");
        std::thread::sleep(Duration::from_millis(5));
    }
    expect_ok(acquire(&daemon, &a, &hundred));
    assert_eq!(daemon.locks().len(), 100);
}

#[test]
fn owner_death_frees_its_locks_at_once() {
    let daemon = Daemon::start();
    let (mut a, b) = (Owner::new("vm-a", 1), Owner::new("vm-b", 2));
    expect_ok(acquire(
        &daemon,
        &a,
        &[
            disk("/img/k.img", Mode::Exclusive),
            disk("/img/l.img", Mode::Shared),
        ],
    ));
    a.kill();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(5);
    loop {
        if let Reply::Ok { .. } = acquire(&daemon, &b, &[disk("/img/k.img", Mode::Exclusive)]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "vm-a's locks still held 5 s after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    eprintln!(
        "lock free {:?} after SIGKILL of its owner",
        killed.elapsed()
    );
    let Reply::Events { events } = daemon.call(Request::Events { after: 0 }) else {
        panic!("no events reply");
    };
    let exits: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.what {
            EventKind::OwnerExited { uuid, freed, .. } => Some((uuid.clone(), *freed)),
            EventKind::LockLost { .. } => None,
        })
        .collect();
    assert_eq!(exits, [(a.info.uuid.clone(), 2)], "{events:?}");
    let Reply::Events { events: later } = daemon.call(Request::Events {
        after: events.last().unwrap().seq,
    }) else {
        panic!("no events reply");
    };
    assert!(later.is_empty(), "{later:?}");
}

#[test]
fn release_is_idempotent_concurrent_and_returns_state() {
    let daemon = Daemon::start();
    let a = Owner::new("vm-a", 1);
    let disks = [
        disk("/img/r1.img", Mode::Exclusive),
        disk("/img/r2.img", Mode::Shared),
    ];
    expect_ok(acquire(&daemon, &a, &disks));
    let inquired = expect_ok(daemon.call(Request::Inquire {
        owner: a.info.clone(),
    }))
    .unwrap();
    // libvirt sends two Releases at once on `virsh suspend`.
    let states: Vec<Option<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    expect_ok(daemon.call(Request::Release {
                        owner: a.info.clone(),
                        resources: disks.to_vec(),
                    }))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        states,
        [Some(inquired.clone()), Some(inquired.clone())],
        "both concurrent Releases describe the domain's disks: libvirt keeps the later answer"
    );
    assert!(daemon.locks().is_empty());
    // The state string brings the same locks back; a corrupted one is refused.
    let resume = |state: &str| {
        daemon.call(Request::Acquire {
            owner: a.info.clone(),
            resources: disks.to_vec(),
            action: FailureAction::Pause,
            state: Some(state.into()),
        })
    };
    let corrupted = inquired.replace('E', "S");
    let message = expect_error(resume(&corrupted), ErrorKind::Invalid);
    assert!(message.contains("checksum mismatch"), "{message}");
    assert!(daemon.locks().is_empty(), "a refused resume takes nothing");
    expect_ok(resume(&inquired));
    assert_eq!(daemon.locks().len(), 2);
}

#[test]
fn a_stale_state_at_a_fresh_start_is_ignored_but_a_corrupted_resume_is_refused() {
    let daemon = Daemon::start();
    let a = Owner::new("vm-a", 1);
    let disks = [disk("/img/s.img", Mode::Exclusive)];
    let acquire_with = |state: &str| {
        daemon.call(Request::Acquire {
            owner: a.info.clone(),
            resources: disks.to_vec(),
            action: FailureAction::Default,
            state: Some(state.into()),
        })
    };
    // libvirt hands a destroyed domain's <lockstate> to its next start.
    expect_ok(acquire_with("lockmgr1::deadbeef"));
    assert!(
        daemon
            .log()
            .contains("starts with a lock state from an earlier run that is not valid"),
        "{}",
        daemon.log()
    );
    let state = expect_ok(daemon.call(Request::Release {
        owner: a.info.clone(),
        resources: disks.to_vec(),
    }))
    .unwrap();
    let message = expect_error(acquire_with("lockmgr1::deadbeef"), ErrorKind::Invalid);
    assert!(message.contains("checksum mismatch"), "{message}");
    expect_ok(acquire_with(&state));
}

#[test]
fn registration_comes_from_the_owner_and_restricted_connections_do_nothing_more() {
    let daemon = Daemon::start();
    let wrong = python_register(
        &daemon.socket(),
        "1b2c3d4e-0000-4000-8000-000000000001",
        false,
        false,
    );
    assert!(
        wrong
            .lines()
            .next()
            .unwrap()
            .contains("must be registered from its own process (pid 1)"),
        "{wrong}"
    );

    let restricted = python_register(
        &daemon.socket(),
        "1b2c3d4e-0000-4000-8000-000000000002",
        true,
        true,
    );
    let lines: Vec<&str> = restricted.lines().collect();
    assert!(lines[0].contains("\"ok\""), "{restricted}");
    assert!(
        lines[1].contains("this lock manager connection has been restricted"),
        "{restricted}"
    );
    assert_eq!(
        lines[2], "closed",
        "a restricted connection is closed after a refused request"
    );

    let open = python_register(
        &daemon.socket(),
        "1b2c3d4e-0000-4000-8000-000000000003",
        true,
        false,
    );
    assert!(
        open.lines().nth(1).unwrap().contains("\"status\""),
        "unrestricted connections go on: {open}"
    );
}

#[test]
fn hostile_clients_get_an_error_and_change_nothing() {
    let daemon = Daemon::start();
    let a = Owner::new("vm-a", 1);
    expect_ok(acquire(&daemon, &a, &[disk("/img/h.img", Mode::Exclusive)]));
    let before = daemon.locks();
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("garbage", framed("\u{1}\u{2}not json"), "malformed message"),
        ("oversized", (u32::MAX).to_be_bytes().to_vec(), "exceeds"),
        (
            "unknown field",
            framed(r#"{"version":1,"request":"status","sudo":true}"#),
            "unknown field",
        ),
        (
            "wrong version",
            framed(r#"{"version":2,"request":"status"}"#),
            "protocol version 2 is not supported",
        ),
        (
            "release of someone else's lock by a wrong type",
            framed(
                r#"{"version":1,"request":{"release":{"owner":{"uuid":1,"name":"x","id":1,"pid":1,"uri":null},"resources":[]}}}"#,
            ),
            "invalid type",
        ),
    ];
    for (what, bytes, expected) in cases {
        let reply = raw_exchange(&daemon.socket(), &bytes);
        assert!(
            reply.contains("\"error\"") && reply.contains(expected),
            "{what}: {reply}"
        );
    }
    assert_eq!(daemon.locks(), before, "nothing changed");
    let b = Owner::new("vm-b", 2);
    expect_error(
        acquire(&daemon, &b, &[disk("/img/h.img", Mode::Exclusive)]),
        ErrorKind::Busy,
    );
}

#[test]
fn a_restarted_daemon_takes_back_the_locks_of_running_domains_only() {
    let mut daemon = Daemon::start();
    let (a, mut c) = (Owner::new("vm-a", 1), Owner::new("vm-c", 3));
    expect_ok(acquire(
        &daemon,
        &a,
        &[disk("/img/keep.img", Mode::Exclusive)],
    ));
    expect_ok(acquire(
        &daemon,
        &c,
        &[disk("/img/gone.img", Mode::Exclusive)],
    ));
    let keep_file = daemon
        .locks()
        .into_iter()
        .find(|l| l.resource == "disk /img/keep.img")
        .unwrap()
        .target;

    let Reply::Status { restored, .. } = daemon.call(Request::Status) else {
        panic!("no status reply");
    };
    assert_eq!(restored, None, "a first start found no table to take back");

    daemon.kill(); // a crash: SIGKILL
    assert!(
        PosixLocker::take(&keep_file).is_some(),
        "while the daemon is down its OFD locks are gone"
    );
    c.kill(); // vm-c stops while the daemon is down
    daemon.spawn();

    let locks = daemon.locks();
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert_eq!(
        (locks[0].resource.as_str(), locks[0].owners.as_slice()),
        ("disk /img/keep.img", ["vm-a".to_owned()].as_slice())
    );
    assert!(
        PosixLocker::take(&keep_file).is_none(),
        "vm-a's lock is held again"
    );
    let Reply::Status {
        owners, restored, ..
    } = daemon.call(Request::Status)
    else {
        panic!("no status reply");
    };
    let names: Vec<&str> = owners.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names,
        ["vm-a"],
        "vm-c stopped while the daemon was down: dropped"
    );
    // Its status says what it found and what it took back.
    let restored = restored.expect("a restarted daemon says what it restored");
    assert_eq!(
        (restored.found, restored.locks, restored.domains),
        (2, 1, 1),
        "{restored:?}"
    );
    let b = Owner::new("vm-b", 2);
    expect_error(
        acquire(&daemon, &b, &[disk("/img/keep.img", Mode::Exclusive)]),
        ErrorKind::Busy,
    );
}

#[test]
fn a_lock_taken_while_the_daemon_was_down_powers_the_domain_off() {
    let mut daemon = Daemon::start();
    let mut a = Owner::new("vm-a", 1);
    expect_ok(acquire(
        &daemon,
        &a,
        &[disk("/img/stolen.img", Mode::Exclusive)],
    ));
    let file = daemon.locks()[0].target.clone();
    daemon.kill();
    let _thief = PosixLocker::take(&file).expect("the lock is free while the daemon is down");
    daemon.spawn();
    let status = a.child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "on_lockfailure=poweroff kills QEMU"
    );
    let Reply::Events { events } = daemon.call(Request::Events { after: 0 }) else {
        panic!("no events reply");
    };
    assert!(
        matches!(&events[..], [Event { what: EventKind::LockLost { domain, detail }, .. }, ..]
            if domain == "vm-a" && detail.contains("disk /img/stolen.img") && detail.contains("powered off")),
        "{events:?}"
    );
    assert!(daemon.locks().is_empty());
}

#[test]
fn a_corrupt_state_file_stops_the_daemon_and_is_kept() {
    let mut daemon = Daemon::start();
    daemon.kill();
    std::fs::write(
        daemon.state_file(),
        b"{\"format\": 1, \"backend\": \"file\", \"owners\": [",
    )
    .unwrap();
    let status = daemon.spawn_raw().wait().unwrap();
    assert!(!status.success());
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "{} is not a usable lockmgrd state file",
            daemon.state_file().display()
        )),
        "{log}"
    );
    assert_eq!(
        std::fs::read(daemon.state_file()).unwrap(),
        b"{\"format\": 1, \"backend\": \"file\", \"owners\": ["
    );
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused() {
    let daemon = Daemon::start();
    // Another state_dir, the same socket.
    let other = daemon.dir.path().join("other.conf");
    let d = daemon.dir.path().display();
    std::fs::write(
        &other,
        format!("socket_path = \"{d}/file.sock\"\nstate_dir = \"{d}/other-state\"\n"),
    )
    .unwrap();
    let status = daemon.spawn_with_config(&other).wait().unwrap();
    assert!(!status.success());
    assert!(
        daemon.log().contains("another lockmgrd is already serving"),
        "{}",
        daemon.log()
    );
    let meta = std::fs::metadata(daemon.socket()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
}
