//! What lockmgrd's process tests share: a daemon on a scratch config, stand-in owners, calls.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockmgr_proto::{
    Client, ErrorKind, FailureAction, LockStatus, Mode, OwnerInfo, Reply, Request, ResourceKind,
    ResourceSpec,
};

/// A lockmgrd running on a scratch config, killed on drop.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    /// A command the daemon runs under (`prlimit …`, `unshare …`), if any.
    wrapper: Vec<String>,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_wrapped(&[])
    }

    /// Starts the daemon as `WRAPPER… lockmgrd --config …`.
    pub fn start_wrapped(wrapper: &[&str]) -> Daemon {
        let mut daemon = Daemon::configured(wrapper);
        daemon.spawn();
        daemon
    }

    /// A scratch config and no daemon yet.
    pub fn configured(wrapper: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("qemu-file.conf"),
            format!("file_lockspace_dir = \"{d}/lockspace\"\nsocket_path = \"{d}/file.sock\"\nstate_dir = \"{d}/state\"\n"),
        )
        .unwrap();
        Daemon {
            dir,
            child: None,
            wrapper: wrapper.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Runs the next start under `wrapper`.
    pub fn set_wrapper(&mut self, wrapper: &[&str]) {
        self.wrapper = wrapper.iter().map(|s| (*s).to_owned()).collect();
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("qemu-file.conf")
    }

    pub fn spawn_raw(&self) -> Child {
        self.spawn_with_config(&self.config())
    }

    pub fn spawn_with_config(&self, config: &Path) -> Child {
        let bin = env!("CARGO_BIN_EXE_lockmgrd");
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(bin);
                command
            }
            None => Command::new(bin),
        };
        command
            .arg("--config")
            .arg(config)
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

    pub fn spawn(&mut self) {
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

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("file.sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("lockmgrd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.path().join("state/locks.json")
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket()).expect("connect")
    }

    pub fn call(&self, request: Request) -> Reply {
        self.client().call(&request).expect("call")
    }

    pub fn locks(&self) -> Vec<LockStatus> {
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
pub struct Owner {
    pub child: Child,
    pub info: OwnerInfo,
}

impl Owner {
    pub fn new(name: &str, uuid_tail: u8) -> Owner {
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

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The target of `spec` in the model backends of the table tests: named after the resource.
pub fn model_target(
    spec: &ResourceSpec,
) -> Result<lockmgrd::backend::Target, lockmgrd::backend::BackendError> {
    Ok(lockmgrd::backend::Target {
        id: spec.name.clone(),
    })
}

pub fn disk(path: &str, mode: Mode) -> ResourceSpec {
    ResourceSpec {
        kind: ResourceKind::Disk,
        name: path.into(),
        mode,
    }
}

pub fn acquire(daemon: &Daemon, owner: &Owner, resources: &[ResourceSpec]) -> Reply {
    daemon.call(Request::Acquire {
        owner: owner.info.clone(),
        resources: resources.to_vec(),
        action: FailureAction::Poweroff,
        state: None,
    })
}

pub fn expect_error(reply: Reply, kind: ErrorKind) -> String {
    match reply {
        Reply::Error { kind: got, message } if got == kind => message,
        other => panic!("expected a {kind:?} error, got {other:?}"),
    }
}

pub fn expect_ok(reply: Reply) -> Option<String> {
    match reply {
        Reply::Ok { state } => state,
        other => panic!("expected Ok, got {other:?}"),
    }
}

/// Registers from a python process (the peer pid must be the owner's), optionally restricted,
/// then tries one more request; prints each reply.
pub fn python_register(socket: &Path, uuid: &str, claim_own_pid: bool, restrict: bool) -> String {
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

pub fn raw_exchange(socket: &Path, bytes: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(reply.get(4..).unwrap_or_default()).into_owned()
}

pub fn framed(body: &str) -> Vec<u8> {
    let mut frame = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(body.as_bytes());
    frame
}

/// Holds a POSIX lock on byte 0 of `path` (as virtlockd would) until dropped.
pub struct PosixLocker(Child);

impl PosixLocker {
    pub fn take(path: &str) -> Option<PosixLocker> {
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
