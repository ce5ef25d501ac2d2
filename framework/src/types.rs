//! The typed view of what libvirt passes to a plugin: the domain, its resources, the flags.

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use crate::abi;
use crate::error::{Error, Result};

/// A domain UUID (16 raw bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// Parses the canonical `8-4-4-4-12` hex form.
    pub fn parse(text: &str) -> Result<Self> {
        let hex: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
        let well_formed = text.len() == 36
            && [8, 13, 18, 23].iter().all(|&i| text.as_bytes()[i] == b'-')
            && hex.len() == 32;
        if !well_formed {
            return Err(Error::invalid_arg(format!("malformed UUID '{text}'")));
        }
        let mut bytes = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).unwrap_or("zz");
            bytes[i] = u8::from_str_radix(pair, 16)
                .map_err(|_| Error::invalid_arg(format!("malformed UUID '{text}'")))?;
        }
        Ok(Uuid(bytes))
    }

    /// A random (version 4) UUID made of `bytes`, its version and variant bits set: pass a hash
    /// of a name for a UUID that is the same for that name every time. Always plausible: never 16
    /// equal bytes, which libvirt (and lockd) take for a placeholder.
    pub fn version4(mut bytes: [u8; 16]) -> Uuid {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Uuid(bytes)
    }

    /// libvirt's `virUUIDIsValid`: a UUID whose 16 bytes are all equal is a placeholder.
    pub fn is_plausible(&self) -> bool {
        self.0.iter().any(|&b| b != self.0[0])
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

/// The object a lock manager context is for: always a domain, from New's five params.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// `uuid`
    pub uuid: Uuid,
    /// `name`
    pub name: String,
    /// `id`: the runtime domain id.
    pub id: u32,
    /// `pid`: QEMU's pid (already known in the pre-exec child).
    pub pid: u32,
    /// `uri`: set for start, resume and attach; `None` for pause, detach and inquire.
    pub uri: Option<String>,
}

/// How a resource is to be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    /// No flag: exclusive read-write.
    Exclusive,
    /// `<shareable/>`: shared read-write.
    Shared,
    /// `<readonly/>` (wins over `<shareable/>`).
    ReadOnly,
}

impl Access {
    /// Decodes AddResource's flags.
    pub fn from_flags(flags: u32) -> Result<Self> {
        let known = abi::VIR_LOCK_MANAGER_RESOURCE_READONLY | abi::VIR_LOCK_MANAGER_RESOURCE_SHARED;
        if flags & !known != 0 {
            return Err(Error::invalid_arg(format!(
                "unsupported resource flags {:#x}",
                flags & !known
            )));
        }
        Ok(if flags & abi::VIR_LOCK_MANAGER_RESOURCE_READONLY != 0 {
            Access::ReadOnly
        } else if flags & abi::VIR_LOCK_MANAGER_RESOURCE_SHARED != 0 {
            Access::Shared
        } else {
            Access::Exclusive
        })
    }

    /// AddResource's flags for this access.
    pub fn to_flags(self) -> u32 {
        match self {
            Access::Exclusive => 0,
            Access::Shared => abi::VIR_LOCK_MANAGER_RESOURCE_SHARED,
            Access::ReadOnly => abi::VIR_LOCK_MANAGER_RESOURCE_READONLY,
        }
    }
}

/// A `<lease>`: a named lock, optionally located on shared storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `<key>`
    pub key: String,
    /// `<lockspace>`, when given.
    pub lockspace: Option<String>,
    /// `<target path=…>`
    pub path: Option<PathBuf>,
    /// `<target offset=…>`
    pub offset: Option<u64>,
}

/// One resource added with AddResource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A disk image: the path of the top image only.
    Disk {
        /// `disk->src->path`
        path: PathBuf,
        /// From `<readonly/>` / `<shareable/>`.
        access: Access,
    },
    /// A `<lease>`.
    Lease {
        /// The lease itself.
        lease: Lease,
        /// Leases carry no flags from libvirt today; kept for symmetry.
        access: Access,
    },
}

impl Resource {
    /// How the resource is to be held.
    pub fn access(&self) -> Access {
        match self {
            Resource::Disk { access, .. } | Resource::Lease { access, .. } => *access,
        }
    }
}

/// Flags of `drvNew`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NewFlags {
    /// `NEW_STARTED`: the context of the process start (the pre-exec child).
    pub started: bool,
}

/// Flags of `drvAcquire`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AcquireFlags {
    /// `REGISTER_ONLY`: register the owner, take nothing.
    pub register_only: bool,
    /// `RESTRICT`: the connection handed back must accept nothing more.
    pub restrict: bool,
}

impl AcquireFlags {
    /// Decodes the raw flags; unknown bits are an error.
    pub fn from_raw(flags: u32) -> Result<Self> {
        let known =
            abi::VIR_LOCK_MANAGER_ACQUIRE_REGISTER_ONLY | abi::VIR_LOCK_MANAGER_ACQUIRE_RESTRICT;
        if flags & !known != 0 {
            return Err(Error::invalid_arg(format!(
                "unsupported acquire flags {:#x}",
                flags & !known
            )));
        }
        Ok(AcquireFlags {
            register_only: flags & abi::VIR_LOCK_MANAGER_ACQUIRE_REGISTER_ONLY != 0,
            restrict: flags & abi::VIR_LOCK_MANAGER_ACQUIRE_RESTRICT != 0,
        })
    }

    /// The raw flags.
    pub fn to_raw(self) -> u32 {
        let mut flags = 0;
        if self.register_only {
            flags |= abi::VIR_LOCK_MANAGER_ACQUIRE_REGISTER_ONLY;
        }
        if self.restrict {
            flags |= abi::VIR_LOCK_MANAGER_ACQUIRE_RESTRICT;
        }
        flags
    }
}

/// `<on_lockfailure>`: what to do when a held lock is lost while the domain runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LockFailureAction {
    /// Element absent or `default`.
    #[default]
    Default,
    /// Kill QEMU.
    Poweroff,
    /// Restart the domain.
    Restart,
    /// Ask libvirt to pause the domain.
    Pause,
    /// Log and carry on.
    Ignore,
}

impl LockFailureAction {
    /// Decodes `virDomainLockFailureAction`.
    pub fn from_raw(action: i32) -> Result<Self> {
        Ok(match action {
            abi::VIR_DOMAIN_LOCK_FAILURE_DEFAULT => Self::Default,
            abi::VIR_DOMAIN_LOCK_FAILURE_POWEROFF => Self::Poweroff,
            abi::VIR_DOMAIN_LOCK_FAILURE_RESTART => Self::Restart,
            abi::VIR_DOMAIN_LOCK_FAILURE_PAUSE => Self::Pause,
            abi::VIR_DOMAIN_LOCK_FAILURE_IGNORE => Self::Ignore,
            other => {
                return Err(Error::invalid_arg(format!(
                    "unknown lock failure action {other}"
                )));
            }
        })
    }

    /// The raw `virDomainLockFailureAction`.
    pub fn to_raw(self) -> i32 {
        match self {
            Self::Default => abi::VIR_DOMAIN_LOCK_FAILURE_DEFAULT,
            Self::Poweroff => abi::VIR_DOMAIN_LOCK_FAILURE_POWEROFF,
            Self::Restart => abi::VIR_DOMAIN_LOCK_FAILURE_RESTART,
            Self::Pause => abi::VIR_DOMAIN_LOCK_FAILURE_PAUSE,
            Self::Ignore => abi::VIR_DOMAIN_LOCK_FAILURE_IGNORE,
        }
    }

    /// The name used in domain XML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Poweroff => "poweroff",
            Self::Restart => "restart",
            Self::Pause => "pause",
            Self::Ignore => "ignore",
        }
    }
}

/// Everything Acquire was called with.
#[derive(Debug, Clone, Copy)]
pub struct AcquireRequest<'a> {
    /// The state string saved by libvirt from the last pause (borrowed), if any.
    pub state: Option<&'a str>,
    /// `REGISTER_ONLY` / `RESTRICT`.
    pub flags: AcquireFlags,
    /// `<on_lockfailure>`.
    pub action: LockFailureAction,
    /// libvirt passed an `int *fd`: an fd returned now is leaked into QEMU.
    pub wants_fd: bool,
}

/// What Acquire hands back to libvirt.
#[derive(Debug, Default)]
pub struct Acquired {
    /// An fd for QEMU to inherit (created without close-on-exec), when libvirt asked for one.
    pub fd: Option<OwnedFd>,
}

/// Arguments of `drvInit`.
#[derive(Debug, Clone)]
pub struct InitArgs {
    /// The ABI version libvirt speaks (1000000).
    pub version: u32,
    /// `/etc/libvirt/qemu-NAME.conf`; it may not exist (then defaults apply).
    pub config_path: Option<PathBuf>,
}

/// A state string is embedded unescaped in XML by libvirt: keep it short and markup-free.
pub fn check_state_string(state: &str) -> Result<()> {
    const MAX_STATE_LEN: usize = 64 * 1024;
    if state.len() > MAX_STATE_LEN {
        return Err(Error::internal(format!(
            "state string of {} bytes exceeds {MAX_STATE_LEN}",
            state.len()
        )));
    }
    if let Some(bad) = state.chars().find(|c| matches!(c, '<' | '>' | '&' | '\0')) {
        return Err(Error::internal(format!(
            "state string contains {bad:?}, which libvirt would embed unescaped in XML"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_round_trips_and_rejects_garbage() {
        let text = "c7a5fdbd-cdaf-9455-926a-d65c16db1809";
        let uuid = Uuid::parse(text).unwrap();
        assert_eq!(uuid.to_string(), text);
        assert!(uuid.is_plausible());
        assert!(!Uuid([0x11; 16]).is_plausible());
        for bad in [
            "",
            "c7a5fdbd",
            "c7a5fdbdxcdaf-9455-926a-d65c16db1809",
            "g7a5fdbd-cdaf-9455-926a-d65c16db1809",
        ] {
            assert!(Uuid::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_version4_uuid_is_plausible_and_says_its_version() {
        for fill in [0x00, 0x11, 0xff] {
            let uuid = Uuid::version4([fill; 16]);
            assert!(uuid.is_plausible(), "{uuid}");
            assert_eq!(uuid.to_string().as_bytes()[14], b'4', "{uuid}");
        }
    }

    #[test]
    fn readonly_wins_over_shared_and_unknown_flags_fail() {
        assert_eq!(Access::from_flags(0).unwrap(), Access::Exclusive);
        assert_eq!(Access::from_flags(2).unwrap(), Access::Shared);
        assert_eq!(Access::from_flags(3).unwrap(), Access::ReadOnly);
        assert!(Access::from_flags(4).is_err());
        assert!(AcquireFlags::from_raw(4).is_err());
        assert_eq!(AcquireFlags::from_raw(3).unwrap().to_raw(), 3);
        assert!(LockFailureAction::from_raw(5).is_err());
    }

    #[test]
    fn state_strings_with_markup_are_refused() {
        assert!(check_state_string("v1:abc").is_ok());
        assert!(check_state_string("a<b").is_err());
        assert!(check_state_string("a&b").is_err());
    }
}
