//! The protocol between lockmgr's plugins and the lock daemon `lockmgrd`, and its client: one
//! home for the wire types, the framing, the state strings and the resource names, shared by the
//! plugins (through the `lockmgr` crate's `client` feature) and the daemon, which needs nothing
//! of the plugin ABI.
//!
//! Frames are a 4-byte big-endian length and a JSON body of at most [`MAX_FRAME`] bytes. Every
//! message is versioned ([`PROTOCOL_VERSION`]) and decoded strictly: unknown fields, unknown
//! variants and wrong types are errors, so a mismatched or hostile peer is refused, never
//! half-understood.
//!
//! The client side is written for libvirt's pre-exec child too: no threads, no global state,
//! blocking calls on one socket with timeouts.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The protocol version; a daemon refuses any other.
pub const PROTOCOL_VERSION: u32 = 1;
/// The largest frame either side accepts (100 disks with long paths fit easily).
pub const MAX_FRAME: usize = 1 << 20;

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

/// The longest disk path or lease target path a request may carry (`PATH_MAX` less its NUL).
pub const MAX_PATH: usize = 4095;
/// The longest domain name, lease key or lease lockspace (`NAME_MAX`: each is a file name in
/// libvirt's own lock managers).
pub const MAX_NAME: usize = 255;
/// The longest domain uuid text.
pub const MAX_UUID: usize = 64;
/// The most resources one request may carry.
pub const MAX_RESOURCES: usize = 1024;

fn check_len(what: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        let shown: String = value.chars().take(60).collect();
        return Err(format!(
            "{what} '{shown}…' is {} bytes long; at most {max} are accepted",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Err(format!("{what} contains a NUL byte"));
    }
    Ok(())
}

impl OwnerInfo {
    /// Checks the lengths libvirt itself never exceeds.
    pub fn check_limits(&self) -> Result<(), String> {
        check_len("domain uuid", &self.uuid, MAX_UUID)?;
        check_len("domain name", &self.name, MAX_NAME)?;
        if let Some(uri) = &self.uri {
            check_len("connection uri", uri, MAX_PATH)?;
        }
        Ok(())
    }
}

impl ResourceSpec {
    /// Checks the lengths libvirt itself never exceeds.
    pub fn check_limits(&self) -> Result<(), String> {
        match &self.kind {
            ResourceKind::Disk => check_len("disk path", &self.name, MAX_PATH),
            ResourceKind::Lease {
                lockspace, path, ..
            } => {
                check_len("lease key", &self.name, MAX_NAME)?;
                if let Some(lockspace) = lockspace {
                    check_len("lease lockspace", lockspace, MAX_NAME)?;
                }
                if let Some(path) = path {
                    check_len("lease path", path, MAX_PATH)?;
                }
                Ok(())
            }
        }
    }
}

impl Request {
    /// Checks every input against the limits above, so that anything accepted fits in every
    /// reply and state file: a clear refusal at the boundary instead of a failure later.
    pub fn check_limits(&self) -> Result<(), String> {
        match self {
            Request::Register { owner, .. } | Request::Inquire { owner } => owner.check_limits(),
            Request::Acquire {
                owner,
                resources,
                state,
                ..
            } => {
                owner.check_limits()?;
                check_resources(resources)?;
                if let Some(state) = state {
                    check_len("lock state", state, MAX_STATE_LEN)?;
                }
                Ok(())
            }
            Request::Release { owner, resources } => {
                owner.check_limits()?;
                check_resources(resources)
            }
            Request::Status | Request::Events { .. } => Ok(()),
        }
    }
}

fn check_resources(resources: &[ResourceSpec]) -> Result<(), String> {
    if resources.len() > MAX_RESOURCES {
        return Err(format!(
            "{} resources in one request; at most {MAX_RESOURCES} are accepted",
            resources.len()
        ));
    }
    resources.iter().try_for_each(ResourceSpec::check_limits)
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

/// [`RequestFrame`] borrowing its request, for sending: the same JSON, without copying every
/// resource of the request.
#[derive(Serialize)]
struct RequestFrameRef<'a> {
    version: u32,
    request: &'a Request,
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

/// A framing or transport failure.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection cleanly between frames.
    Closed,
    /// A length over [`MAX_FRAME`].
    TooLarge(usize),
    /// JSON that does not match the protocol.
    Malformed(String),
    /// An I/O error.
    Io(std::io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Closed => f.write_str("connection closed"),
            FrameError::TooLarge(len) => write!(f, "frame of {len} bytes exceeds {MAX_FRAME}"),
            FrameError::Malformed(why) => write!(f, "malformed message: {why}"),
            FrameError::Io(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Encodes one frame.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(message).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge(body.len()))?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Splits one complete frame off the front of `buffer`: `Ok(None)` when more bytes are needed.
pub fn take_frame(buffer: &mut Vec<u8>) -> Result<Option<Vec<u8>>, FrameError> {
    if buffer.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if buffer.len() < 4 + len {
        return Ok(None);
    }
    let body = buffer[4..4 + len].to_vec();
    buffer.drain(..4 + len);
    Ok(Some(body))
}

/// Decodes a frame body strictly.
pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

fn read_frame(stream: &mut UnixStream) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    if let Err(err) = stream.read_exact(&mut len) {
        return Err(if err.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            FrameError::Io(err)
        });
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).map_err(FrameError::Io)?;
    Ok(body)
}

/// How long a plugin waits for the daemon before giving up (libvirtd must never hang forever).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A blocking connection to lockmgrd.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    socket: PathBuf,
}

/// Why a call to the daemon failed, before any reply.
#[derive(Debug)]
pub struct ClientError {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// What went wrong.
    pub error: FrameError,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lockmgrd at {}: {}", self.socket.display(), self.error)
    }
}

impl std::error::Error for ClientError {}

impl Client {
    /// Connects to the daemon's socket.
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        let fail = |error| ClientError {
            socket: socket.to_owned(),
            error,
        };
        let stream = UnixStream::connect(socket).map_err(|e| fail(FrameError::Io(e)))?;
        stream
            .set_read_timeout(Some(CALL_TIMEOUT))
            .map_err(|e| fail(FrameError::Io(e)))?;
        stream
            .set_write_timeout(Some(CALL_TIMEOUT))
            .map_err(|e| fail(FrameError::Io(e)))?;
        Ok(Client {
            stream,
            socket: socket.to_owned(),
        })
    }

    /// Sends one request and waits for its reply.
    pub fn call(&mut self, request: &Request) -> Result<Reply, ClientError> {
        let fail = |error| ClientError {
            socket: self.socket.clone(),
            error,
        };
        let frame = encode(&RequestFrameRef {
            version: PROTOCOL_VERSION,
            request,
        })
        .map_err(fail)?;
        self.stream
            .write_all(&frame)
            .map_err(|e| fail(FrameError::Io(e)))?;
        let body = read_frame(&mut self.stream).map_err(fail)?;
        let reply: ReplyFrame = decode(&body).map_err(fail)?;
        if reply.version != PROTOCOL_VERSION {
            return Err(fail(FrameError::Malformed(format!(
                "protocol version {} (this plugin speaks {PROTOCOL_VERSION})",
                reply.version
            ))));
        }
        Ok(reply.reply)
    }

    /// Gives up the connection, e.g. to hand it to QEMU.
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }
}

/// Lowercase hex of `bytes`, table-driven: it runs for every resource of every request.
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    hex_lower(bytes)
}

/// The prefix and version of lockmgr's state strings.
pub const STATE_PREFIX: &str = "lockmgr1";
/// A state string longer than this is refused before parsing.
pub const MAX_STATE_LEN: usize = 64 * 1024;

/// A state string: `lockmgr1:<E|S><fingerprint>,…:<checksum>`, short and XML-safe; the
/// checksum (8 hex digits of SHA-256 over the body) catches corruption.
pub fn encode_state(resources: &[(Mode, String)]) -> String {
    let mut entries: Vec<String> = resources
        .iter()
        .map(|(mode, fingerprint)| format!("{}{fingerprint}", mode.letter()))
        .collect();
    entries.sort();
    let body = format!("{STATE_PREFIX}:{}", entries.join(","));
    let checksum = hex(&Sha256::digest(body.as_bytes())[..4]);
    format!("{body}:{checksum}")
}

/// Parses and verifies a state string from libvirt (untrusted: it went through an XML file on
/// disk and maybe a migration cookie).
pub fn decode_state(state: &str) -> Result<Vec<(Mode, String)>, String> {
    let shown: String = state.chars().take(40).collect();
    let bad = |why: &str| format!("state string '{shown}…' is not a valid lockmgr state: {why}");
    if state.len() > MAX_STATE_LEN {
        return Err(bad(&format!(
            "{} bytes, more than {MAX_STATE_LEN}",
            state.len()
        )));
    }
    let mut parts = state.split(':');
    let (Some(prefix), Some(entries), Some(checksum), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("expected 'lockmgr1:<entries>:<checksum>'"));
    };
    if prefix != STATE_PREFIX {
        return Err(bad(&format!(
            "unknown version '{prefix}' (this daemon writes {STATE_PREFIX})"
        )));
    }
    let body = format!("{prefix}:{entries}");
    if hex(&Sha256::digest(body.as_bytes())[..4]) != checksum {
        return Err(bad("checksum mismatch (corrupted)"));
    }
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    entries
        .split(',')
        .map(|entry| {
            let (mode, fingerprint) = entry.split_at(entry.len().min(1));
            let mode = match mode {
                "E" => Mode::Exclusive,
                "S" => Mode::Shared,
                _ => return Err(bad(&format!("entry '{entry}' has no mode letter"))),
            };
            if fingerprint.len() != 16 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(&format!(
                    "entry '{entry}' is not a resource fingerprint"
                )));
            }
            Ok((mode, fingerprint.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, mode: Mode) -> ResourceSpec {
        ResourceSpec {
            kind: ResourceKind::Disk,
            name: name.into(),
            mode,
        }
    }

    #[test]
    fn state_round_trips_and_detects_corruption() {
        let resources = [
            disk("/a.img", Mode::Exclusive),
            disk("/b.img", Mode::Shared),
        ];
        let entries: Vec<_> = resources
            .iter()
            .map(|r| (r.mode, r.fingerprint()))
            .collect();
        let state = encode_state(&entries);
        assert!(state.starts_with("lockmgr1:"));
        assert!(
            !state.contains(['<', '>', '&', '\0']),
            "libvirt embeds it unescaped in XML"
        );
        let mut decoded = decode_state(&state).unwrap();
        decoded.sort();
        let mut expected = entries.clone();
        expected.sort();
        assert_eq!(decoded, expected);

        let flipped = state.replacen('E', "S", 1);
        assert!(
            decode_state(&flipped)
                .unwrap_err()
                .contains("checksum mismatch")
        );
        assert!(
            decode_state("garbage")
                .unwrap_err()
                .contains("expected 'lockmgr1:")
        );
        assert!(
            decode_state("lockmgr9:E0011223344556677:00000000")
                .unwrap_err()
                .contains("unknown version")
        );
        assert_eq!(decode_state(&encode_state(&[])).unwrap(), vec![]);
    }

    #[test]
    fn hashed_names_are_virtlockds_for_disks_and_namespaced_for_leases() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let image = disk("/var/lib/libvirt/images/demo.img", Mode::Exclusive);
        assert_eq!(
            image.hashed_name(),
            sha256_hex("/var/lib/libvirt/images/demo.img")
        );
        let lease = ResourceSpec {
            kind: ResourceKind::Lease {
                lockspace: Some("ls".into()),
                path: None,
                offset: None,
            },
            name: "key".into(),
            mode: Mode::Exclusive,
        };
        assert_eq!(lease.hashed_name(), sha256_hex("lease:ls:key"));
        assert_eq!(lease.hashed_name().len(), 64, "DLM_RESNAME_MAXLEN");
    }

    #[test]
    fn inputs_beyond_libvirts_limits_are_refused_with_the_field_named() {
        let owner = OwnerInfo {
            uuid: "7c1e0001-5a2b-4c3d-8e9f-0a1b2c3d4e5f".into(),
            name: "vm".into(),
            id: 1,
            pid: 42,
            uri: None,
        };
        let acquire = |resources: Vec<ResourceSpec>| Request::Acquire {
            owner: owner.clone(),
            resources,
            action: FailureAction::Poweroff,
            state: None,
        };
        assert!(
            acquire(vec![disk(&"/a".repeat(2047), Mode::Exclusive)])
                .check_limits()
                .is_ok()
        );
        let long = acquire(vec![disk(
            &format!("/{}", "a".repeat(MAX_PATH)),
            Mode::Exclusive,
        )]);
        let why = long.check_limits().unwrap_err();
        assert!(
            why.starts_with("disk path '/aaa") && why.contains("4096 bytes long"),
            "{why}"
        );
        let many = acquire(vec![disk("/a", Mode::Shared); MAX_RESOURCES + 1]);
        assert!(many.check_limits().unwrap_err().contains("1025 resources"));
        let lease = ResourceSpec {
            kind: ResourceKind::Lease {
                lockspace: Some("ls".into()),
                path: None,
                offset: None,
            },
            name: "k".repeat(MAX_NAME + 1),
            mode: Mode::Exclusive,
        };
        assert!(
            acquire(vec![lease])
                .check_limits()
                .unwrap_err()
                .contains("lease key")
        );
        let named = Request::Register {
            owner: OwnerInfo {
                name: "n".repeat(300),
                ..owner.clone()
            },
            restrict: false,
        };
        assert!(named.check_limits().unwrap_err().contains("domain name"));
        let nul = acquire(vec![disk("/a\0b", Mode::Exclusive)]);
        assert!(nul.check_limits().unwrap_err().contains("NUL"));
    }

    #[test]
    fn frames_are_bounded_and_strict() {
        let request = RequestFrame {
            version: 1,
            request: Request::Status,
        };
        let mut buffer = encode(&request).unwrap();
        buffer.extend_from_slice(&[0, 0]);
        let body = take_frame(&mut buffer).unwrap().unwrap();
        assert_eq!(decode::<RequestFrame>(&body).unwrap(), request);
        assert_eq!(buffer, [0, 0], "the partial next frame stays buffered");
        assert!(take_frame(&mut buffer).unwrap().is_none());

        let mut huge = (u32::try_from(MAX_FRAME).unwrap() + 1)
            .to_be_bytes()
            .to_vec();
        assert!(matches!(
            take_frame(&mut huge),
            Err(FrameError::TooLarge(_))
        ));

        let unknown_field = br#"{"version":1,"request":"status","extra":true}"#;
        assert!(decode::<RequestFrame>(unknown_field).is_err());
        let unknown_op = br#"{"version":1,"request":{"steal":{}}}"#;
        assert!(decode::<RequestFrame>(unknown_op).is_err());
        let wrong_type = br#"{"version":"1","request":"status"}"#;
        assert!(decode::<RequestFrame>(wrong_type).is_err());
    }
}
