//! The checklist itself: every step of libvirt's contract, in order, from `load` to `deinit`,
//! and the checks on the state strings a plugin hands over.

use std::path::Path;

use lockmgr::host::{ForeignString, HostError, Plugin, RawParam, RegisterOutcome};
use lockmgr::{Access, Domain, Lease, LockFailureAction, NewFlags, Resource, Uuid};

use super::Status;
use super::runner::{Failure, Steps};
use crate::sequences;
use crate::sys;

/// A plausible, fixed UUID: lockd refuses one whose 16 bytes are all equal.
const VALIDATE_UUID: &str = "5f0f5e1c-7d43-4a8a-9b0e-1c2d3e4f5a6b";

impl Steps<'_> {
    pub(super) fn run_all(&mut self, plugin_path: &Path, config: &Path, workdir: &Path) {
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
