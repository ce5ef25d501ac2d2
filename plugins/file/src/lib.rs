//! `file.so`: libvirt disk locks held by `lockmgrd` as OFD locks on byte 0 of
//! `<file_lockspace_dir>/<sha256 of the disk path>` (virtlockd's names), or of the disk itself.
//!
//! The plugin only talks to the daemon: the pre-exec child registers the domain on a fresh
//! connection (restricted, then inherited by QEMU); libvirtd's Acquire / Release / Inquire go
//! over one shared connection. Configuration: `/etc/libvirt/qemu-file.conf`, shared with the
//! daemon (see docs/lockmgrd.md).
#![deny(unsafe_code)]

mod sys;

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Mutex;

use lockmgr::proto::{
    self, Client, ClientError, ErrorKind, FailureAction, Mode, OwnerInfo, Reply, Request,
    ResourceKind, ResourceSpec,
};
use lockmgr::{
    Access, AcquireRequest, Acquired, Domain, Error, ErrorCode, InitArgs, LockDriver,
    LockFailureAction, NewFlags, Resource, Result,
};
use lockmgr_conf::FilePluginSettings;

/// The file lock driver.
#[derive(Debug)]
pub struct FileDriver {
    settings: FilePluginSettings,
    config_path: PathBuf,
    /// libvirtd's connection to the daemon. Never touched on the pre-exec child's path, which
    /// must not take a lock another thread may have held at fork time.
    connection: Mutex<Option<Client>>,
}

/// One libvirt context: the domain and the resources to lock.
#[derive(Debug)]
pub struct Context {
    owner: OwnerInfo,
    resources: Vec<ResourceSpec>,
    exclusive_disks: usize,
    leases: usize,
}

fn owner_of(domain: &Domain) -> OwnerInfo {
    OwnerInfo {
        uuid: domain.uuid.to_string(),
        name: domain.name.clone(),
        id: domain.id,
        pid: domain.pid,
        uri: domain.uri.clone(),
    }
}

fn failure_action(action: LockFailureAction) -> Result<FailureAction> {
    Ok(match action {
        LockFailureAction::Default => FailureAction::Default,
        LockFailureAction::Poweroff => FailureAction::Poweroff,
        LockFailureAction::Pause => FailureAction::Pause,
        LockFailureAction::Ignore => FailureAction::Ignore,
        LockFailureAction::Restart => {
            return Err(Error::config(
                "Failure action restart is not supported by the file lock manager \
                 (a restarted domain cannot take back a lock it lost); use poweroff, pause or ignore",
            ));
        }
    })
}

impl FileDriver {
    fn unreachable(&self, err: &ClientError) -> Error {
        Error::failed(format!(
            "{err}; is lockmgrd running? (lockmgrd --config {})",
            self.config_path.display()
        ))
    }

    fn refusal(kind: ErrorKind, message: String) -> Error {
        let code = match kind {
            ErrorKind::Busy => ErrorCode::ResourceBusy,
            ErrorKind::Invalid => ErrorCode::InvalidArg,
            ErrorKind::Denied => ErrorCode::OperationDenied,
            ErrorKind::Config => ErrorCode::ConfigUnsupported,
            ErrorKind::Internal => ErrorCode::Internal,
        };
        Error::new(code, message)
    }

    /// One request over the shared connection, reconnecting once if the daemon restarted.
    fn call(&self, request: Request) -> Result<Option<String>> {
        let mut connection = self
            .connection
            .lock()
            .map_err(|_| Error::internal("daemon connection lock poisoned"))?;
        let mut last_error = None;
        for _ in 0..2 {
            if connection.is_none() {
                *connection = Some(
                    Client::connect(&self.settings.socket_path)
                        .map_err(|e| self.unreachable(&e))?,
                );
            }
            let client = connection.as_mut().expect("connected above");
            match client.call(request.clone()) {
                Ok(Reply::Ok { state }) => return Ok(state),
                Ok(Reply::Error { kind, message }) => return Err(Self::refusal(kind, message)),
                Ok(other) => {
                    return Err(Error::internal(format!(
                        "unexpected reply from lockmgrd: {other:?}"
                    )));
                }
                Err(err) => {
                    *connection = None;
                    last_error = Some(err);
                }
            }
        }
        Err(self.unreachable(&last_error.expect("set by the failed attempt")))
    }

    /// The pre-exec child's registration, on its own connection; returns it for QEMU.
    fn register(&self, owner: OwnerInfo, restrict: bool) -> Result<OwnedFd> {
        let mut client =
            Client::connect(&self.settings.socket_path).map_err(|e| self.unreachable(&e))?;
        match client
            .call(Request::Register { owner, restrict })
            .map_err(|e| self.unreachable(&e))?
        {
            Reply::Ok { .. } => {}
            Reply::Error { kind, message } => return Err(Self::refusal(kind, message)),
            other => {
                return Err(Error::internal(format!(
                    "unexpected reply from lockmgrd: {other:?}"
                )));
            }
        }
        let fd = OwnedFd::from(client.into_stream());
        sys::clear_close_on_exec(fd.as_fd())
            .map_err(|e| Error::system("clear close-on-exec on the lockmgrd connection", &e))?;
        Ok(fd)
    }
}

impl LockDriver for FileDriver {
    type Manager = Context;
    const USES_STATE: bool = true;

    fn init(args: &InitArgs) -> Result<Self> {
        let config_path = args
            .config_path
            .clone()
            .unwrap_or_else(|| PathBuf::from(FilePluginSettings::PATH));
        let (settings, warnings) = FilePluginSettings::from_file(&config_path)
            .map_err(|e| Error::config(e.to_string()))?;
        for warning in warnings {
            eprintln!("lockmgr file.so: warning: {warning}");
        }
        Ok(FileDriver {
            settings,
            config_path,
            connection: Mutex::new(None),
        })
    }

    fn new_manager(&self, domain: Domain, _flags: NewFlags) -> Result<Context> {
        Ok(Context {
            owner: owner_of(&domain),
            resources: Vec::new(),
            exclusive_disks: 0,
            leases: 0,
        })
    }

    fn add_resource(&self, context: &mut Context, resource: Resource) -> Result<()> {
        let mode = match resource.access() {
            // As lockd: read-only disks are not locked (QEMU's own locks keep writers away).
            Access::ReadOnly => return Ok(()),
            Access::Shared => Mode::Shared,
            Access::Exclusive => Mode::Exclusive,
        };
        match resource {
            Resource::Disk { path, .. } => {
                if mode == Mode::Exclusive {
                    context.exclusive_disks += 1;
                }
                if !self.settings.auto_disk_leases {
                    return Ok(());
                }
                let name = path
                    .to_str()
                    .ok_or_else(|| {
                        Error::invalid_arg(format!("disk path {} is not UTF-8", path.display()))
                    })?
                    .to_owned();
                context.resources.push(ResourceSpec {
                    kind: ResourceKind::Disk,
                    name,
                    mode,
                });
            }
            Resource::Lease { lease, .. } => {
                context.leases += 1;
                let path = lease
                    .path
                    .map(|p| {
                        p.to_str().map(str::to_owned).ok_or_else(|| {
                            Error::invalid_arg(format!("lease path {} is not UTF-8", p.display()))
                        })
                    })
                    .transpose()?;
                let kind = ResourceKind::Lease {
                    lockspace: lease.lockspace,
                    path,
                    offset: lease.offset,
                };
                context.resources.push(ResourceSpec {
                    kind,
                    name: lease.key,
                    mode,
                });
            }
        }
        Ok(())
    }

    fn acquire(&self, context: &mut Context, request: &AcquireRequest<'_>) -> Result<Acquired> {
        let action = failure_action(request.action)?;
        if self.settings.require_lease_for_disks
            && context.leases == 0
            && context.exclusive_disks > 0
        {
            return Err(Error::config(
                "Read/write, exclusive access, disks were present, but no leases specified",
            ));
        }
        if let Some(state) = request.state {
            proto::decode_state(state).map_err(Error::invalid_arg)?;
        }
        if request.flags.register_only {
            let fd = self.register(context.owner.clone(), request.flags.restrict)?;
            return Ok(Acquired {
                fd: request.wants_fd.then_some(fd),
            });
        }
        if context.resources.is_empty() {
            return Ok(Acquired::default());
        }
        self.call(Request::Acquire {
            owner: context.owner.clone(),
            resources: context.resources.clone(),
            action,
            state: request.state.map(str::to_owned),
        })?;
        Ok(Acquired::default())
    }

    fn release(&self, context: &mut Context, wants_state: bool) -> Result<Option<String>> {
        if context.resources.is_empty() {
            return Ok(None);
        }
        let state = self.call(Request::Release {
            owner: context.owner.clone(),
            resources: context.resources.clone(),
        })?;
        Ok(state.filter(|_| wants_state))
    }

    fn inquire(&self, context: &mut Context) -> Result<Option<String>> {
        self.call(Request::Inquire {
            owner: context.owner.clone(),
        })
    }
}

lockmgr::export_lock_driver!(FileDriver);
