//! What bench workers share for the domains they drive, shared by the cycle, storm and scale
//! workers: the disk images, a domain registered through its pre-exec child. The calls of each
//! operation are libvirt's sequences ([`crate::sequences`]).

use std::path::Path;

use lockmgr::host::{ForkedOwner, Plugin, RegisterOutcome};
use lockmgr::{Access, Domain, LockFailureAction, Resource, Uuid};

use crate::sequences;

/// An empty image `dir/name`, as an exclusive disk.
pub(super) fn disk_image(dir: &Path, name: &str) -> Result<Resource, String> {
    let file = dir.join(name);
    std::fs::write(&file, b"").map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(Resource::Disk {
        path: file,
        access: Access::Exclusive,
    })
}

/// A plausible (v4) uuid: the 13 bytes of `prefix`, then `i` in the last 3.
pub(super) fn numbered_uuid(prefix: &[u8; 13], i: usize) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[..13].copy_from_slice(prefix);
    bytes[13] = u8::try_from((i >> 16) & 0xff).unwrap_or(0);
    bytes[14] = u8::try_from((i >> 8) & 0xff).unwrap_or(0);
    bytes[15] = u8::try_from(i & 0xff).unwrap_or(0);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid(bytes)
}

/// A running domain that holds (or will hold) its disks: its pre-exec child stays as the owner.
pub(super) struct Owner {
    pub(super) process: ForkedOwner,
    pub(super) domain: Domain,
    pub(super) disks: Vec<Resource>,
}

/// Why a domain could not be registered.
pub(super) struct RegisterError {
    /// `registering {what}: …`.
    pub(super) message: String,
    /// When the plugin itself refused the domain in the pre-exec child: its error.
    pub(super) refused: Option<String>,
}

impl From<RegisterError> for String {
    fn from(err: RegisterError) -> String {
        err.message
    }
}

/// Registers domain number `i` (`name`, `uuid`) with `disks` as libvirt's pre-exec child does.
pub(super) fn register(
    plugin: &Plugin,
    uuid: Uuid,
    i: usize,
    name: String,
    disks: Vec<Resource>,
    what: &str,
) -> Result<Owner, RegisterError> {
    let mut domain = Domain {
        uuid,
        name,
        id: u32::try_from(i + 1).unwrap_or(u32::MAX),
        pid: 0,
        uri: Some("qemu:///system".into()),
    };
    let process = sequences::register(plugin, &domain, &disks, LockFailureAction::Default)
        .map_err(|e| RegisterError {
            message: format!("registering {what}: {e}"),
            refused: None,
        })?;
    if let RegisterOutcome::Failed { error, .. } = &process.outcome {
        return Err(RegisterError {
            message: format!("registering {what}, in the pre-exec child: {error}"),
            refused: Some(error.to_string()),
        });
    }
    domain.pid = process.pid();
    Ok(Owner {
        process,
        domain,
        disks,
    })
}
