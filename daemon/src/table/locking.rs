//! Taking and giving back locks: all-or-none Acquire (intent recorded first), Release and
//! Inquire, and the unlocks that failed and are retried.

use super::*;

impl<B: Backend> LockTable<B> {
    /// Takes every resource for `info`, all or none; recorded before it returns.
    pub fn acquire(
        &mut self,
        info: &OwnerInfo,
        resources: &[ResourceSpec],
        action: FailureAction,
        state: Option<&str>,
    ) -> Result<(), Refusal> {
        if let Some(state) = state {
            if let Err(why) = proto::decode_state(state) {
                let resuming = self.owners.get(&info.uuid).is_some_and(|o| o.acquired);
                if resuming {
                    return Err(Refusal::new(ErrorKind::Invalid, why));
                }
                // libvirt keeps <lockstate> after a paused domain is destroyed and hands it to
                // the next start; refusing it would keep the domain down until libvirtd restarts.
                crate::log(&format!(
                    "domain '{}' starts with a lock state from an earlier run that is not valid ({why}); ignored",
                    info.name
                ));
            }
        }
        self.check_identity(info, true)?;
        self.transaction(&info.uuid, |table| {
            table.acquire_for(info, resources, action)
        })
    }

    pub(super) fn acquire_for(
        &mut self,
        info: &OwnerInfo,
        resources: &[ResourceSpec],
        action: FailureAction,
    ) -> Result<(), Refusal> {
        let owner = self.upsert_owner(info)?;
        let action_changed = owner.action != action;
        owner.action = action;
        if action_changed {
            self.generation += 1;
        }
        let uuid = info.uuid.as_str();

        // Plan without touching anything: what to join, what to lock, what conflicts.
        let mut to_lock: Vec<(Target, &ResourceSpec)> = Vec::new();
        let mut to_join: Vec<String> = Vec::new();
        let mut seen = BTreeSet::new();
        for spec in resources {
            let target = self.backend.resolve(spec)?;
            if !seen.insert(target.id.clone()) {
                continue;
            }
            if let Some(stuck) = self.stuck.iter().find(|s| s.target == target) {
                return Err(Refusal::new(
                    ErrorKind::Internal,
                    format!(
                        "{} is still being released (its unlock failed: {}); try again later",
                        spec.describe(),
                        stuck.error
                    ),
                ));
            }
            match self.held.get(&target.id) {
                Some(held) if held.holders.contains(uuid) => {
                    if held.mode != spec.mode {
                        return Err(Refusal::new(
                            ErrorKind::Invalid,
                            format!(
                                "{} is already held by this domain in another mode",
                                spec.describe()
                            ),
                        ));
                    }
                }
                Some(held) if held.mode == Mode::Shared && spec.mode == Mode::Shared => {
                    to_join.push(target.id)
                }
                Some(held) => {
                    let holders: Vec<String> =
                        held.holders.iter().map(|h| self.holder_name(h)).collect();
                    let how = if held.mode == Mode::Exclusive {
                        "exclusively"
                    } else {
                        "shared"
                    };
                    return Err(Refusal::new(
                        ErrorKind::Busy,
                        format!(
                            "{} is locked {how} by {} on this host",
                            spec.describe(),
                            holders.join(", ")
                        ),
                    ));
                }
                None => to_lock.push((target, spec)),
            }
        }

        if !to_lock.is_empty() && self.backend.durable_state() {
            self.pending = to_lock
                .iter()
                .map(|(_, spec)| ((*spec).clone(), spec.mode))
                .collect();
            self.generation += 1;
            self.save()?;
            failpoint::hit("acquire:intent-recorded");
        }

        let mut taken: Vec<Held<B::Handle>> = Vec::with_capacity(to_lock.len());
        for (target, spec) in to_lock {
            match self.backend.lock(&target, spec, spec.mode) {
                Ok(handle) => {
                    taken.push(Held {
                        target,
                        spec: spec.clone(),
                        mode: spec.mode,
                        holders: BTreeSet::from([uuid.to_owned()]),
                        handle,
                    });
                    failpoint::hit("acquire:locked-some");
                }
                Err(err) => {
                    self.unlock_all(taken);
                    return Err(err.into());
                }
            }
        }
        failpoint::hit("acquire:locked");

        for id in &to_join {
            if let Some(held) = self.held.get_mut(id) {
                held.holders.insert(uuid.to_owned());
            }
        }
        let taken_ids: Vec<String> = taken.iter().map(|h| h.target.id.clone()).collect();
        for held in taken {
            self.held.insert(held.target.id.clone(), held);
        }
        if let Some(owner) = self.owners.get_mut(uuid) {
            owner.acquired = true;
        }
        self.pending.clear();
        self.generation += 1;
        if let Err(refusal) = self.save() {
            for id in &to_join {
                if let Some(held) = self.held.get_mut(id) {
                    held.holders.remove(uuid);
                }
            }
            let undone = taken_ids
                .iter()
                .filter_map(|id| self.held.remove(id))
                .collect();
            self.unlock_all(undone);
            return Err(refusal);
        }
        failpoint::hit("acquire:committed");
        Ok(())
    }

    /// Unlocks locks no domain holds any more; failures are kept and retried.
    pub(super) fn unlock_all(&mut self, locks: Vec<Held<B::Handle>>) {
        for held in locks {
            self.unlock_one(held.target, held.spec, held.mode, held.handle);
        }
    }

    pub(super) fn unlock_one(
        &mut self,
        target: Target,
        spec: ResourceSpec,
        mode: Mode,
        handle: B::Handle,
    ) {
        if let Err(UnlockFailed { error, handle }) =
            self.backend.unlock(&target, &spec, mode, handle)
        {
            crate::log(&format!(
                "cannot release {}: {error}; retrying until it goes",
                spec.describe()
            ));
            self.stuck.push(Stuck {
                target,
                spec,
                mode,
                handle,
                error: error.to_string(),
            });
            self.generation += 1;
        }
    }

    /// Tries the failed unlocks again.
    pub fn retry_stuck(&mut self) {
        if self.stuck.is_empty() {
            return;
        }
        for stuck in std::mem::take(&mut self.stuck) {
            match self
                .backend
                .unlock(&stuck.target, &stuck.spec, stuck.mode, stuck.handle)
            {
                Ok(()) => {
                    crate::log(&format!(
                        "released {} (its unlock had failed: {})",
                        stuck.spec.describe(),
                        stuck.error
                    ));
                    self.generation += 1;
                }
                Err(UnlockFailed { error, handle }) => self.stuck.push(Stuck {
                    handle,
                    error: error.to_string(),
                    ..stuck
                }),
            }
        }
    }

    /// Drops `resources` held by `info` (idempotent); returns the state string of what was
    /// requested. Recorded before anything is unlocked.
    pub fn release(
        &mut self,
        info: &OwnerInfo,
        resources: &[ResourceSpec],
    ) -> Result<String, Refusal> {
        // The state names what was asked for, not what this call happened to drop: libvirt
        // sends two Releases at once on suspend and keeps the answer of the later one.
        let requested: Vec<_> = resources
            .iter()
            .map(|spec| (spec.mode, spec.fingerprint()))
            .collect();
        let state = proto::encode_state(&requested);
        self.check_identity(info, false)?;
        let targets = resources
            .iter()
            .map(|spec| self.backend.resolve(spec))
            .collect::<Result<Vec<_>, _>>()?;
        let uuid = info.uuid.as_str();
        let mut left: Vec<String> = Vec::new();
        let mut freed: Vec<Held<B::Handle>> = Vec::new();
        for target in targets {
            let Some(held) = self.held.get_mut(&target.id) else {
                continue;
            };
            if !held.holders.remove(uuid) {
                continue;
            }
            left.push(target.id.clone());
            if held.holders.is_empty() {
                freed.extend(self.held.remove(&target.id));
            }
        }
        if left.is_empty() {
            return Ok(state);
        }
        let generation = self.generation;
        self.generation += 1;
        if self.backend.durable_state() {
            self.pending = freed.iter().map(|h| (h.spec.clone(), h.mode)).collect();
        }
        if let Err(refusal) = self.save() {
            for held in freed {
                self.held.insert(held.target.id.clone(), held);
            }
            for id in &left {
                if let Some(held) = self.held.get_mut(id) {
                    held.holders.insert(uuid.to_owned());
                }
            }
            self.pending.clear();
            self.generation = generation;
            return Err(refusal);
        }
        failpoint::hit("release:recorded");
        for held in freed {
            self.unlock_one(held.target, held.spec, held.mode, held.handle);
            failpoint::hit("release:unlocked-some");
        }
        failpoint::hit("release:unlocked");
        if !self.pending.is_empty() {
            self.pending.clear();
            self.generation += 1;
            // Best effort: if it fails, the next start drops the (released) unsettled locks.
            let _ = self.save();
        }
        Ok(state)
    }

    /// The state string of everything `info` holds now.
    pub fn inquire(&mut self, info: &OwnerInfo) -> Result<String, Refusal> {
        self.check_identity(info, false)?;
        let held: Vec<_> = self
            .held
            .values()
            .filter(|h| h.holders.contains(&info.uuid))
            .map(|h| (h.mode, h.spec.fingerprint()))
            .collect();
        Ok(proto::encode_state(&held))
    }
}
