//! Taking and giving back locks: all-or-none Acquire (intent recorded first), Release and
//! Inquire, and the unlocks that failed and are retried.

use super::*;

impl<B: Backend> LockTable<B> {
    /// Starts taking every resource for `info`, all or none. The intent is recorded before the
    /// backend is asked, the result before it is answered.
    pub fn start_acquire(
        &mut self,
        info: &OwnerInfo,
        resources: &[ResourceSpec],
        action: FailureAction,
        state: Option<&str>,
    ) -> Result<Progress<Option<String>>, Refusal> {
        if let Some(why) = self.owner_in_flight(&info.uuid) {
            return Ok(Progress::Blocked(why));
        }
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
        let plan = match self.plan_acquire(info, resources)? {
            Ok(plan) => plan,
            Err(why) => return Ok(Progress::Blocked(why)),
        };
        let op = self.next_op;
        self.next_op += 1;
        let before = self.owner_before(&info.uuid);
        let (generation, saved) = (self.generation, self.saved);
        let started = self.start_locks(op, info, action, plan, before);
        if started.is_err() {
            if self.saved == saved {
                self.generation = generation;
            } else {
                // An intent was written: clear it (if this fails too, the next start drops it).
                let _ = self.save();
            }
        }
        started
    }

    /// What an Acquire must do, without touching anything: the shared locks of this host to
    /// join and the targets to lock; `Err(why)` inside when it must wait for a request in
    /// flight.
    fn plan_acquire<'r>(
        &self,
        info: &OwnerInfo,
        resources: &'r [ResourceSpec],
    ) -> Result<Result<AcquirePlan<'r>, String>, Refusal> {
        let uuid = info.uuid.as_str();
        let mut plan = AcquirePlan {
            to_lock: Vec::new(),
            to_join: Vec::new(),
        };
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
            if let Some(op) = self.reserved.get(&target.id) {
                let taker = self.ops.get(op).map_or("", |o| o.uuid.as_str());
                return Ok(Err(format!(
                    "{} is being taken by {}",
                    spec.describe(),
                    self.holder_name(taker)
                )));
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
                    plan.to_join.push(target.id)
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
                None => plan.to_lock.push((target, spec)),
            }
        }
        Ok(Ok(plan))
    }

    /// Records the intent and asks the backend for every lock of `plan`.
    fn start_locks(
        &mut self,
        op: OpId,
        info: &OwnerInfo,
        action: FailureAction,
        plan: AcquirePlan<'_>,
        before: OwnerBefore,
    ) -> Result<Progress<Option<String>>, Refusal> {
        let owner = match self.upsert_owner(info) {
            Ok(owner) => owner,
            Err(refusal) => {
                self.put_owner_back(&info.uuid, before);
                return Err(refusal);
            }
        };
        let action_changed = owner.action != action;
        owner.action = action;
        if action_changed {
            self.generation += 1;
        }
        if !plan.to_lock.is_empty() && self.backend.durable_state() {
            let intent = plan
                .to_lock
                .iter()
                .map(|(_, spec)| ((*spec).clone(), spec.mode))
                .collect();
            self.pending.insert(op, intent);
            self.generation += 1;
            if let Err(refusal) = self.save() {
                self.pending.remove(&op);
                self.put_owner_back(&info.uuid, before);
                return Err(refusal);
            }
            failpoint::hit("acquire:intent-recorded");
        }
        let mut acquire = AcquireOp {
            info: info.clone(),
            before,
            to_join: plan.to_join,
            reserved: Vec::new(),
            asked: HashMap::new(),
            taken: Vec::new(),
            refused: None,
        };
        let mut waiting = BTreeSet::new();
        for (target, spec) in plan.to_lock {
            if acquire.refused.is_some() {
                break;
            }
            self.reserved.insert(target.id.clone(), op);
            acquire.reserved.push(target.id.clone());
            match self.backend.start_lock(&target, spec, spec.mode) {
                Answer::Now(Ok(handle)) => {
                    acquire
                        .taken
                        .push(Held::granted(target, spec.clone(), &info.uuid, handle));
                    failpoint::hit("acquire:locked-some");
                }
                Answer::Now(Err(err)) => acquire.refused = Some(err),
                Answer::Later(ticket) => {
                    self.tickets.insert(ticket, op);
                    waiting.insert(ticket);
                    acquire.asked.insert(ticket, (target, spec.clone()));
                }
            }
        }
        if waiting.is_empty() {
            return self
                .finish_acquire(op, acquire)
                .map(|()| Progress::Done(None));
        }
        self.ops.insert(
            op,
            Op {
                uuid: info.uuid.clone(),
                waiting,
                kind: OpKind::Acquire(Box::new(acquire)),
            },
        );
        Ok(Progress::Waiting(op))
    }

    /// Every answer of an Acquire is in: commits it, or gives back what it got.
    pub(super) fn finish_acquire(
        &mut self,
        op: OpId,
        acquire: AcquireOp<B::Handle>,
    ) -> Result<(), Refusal> {
        let AcquireOp {
            info,
            before,
            to_join,
            reserved,
            taken,
            refused,
            ..
        } = acquire;
        for id in &reserved {
            self.reserved.remove(id);
        }
        let uuid = info.uuid.as_str();
        // The domain may have exited (or been replaced) while the backend was asked.
        let same_domain = self
            .owners
            .get(uuid)
            .is_some_and(|o| o.info.pid == info.pid && process::is_alive(&o.pidfd));
        let refused = refused.map(Refusal::from).or_else(|| {
            (!same_domain).then(|| {
                Refusal::new(
                    ErrorKind::Invalid,
                    format!(
                        "domain '{}' (pid {}) exited while its locks were being taken",
                        info.name, info.pid
                    ),
                )
            })
        });
        if let Some(refusal) = refused {
            self.unlock_all(taken);
            if same_domain {
                self.put_owner_back(uuid, before);
            }
            self.pending.remove(&op);
            self.generation += 1;
            let _ = self.save();
            return Err(refusal);
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
        self.pending.remove(&op);
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
            self.put_owner_back(uuid, before);
            return Err(refusal);
        }
        failpoint::hit("acquire:committed");
        for id in &taken_ids {
            if let Some(held) = self.held.get(id) {
                self.backend.name_holder(&held.handle, &held.spec, &info);
            }
        }
        Ok(())
    }

    /// Unlocks locks no domain holds any more; failures are kept and retried.
    pub(super) fn unlock_all(&mut self, locks: Vec<Held<B::Handle>>) {
        for held in locks {
            self.unlock_one(held.target, held.spec, held.mode, held.handle);
        }
    }

    /// Starts an unlock; its ticket if the backend answers later.
    pub(super) fn unlock_one(
        &mut self,
        target: Target,
        spec: ResourceSpec,
        mode: Mode,
        handle: B::Handle,
    ) -> Option<Ticket> {
        match self.backend.start_unlock(&target, &spec, mode, handle) {
            Ok(Answer::Now(())) => None,
            Ok(Answer::Later(ticket)) => Some(ticket),
            Err(UnlockFailed { error, handle }) => {
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
                None
            }
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
                .start_unlock(&stuck.target, &stuck.spec, stuck.mode, stuck.handle)
            {
                Ok(_) => {
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

    /// Starts dropping `resources` held by `info` (idempotent); answers the state string of
    /// what was requested once the unlocks are done. Recorded before anything is unlocked.
    pub fn start_release(
        &mut self,
        info: &OwnerInfo,
        resources: &[ResourceSpec],
    ) -> Result<Progress<String>, Refusal> {
        if let Some(why) = self.owner_in_flight(&info.uuid) {
            return Ok(Progress::Blocked(why));
        }
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
            return Ok(Progress::Done(state));
        }
        let op = self.next_op;
        self.next_op += 1;
        let generation = self.generation;
        self.generation += 1;
        if self.backend.durable_state() && !freed.is_empty() {
            self.pending
                .insert(op, freed.iter().map(|h| (h.spec.clone(), h.mode)).collect());
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
            self.pending.remove(&op);
            self.generation = generation;
            return Err(refusal);
        }
        failpoint::hit("release:recorded");
        let mut waiting = BTreeSet::new();
        for held in freed {
            if let Some(ticket) = self.unlock_one(held.target, held.spec, held.mode, held.handle) {
                self.tickets.insert(ticket, op);
                waiting.insert(ticket);
            }
            failpoint::hit("release:unlocked-some");
        }
        if waiting.is_empty() {
            self.finish_release(op);
            return Ok(Progress::Done(state));
        }
        self.ops.insert(
            op,
            Op {
                uuid: uuid.to_owned(),
                waiting,
                kind: OpKind::Release(state),
            },
        );
        Ok(Progress::Waiting(op))
    }

    /// A Release's unlocks are done (or no longer waited for: then the backend records them).
    pub(super) fn finish_release(&mut self, op: OpId) {
        failpoint::hit("release:unlocked");
        if self.pending.remove(&op).is_some() {
            self.generation += 1;
            // Best effort: if it fails, the next start drops the (released) unsettled locks.
            let _ = self.save();
        }
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
