//! The libvirt side of lockmgrd's plugins: [`DaemonPlugin`] is the whole lock driver, and a
//! plugin (`file.so`, `dlm.so`) is one [`PluginProfile`] plus [`export_daemon_plugin!`].
//!
//! The driver only talks to the daemon: the pre-exec child registers the domain on a fresh
//! connection (restricted, then inherited by QEMU); libvirtd's Acquire / Release / Inquire go
//! over one shared connection.
#![deny(unsafe_code)]

mod sys;

use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use lockmgr::proto::{
    Client, ClientError, ErrorKind, FailureAction, Mode, OwnerInfo, Reply, Request, ResourceKind,
    ResourceSpec,
};
use lockmgr::{
    Access, AcquireRequest, Acquired, Domain, Error, ErrorCode, InitArgs, LockDriver,
    LockFailureAction, NewFlags, Resource, Result,
};

/// What the driver needs of a plugin's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSettings {
    /// Lock every disk.
    pub auto_disk_leases: bool,
    /// Refuse domains with exclusive disks and no lease.
    pub require_lease_for_disks: bool,
    /// lockmgrd's socket.
    pub socket_path: PathBuf,
}

/// What makes one plugin differ from another.
pub trait PluginProfile: Send + Sync + 'static {
    /// libvirt's name for it (`lock_manager = "NAME"`).
    const NAME: &'static str;
    /// `lockmgrd --backend …` that serves it.
    const BACKEND: &'static str;

    /// Reads `/etc/libvirt/qemu-NAME.conf` (absent: defaults); warnings go to stderr.
    fn load(config_path: &Path) -> Result<PluginSettings>;

    /// Checks, at drvInit, that what the daemon needs on this host is there.
    fn check_environment() -> Result<()> {
        Ok(())
    }
}

/// The lock driver of a lockmgrd plugin.
#[derive(Debug)]
pub struct DaemonPlugin<P> {
    settings: PluginSettings,
    config_path: PathBuf,
    profile: PhantomData<P>,
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
                "Failure action restart is not supported by lockmgr \
                 (a restarted domain cannot take back a lock it lost); use poweroff, pause or ignore",
            ));
        }
    })
}

impl<P: PluginProfile> DaemonPlugin<P> {
    fn unreachable(&self, err: &ClientError) -> Error {
        Error::failed(format!(
            "{err}; is lockmgrd running? (lockmgrd --backend {} --config {})",
            P::BACKEND,
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
            match client.call(&request) {
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
            .call(&Request::Register { owner, restrict })
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

impl<P: PluginProfile> LockDriver for DaemonPlugin<P> {
    type Manager = Context;
    const USES_STATE: bool = true;

    fn init(args: &InitArgs) -> Result<Self> {
        let config_path = args
            .config_path
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/etc/libvirt/qemu-{}.conf", P::NAME)));
        let settings = P::load(&config_path)?;
        P::check_environment()?;
        Ok(DaemonPlugin {
            settings,
            config_path,
            profile: PhantomData,
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
        // The daemon validates a state string: only it knows a resume from a fresh start.
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

/// Ties a profile to the holder of its driver; implemented by [`export_daemon_plugin!`] in the
/// plugin crate (where the profile is a local type, as the orphan rule requires).
pub trait ProfileHolder: PluginProfile + Sized {
    /// The plugin's one driver holder.
    fn holder() -> &'static lockmgr::export::DriverHolder<DaemonPlugin<Self>>;
}

impl<P: ProfileHolder> lockmgr::export::ExportedDriver for DaemonPlugin<P> {
    fn holder() -> &'static lockmgr::export::DriverHolder<Self> {
        P::holder()
    }
}

/// Exports `DaemonPlugin<$profile>` as the plugin's `virLockDriverImpl`. Use it once, at the end
/// of the plugin crate's `lib.rs`.
#[macro_export]
macro_rules! export_daemon_plugin {
    ($profile:ty) => {
        const _: () = {
            static HOLDER: ::lockmgr::export::DriverHolder<$crate::DaemonPlugin<$profile>> =
                ::lockmgr::export::DriverHolder::new();
            impl $crate::ProfileHolder for $profile {
                fn holder() -> &'static ::lockmgr::export::DriverHolder<$crate::DaemonPlugin<Self>>
                {
                    &HOLDER
                }
            }
        };

        /// The lock driver table libvirt loads with `dlsym(handle, "virLockDriverImpl")`.
        #[unsafe(no_mangle)]
        #[allow(non_upper_case_globals)]
        pub static virLockDriverImpl: ::lockmgr::abi::virLockDriver =
            ::lockmgr::export::driver_table::<$crate::DaemonPlugin<$profile>>();
    };
}
