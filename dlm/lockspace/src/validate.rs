//! What the kernel would refuse with a bare EINVAL, checked before the call so that the error
//! names the rule, the lockspace and the resource.

use std::ffi::CString;

use crate::{
    Error, LockFlags, LockOp, MAX_LOCKSPACE_NAME, MAX_RESOURCE_NAME, Mode, ResourceName, Result,
};

/// The kernel's rules on flags (it answers EINVAL), checked first for a clearer message.
pub(crate) fn check_flags(op: LockOp, mode: Mode, flags: LockFlags) -> Result<(), &'static str> {
    if flags.contains(LockFlags::EXPEDITE) && (op != LockOp::Lock || mode != Mode::Nl) {
        return Err("EXPEDITE is only valid on a new NL request");
    }
    if op != LockOp::Convert
        && (flags.contains(LockFlags::QUECVT) || flags.contains(LockFlags::CONVDEADLK))
    {
        return Err("QUECVT and CONVDEADLK are only valid on a conversion");
    }
    Ok(())
}

/// A lockspace name: 1 to 64 bytes, no NUL, no `/` (it names the device `/dev/misc/dlm_<name>`).
pub(crate) fn validate_lockspace_name(name: &str) -> Result<CString> {
    let invalid = |reason| Error::InvalidLockspaceName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_LOCKSPACE_NAME {
        return Err(invalid("it is longer than 64 bytes (DLM_LOCKSPACE_LEN)"));
    }
    if name.contains('/') {
        return Err(invalid(
            "it contains '/' (it names the device /dev/misc/dlm_<name>)",
        ));
    }
    CString::new(name).map_err(|_| invalid("it contains a NUL byte"))
}

/// A resource name: 1 to 64 bytes of anything.
pub(crate) fn validate_resource(op: LockOp, resource: &[u8], lockspace: &str) -> Result<()> {
    let reason = if resource.is_empty() {
        "it is empty".to_owned()
    } else if resource.len() > MAX_RESOURCE_NAME {
        format!(
            "it is {} bytes, the DLM allows at most {MAX_RESOURCE_NAME} (DLM_RESNAME_MAXLEN)",
            resource.len()
        )
    } else {
        return Ok(());
    };
    Err(Error::InvalidResourceName {
        op,
        resource: ResourceName::from(resource),
        lockspace: lockspace.to_owned(),
        reason,
    })
}
