//! The table's owners (domains): registering one and checking that a request comes from its
//! process, putting one back as it was when its request is refused, and freeing what one held
//! when its process exits.

use super::*;

impl<B: Backend> LockTable<B> {
    /// The pidfds to watch, with the owning domain's uuid.
    pub fn watched(&self) -> Vec<(RawFd, String)> {
        self.owners
            .iter()
            .map(|(uuid, o)| (o.pidfd.as_raw_fd(), uuid.clone()))
            .collect()
    }

    /// Registers (or refreshes) a domain; its process must be alive. Recorded before it returns.
    pub fn register(&mut self, info: &OwnerInfo) -> Result<(), Refusal> {
        self.check_identity(info, true)?;
        self.transaction(&info.uuid, |table| {
            table.upsert_owner(info)?;
            table.save_if_dirty()
        })
    }

    /// Runs `change` on behalf of domain `uuid`; if it is refused, the domain is put back as it
    /// was, and the table is written again only if `change` had written it (an intent).
    fn transaction<T>(
        &mut self,
        uuid: &str,
        change: impl FnOnce(&mut Self) -> Result<T, Refusal>,
    ) -> Result<T, Refusal> {
        let before = self.owner_before(uuid);
        let (generation, saved) = (self.generation, self.saved);
        let result = change(self);
        if result.is_err() {
            self.put_owner_back(uuid, before);
            if self.saved == saved {
                self.generation = generation;
            } else {
                // An intent was written: clear it (if this fails too, the next start drops it).
                let _ = self.save();
            }
        }
        result
    }

    /// The domain as it is now, to put back if a request is refused.
    pub(super) fn owner_before(&self, uuid: &str) -> OwnerBefore {
        match self.owners.get(uuid) {
            None => OwnerBefore::Absent,
            Some(o) => OwnerBefore::Present {
                info: o.info.clone(),
                action: o.action,
                acquired: o.acquired,
            },
        }
    }

    pub(super) fn put_owner_back(&mut self, uuid: &str, before: OwnerBefore) {
        match before {
            OwnerBefore::Absent => {
                if self.owners.remove(uuid).is_some() {
                    self.generation += 1;
                }
            }
            OwnerBefore::Present {
                info,
                action,
                acquired,
            } => {
                if let Some(owner) = self.owners.get_mut(uuid) {
                    owner.info = info;
                    owner.action = action;
                    owner.acquired = acquired;
                }
            }
        }
    }

    /// Why a request of domain `uuid` must wait: one of its own is in flight.
    pub(super) fn owner_in_flight(&self, uuid: &str) -> Option<String> {
        self.ops
            .values()
            .any(|op| op.uuid == uuid)
            .then(|| format!("another request of domain {uuid} is waiting for the lock manager"))
    }

    /// Settles who `info.uuid` is before a request: an owner whose process exited is cleaned
    /// up first; a live one must be the process the request names. `starting`: the request may
    /// start the domain (register, acquire), so a mismatch means it already runs.
    pub(super) fn check_identity(
        &mut self,
        info: &OwnerInfo,
        starting: bool,
    ) -> Result<(), Refusal> {
        let Some(existing) = self.owners.get(&info.uuid) else {
            return Ok(());
        };
        if !process::is_alive(&existing.pidfd) {
            // Its death is not processed yet: clean up first.
            let (name, pid) = (existing.info.name.clone(), existing.info.pid);
            let freed = self.owner_died(&info.uuid);
            crate::log(&format!(
                "domain '{name}' (pid {pid}) had exited; freed {freed} lock(s) before serving its next request"
            ));
            return Ok(());
        }
        if existing.info.pid == info.pid {
            return Ok(());
        }
        Err(if starting {
            Refusal::new(
                ErrorKind::Busy,
                format!(
                    "domain '{}' ({}) is already running on this host as pid {}",
                    existing.info.name, existing.info.uuid, existing.info.pid
                ),
            )
        } else {
            Refusal::new(
                ErrorKind::Denied,
                format!(
                    "domain '{}' ({}) runs as pid {} on this host; a request for pid {} ('{}') may not touch its locks",
                    existing.info.name, existing.info.uuid, existing.info.pid, info.pid, info.name
                ),
            )
        })
    }

    /// Adds the domain (checking its process) or refreshes what libvirt may change.
    pub(super) fn upsert_owner(&mut self, info: &OwnerInfo) -> Result<&mut Owner, Refusal> {
        if !self.owners.contains_key(&info.uuid) {
            let owner = new_owner(info)?;
            self.owners.insert(info.uuid.clone(), owner);
            self.generation += 1;
        }
        let owner = self.owners.get_mut(&info.uuid).expect("inserted above");
        if owner.info.uri.as_ref() != info.uri.as_ref().or(owner.info.uri.as_ref())
            || owner.info.name != info.name
            || owner.info.id != info.id
        {
            self.generation += 1;
        }
        // libvirt sends uri only for start/resume/attach; keep the last one it gave.
        if info.uri.is_some() {
            owner.info.uri.clone_from(&info.uri);
        }
        owner.info.name.clone_from(&info.name);
        owner.info.id = info.id;
        Ok(owner)
    }

    pub(super) fn holder_name(&self, uuid: &str) -> String {
        self.owners.get(uuid).map_or_else(
            || format!("uuid {uuid}"),
            |o| format!("domain '{}' (pid {})", o.info.name, o.info.pid),
        )
    }

    /// The owner's process exited: free everything it held, then record it (a crash in between
    /// is harmless: a restart drops the locks of domains that are gone). The unlocks leave with
    /// the server's next [`LockTable::submit`], at the end of this turn.
    pub fn owner_died(&mut self, uuid: &str) -> usize {
        let mut freed = 0;
        let ids: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.holders.contains(uuid))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let held = self.held.get_mut(&id).expect("listed");
            held.holders.remove(uuid);
            freed += 1;
            if held.holders.is_empty() {
                let held = self.held.remove(&id).expect("listed");
                // Not waited for: an unlock answered later stays recorded until it is done.
                let _ = self.unlock_one(held.target, held.spec, held.mode, held.handle);
                failpoint::hit("owner-death:unlocked-some");
            }
        }
        failpoint::hit("owner-death:unlocked");
        self.owners.remove(uuid);
        self.generation += 1;
        // Best effort: the server retries a failed save.
        let _ = self.save();
        freed
    }

    /// Checks whether the owner behind a pidfd really exited (the pidfd polled readable).
    pub fn owner_exited(&self, uuid: &str) -> bool {
        self.owners
            .get(uuid)
            .is_none_or(|o| !process::is_alive(&o.pidfd))
    }

    /// For tests: the raw fd of an owner's pidfd.
    pub fn pidfd_of(&self, uuid: &str) -> Option<RawFd> {
        self.owners.get(uuid).map(|o| o.pidfd.as_fd().as_raw_fd())
    }
}

/// A domain seen for the first time: its process must run, and be one that can exit.
fn new_owner(info: &OwnerInfo) -> Result<Owner, Refusal> {
    let invalid = |why: String| {
        Refusal::new(
            ErrorKind::Invalid,
            format!("domain '{}' ({}): {why}", info.name, info.uuid),
        )
    };
    if info.pid == 0 {
        return Err(invalid("no pid".into()));
    }
    if let Some(why) = process::never_an_owner(info.pid) {
        return Err(invalid(format!(
            "{why}, not a QEMU: its locks could never be freed"
        )));
    }
    let pidfd = sys::pidfd_open(info.pid).map_err(|e| {
        invalid(match e.raw_os_error() {
            Some(libc::ESRCH) => format!("process {} is not running", info.pid),
            _ => format!("cannot watch process {}: {e}", info.pid),
        })
    })?;
    if !process::is_alive(&pidfd) {
        return Err(invalid(format!("process {} has exited", info.pid)));
    }
    let start_time = process::start_time(info.pid)
        .map_err(|e| invalid(format!("cannot read /proc/{}/stat: {e}", info.pid)))?;
    Ok(Owner {
        info: info.clone(),
        start_time,
        pidfd,
        action: FailureAction::Default,
        acquired: false,
    })
}
