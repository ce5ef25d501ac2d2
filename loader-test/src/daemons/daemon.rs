//! A lock daemon started by the harness: ready when it serves (its socket accepts connections;
//! lockmgrd has answered one), crashed and restarted on request, stopped by pid.

use std::fs::File;
use std::io::Read as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockmgr_proto::{Client, Reply, Request};

use crate::harness_sys;

/// A lock daemon the harness started, in the foreground, as its own child.
#[derive(Debug)]
pub struct Daemon {
    /// `virtlockd` or `lockmgrd`.
    pub name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Extra environment of the daemon.
    pub(super) env: Vec<(String, String)>,
    /// Stop with SIGKILL at once (sanlock: see [`start_sanlock`](super::sanlock::start_sanlock)).
    pub(super) kill_to_stop: bool,
    /// Start it in a process group of its own.
    pub(super) own_group: bool,
}

/// How long a daemon may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long lockmgrd may take, once it accepts connections, to take its table back and answer
/// (10,000 locks take seconds on a slow test node).
const SERVE_TIMEOUT: Duration = Duration::from_secs(120);

impl Daemon {
    pub(super) fn new(
        name: &'static str,
        program: PathBuf,
        args: Vec<String>,
        socket: PathBuf,
        log: PathBuf,
    ) -> Daemon {
        Daemon {
            name,
            program,
            args,
            socket,
            log,
            child: None,
            env: Vec::new(),
            kill_to_stop: false,
            own_group: false,
        }
    }

    /// The running instance's pid (0 when stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Starts an instance and waits until it serves: its socket accepts connections and, for
    /// lockmgrd, it has answered a request. (lockmgrd binds its socket before it takes back the
    /// locks of its table; a step made in between would find them free.)
    pub fn start(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        self.start_accepting()?;
        self.wait_serving()?;
        Ok(started.elapsed())
    }

    /// Starts an instance and waits until its socket accepts connections (and no longer).
    pub fn start_accepting(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: cannot open {}: {e}", self.name, self.log.display()))?;
        let log_err = log.try_clone().map_err(|e| format!("{}: {e}", self.name))?;
        let mut command = Command::new(&self.program);
        if self.own_group {
            command.process_group(0);
        }
        let mut child = command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                self.child = Some(child);
                return Ok(started.elapsed());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{} {} exited at start ({status}): {}",
                    self.program.display(),
                    self.args.join(" "),
                    self.log_tail()
                ));
            }
            if started.elapsed() > READY_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not accept connections on {} within {} s: {}",
                    self.name,
                    self.socket.display(),
                    READY_TIMEOUT.as_secs(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until lockmgrd answers a request (it serves only once it has taken back its
    /// table's locks): its Status reply. `None` at once for another daemon.
    pub fn wait_serving(&self) -> Result<Option<Reply>, String> {
        if self.name != "lockmgrd" {
            return Ok(None);
        }
        let started = Instant::now();
        loop {
            match Client::connect(&self.socket).and_then(|mut c| c.call(&Request::Status)) {
                Ok(reply) => return Ok(Some(reply)),
                Err(err) if started.elapsed() > SERVE_TIMEOUT => {
                    return Err(format!(
                        "{} accepted connections on {} but did not answer within {} s: {err}: {}",
                        self.name,
                        self.socket.display(),
                        SERVE_TIMEOUT.as_secs(),
                        self.log_tail()
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    /// SIGKILLs the instance (a crash) and reaps it.
    pub fn crash(&mut self) -> Result<u32, String> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| format!("{} is not running", self.name))?;
        let pid = child.id();
        child
            .kill()
            .map_err(|e| format!("kill -9 {} ({pid}): {e}", self.name))?;
        child
            .wait()
            .map_err(|e| format!("waiting for {} ({pid}): {e}", self.name))?;
        Ok(pid)
    }

    /// SIGTERM, then SIGKILL after 5 s; reports an instance that had already died.
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{} had died before the end ({status}): {}",
                self.name,
                self.log_tail()
            ));
        }
        if self.kill_to_stop {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(());
        }
        let _ = harness_sys::signal_pid(child.id(), rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!(
            "{} ignored SIGTERM for 5 s and was killed",
            self.name
        ))
    }

    /// When lockmgrd freed the locks of the domain with `uuid` after its QEMU exited (its
    /// `events`); `None` for another daemon, or when it reported no such release.
    pub fn released_at(&self, uuid: &str) -> Option<std::time::SystemTime> {
        use lockmgr_proto::EventKind;
        if self.name != "lockmgrd" {
            return None;
        }
        let reply = Client::connect(&self.socket)
            .ok()?
            .call(&Request::Events { after: 0 })
            .ok()?;
        let Reply::Events { events } = reply else {
            return None;
        };
        events.iter().rev().find_map(|event| match &event.what {
            EventKind::OwnerExited { uuid: exited, .. } if exited == uuid => {
                Some(std::time::UNIX_EPOCH + Duration::from_millis(event.at_ms))
            }
            _ => None,
        })
    }

    /// The last lines the daemon logged.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(4)..].join(" | ");
        if tail.is_empty() {
            "(it logged nothing)".into()
        } else {
            tail
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
