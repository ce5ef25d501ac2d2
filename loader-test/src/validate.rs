//! `validate`: a checklist of libvirt's contract, run against one plugin.
//!
//! The steps run in a child process (`__validate-one`) that streams one JSON event per step, so
//! a plugin that crashes is reported with the step it crashed in instead of taking loader-test
//! down.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use lockmgr::host::{ForeignString, HostError, Plugin, RawParam, RegisterOutcome};
use lockmgr::{Access, Domain, Lease, LockFailureAction, NewFlags, Resource, Uuid};
use serde::{Deserialize, Serialize};

use crate::known::{self, DaemonNeed};
use crate::sequences;
use crate::sys;

/// The outcome of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Behaves as libvirt expects.
    Pass,
    /// Works, but differs from what libvirt's own plugins do.
    Warn,
    /// Breaks the contract.
    Fail,
    /// Cannot be checked: the plugin's lock daemon is not running.
    NeedsDaemon,
    /// Not run because an earlier step failed.
    Skipped,
}

/// One step's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    /// Short id, e.g. `register-child`.
    pub step: String,
    /// What the step checks.
    pub title: String,
    /// The outcome.
    pub status: Status,
    /// What happened, with the plugin's own error text when it failed.
    pub detail: String,
}

/// What the step runner streams to the parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
enum Event {
    Start { step: String },
    Done(StepResult),
}

/// The whole account of one plugin.
#[derive(Debug, Serialize)]
pub struct PluginReport {
    /// The plugin file.
    pub plugin: PathBuf,
    /// The config path passed to drvInit.
    pub config: PathBuf,
    /// Whether that config file exists (libvirt passes the path either way).
    pub config_exists: bool,
    /// Every step, in order.
    pub steps: Vec<StepResult>,
    /// Set when the plugin crashed the validating process.
    pub crashed: Option<String>,
    /// What the plugin wrote to stdout/stderr.
    pub plugin_output: String,
    /// The overall verdict.
    pub verdict: Status,
}

impl PluginReport {
    fn finish(mut self) -> Self {
        let any = |s: Status| self.steps.iter().any(|r| r.status == s);
        self.verdict = if self.crashed.is_some() || any(Status::Fail) {
            Status::Fail
        } else if any(Status::NeedsDaemon) {
            Status::NeedsDaemon
        } else if any(Status::Warn) {
            Status::Warn
        } else {
            Status::Pass
        };
        self
    }
}

/// Validates `plugin` in a child process running `exe __validate-one`.
pub fn validate_in_subprocess(exe: &Path, plugin: &Path, config: &Path) -> PluginReport {
    let mut report = PluginReport {
        plugin: plugin.to_owned(),
        config: config.to_owned(),
        config_exists: config.exists(),
        steps: Vec::new(),
        crashed: None,
        plugin_output: String::new(),
        verdict: Status::Skipped,
    };
    let child = Command::new(exe)
        .arg("__validate-one")
        .arg(plugin)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => {
            report.crashed = Some(format!("cannot start {}: {err}", exe.display()));
            return report.finish();
        }
    };
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut running: Option<String> = None;
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<Event>(&line) {
            Ok(Event::Start { step }) => running = Some(step),
            Ok(Event::Done(result)) => {
                running = None;
                report.steps.push(result);
            }
            Err(_) => report.plugin_output.push_str(&format!("{line}\n")),
        }
    }
    let status = child.wait();
    report
        .plugin_output
        .push_str(&stderr_reader.join().unwrap_or_default());
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            let how = match status.signal() {
                Some(signal) => format!("killed by signal {signal} ({})", sys::signal_name(signal)),
                None => format!("exited with status {}", status.code().unwrap_or(-1)),
            };
            let place = running.map_or_else(String::new, |step| format!(" during step '{step}'"));
            report.crashed = Some(format!("the plugin's host process {how}{place}"));
        }
        Err(err) => report.crashed = Some(format!("waiting for the validator: {err}")),
    }
    report.finish()
}

/// Entry point of `__validate-one`: runs every step, writing events to `events`.
pub fn run_steps(plugin_path: &Path, config: &Path, events: &mut dyn Write) {
    let mut emit = |event: Event| {
        let _ = serde_json::to_writer(&mut *events, &event);
        let _ = events.write_all(b"\n");
        let _ = events.flush();
    };
    let workdir = match tempfile::Builder::new()
        .prefix("lockmgr-validate-")
        .tempdir()
    {
        Ok(dir) => dir,
        Err(err) => {
            emit(Event::Done(StepResult {
                step: "setup".into(),
                title: "scratch directory".into(),
                status: Status::Fail,
                detail: format!("cannot create a scratch directory: {err}"),
            }));
            return;
        }
    };
    let mut steps = Steps {
        emit: &mut emit,
        skip_reason: None,
        daemon: known::daemon_for(plugin_path),
        emitted: Vec::new(),
    };
    steps.run_all(plugin_path, config, workdir.path());
}

struct Failure {
    status: Status,
    detail: String,
}

impl Failure {
    fn fail(detail: impl Into<String>) -> Self {
        Failure {
            status: Status::Fail,
            detail: detail.into(),
        }
    }
}

type StepOutcome<T> = Result<(T, String), Failure>;

struct Steps<'a> {
    emit: &'a mut dyn FnMut(Event),
    skip_reason: Option<String>,
    daemon: Option<DaemonNeed>,
    emitted: Vec<String>,
}

/// A plausible, fixed UUID: lockd refuses one whose 16 bytes are all equal.
const VALIDATE_UUID: &str = "5f0f5e1c-7d43-4a8a-9b0e-1c2d3e4f5a6b";

impl Steps<'_> {
    fn run<T>(&mut self, step: &str, body: impl FnOnce(&Self) -> StepOutcome<T>) -> Option<T> {
        let title = step_title(step);
        self.emitted.push(step.to_owned());
        if let Some(reason) = &self.skip_reason {
            let result = StepResult {
                step: step.into(),
                title: title.into(),
                status: Status::Skipped,
                detail: reason.clone(),
            };
            (self.emit)(Event::Done(result));
            return None;
        }
        (self.emit)(Event::Start { step: step.into() });
        let (status, detail, value) = match body(self) {
            Ok((value, detail)) => (Status::Pass, detail, Some(value)),
            Err(Failure { status, detail }) => (status, detail, None),
        };
        let result = StepResult {
            step: step.into(),
            title: title.into(),
            status,
            detail,
        };
        (self.emit)(Event::Done(result));
        value
    }

    fn warn(&mut self, step: &str, detail: String) {
        self.emitted.push(step.to_owned());
        let title = step_title(step).into();
        (self.emit)(Event::Done(StepResult {
            step: step.into(),
            title,
            status: Status::Warn,
            detail,
        }));
    }

    /// A failed call: "needs daemon" when the plugin's daemon is known and not running.
    fn classify(&self, err: &HostError) -> Failure {
        let text = err.to_string();
        if let Some(need) = self.daemon {
            if !need.is_running() {
                return Failure {
                    status: Status::NeedsDaemon,
                    detail: format!(
                        "needs a running {} ({} is not accepting connections; {}). The plugin said: {text}",
                        need.daemon, need.socket, need.hint
                    ),
                };
            }
        }
        if known::mentions_unreachable_daemon(&text) {
            return Failure {
                status: Status::NeedsDaemon,
                detail: format!("the plugin could not reach its lock daemon: {text}"),
            };
        }
        Failure::fail(text)
    }

    fn run_all(&mut self, plugin_path: &Path, config: &Path, workdir: &Path) {
        let Some(mut plugin) = self.run("load", |_| {
            Plugin::open(plugin_path)
                .map(|p| (p, format!("{} loaded", plugin_path.display())))
                .map_err(|e| Failure::fail(e.to_string()))
        }) else {
            self.skip_reason = Some("the plugin did not load".into());
            self.skip_remaining();
            return;
        };
        let info = plugin.info();
        self.run("symbol", |_| match info.symbol_size {
            Some(72) => Ok(((), "virLockDriverImpl: 72 bytes".into())),
            Some(size) => Err(Failure::fail(format!(
                "virLockDriverImpl is {size} bytes; libvirt's virLockDriver is 72"
            ))),
            None => Err(Failure {
                status: Status::Warn,
                detail: "symbol size unknown (no ELF symbol entry)".into(),
            }),
        });
        let version_ok = info.version == lockmgr::abi::VIR_LOCK_MANAGER_VERSION;
        self.run("table", |_| {
            let flags = match info.flags {
                0 => "flags 0",
                1 => "flags 1 (USES_STATE)",
                _ => {
                    return Err(Failure::fail(format!(
                        "unknown flags {:#x} (libvirt knows only USES_STATE = 1)",
                        info.flags
                    )));
                }
            };
            if !version_ok {
                return Err(Failure::fail(format!(
                    "declares lock driver ABI version {}; libvirt 11.x speaks 1000000 (1.0.0)",
                    info.version
                )));
            }
            Ok(((), format!("version 1000000, {flags}")))
        });
        let missing = plugin.missing_callbacks();
        self.run("callbacks", |_| {
            if missing.is_empty() {
                return Ok(((), "drvInit … drvInquire all set".into()));
            }
            let crash = missing
                .iter()
                .filter(|s| matches!(**s, "drvInit" | "drvDeinit"))
                .count();
            let mut detail = format!(
                "NULL: {} (libvirt: Missing '{}' field in lock manager driver)",
                missing.join(", "),
                missing[0]
            );
            if crash > 0 {
                detail.push_str(
                    "; libvirt calls drvInit/drvDeinit without a NULL check and would crash",
                );
            }
            Err(Failure::fail(detail))
        });
        if missing.iter().any(|s| matches!(*s, "drvInit" | "drvNew")) {
            self.skip_reason = Some("drvInit or drvNew is NULL".into());
            self.skip_remaining();
            return;
        }

        let config_note = if config.exists() {
            "exists"
        } else {
            "absent: defaults"
        };
        let initialised = self.run("init", |_| {
            plugin.init(config).map(|()| ((), format!("returned 0 for {} ({config_note})", config.display()))).map_err(|e| {
                let mut failure = Failure::fail(e.to_string());
                if !version_ok {
                    failure.detail.push_str(&format!(
                        " — refuses libvirt's ABI 1000000: the table declares version {}, the plugin was built for another lock driver ABI",
                        info.version
                    ));
                }
                failure
            })
        });
        if initialised.is_none() {
            self.skip_reason = Some("drvInit failed".into());
            self.skip_remaining();
            return;
        }
        self.run("init-refcount", |_| {
            plugin
                .init(config)
                .map_err(|e| Failure::fail(format!("second drvInit: {e}")))?;
            plugin
                .deinit()
                .map_err(|e| Failure::fail(format!("drvDeinit of the second reference: {e}")))?;
            Ok((
                (),
                format!(
                    "refcount back to {} (libvirt inits once per hypervisor driver)",
                    plugin.refs()
                ),
            ))
        });

        let uuid = Uuid::parse(VALIDATE_UUID).expect("constant UUID parses");
        let own_pid = std::process::id();
        let domain = |pid: u32, uri: bool| Domain {
            uuid,
            name: "lockmgr-validate".into(),
            id: 1,
            pid,
            uri: uri.then(|| "qemu:///system".to_owned()),
        };
        self.run("new", |s| {
            let manager = plugin
                .new_manager(&domain(own_pid, true), NewFlags { started: true })
                .map_err(|e| s.classify(&e))?;
            drop(manager);
            Ok(((), "context created and freed".into()))
        });
        match self.new_with_unknown_param(&plugin, uuid, own_pid) {
            Some(Ok(detail)) => {
                self.run("new-unknown-param", |_| Ok(((), detail)));
            }
            Some(Err(detail)) => self.warn("new-unknown-param", detail),
            None => {}
        }

        let disk = workdir.join("disk.img");
        let shared = workdir.join("shared.img");
        let readonly = workdir.join("readonly.img");
        for path in [&disk, &shared, &readonly] {
            let _ = std::fs::write(path, b"");
        }
        let exclusive_disk = Resource::Disk {
            path: disk.clone(),
            access: Access::Exclusive,
        };
        self.run("add-disk", |s| {
            let mut manager = plugin
                .new_manager(&domain(own_pid, true), NewFlags::default())
                .map_err(|e| s.classify(&e))?;
            for resource in [
                exclusive_disk.clone(),
                Resource::Disk {
                    path: shared.clone(),
                    access: Access::Shared,
                },
                Resource::Disk {
                    path: readonly.clone(),
                    access: Access::ReadOnly,
                },
            ] {
                manager
                    .add_resource(&resource)
                    .map_err(|e| s.classify(&e))?;
            }
            Ok(((), "3 disks added".into()))
        });
        let lease_dir = workdir.join("leases");
        let _ = std::fs::create_dir_all(lease_dir.join("validate"));
        let _ = std::fs::write(
            lease_dir.join("validate").join("lockmgr-validate-lease"),
            b"",
        );
        self.run("add-lease", |s| {
            let mut manager = plugin
                .new_manager(&domain(own_pid, true), NewFlags::default())
                .map_err(|e| s.classify(&e))?;
            let lease = Lease {
                key: "lockmgr-validate-lease".into(),
                lockspace: Some("validate".into()),
                path: Some(lease_dir.clone()),
                offset: Some(0),
            };
            manager
                .add_resource(&Resource::Lease {
                    lease,
                    access: Access::Exclusive,
                })
                .map_err(|e| s.classify(&e))?;
            Ok(((), "lease added".into()))
        });

        let owner = self.run("register-child", |s| {
            let owner = sequences::register(&plugin, &domain(0, true), std::slice::from_ref(&exclusive_disk), LockFailureAction::Default)
                .map_err(|e| s.classify(&e))?;
            match owner.outcome.clone() {
                RegisterOutcome::Registered { fd: Some(fd), fd_survived_exec: true } => {
                    let pid = owner.pid();
                    Ok((owner, format!("child {pid} registered; fd {fd} inherited by the exec'd QEMU stand-in")))
                }
                RegisterOutcome::Registered { fd: Some(fd), fd_survived_exec: false } => Err(Failure::fail(format!(
                    "fd {fd} was returned with close-on-exec: QEMU would not inherit it"
                ))),
                RegisterOutcome::Registered { fd: None, .. } => {
                    let pid = owner.pid();
                    Ok((owner, format!("child {pid} registered; no fd returned (locks are not tied to QEMU through an fd)")))
                }
                RegisterOutcome::Failed { error, reported } => {
                    let err = HostError::Callback { slot: "child", reported };
                    let mut failure = s.classify(&err);
                    if failure.status == Status::Fail {
                        failure.detail = format!("in the child: {error}");
                    }
                    Err(failure)
                }
            }
        });
        let Some(mut owner) = owner else {
            self.skip_reason = Some("no registered owner (register-child did not pass)".into());
            self.skip_owner_steps();
            self.skip_reason = None;
            self.deinit_step(&mut plugin);
            return;
        };
        let owner_pid = owner.pid();
        let resources = std::slice::from_ref(&exclusive_disk);
        let owner_domain = domain(owner_pid, false);
        let action = LockFailureAction::Default;
        self.run("acquire", |s| {
            sequences::start(&plugin, &owner_domain, resources, action)
                .map_err(|e| s.classify(&e.error))?;
            Ok(((), format!("disk locked for owner {owner_pid}")))
        });
        self.run("inquire", |s| {
            let state = sequences::inquire(&plugin, &owner_domain, resources)
                .map_err(|e| s.classify(&e.error))?;
            Ok(((), describe_state(state)?))
        });
        let state = self.run("release", |s| {
            let state = sequences::pause(&plugin, &owner_domain, resources)
                .map_err(|e| s.classify(&e.error))?;
            let text = state.as_ref().map(ForeignString::text);
            Ok((text, describe_state(state)?))
        });
        self.run("reacquire", |s| {
            let state = state.flatten();
            sequences::resume_with_state(
                &plugin,
                &owner_domain,
                resources,
                state.as_deref(),
                action,
            )
            .map_err(|e| s.classify(&e.error))?;
            Ok((
                (),
                format!(
                    "re-acquired with state {}",
                    state.as_deref().map_or("NULL".into(), |s| format!("'{s}'"))
                ),
            ))
        });
        self.run("release-detach", |s| {
            sequences::unplug(&plugin, &owner_domain, &exclusive_disk)
                .map_err(|e| s.classify(&e.error))?;
            Ok(((), "released".into()))
        });
        let _ = owner.kill();
        self.deinit_step(&mut plugin);
    }

    fn deinit_step(&mut self, plugin: &mut Plugin) {
        self.run("deinit", |_| {
            plugin
                .deinit()
                .map(|()| ((), "returned 0; unloaded".into()))
                .map_err(|e| Failure::fail(e.to_string()))
        });
    }

    /// `Some(Ok(detail))` refused as it should be; `Some(Err(detail))` a deviation worth a warning.
    fn new_with_unknown_param(
        &mut self,
        plugin: &Plugin,
        uuid: Uuid,
        pid: u32,
    ) -> Option<Result<String, String>> {
        if self.skip_reason.is_some() {
            return None;
        }
        let params = [
            ("uuid".to_owned(), RawParam::Uuid(uuid.0)),
            (
                "name".to_owned(),
                RawParam::String("lockmgr-validate".into()),
            ),
            ("id".to_owned(), RawParam::UInt(1)),
            ("pid".to_owned(), RawParam::UInt(pid)),
            (
                "uri".to_owned(),
                RawParam::CString(Some("qemu:///system".into())),
            ),
            ("colour".to_owned(), RawParam::String("blue".into())),
        ];
        Some(match plugin.new_manager_raw(&params, 0) {
            Ok(_manager) => Err(
                "accepted an unknown param 'colour' (libvirt's lockd refuses unknown params)"
                    .into(),
            ),
            Err(HostError::Callback {
                reported: Some(err),
                ..
            }) => Ok(format!("refused: {}", err.rendered())),
            Err(HostError::Callback { reported: None, .. }) => {
                Err("refused, but without reporting an error".into())
            }
            Err(other) => Err(other.to_string()),
        })
    }

    fn skip_owner_steps(&mut self) {
        for step in [
            "acquire",
            "inquire",
            "release",
            "reacquire",
            "release-detach",
        ] {
            self.run(step, |_| Ok::<_, Failure>(((), String::new())));
        }
    }

    /// Reports every step not yet reported as skipped (after a failure that ends the run).
    fn skip_remaining(&mut self) {
        for (step, _) in ALL_STEPS {
            if !self.emitted.iter().any(|done| done == step) {
                self.run(step, |_| Ok::<_, Failure>(((), String::new())));
            }
        }
    }
}

/// Every step, in order, with what it checks.
pub const ALL_STEPS: [(&str, &str); 17] = [
    (
        "load",
        "access(R_OK) + dlopen(RTLD_NOW | RTLD_LOCAL) + dlsym",
    ),
    ("symbol", "virLockDriverImpl is a 72-byte table"),
    ("table", "version 1000000, flags 0 or USES_STATE"),
    ("callbacks", "all 8 callbacks non-NULL"),
    ("init", "drvInit(1000000, config, 0)"),
    (
        "init-refcount",
        "a second drvInit + drvDeinit keeps the plugin loaded",
    ),
    ("new", "New(uuid, name, id, pid, uri; NEW_STARTED) + Free"),
    ("new-unknown-param", "New refuses an unknown param"),
    (
        "add-disk",
        "AddResource: disk exclusive, shareable, readonly",
    ),
    (
        "add-lease",
        "AddResource: lease (path, offset 0, lockspace)",
    ),
    (
        "register-child",
        "forked child: New + AddResource + Acquire(REGISTER_ONLY|RESTRICT, &fd), exec",
    ),
    (
        "acquire",
        "Acquire(NULL, 0) in the parent, as libvirtd at CPU start",
    ),
    (
        "inquire",
        "Inquire(&state): NULL or a malloc'd XML-safe string",
    ),
    ("release", "Release(&state) as on pause: the state string"),
    ("reacquire", "Acquire(state, 0) as on resume"),
    ("release-detach", "Release(NULL) as on detach"),
    ("deinit", "drvDeinit, then dlclose if it returned >= 0"),
];

fn step_title(step: &str) -> &'static str {
    ALL_STEPS
        .iter()
        .find(|(id, _)| *id == step)
        .map_or("", |(_, title)| title)
}

/// Checks a state string handed over by the plugin: freeable with free(), XML-safe.
fn describe_state(state: Option<ForeignString>) -> Result<String, Failure> {
    let Some(state) = state else {
        return Ok("no state (NULL)".into());
    };
    let text = state.text();
    if let Err(err) = sys::free_in_child(state.as_ptr()) {
        // Never free it here: it would crash this process too.
        std::mem::forget(state);
        return Err(Failure::fail(format!(
            "state string '{text}' is not freeable with free(): {err}"
        )));
    }
    lockmgr::check_state_string(&text).map_err(|e| Failure::fail(e.to_string()))?;
    Ok(format!(
        "state '{text}' ({} bytes, malloc'd, XML-safe)",
        text.len()
    ))
}
