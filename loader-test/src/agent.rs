//! `agent`: runs the owners of matrix cells on another machine.
//!
//! `lockmgr-loader-test agent --listen ADDR:PORT --plugin dlm=PATH` listens for matrix cells
//! (`matrix --remote-node ADDR:PORT`). Each connection is one cell: the agent starts a session
//! process of its own (`__agent-session`, in a process group of its own, with a scratch directory
//! of its own) that sets up the plugin's profile on this machine (for dlm: a `lockmgrd --backend
//! dlm` of this node), loads the plugin as libvirtd does, and then makes the calls of the cell's
//! remote owners as they come: register (a real fork of libvirt's pre-exec child, whose QEMU
//! stand-in keeps running here), acquire / release / inquire in fresh contexts, kill of a
//! stand-in, libvirtd and daemon restarts. One JSON object per line each way ([`Request`],
//! [`Reply`]), over TCP with Nagle off.
//!
//! When the cell ends — `finish`, the connection closing, the cell being killed — the session
//! kills its stand-ins, deinits the plugin and stops its daemon; the agent then SIGKILLs whatever
//! is left in the session's process group and removes its scratch directory. The agent loads only
//! the plugins named on its command line, and starts only its own daemons: a client chooses
//! among them, it never names a program. It is a test tool: listen on a private network only.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use lockmgr::host::ReportedError;
use lockmgr::{Access, Domain, Lease, Resource, Uuid};
use serde::{Deserialize, Serialize};

use crate::daemons::{self, Layout, PluginSpec};
use crate::harness_sys;
use crate::matrix::ToolArgs;
use crate::node::{Failure, LocalNode, OwnerNode};
use crate::scenario::Mode;

/// Arguments of `agent`.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Where to listen for matrix cells (an address of a private test network).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: String,
    /// A plugin cells may ask for, PROFILE=PATH (the same path the cells use); repeatable.
    #[arg(long = "plugin", value_name = "PLUGIN", required = true)]
    pub plugins: Vec<String>,
    #[command(flatten)]
    pub tools: ToolArgs,
}

/// Arguments of `__agent-session`.
#[derive(clap::Args, Debug)]
pub struct SessionArgs {
    #[arg(long)]
    scratch: PathBuf,
    #[arg(long = "plugin")]
    plugins: Vec<String>,
    #[command(flatten)]
    tools: ToolArgs,
}

/// What a cell asks for first: the plugin and how to set it up on the agent's machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setup {
    /// The plugin, as the agent was told it (same path on both machines).
    pub plugin: PathBuf,
    /// Its profile (must be the one the agent has for that path).
    pub profile: String,
    /// The cell's lockspace directory (`file_lockspace_dir`), when the scenario wants one: the
    /// same directory, so that both machines lock the same files (file profile, one host).
    pub lockspace: Option<PathBuf>,
    /// `scenario × plugin`, for the agent's log.
    pub cell: String,
}

/// A domain as the wire carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireDomain {
    uuid: String,
    name: String,
    id: u32,
}

/// A resource as the wire carries it: the very path or lease the cell gives its own owners.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum WireResource {
    /// A disk image.
    Disk {
        /// Its path (on the cell's machine; the lock manager names the resource after it).
        path: PathBuf,
        /// Its mode.
        mode: Mode,
    },
    /// A `<lease>`.
    Lease {
        /// `<key>`
        key: String,
        /// `<lockspace>`
        lockspace: Option<String>,
        /// `<target path>`
        path: Option<PathBuf>,
        /// `<target offset>`
        offset: Option<u64>,
        /// Its mode.
        mode: Mode,
    },
}

fn mode_of(access: Access) -> Mode {
    match access {
        Access::Exclusive => Mode::Exclusive,
        Access::Shared => Mode::Shared,
        Access::ReadOnly => Mode::Readonly,
    }
}

impl From<&Resource> for WireResource {
    fn from(resource: &Resource) -> Self {
        match resource {
            Resource::Disk { path, access } => WireResource::Disk {
                path: path.clone(),
                mode: mode_of(*access),
            },
            Resource::Lease { lease, access } => WireResource::Lease {
                key: lease.key.clone(),
                lockspace: lease.lockspace.clone(),
                path: lease.path.clone(),
                offset: lease.offset,
                mode: mode_of(*access),
            },
        }
    }
}

impl From<&WireResource> for Resource {
    fn from(wire: &WireResource) -> Self {
        match wire {
            WireResource::Disk { path, mode } => Resource::Disk {
                path: path.clone(),
                access: mode.access(),
            },
            WireResource::Lease {
                key,
                lockspace,
                path,
                offset,
                mode,
            } => Resource::Lease {
                lease: Lease {
                    key: key.clone(),
                    lockspace: lockspace.clone(),
                    path: path.clone(),
                    offset: *offset,
                },
                access: mode.access(),
            },
        }
    }
}

/// A cell's request; one per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// First: set up the plugin's profile and load the plugin.
    Setup(Setup),
    /// The pre-exec child of `owner`'s domain.
    Register {
        /// The owner's name in the scenario.
        owner: String,
        /// Its domain.
        domain: WireDomain,
        /// Its resources.
        resources: Vec<WireResource>,
    },
    /// `Acquire(state, 0)` in a fresh context (acquire, hotplug, resume).
    Acquire {
        /// Whose.
        owner: String,
        /// The context's resources.
        resources: Vec<WireResource>,
        /// The state string of a resume.
        state: Option<String>,
    },
    /// `Release(&state)` or `Release(NULL)` in a fresh context (pause, detach, unplug).
    Release {
        /// Whose.
        owner: String,
        /// The context's resources.
        resources: Vec<WireResource>,
        /// Whether to ask for the state string.
        want_state: bool,
    },
    /// `Inquire(&state)` in a fresh context.
    Inquire {
        /// Whose.
        owner: String,
        /// The context's resources.
        resources: Vec<WireResource>,
    },
    /// SIGKILL of the owner's stand-in.
    Kill {
        /// Whose.
        owner: String,
    },
    /// drvDeinit + dlclose, dlopen + drvInit.
    RestartLibvirtd,
    /// SIGKILL of the daemon, and a new instance.
    RestartDaemon,
    /// The end of the cell: clean up, then the session ends.
    Finish,
}

/// An error the plugin reported, as the wire carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireReported {
    domain: i32,
    code: i32,
    message: String,
}

/// The answer to one request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    /// Done. `detail` is absent for a daemon restart or log when the profile has no daemon.
    Done {
        /// What happened (or the log).
        detail: Option<String>,
        /// The stand-in's pid (register).
        pid: Option<u32>,
        /// The state string (release, inquire).
        state: Option<String>,
    },
    /// The call failed.
    Failed {
        /// Why.
        message: String,
        /// What the plugin reported.
        reported: Option<WireReported>,
    },
}

impl Reply {
    fn done(detail: impl Into<String>) -> Self {
        Reply::Done {
            detail: Some(detail.into()),
            pid: None,
            state: None,
        }
    }

    fn state(state: Option<String>) -> Self {
        Reply::Done {
            detail: None,
            pid: None,
            state,
        }
    }
}

impl From<Failure> for Reply {
    fn from(failure: Failure) -> Self {
        Reply::Failed {
            message: failure.message,
            reported: failure.reported.map(|r| WireReported {
                domain: r.domain,
                code: r.code,
                message: r.message,
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The agent.

/// `agent`: accepts cells until SIGINT / SIGTERM; each in a session process of its own.
pub fn command(args: &AgentArgs) -> u8 {
    match serve(args) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("lockmgr-loader-test agent: {err}");
            2
        }
    }
}

fn log(message: &str) {
    eprintln!("lockmgr-loader-test agent: {message}");
}

fn serve(args: &AgentArgs) -> Result<(), String> {
    let plugins = daemons::plugins_from_args(&args.plugins)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    harness_sys::kill_groups_on_interrupt()
        .map_err(|e| format!("cannot set up the interrupt handler: {e}"))?;
    let listener = TcpListener::bind(&args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    // Polled, so that SIGTERM (whose handler restarts system calls) ends the loop.
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("{}: {e}", args.listen))?;
    log(&format!(
        "listening on {} for matrix cells; plugins: {}",
        args.listen,
        plugins
            .iter()
            .map(|p| format!("{}={}", p.profile, p.path.display()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut sessions: Vec<std::thread::JoinHandle<()>> = Vec::new();
    while !harness_sys::terminating() {
        match listener.accept() {
            Ok((stream, peer)) => {
                let exe = exe.clone();
                let session_args = session_args(args);
                sessions.retain(|s| !s.is_finished());
                sessions.push(std::thread::spawn(move || {
                    if let Err(err) = run_session(&exe, &session_args, stream) {
                        log(&format!("session from {peer}: {err}"));
                    }
                }));
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => {
                log(&format!("accept: {err}"));
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    // The signal handler has SIGKILLed every session's group; let the threads reap and clean up.
    for session in sessions {
        let _ = session.join();
    }
    log("stopped");
    Ok(())
}

fn session_args(args: &AgentArgs) -> Vec<String> {
    let mut out = Vec::new();
    for plugin in &args.plugins {
        out.push("--plugin".to_owned());
        out.push(plugin.clone());
    }
    out.extend(args.tools.tools().to_args());
    out
}

/// One cell: a session process on the connection, then the sweep of its group and scratch.
fn run_session(exe: &Path, args: &[String], stream: TcpStream) -> Result<(), String> {
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| e.to_string())?;
    let scratch = tempfile::Builder::new()
        .prefix("lockmgr-agent-")
        .tempdir()
        .map_err(|e| format!("cannot create a scratch directory: {e}"))?;
    let input = stream.try_clone().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .arg("__agent-session")
        .arg("--scratch")
        .arg(scratch.path())
        .args(args)
        .stdin(Stdio::from(OwnedFd::from(input)))
        .stdout(Stdio::from(OwnedFd::from(stream)))
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start a session: {e}"))?;
    let pid = child.id();
    harness_sys::track_group(pid);
    // The session leaves when its cell does; keep it unreaped until its group is swept.
    while !harness_sys::wait_exit_keep_zombie(pid, Duration::ZERO).unwrap_or(true) {
        std::thread::sleep(Duration::from_millis(50));
    }
    harness_sys::signal_process_group(pid, libc::SIGKILL);
    harness_sys::untrack_group(pid);
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("the session process ended with {status}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The session.

/// `__agent-session`: serves one cell on stdin / stdout (the connection).
pub fn session_command(args: &SessionArgs) -> u8 {
    let mut out = match crate::sys::take_stdout_for_events() {
        Ok(file) => file,
        Err(err) => {
            eprintln!("lockmgr-loader-test agent session: cannot set up the replies: {err}");
            return crate::EXIT_FAIL;
        }
    };
    let allowed = match daemons::plugins_from_args(&args.plugins) {
        Ok(plugins) => plugins,
        Err(err) => {
            eprintln!("lockmgr-loader-test agent session: {err}");
            return 2;
        }
    };
    let mut session = Session {
        args,
        allowed,
        node: None,
        cell: String::new(),
    };
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let (reply, finished) = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Finish) => (session.finish(), true),
            Ok(request) => (session.handle(request), false),
            Err(err) => (
                Reply::Failed {
                    message: format!("bad request ({err}): {line}"),
                    reported: None,
                },
                false,
            ),
        };
        let mut text = serde_json::to_vec(&reply).unwrap_or_default();
        text.push(b'\n');
        if out.write_all(&text).and_then(|()| out.flush()).is_err() || finished {
            break;
        }
    }
    // The cell went away without `finish` (or finished): nothing may stay behind.
    if let Some(mut node) = session.node.take() {
        if let Err(err) = node.finish() {
            eprintln!(
                "lockmgr-loader-test agent session ({}): at the end: {err}",
                session.cell
            );
        }
    }
    0
}

struct Session<'a> {
    args: &'a SessionArgs,
    allowed: Vec<PluginSpec>,
    node: Option<LocalNode>,
    cell: String,
}

fn resources(wire: &[WireResource]) -> Vec<Resource> {
    wire.iter().map(Resource::from).collect()
}

impl Session<'_> {
    fn setup(&mut self, setup: &Setup) -> Result<String, String> {
        if self.node.is_some() {
            return Err("this session is already set up".into());
        }
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        let spec = self
            .allowed
            .iter()
            .find(|p| same(&p.path, &setup.plugin))
            .ok_or_else(|| {
                format!(
                    "this agent does not load {} (it was started with --plugin {})",
                    setup.plugin.display(),
                    self.args.plugins.join(" --plugin ")
                )
            })?;
        if spec.profile.as_str() != setup.profile {
            return Err(format!(
                "{} is a {} plugin here, not {}",
                setup.plugin.display(),
                spec.profile,
                setup.profile
            ));
        }
        self.cell = setup.cell.clone();
        let mut layout = Layout::create(&self.args.scratch)
            .map_err(|e| format!("scratch {}: {e}", self.args.scratch.display()))?;
        if let Some(dir) = &setup.lockspace {
            layout.lockspace = dir.clone();
        }
        let env = daemons::prepare(
            spec.profile,
            &spec.path,
            &self.args.tools.tools(),
            &layout,
            setup.lockspace.is_some(),
        )
        .map_err(|e| format!("setting up {}: {e}", spec.profile))?;
        let detail = env.describe();
        self.node = Some(LocalNode::new(&spec.path, env)?);
        eprintln!(
            "lockmgr-loader-test agent session: {} set up ({detail})",
            self.cell
        );
        Ok(detail)
    }

    fn handle(&mut self, request: Request) -> Reply {
        if let Request::Setup(setup) = &request {
            return match self.setup(setup) {
                Ok(detail) => Reply::done(detail),
                Err(message) => Reply::Failed {
                    message,
                    reported: None,
                },
            };
        }
        let Some(node) = self.node.as_mut() else {
            return Reply::Failed {
                message: "the session is not set up (setup comes first)".into(),
                reported: None,
            };
        };
        let result = match request {
            Request::Setup(_) | Request::Finish => Err(Failure::harness(
                "setup and finish are handled before the plugin's calls",
            )),
            Request::Register {
                owner,
                domain,
                resources: wire,
            } => Uuid::parse(&domain.uuid)
                .map_err(|e| Failure::harness(e.to_string()))
                .and_then(|uuid| {
                    let domain = Domain {
                        uuid,
                        name: domain.name,
                        id: domain.id,
                        pid: 0,
                        uri: None,
                    };
                    node.register(&owner, &domain, &resources(&wire))
                })
                .map(|(pid, detail)| Reply::Done {
                    detail: Some(detail),
                    pid: Some(pid),
                    state: None,
                }),
            Request::Acquire {
                owner,
                resources: wire,
                state,
            } => node
                .acquire(&owner, &resources(&wire), state.as_deref())
                .map(|()| Reply::done("locked")),
            Request::Release {
                owner,
                resources: wire,
                want_state,
            } => node
                .release(&owner, &resources(&wire), want_state)
                .map(Reply::state),
            Request::Inquire {
                owner,
                resources: wire,
            } => node.inquire(&owner, &resources(&wire)).map(Reply::state),
            Request::Kill { owner } => node.kill(&owner).map(Reply::done),
            Request::RestartLibvirtd => node.restart_libvirtd().map(Reply::done),
            Request::RestartDaemon => node.restart_daemon().map(|detail| Reply::Done {
                detail,
                pid: None,
                state: None,
            }),
        };
        result.unwrap_or_else(Reply::from)
    }

    fn finish(&mut self) -> Reply {
        match self.node.take() {
            Some(mut node) => match node.finish() {
                Ok(()) => Reply::done("finished"),
                Err(message) => Reply::Failed {
                    message,
                    reported: None,
                },
            },
            None => Reply::done("nothing was set up"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The cell's side.

/// How long to wait for the agent to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The owners a matrix cell runs on another machine, through that machine's agent.
#[derive(Debug)]
pub struct RemoteNode {
    address: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    finished: bool,
}

impl RemoteNode {
    /// Connects to the agent at `address` and sets the plugin up there; returns the node and
    /// the agent's description of its environment (config, daemon pid).
    pub fn connect(address: &str, setup: &Setup) -> Result<(RemoteNode, String), String> {
        let place = |e: &dyn std::fmt::Display| format!("the agent on {address}: {e}");
        let target = address
            .to_socket_addrs()
            .map_err(|e| place(&e))?
            .next()
            .ok_or_else(|| place(&"the address resolves to nothing"))?;
        let stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT).map_err(|e| {
            place(&format!(
                "{e} (is `lockmgr-loader-test agent --listen {address}` running there?)"
            ))
        })?;
        stream.set_nodelay(true).map_err(|e| place(&e))?;
        let reader = BufReader::new(stream.try_clone().map_err(|e| place(&e))?);
        let mut node = RemoteNode {
            address: address.to_owned(),
            reader,
            writer: stream,
            finished: false,
        };
        let detail = match node.call(&Request::Setup(setup.clone())) {
            Ok(Reply::Done { detail, .. }) => detail.unwrap_or_default(),
            Ok(Reply::Failed { message, .. }) => return Err(place(&message)),
            Err(failure) => return Err(failure.message),
        };
        Ok((node, detail))
    }

    /// The agent's host, as given (`10.99.0.2`), for labels.
    pub fn host(&self) -> &str {
        self.address
            .rsplit_once(':')
            .map_or(self.address.as_str(), |(host, _)| host)
    }

    fn call(&mut self, request: &Request) -> Result<Reply, Failure> {
        let place = |e: &dyn std::fmt::Display| {
            Failure::harness(format!("the agent on {}: {e}", self.address))
        };
        let mut text = serde_json::to_vec(request).map_err(|e| place(&e))?;
        text.push(b'\n');
        self.writer
            .write_all(&text)
            .and_then(|()| self.writer.flush())
            .map_err(|e| place(&e))?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(place(
                &"the connection closed (the session ended or crashed)",
            )),
            Ok(_) => serde_json::from_str(&line)
                .map_err(|e| place(&format!("unreadable reply ({e}): {line}"))),
            Err(err) => Err(place(&err)),
        }
    }

    /// A request whose failure is the plugin's (or the agent's) failure.
    fn done(&mut self, request: &Request) -> Result<Done, Failure> {
        match self.call(request)? {
            Reply::Done { detail, pid, state } => Ok(Done { detail, pid, state }),
            Reply::Failed { message, reported } => Err(Failure {
                message,
                reported: reported.map(|r| ReportedError {
                    domain: r.domain,
                    code: r.code,
                    message: r.message,
                }),
            }),
        }
    }
}

/// What a successful request gave back.
struct Done {
    detail: Option<String>,
    pid: Option<u32>,
    state: Option<String>,
}

fn wire(resources: &[Resource]) -> Vec<WireResource> {
    resources.iter().map(WireResource::from).collect()
}

impl OwnerNode for RemoteNode {
    fn name(&self) -> String {
        self.address.clone()
    }

    fn register(
        &mut self,
        owner: &str,
        domain: &Domain,
        resources: &[Resource],
    ) -> Result<(u32, String), Failure> {
        let Done { detail, pid, .. } = self.done(&Request::Register {
            owner: owner.to_owned(),
            domain: WireDomain {
                uuid: domain.uuid.to_string(),
                name: domain.name.clone(),
                id: domain.id,
            },
            resources: wire(resources),
        })?;
        Ok((
            pid.unwrap_or(0),
            format!("on {}: {}", self.address, detail.unwrap_or_default()),
        ))
    }

    fn acquire(
        &mut self,
        owner: &str,
        resources: &[Resource],
        state: Option<&str>,
    ) -> Result<(), Failure> {
        self.done(&Request::Acquire {
            owner: owner.to_owned(),
            resources: wire(resources),
            state: state.map(str::to_owned),
        })
        .map(|_| ())
    }

    fn release(
        &mut self,
        owner: &str,
        resources: &[Resource],
        want_state: bool,
    ) -> Result<Option<String>, Failure> {
        self.done(&Request::Release {
            owner: owner.to_owned(),
            resources: wire(resources),
            want_state,
        })
        .map(|done| done.state)
    }

    fn inquire(&mut self, owner: &str, resources: &[Resource]) -> Result<Option<String>, Failure> {
        self.done(&Request::Inquire {
            owner: owner.to_owned(),
            resources: wire(resources),
        })
        .map(|done| done.state)
    }

    fn kill(&mut self, owner: &str) -> Result<String, Failure> {
        let Done { detail, .. } = self.done(&Request::Kill {
            owner: owner.to_owned(),
        })?;
        Ok(format!(
            "on {}: {}",
            self.address,
            detail.unwrap_or_default()
        ))
    }

    fn restart_libvirtd(&mut self) -> Result<String, Failure> {
        self.done(&Request::RestartLibvirtd)
            .map(|done| done.detail.unwrap_or_default())
    }

    fn restart_daemon(&mut self) -> Result<Option<String>, Failure> {
        self.done(&Request::RestartDaemon).map(|done| done.detail)
    }

    fn finish(&mut self) -> Result<(), String> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let result = self
            .done(&Request::Finish)
            .map(|_| ())
            .map_err(|f| f.message);
        let _ = self.writer.shutdown(Shutdown::Both);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_cross_the_wire_unchanged() {
        let resources = vec![
            Resource::Disk {
                path: PathBuf::from("/tmp/x/disks/vm.img"),
                access: Access::Shared,
            },
            Resource::Lease {
                lease: Lease {
                    key: "vm-lease".into(),
                    lockspace: Some("matrix".into()),
                    path: Some(PathBuf::from("/tmp/x/leases")),
                    offset: Some(0),
                },
                access: Access::Exclusive,
            },
        ];
        let text = serde_json::to_string(&wire(&resources)).unwrap();
        let back: Vec<WireResource> = serde_json::from_str(&text).unwrap();
        let back: Vec<Resource> = back.iter().map(Resource::from).collect();
        assert_eq!(back, resources);
    }

    #[test]
    fn requests_and_replies_are_one_line_of_json_each() {
        let request = Request::Acquire {
            owner: "b".into(),
            resources: Vec::new(),
            state: Some("lockmgr1:abc".into()),
        };
        let text = serde_json::to_string(&request).unwrap();
        assert!(!text.contains('\n'));
        assert!(text.contains("\"op\":\"acquire\""), "{text}");
        let reply: Reply = Failure {
            message: "busy".into(),
            reported: Some(ReportedError {
                domain: 42,
                code: 87,
                message: "disk is locked".into(),
            }),
        }
        .into();
        let text = serde_json::to_string(&reply).unwrap();
        match serde_json::from_str::<Reply>(&text).unwrap() {
            Reply::Failed {
                reported: Some(r), ..
            } => assert_eq!(r.code, 87),
            other => panic!("{other:?}"),
        }
    }
}
