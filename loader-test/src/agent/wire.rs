//! The wire protocol between a cell and an agent: one JSON [`Request`] per line, one JSON
//! [`Reply`] per line, and the domains, resources and errors they carry.

use std::path::PathBuf;

use lockmgr::{Access, Lease, Resource};
use serde::{Deserialize, Serialize};

use crate::node::Failure;
use crate::scenario::Mode;

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
    pub(super) uuid: String,
    pub(super) name: String,
    pub(super) id: u32,
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
    pub(super) domain: i32,
    pub(super) code: i32,
    pub(super) message: String,
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
    pub(super) fn done(detail: impl Into<String>) -> Self {
        Reply::Done {
            detail: Some(detail.into()),
            pid: None,
            state: None,
        }
    }

    pub(super) fn state(state: Option<String>) -> Self {
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

pub(super) fn resources(wire: &[WireResource]) -> Vec<Resource> {
    wire.iter().map(Resource::from).collect()
}

pub(super) fn wire(resources: &[Resource]) -> Vec<WireResource> {
    resources.iter().map(WireResource::from).collect()
}

#[cfg(test)]
mod tests {
    use lockmgr::host::ReportedError;

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
