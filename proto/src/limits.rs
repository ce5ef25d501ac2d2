//! The bounds on what a request may carry, checked by the daemon before anything else.

use super::*;

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
