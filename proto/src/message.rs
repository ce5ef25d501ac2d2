//! The messages: requests and replies, owners, resources and their names, events.

use super::*;

/// A domain as the daemon knows it: the owner of locks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerInfo {
    /// Domain UUID, canonical text form.
    pub uuid: String,
    /// Domain name.
    pub name: String,
    /// Runtime domain id.
    pub id: u32,
    /// QEMU's pid.
    pub pid: u32,
    /// libvirt connection URI (for the `pause` lock failure action), when libvirt gave one.
    pub uri: Option<String>,
}

/// How a resource is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One holder (a write lock).
    Exclusive,
    /// Many holders (a read lock).
    Shared,
}

impl Mode {
    /// One letter, for state strings.
    pub fn letter(self) -> char {
        match self {
            Mode::Exclusive => 'E',
            Mode::Shared => 'S',
        }
    }
}

/// What kind of resource, with a lease's location.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ResourceKind {
    /// A disk image, by path.
    Disk,
    /// A `<lease>`.
    Lease {
        /// `<lockspace>`
        lockspace: Option<String>,
        /// `<target path>`
        path: Option<String>,
        /// `<target offset>`
        offset: Option<u64>,
    },
}

/// One resource of a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// Disk or lease.
    pub kind: ResourceKind,
    /// The disk path, or the lease key.
    pub name: String,
    /// Exclusive or shared.
    pub mode: Mode,
}

impl ResourceSpec {
    /// How it reads in messages: `disk /var/lib/a.img` or `lease 'key' in lockspace 'ls'`.
    pub fn describe(&self) -> String {
        match &self.kind {
            ResourceKind::Disk => format!("disk {}", self.name),
            ResourceKind::Lease {
                lockspace: Some(ls),
                ..
            } => {
                format!("lease '{}' in lockspace '{ls}'", self.name)
            }
            ResourceKind::Lease { .. } => format!("lease '{}'", self.name),
        }
    }

    /// A stable identity for state strings: the first 16 hex digits of its SHA-256.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        match &self.kind {
            ResourceKind::Disk => hasher.update(b"disk\0"),
            ResourceKind::Lease { lockspace, .. } => {
                hasher.update(b"lease\0");
                hasher.update(lockspace.as_deref().unwrap_or("").as_bytes());
                hasher.update(b"\0");
            }
        }
        hasher.update(self.name.as_bytes());
        hex(&hasher.finalize()[..8])
    }
}

/// `sha256hex(text)`: virtlockd's lock file name for a disk path, and lockmgr's DLM resource
/// name (64 hex digits, exactly `DLM_RESNAME_MAXLEN`).
pub fn sha256_hex(text: &str) -> String {
    hex_lower(&Sha256::digest(text.as_bytes()))
}

impl ResourceSpec {
    /// The name a lock manager knows the resource by: `sha256hex` of the disk path, or of
    /// `lease:<lockspace>:<key>` for a lease.
    pub fn hashed_name(&self) -> String {
        match &self.kind {
            ResourceKind::Disk => sha256_hex(&self.name),
            ResourceKind::Lease { lockspace, .. } => sha256_hex(&format!(
                "lease:{}:{}",
                lockspace.as_deref().unwrap_or(""),
                self.name
            )),
        }
    }
}

/// `<on_lockfailure>`, as the daemon applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    /// Not set: treated as poweroff (the disk is no longer protected).
    #[default]
    Default,
    /// Kill QEMU.
    Poweroff,
    /// Ask libvirt to pause the domain.
    Pause,
    /// Log and carry on.
    Ignore,
}

/// A request, plugin → daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// From libvirt's pre-exec child (its pid is the owner's): register the owner. With
    /// `restrict`, the connection accepts nothing more; QEMU inherits it.
    Register {
        /// The domain.
        owner: OwnerInfo,
        /// `VIR_LOCK_MANAGER_ACQUIRE_RESTRICT`.
        restrict: bool,
    },
    /// Take every resource, all or none.
    Acquire {
        /// The domain.
        owner: OwnerInfo,
        /// What to take.
        resources: Vec<ResourceSpec>,
        /// What to do if a lock is lost later.
        action: FailureAction,
        /// The state string libvirt saved at the last pause, if any.
        state: Option<String>,
    },
    /// Drop these resources (idempotent).
    Release {
        /// The domain.
        owner: OwnerInfo,
        /// What to drop.
        resources: Vec<ResourceSpec>,
    },
    /// The state string of what the owner holds now.
    Inquire {
        /// The domain.
        owner: OwnerInfo,
    },
    /// The daemon's lock table, for operators and tests.
    Status,
    /// What happened since event `after` (0: every event the daemon still remembers), for
    /// operators and tests: no one needs to parse the daemon's log.
    Events {
        /// The last sequence number the caller has seen.
        after: u64,
    },
}

/// Something the daemon did on its own, not in answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Increasing from 1 over the daemon's life.
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What.
    pub what: EventKind,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EventKind {
    /// A domain's QEMU exited and its locks were freed.
    OwnerExited {
        /// The domain's uuid.
        uuid: String,
        /// How many of its locks were freed.
        freed: usize,
        /// From seeing the exit to having freed them.
        micros: u64,
    },
    /// A lock of a running domain was lost (taken by someone else while the daemon was down,
    /// or the cluster stopped answering), and `<on_lockfailure>` applied.
    LockLost {
        /// The domain's name.
        domain: String,
        /// What was lost, and what was done.
        detail: String,
    },
}

/// A request with its protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFrame {
    /// [`PROTOCOL_VERSION`]
    pub version: u32,
    /// The request.
    pub request: Request,
}

/// Why the daemon refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Held by someone else.
    Busy,
    /// A malformed or inconsistent request (bad state string, unknown owner…).
    Invalid,
    /// Not allowed (wrong uid, restricted connection, registration from the wrong process).
    Denied,
    /// The daemon's configuration does not allow it.
    Config,
    /// An OS error or a bug.
    Internal,
}

/// One registered domain, for [`Reply::Status`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainStatus {
    /// libvirt's name for it.
    pub name: String,
    /// Its uuid.
    pub uuid: String,
    /// Its QEMU's pid on this host.
    pub pid: u32,
}

/// One lock in the daemon's table, for [`Reply::Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockStatus {
    /// What is locked (disk path, lease) as the daemon resolved it.
    pub resource: String,
    /// The backend's object (lock file, DLM resource name).
    pub target: String,
    /// Exclusive or shared.
    pub mode: Mode,
    /// Names of the owning domains.
    pub owners: Vec<String>,
    /// When this daemon took it (or took it back after a restart), in ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
}

/// How a daemon wrote its lock table since it started, for [`Reply::Status`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recorded {
    /// Journal records appended.
    pub records: u64,
    /// Whole tables written.
    pub whole_tables: u64,
}

/// How a daemon took back, at start, the lock table an earlier instance left, for
/// [`Reply::Status`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restored {
    /// Locks the table held.
    pub found: u64,
    /// Locks taken back: those of domains still running.
    pub locks: u64,
    /// The running domains they belong to.
    pub domains: u64,
    /// Milliseconds spent reading the table.
    pub read_ms: u64,
    /// Milliseconds spent taking the locks back from the backend.
    pub reclaim_ms: u64,
}

/// `X of Y lock(s) for Z running domain(s) (read in N ms, taken back in M ms)`, as the daemon's
/// log, `lockmgr status` and the scale bench say it.
impl std::fmt::Display for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} lock(s) for {} running domain(s) (read in {} ms, taken back in {} ms)",
            self.locks, self.found, self.domains, self.read_ms, self.reclaim_ms
        )
    }
}

/// A reply, daemon → plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// Done; `state` for Release and Inquire.
    Ok {
        /// A state string (see [`encode_state`]).
        state: Option<String>,
    },
    /// The lock table.
    Status {
        /// The backend in use.
        backend: String,
        /// Registered domains.
        owners: Vec<DomainStatus>,
        /// Every lock.
        locks: Vec<LockStatus>,
        /// Set when owners or locks were left out so that the reply fits in a frame: how many.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        truncated: Option<String>,
        /// How the table was written to disk since the daemon started.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recorded: Option<Recorded>,
        /// What the daemon took back at start; `None` when it found no table.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restored: Option<Restored>,
    },
    /// Events, oldest first.
    Events {
        /// The events after the one asked for (the oldest may have been forgotten).
        events: Vec<Event>,
    },
    /// Refused.
    Error {
        /// Why.
        kind: ErrorKind,
        /// What to tell the operator.
        message: String,
    },
}

/// A reply with its protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyFrame {
    /// [`PROTOCOL_VERSION`]
    pub version: u32,
    /// The reply.
    pub reply: Reply,
}
