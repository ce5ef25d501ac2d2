//! lockmgrd as a process: conflicts between domains, owner death, restricted connections,
//! hostile clients, and what survives a daemon restart.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockmgr::proto::{
    Client, ErrorKind, FailureAction, LockStatus, Mode, OwnerInfo, Reply, Request, ResourceKind,
    ResourceSpec,
};

/// A lockmgrd running on a scratch config, killed on drop.
struct Daemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("qemu-file.conf"),
            format!("file_lockspace_dir = \"{d}/lockspace\"\nsocket_path = \"{d}/file.sock\"\nstate_dir = \"{d}/state\"\n"),
        )
        .unwrap();
        let mut daemon = Daemon { dir, child: None };
        daemon.spawn();
        daemon
    }

    fn spawn_raw(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_lockmgrd"))
            .arg("--config")
            .arg(self.dir.path().join("qemu-file.conf"))
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.log_path())
                    .unwrap(),
            )
            .spawn()
            .expect("start lockmgrd")
    }

    fn spawn(&mut self) {
        let mut child = self.spawn_raw();
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(self.socket()).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("lockmgrd exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "lockmgrd not ready after 10 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("file.sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("lockmgrd.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn state_file(&self) -> PathBuf {
        self.dir.path().join("state/locks.json")
    }

    fn client(&self) -> Client {
        Client::connect(&self.socket()).expect("connect")
    }

    fn call(&self, request: Request) -> Reply {
        self.client().call(&request).expect("call")
    }

    fn locks(&self) -> Vec<LockStatus> {
        match self.call(Request::Status) {
            Reply::Status { locks, .. } => locks,
            other => panic!("status: {other:?}"),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A process standing in for a domain's QEMU.
struct Owner {
    child: Child,
    info: OwnerInfo,
}

impl Owner {
    fn new(name: &str, uuid_tail: u8) -> Owner {
        let child = Command::new("sleep").arg("120").spawn().unwrap();
        let info = OwnerInfo {
            uuid: format!("7c1e{uuid_tail:04x}-5a2b-4c3d-8e9f-0a1b2c3d4e5f"),
            name: name.into(),
            id: u32::from(uuid_tail),
            pid: child.id(),
            uri: Some("qemu:///system".into()),
        };
        Owner { child, info }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.kill();
    }
}

fn disk(path: &str, mode: Mode) -> ResourceSpec {
    ResourceSpec {
        kind: ResourceKind::Disk,
        name: path.into(),
        mode,
    }
}

fn acquire(daemon: &Daemon, owner: &Owner, resources: &[ResourceSpec]) -> Reply {
    daemon.call(Request::Acquire {
        owner: owner.info.clone(),
        resources: resources.to_vec(),
        action: FailureAction::Poweroff,
        state: None,
    })
}

fn expect_error(reply: Reply, kind: ErrorKind) -> String {
    match reply {
        Reply::Error { kind: got, message } if got == kind => message,
        other => panic!("expected a {kind:?} error, got {other:?}"),
    }
}

fn expect_ok(reply: Reply) -> Option<String> {
    match reply {
        Reply::Ok { state } => state,
        other => panic!("expected Ok, got {other:?}"),
    }
}

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
    assert!(
        daemon
            .log()
            .contains(&format!("owner {} exited; freed 2 lock(s)", a.info.uuid)),
        "{}",
        daemon.log()
    );
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

/// Registers from a python process (the peer pid must be the owner's), optionally restricted,
/// then tries one more request; prints each reply.
fn python_register(socket: &Path, uuid: &str, claim_own_pid: bool, restrict: bool) -> String {
    let script = r#"
import json, os, socket, struct, sys
def call(s, req):
    body = json.dumps({"version": 1, "request": req}).encode()
    try:
        s.sendall(struct.pack(">I", len(body)) + body)
        head = s.recv(4)
    except OSError:
        return "closed"
    if len(head) < 4:
        return "closed"
    (n,) = struct.unpack(">I", head)
    data = b""
    while len(data) < n:
        data += s.recv(n - len(data))
    return data.decode()
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
pid = os.getpid() if sys.argv[3] == "1" else 1
owner = {"uuid": sys.argv[2], "name": "py", "id": 1, "pid": pid, "uri": None}
print(call(s, {"register": {"owner": owner, "restrict": sys.argv[4] == "1"}}))
print(call(s, "status"))
print(call(s, "status"))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(socket)
        .arg(uuid)
        .arg(if claim_own_pid { "1" } else { "0" })
        .arg(if restrict { "1" } else { "0" })
        .stderr(Stdio::inherit())
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).into_owned()
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

fn raw_exchange(socket: &Path, bytes: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(reply.get(4..).unwrap_or_default()).into_owned()
}

fn framed(body: &str) -> Vec<u8> {
    let mut frame = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(body.as_bytes());
    frame
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

/// Holds a POSIX lock on byte 0 of `path` (as virtlockd would) until dropped.
struct PosixLocker(Child);

impl PosixLocker {
    fn take(path: &str) -> Option<PosixLocker> {
        let script = format!(
            "import fcntl,sys,time\nf=open('{path}','a+')\ntry:\n fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB, 1, 0)\nexcept OSError:\n print('busy', flush=True); sys.exit(0)\nprint('locked', flush=True)\ntime.sleep(60)"
        );
        let mut child = Command::new("python3")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        if line.trim() == "locked" {
            Some(PosixLocker(child))
        } else {
            let _ = child.wait();
            None
        }
    }
}

impl Drop for PosixLocker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let log = daemon.log();
    assert!(
        log.contains("restored 1 of 2 lock(s) for 1 running domain(s)"),
        "{log}"
    );
    assert!(
        log.contains("domain 'vm-c'") && log.contains("stopped while the daemon was down"),
        "{log}"
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
    let log = daemon.log();
    assert!(
        log.contains("LOCK LOST: disk /img/stolen.img of domain 'vm-a'")
            && log.contains("powered off"),
        "{log}"
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
    let status = daemon.spawn_raw().wait().unwrap();
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
