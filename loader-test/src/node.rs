//! Where a scenario's owners run and their libvirt calls are made: in this process
//! ([`LocalNode`]: the plugin loaded here, its daemon started here, QEMU stand-ins forked from
//! here), or on another machine through its agent ([`crate::agent::RemoteNode`]). The matrix
//! drives both through [`OwnerNode`]; the agent serves a [`LocalNode`] to a remote matrix cell,
//! and `step` makes one call on one (the cluster tests' owners, one invocation per call).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lockmgr::host::{self, ForkedOwner, HostError, Plugin, RegisterOutcome};
use lockmgr::{Domain, LockFailureAction, Resource};

use crate::daemons::PluginEnv;
use crate::harness_sys;
use crate::sequences::{self, Call, SequenceError};

/// Why a step's calls failed: the message, and what the plugin reported through libvirt's error
/// functions (its code decides whether libvirt prints "resource busy").
#[derive(Debug, Clone)]
pub struct Failure {
    /// What went wrong, naming the call and the resource.
    pub message: String,
    /// The error the plugin reported, if it reported one.
    pub reported: Option<host::ReportedError>,
}

impl Failure {
    /// A failure of the harness itself (nothing reported by the plugin).
    pub fn harness(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            reported: None,
        }
    }
}

impl From<HostError> for Failure {
    fn from(err: HostError) -> Self {
        let reported = match &err {
            HostError::Callback { reported, .. } => reported.clone(),
            _ => None,
        };
        Failure {
            message: err.to_string(),
            reported,
        }
    }
}

/// The libvirt calls of a scenario's steps, for the owners placed on one machine. Every call
/// but `register` is made in a fresh context (New → AddResource… → call → Free), as libvirtd
/// makes it.
pub trait OwnerNode {
    /// Where this is, for messages: `this host` or the agent's address.
    fn name(&self) -> String;
    /// The pre-exec child: fork, `Acquire(NULL, REGISTER_ONLY|RESTRICT, &fd)`, exec a QEMU
    /// stand-in. Returns the stand-in's pid and a description.
    fn register(
        &mut self,
        owner: &str,
        domain: &Domain,
        resources: &[Resource],
    ) -> Result<(u32, String), Failure>;
    /// New(0, uri) + AddResource… + `Acquire(state, 0)`.
    fn acquire(
        &mut self,
        owner: &str,
        resources: &[Resource],
        state: Option<&str>,
    ) -> Result<(), Failure>;
    /// New(0, NULL) + AddResource… + `Release(&state)` (or `Release(NULL)`).
    fn release(
        &mut self,
        owner: &str,
        resources: &[Resource],
        want_state: bool,
    ) -> Result<Option<String>, Failure>;
    /// New(0, NULL) + AddResource… + `Inquire(&state)`.
    fn inquire(&mut self, owner: &str, resources: &[Resource]) -> Result<Option<String>, Failure>;
    /// SIGKILL of the owner's stand-in, reaped.
    fn kill(&mut self, owner: &str) -> Result<String, Failure>;
    /// drvDeinit + dlclose, dlopen + drvInit; the owners keep running.
    fn restart_libvirtd(&mut self) -> Result<String, Failure>;
    /// SIGKILL of the lock daemon and a new instance; `Ok(None)` when the profile has none.
    fn restart_daemon(&mut self) -> Result<Option<String>, Failure>;
    /// When this node's lock daemon freed the locks of the domain with `uuid` after its QEMU
    /// exited, as the daemon reports it; `None` when it cannot tell (no daemon, not lockmgrd, or
    /// another node's clock).
    fn daemon_released_at(&mut self, uuid: &str) -> Option<std::time::SystemTime> {
        let _ = uuid;
        None
    }
    /// Kills the owners, deinits the plugin, stops the daemon; what went wrong.
    fn finish(&mut self) -> Result<(), String>;
}

/// The owners of this machine: the plugin loaded in this process, its environment (config,
/// daemon), and each owner's domain and QEMU stand-in.
#[derive(Debug)]
pub struct LocalNode {
    plugin_path: PathBuf,
    plugin: Option<Plugin>,
    env: PluginEnv,
    owners: BTreeMap<String, LocalOwner>,
    /// The `<on_lockfailure>` every call passes.
    action: LockFailureAction,
}

#[derive(Debug)]
struct LocalOwner {
    domain: Domain,
    process: Option<ForkedOwner>,
}

impl LocalNode {
    /// Loads `plugin_path` as libvirtd does (with libvirt.so.0 loaded first, as in libvirtd)
    /// and initialises it with the environment's config.
    pub fn new(plugin_path: &Path, env: PluginEnv) -> Result<Self, String> {
        // As in libvirtd, libvirt.so.0 is loaded (it also keeps the harness's error lookup
        // cheap for plugins that do not link libvirt). Machines without libvirt go without.
        harness_sys::preload(c"libvirt.so.0");
        let mut plugin = Plugin::open(plugin_path).map_err(|e| e.to_string())?;
        plugin
            .init(&env.config)
            .map_err(|e| format!("drvInit: {e}"))?;
        Ok(LocalNode {
            plugin_path: plugin_path.to_owned(),
            plugin: Some(plugin),
            env,
            owners: BTreeMap::new(),
            action: LockFailureAction::Default,
        })
    }

    /// Every call passes `action` as the domain's `<on_lockfailure>` (default: `default`).
    #[must_use]
    pub fn with_action(mut self, action: LockFailureAction) -> Self {
        self.action = action;
        self
    }

    /// Names an owner registered by an earlier process (`step register`): its QEMU stand-in
    /// runs (`domain.pid`), not as a child of this one; later calls here act for it.
    pub fn attach(&mut self, owner: &str, domain: &Domain) {
        self.add_owner(owner, domain.clone(), None);
    }

    /// Records `owner`'s domain (its identity: the sequences set the uri) and stand-in.
    fn add_owner(&mut self, owner: &str, mut domain: Domain, process: Option<ForkedOwner>) {
        domain.uri = None;
        self.owners
            .insert(owner.to_owned(), LocalOwner { domain, process });
    }

    /// Lets every QEMU stand-in forked here outlive this process (`step register`: a later
    /// invocation, or the test, stops it), instead of killing it at the end.
    pub fn leave_running(&mut self) {
        for owner in self.owners.values_mut() {
            if let Some(process) = owner.process.take() {
                process.detach();
            }
        }
    }

    /// The plugin's environment (scratch layout, config, daemon).
    pub fn env(&self) -> &PluginEnv {
        &self.env
    }

    /// The loaded plugin, for calls of the sequence library beyond [`OwnerNode`]'s.
    pub fn plugin(&self) -> Result<&Plugin, Failure> {
        self.plugin
            .as_ref()
            .ok_or_else(|| Failure::harness("the plugin is not loaded (an earlier restart failed)"))
    }

    fn owner(&self, owner: &str) -> Result<&LocalOwner, Failure> {
        self.owners
            .get(owner)
            .ok_or_else(|| Failure::harness(format!("owner '{owner}' is not registered here")))
    }

    /// `owner`'s domain (its identity: the sequences set the uri) and the loaded plugin.
    fn domain(&self, owner: &str) -> Result<(&Plugin, &Domain), Failure> {
        Ok((self.plugin()?, &self.owner(owner)?.domain))
    }
}

/// A failed sequence as a step's failure: an AddResource names its resource.
fn sequence_failure(err: SequenceError, resources: &[Resource]) -> Failure {
    match (err.call, err.error) {
        (Call::AddResource(index), error) => Failure {
            message: format!(
                "{error} (resource {})",
                resources
                    .get(index)
                    .map_or_else(String::new, describe_resource)
            ),
            reported: match error {
                HostError::Callback { reported, .. } => reported,
                _ => None,
            },
        },
        (_, error) => Failure::from(error),
    }
}

impl OwnerNode for LocalNode {
    fn name(&self) -> String {
        "this host".into()
    }

    fn register(
        &mut self,
        owner: &str,
        domain: &Domain,
        resources: &[Resource],
    ) -> Result<(u32, String), Failure> {
        let process = sequences::register(self.plugin()?, domain, resources, self.action)?;
        match process.outcome.clone() {
            RegisterOutcome::Registered {
                fd,
                fd_survived_exec,
            } => {
                let pid = process.pid();
                let mut domain = domain.clone();
                domain.pid = pid;
                self.add_owner(owner, domain, Some(process));
                Ok((
                    pid,
                    format!(
                        "QEMU stand-in pid {pid}{}",
                        match (fd, fd_survived_exec) {
                            (Some(fd), true) => format!(", holding fd {fd}"),
                            (Some(fd), false) => format!(", fd {fd} lost at exec (close-on-exec)"),
                            (None, _) => ", no fd".into(),
                        }
                    ),
                ))
            }
            RegisterOutcome::Failed { error, reported } => Err(Failure {
                message: format!("in the pre-exec child: {error}"),
                reported,
            }),
        }
    }

    fn acquire(
        &mut self,
        owner: &str,
        resources: &[Resource],
        state: Option<&str>,
    ) -> Result<(), Failure> {
        let (plugin, domain) = self.domain(owner)?;
        sequences::resume_with_state(plugin, domain, resources, state, self.action)
            .map_err(|e| sequence_failure(e, resources))
    }

    fn release(
        &mut self,
        owner: &str,
        resources: &[Resource],
        want_state: bool,
    ) -> Result<Option<String>, Failure> {
        let (plugin, domain) = self.domain(owner)?;
        let released = if want_state {
            sequences::pause(plugin, domain, resources).map(|state| state.map(|s| s.text()))
        } else {
            sequences::detach(plugin, domain, resources).map(|()| None)
        };
        released.map_err(|e| sequence_failure(e, resources))
    }

    fn inquire(&mut self, owner: &str, resources: &[Resource]) -> Result<Option<String>, Failure> {
        let (plugin, domain) = self.domain(owner)?;
        sequences::inquire(plugin, domain, resources)
            .map(|state| state.map(|s| s.text()))
            .map_err(|e| sequence_failure(e, resources))
    }

    fn kill(&mut self, owner: &str) -> Result<String, Failure> {
        let state = self
            .owners
            .get_mut(owner)
            .ok_or_else(|| Failure::harness(format!("owner '{owner}' is not registered here")))?;
        let Some(mut process) = state.process.take() else {
            return Err(Failure::harness(format!(
                "owner '{owner}' has no running QEMU stand-in"
            )));
        };
        let pid = process.pid();
        process.kill()?;
        Ok(format!("QEMU stand-in {pid} SIGKILLed and reaped"))
    }

    fn restart_libvirtd(&mut self) -> Result<String, Failure> {
        let started = std::time::Instant::now();
        let mut old = self
            .plugin
            .take()
            .ok_or_else(|| Failure::harness("the plugin is not loaded"))?;
        old.deinit()?;
        drop(old);
        let mut plugin = Plugin::open(&self.plugin_path)?;
        plugin.init(&self.env.config)?;
        self.plugin = Some(plugin);
        Ok(format!(
            "drvDeinit + dlclose, dlopen + drvInit in {:.1} ms; the owners kept running",
            started.elapsed().as_secs_f64() * 1000.0
        ))
    }

    fn restart_daemon(&mut self) -> Result<Option<String>, Failure> {
        let Some(daemon) = self.env.daemon.as_mut() else {
            return Ok(None);
        };
        let old = daemon.crash().map_err(Failure::harness)?;
        let ready = daemon.start().map_err(Failure::harness)?;
        Ok(Some(format!(
            "{} pid {old} SIGKILLed; pid {} serving after {:.1} ms",
            daemon.name,
            daemon.pid(),
            ready.as_secs_f64() * 1000.0
        )))
    }

    fn daemon_released_at(&mut self, uuid: &str) -> Option<std::time::SystemTime> {
        self.env.daemon.as_ref()?.released_at(uuid)
    }

    fn finish(&mut self) -> Result<(), String> {
        for state in self.owners.values_mut() {
            drop(state.process.take());
        }
        self.env.unload(self.plugin.take(), "at the end, ")
    }
}

/// `disk vm.img (exclusive)` or `lease KEY`.
pub fn describe_resource(resource: &Resource) -> String {
    match resource {
        Resource::Disk { path, access } => format!(
            "disk {} ({})",
            path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into()
            ),
            access_word(*access)
        ),
        Resource::Lease { lease, .. } => format!("lease {}", lease.key),
    }
}

fn access_word(access: lockmgr::Access) -> &'static str {
    match access {
        lockmgr::Access::Exclusive => "exclusive",
        lockmgr::Access::Shared => "shared",
        lockmgr::Access::ReadOnly => "readonly",
    }
}
