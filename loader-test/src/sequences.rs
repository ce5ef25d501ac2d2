//! libvirt's call sequences, one function per lock operation libvirt performs, each making the
//! calls libvirt makes for it (`src/locking/domain_lock.c`; libvirt-lock-abi.md §9–§10):
//! New(OBJECT_TYPE_DOMAIN, uuid, name, id, pid, uri) + AddResource… + the operation + Free, and
//! no Free after a failed New.
//!
//! | function | New flags / uri | resources | operation |
//! |---|---|---|---|
//! | [`register`] (the pre-exec child, in a `fork()`ed process) | `NEW_STARTED` / uri | all | `Acquire(NULL, REGISTER_ONLY\|RESTRICT, action, &fd)`, then `exec` |
//! | [`start`] (vCPUs start) | 0 / uri | all | `Acquire(NULL, 0, action, NULL)` |
//! | [`resume_with_state`] | 0 / uri | all | `Acquire(state, 0, action, NULL)` |
//! | [`hotplug`] (attach) | 0 / uri | the one device | `Acquire(NULL, 0, action, NULL)` |
//! | [`pause`] | 0 / NULL | all | `Release(&state, 0)` |
//! | [`detach`], [`unplug`] (the one device) | 0 / NULL | given | `Release(NULL, 0)` |
//! | [`inquire`] (migration's cookie) | 0 / NULL | all | `Inquire(&state, 0)` |
//!
//! The caller gives the domain's identity (uuid, name, id, pid); each function sets `uri` as
//! libvirt does for its operation. validate, the matrix (through [`crate::node::LocalNode`], also
//! behind the agent), bench and `step` all drive plugins through these functions.

use std::borrow::Cow;
use std::fmt;

use lockmgr::host::{self, ForeignString, ForkedOwner, HostError, HostResult, Manager, Plugin};
use lockmgr::{AcquireFlags, Domain, LockFailureAction, NewFlags, Resource};

/// The connection uri libvirtd's QEMU driver passes for start, resume and attach.
pub const URI: &str = "qemu:///system";

/// The call of a sequence that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `drvNew` (no Free follows).
    New,
    /// `drvAddResource` of the resource at this index.
    AddResource(usize),
    /// The operation itself (Acquire, Release or Inquire).
    Operation,
}

/// A sequence that failed: which call, and its error.
#[derive(Debug)]
pub struct SequenceError {
    /// The failing call.
    pub call: Call,
    /// What it returned.
    pub error: HostError,
}

impl SequenceError {
    /// `{phase}New: …`, `{phase}AddResource: …`, or `operation(error)` when the operation itself
    /// failed: the wording of bench's messages.
    pub fn worded(self, phase: &str, operation: impl FnOnce(&HostError) -> String) -> String {
        match self.call {
            Call::New => format!("{phase}New: {}", self.error),
            Call::AddResource(_) => format!("{phase}AddResource: {}", self.error),
            Call::Operation => operation(&self.error),
        }
    }
}

impl fmt::Display for SequenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for SequenceError {}

impl From<SequenceError> for HostError {
    fn from(err: SequenceError) -> Self {
        err.error
    }
}

/// `domain` with the uri libvirt passes: [`URI`] when `uri`, NULL otherwise (borrowed when it
/// already has it, so that timed loops allocate nothing more).
fn as_libvirt_sends(domain: &Domain, uri: bool) -> Cow<'_, Domain> {
    let wanted = uri.then_some(URI);
    if domain.uri.as_deref() == wanted {
        return Cow::Borrowed(domain);
    }
    let mut domain = domain.clone();
    domain.uri = wanted.map(str::to_owned);
    Cow::Owned(domain)
}

/// New(0, `domain`, uri or NULL) + AddResource for each resource, in order + `operation` + Free.
fn context<'p, T>(
    plugin: &'p Plugin,
    domain: &Domain,
    uri: bool,
    resources: &[Resource],
    operation: impl FnOnce(&mut Manager<'p>) -> HostResult<T>,
) -> Result<T, SequenceError> {
    let mut manager = plugin
        .new_manager(&as_libvirt_sends(domain, uri), NewFlags::default())
        .map_err(|error| SequenceError {
            call: Call::New,
            error,
        })?;
    for (index, resource) in resources.iter().enumerate() {
        manager
            .add_resource(resource)
            .map_err(|error| SequenceError {
                call: Call::AddResource(index),
                error,
            })?;
    }
    let result = operation(&mut manager).map_err(|error| SequenceError {
        call: Call::Operation,
        error,
    });
    drop(manager);
    result
}

/// libvirt's pre-exec child (`virDomainLockProcessStart`, QEMU started paused): in a `fork()`ed
/// process whose pid is the owner's, New(NEW_STARTED, uri) + AddResource… +
/// `Acquire(NULL, REGISTER_ONLY|RESTRICT, action, &fd)` + Free, then `exec` of a QEMU stand-in
/// that keeps the fd. `domain.pid` is ignored; what the child did is in the owner's `outcome`.
pub fn register(
    plugin: &Plugin,
    domain: &Domain,
    resources: &[Resource],
    action: LockFailureAction,
) -> HostResult<ForkedOwner> {
    host::start_owner(plugin, &as_libvirt_sends(domain, true), resources, action)
}

/// libvirtd when the vCPUs start (`virsh start`, phase 2): New(0, uri) + AddResource… +
/// `Acquire(NULL, 0, action, NULL)` + Free. The real lock acquisition.
pub fn start(
    plugin: &Plugin,
    domain: &Domain,
    resources: &[Resource],
    action: LockFailureAction,
) -> Result<(), SequenceError> {
    resume_with_state(plugin, domain, resources, None, action)
}

/// `virsh resume` (`virDomainLockProcessResume`): New(0, uri) + AddResource… +
/// `Acquire(state, 0, action, NULL)` + Free, with the state the last pause returned (or NULL).
pub fn resume_with_state(
    plugin: &Plugin,
    domain: &Domain,
    resources: &[Resource],
    state: Option<&str>,
    action: LockFailureAction,
) -> Result<(), SequenceError> {
    context(plugin, domain, true, resources, |manager| {
        manager
            .acquire(state, AcquireFlags::default(), action, false)
            .map(drop)
    })
}

/// `virsh attach-disk --live` (`virDomainLockImageAttach`): New(0, uri) + AddResource(the new
/// disk only) + `Acquire(NULL, 0, action, NULL)` + Free.
pub fn hotplug(
    plugin: &Plugin,
    domain: &Domain,
    resource: &Resource,
    action: LockFailureAction,
) -> Result<(), SequenceError> {
    start(plugin, domain, std::slice::from_ref(resource), action)
}

/// `virsh suspend` (`virDomainLockProcessPause`): New(0, NULL) + AddResource… +
/// `Release(&state, 0)` + Free; the state string as the plugin allocated it.
pub fn pause(
    plugin: &Plugin,
    domain: &Domain,
    resources: &[Resource],
) -> Result<Option<ForeignString>, SequenceError> {
    context(plugin, domain, false, resources, |manager| {
        manager.release_raw(true)
    })
}

/// A release without state (`virDomainLockImageDetach`, the rollback of a failed attach, a
/// domain letting go): New(0, NULL) + AddResource(`resources`) + `Release(NULL, 0)` + Free.
pub fn detach(
    plugin: &Plugin,
    domain: &Domain,
    resources: &[Resource],
) -> Result<(), SequenceError> {
    context(plugin, domain, false, resources, |manager| {
        manager.release_raw(false).map(drop)
    })
}

/// `virsh detach-disk --live` (`virDomainLockImageDetach`): New(0, NULL) + AddResource(that
/// disk) + `Release(NULL, 0)` + Free.
pub fn unplug(plugin: &Plugin, domain: &Domain, resource: &Resource) -> Result<(), SequenceError> {
    detach(plugin, domain, std::slice::from_ref(resource))
}

/// A migration's source building its cookie (`virDomainLockProcessInquire`, the only caller of
/// Inquire): New(0, NULL) + AddResource… + `Inquire(&state, 0)` + Free; the state string as the
/// plugin allocated it.
pub fn inquire(
    plugin: &Plugin,
    domain: &Domain,
    resources: &[Resource],
) -> Result<Option<ForeignString>, SequenceError> {
    context(plugin, domain, false, resources, Manager::inquire_raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockmgr::Uuid;

    fn domain(uri: Option<&str>) -> Domain {
        Domain {
            uuid: Uuid::version4([7; 16]),
            name: "vm".into(),
            id: 1,
            pid: 42,
            uri: uri.map(str::to_owned),
        }
    }

    #[test]
    fn the_uri_is_set_as_libvirt_sends_it() {
        let with = domain(Some(URI));
        let without = domain(None);
        assert!(matches!(as_libvirt_sends(&with, true), Cow::Borrowed(_)));
        assert!(matches!(
            as_libvirt_sends(&without, false),
            Cow::Borrowed(_)
        ));
        assert_eq!(as_libvirt_sends(&without, true).uri.as_deref(), Some(URI));
        assert_eq!(as_libvirt_sends(&with, false).uri, None);
        let other = domain(Some("qemu:///session"));
        assert_eq!(as_libvirt_sends(&other, true).uri.as_deref(), Some(URI));
        assert_eq!(as_libvirt_sends(&with, false).pid, 42);
    }

    #[test]
    fn errors_name_the_failing_call() {
        let error = |call| SequenceError {
            call,
            error: HostError::Host("boom".into()),
        };
        let op = |e: &HostError| format!("resume Acquire: {e}");
        assert_eq!(error(Call::New).worded("resume ", op), "resume New: boom");
        assert_eq!(
            error(Call::AddResource(2)).worded("resume ", op),
            "resume AddResource: boom"
        );
        assert_eq!(
            error(Call::Operation).worded("resume ", op),
            "resume Acquire: boom"
        );
        assert_eq!(error(Call::Operation).to_string(), "boom");
    }
}
