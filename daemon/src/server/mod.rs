//! The socket server: one thread, one `poll` over the listening socket, the clients, the owners'
//! pidfds, the backend's answers and a signal pipe.
//!
//! A request the backend answers later (a DLM lock whose master node has failed) waits in the
//! table while everyone else is served; its client gets its reply when the answers are in, or a
//! refusal at its deadline ([`crate::backend::ANSWER_WITHIN`]). A request that needs what one in flight holds
//! (the same domain, a resource being taken) is parked and handled again when one finishes.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockmgr_proto::{
    self as proto, DomainStatus, ErrorKind, Event, EventKind, LockStatus, Recorded, Reply, Request,
    Restored,
};

mod connection;
mod waiting;

use crate::backend::Backend;
use crate::health::Health;
use crate::log;
use crate::sys;
use crate::table::{LockTable, OpId, Progress, Refusal};
use crate::watchdog::SelfFence;

/// How many events the daemon remembers for [`Request::Events`].
const EVENTS_KEPT: usize = 1024;

/// How long without a probe round trip before backend calls are held back.
const STALL_AFTER: Duration = Duration::from_secs(3);

/// How long a request may stay parked behind requests in flight.
const PARKED_WITHIN: Duration = Duration::from_secs(8);

/// How long an Acquire that carries a lock state (a resume, a migration's destination) is tried
/// again while its disk is busy: the previous holder's Release may reach the lock manager a
/// moment late (e.g. a migration's source whose unlock was answered at its deadline).
const HANDOVER_GRACE: Duration = Duration::from_secs(3);
/// How often such an Acquire is tried again.
const HANDOVER_RETRY_EVERY: Duration = Duration::from_millis(100);

/// A connected plugin.
#[derive(Debug)]
struct Client {
    /// Tells a client from a later one that got the same descriptor.
    id: u64,
    stream: UnixStream,
    buffer: Vec<u8>,
    peer_pid: u32,
    /// After a restricted registration (the fd QEMU keeps) nothing more is accepted.
    restricted: bool,
    /// Its request waits (in flight or parked): nothing more is read until it is answered.
    waiting: bool,
    /// Replies the client has not read yet: nothing more is read from it until they are.
    outbox: Vec<u8>,
}

/// Who waits for a request in flight.
#[derive(Debug)]
struct Waiter {
    fd: RawFd,
    client: u64,
    since: Instant,
    /// An Acquire with a lock state, tried again if the disk is busy (see [`HANDOVER_GRACE`]).
    handover: Option<Request>,
}

/// A request parked behind requests in flight, or an Acquire with a lock state waiting to be
/// tried again.
#[derive(Debug)]
struct Parked {
    fd: RawFd,
    client: u64,
    request: Request,
    since: Instant,
    /// When to try it again; `None`: when a request in flight finishes.
    retry_at: Option<Instant>,
}

/// What handling a request gave.
enum Handled {
    Reply(Reply),
    /// In flight; with the request when it is a handover, to be tried again if refused busy.
    Wait(OpId, Option<Request>),
    Park(Request),
    /// A handover refused busy: tried again until [`HANDOVER_GRACE`] after its arrival.
    Retry(Request, Refusal),
}

/// An Acquire that carries a lock state: a resume, or a migration's destination.
fn is_handover(request: &Request) -> bool {
    matches!(request, Request::Acquire { state: Some(_), .. })
}

/// The daemon.
#[derive(Debug)]
pub struct Server<B: Backend> {
    listener: UnixListener,
    socket_path: PathBuf,
    table: LockTable<B>,
    clients: HashMap<RawFd, Client>,
    /// A descriptor kept in reserve: when `accept` fails for lack of descriptors, closing it
    /// lets the daemon take the waiting connection, answer it and close it, instead of polling
    /// a listener that stays readable at full speed.
    reserve: Option<File>,
    /// When the last "out of file descriptors" was logged.
    fd_shortage_logged: Option<Instant>,
    stop: RawFd,
    health: Option<Arc<Health>>,
    failure_timeout: Duration,
    /// Set while the backend's cluster side does not answer (or quorum is lost): why.
    failed: Option<String>,
    /// Self-fencing: told which domains run with locks; its quorum watch triggers lock failure.
    self_fence: Option<Arc<SelfFence>>,
    /// What was taken back at start, for [`Request::Status`].
    restored: Option<Restored>,
    /// The latest events, for [`Request::Events`].
    events: VecDeque<Event>,
    next_event: u64,
    next_client: u64,
    /// Requests in flight, and who waits for each.
    waiters: HashMap<OpId, Waiter>,
    parked: VecDeque<Parked>,
}

fn open_reserve() -> Option<File> {
    File::open("/dev/null").ok()
}

fn refusal_reply(refusal: Refusal) -> Reply {
    Reply::Error {
        kind: refusal.kind,
        message: refusal.message,
    }
}

impl<B: Backend> Server<B> {
    /// A server over a bound listener; `stop` is the read end of a pipe that signals shutdown.
    pub fn new(
        listener: UnixListener,
        socket_path: PathBuf,
        table: LockTable<B>,
        stop: RawFd,
        failure_timeout: Duration,
    ) -> Self {
        let health = table.start_health_probe();
        Server {
            listener,
            socket_path,
            table,
            clients: HashMap::new(),
            reserve: open_reserve(),
            fd_shortage_logged: None,
            stop,
            health,
            failure_timeout,
            failed: None,
            self_fence: None,
            restored: None,
            events: VecDeque::new(),
            next_event: 1,
            next_client: 1,
            waiters: HashMap::new(),
            parked: VecDeque::new(),
        }
    }

    /// Self-fencing: publish the domains at risk to `fence`'s keeper, and treat the loss of
    /// quorum it watches as a lock failure.
    #[must_use]
    pub fn self_fence(mut self, fence: Arc<SelfFence>) -> Self {
        self.self_fence = Some(fence);
        self.publish_exposure();
        self
    }

    /// What the daemon took back at start of an earlier instance's table, for status replies.
    #[must_use]
    pub fn restored(mut self, restored: Option<Restored>) -> Self {
        self.restored = restored;
        self
    }

    /// Tells the self-fence which domains may write under a lock: in lock-failure mode the
    /// lock holders whose process still runs, otherwise whether any domain holds a lock.
    fn publish_exposure(&self) {
        let Some(fence) = &self.self_fence else {
            return;
        };
        let holders = if self.failed.is_some() {
            self.table.live_lock_holders()
        } else if self.table.holds_locks() {
            vec!["(domains holding locks)".into()]
        } else {
            Vec::new()
        };
        fence.publish(holders);
    }

    /// Remembers an event for [`Request::Events`] (the log has it too).
    pub fn record(&mut self, what: EventKind) {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            seq: self.next_event,
            at_ms,
            what,
        });
        self.next_event += 1;
    }

    /// Enters lock-failure mode when the probe went stale (applying every lock-holding
    /// domain's `<on_lockfailure>` once), and leaves it when the cluster answers again.
    fn check_health(&mut self) {
        let Some(health) = &self.health else { return };
        let silent_for = health.since_last_ok();
        // With self-fencing, membership decides: a DLM that is silent while this node stays a
        // member is recovering (another node's fence pending) and takes no lock away.
        let problem = match &self.self_fence {
            Some(fence) => fence
                .cluster_problem()
                .map(|problem| format!("{problem}: this node may no longer hold its locks")),
            None => (silent_for > self.failure_timeout).then(|| {
                let why = health
                    .last_error()
                    .map_or_else(String::new, |e| format!(" (last error: {e})"));
                format!(
                    "the {} lock manager has not answered for {} s{why}: lockspace stopped or quorum lost",
                    self.table.backend_name(),
                    silent_for.as_secs()
                )
            }),
        };
        match problem {
            Some(reason) if self.failed.is_none() => {
                log(&format!("LOCK FAILURE: {reason}"));
                for (domain, outcome) in self.table.apply_lock_failure() {
                    log(&format!("LOCK FAILURE: {outcome}"));
                    self.record(EventKind::LockLost {
                        domain,
                        detail: format!("{reason}; {outcome}"),
                    });
                }
                self.failed = Some(reason);
            }
            Some(_) => {}
            None => {
                if let Some(reason) = self.failed.take() {
                    log(&format!("the lock manager answers again (after: {reason})"));
                }
            }
        }
    }

    /// Why the backend cannot be called now, if it cannot: in lock-failure mode, or when the
    /// probe has not completed a round trip for [`STALL_AFTER`] (a request on a stopped DLM
    /// lockspace would block this thread, and with it every domain of the host).
    fn stalled(&self) -> Option<String> {
        if let Some(reason) = &self.failed {
            return Some(reason.clone());
        }
        let silent_for = self.health.as_ref()?.since_last_ok();
        (silent_for > STALL_AFTER).then(|| {
            format!(
                "the {} lock manager has not answered for {} ms",
                self.table.backend_name(),
                silent_for.as_millis()
            )
        })
    }

    /// Serves until the stop pipe becomes readable.
    pub fn run(&mut self) -> Result<(), String> {
        loop {
            self.check_health();
            self.publish_exposure();
            self.table.submit();
            // Unlocks never block this thread: an owner's death is handled even while the
            // cluster side is stuck (its locks stay recorded until the backend is done).
            let watched = self.table.watched();
            // What to poll, each for reading or (`true`) writing: a client with replies not yet
            // read for room to write them; one whose request waits, not at all; the others for
            // their next request.
            let mut fds: Vec<(RawFd, bool)> =
                vec![(self.stop, false), (self.listener.as_raw_fd(), false)];
            fds.extend(
                self.clients
                    .iter()
                    .filter(|(_, c)| !c.waiting || !c.outbox.is_empty())
                    .map(|(fd, c)| (*fd, !c.outbox.is_empty())),
            );
            let answers_at = fds.len();
            fds.extend(self.table.answers_fd().map(|fd| (fd, false)));
            let first_pidfd = fds.len();
            fds.extend(watched.iter().map(|(fd, _)| (*fd, false)));
            // The timeout bounds how long a finished `virsh suspend` stays a zombie, and how
            // late a deadline is noticed.
            let timeout = self.next_deadline().map_or(1000, |left| {
                i32::try_from(left.as_millis().clamp(1, 1000)).unwrap_or(1000)
            });
            let ready = sys::poll(&fds, timeout).map_err(|e| format!("poll: {e}"))?;
            sys::reap_children();
            if self.stalled().is_none() {
                self.table.retry_stuck();
            }
            // A save that failed (a full disk) is retried until it succeeds; it logs once.
            let _ = self.table.save_if_dirty();
            for index in ready {
                let (fd, writing) = fds[index];
                if index == 0 {
                    return Ok(());
                } else if index == 1 {
                    self.accept_all();
                } else if index < answers_at {
                    if writing {
                        self.flush_client(fd);
                    } else {
                        self.serve_client(fd);
                    }
                } else if index < first_pidfd {
                    // Answers: taken below, every turn.
                } else {
                    let uuid = &watched[index - first_pidfd].1;
                    if self.table.owner_exited(uuid) {
                        let seen = std::time::Instant::now();
                        let freed = self.table.owner_died(uuid);
                        let micros = u64::try_from(seen.elapsed().as_micros()).unwrap_or(u64::MAX);
                        log(&format!(
                            "owner {uuid} exited; freed {freed} lock(s) in {micros} µs"
                        ));
                        self.record(EventKind::OwnerExited {
                            uuid: uuid.clone(),
                            freed,
                            micros,
                        });
                    }
                }
            }
            self.answer_finished();
            self.give_up_late();
            self.retry_handovers();
        }
    }

    fn handle(&mut self, client: &mut Client, request: Request) -> Handled {
        let progress = match request {
            Request::Register { owner, restrict } => {
                if client.peer_pid != owner.pid {
                    return Handled::Reply(Reply::Error {
                        kind: ErrorKind::Denied,
                        message: format!(
                            "domain '{}' must be registered from its own process (pid {}), not from pid {}",
                            owner.name, owner.pid, client.peer_pid
                        ),
                    });
                }
                return Handled::Reply(match self.table.register(&owner) {
                    Ok(()) => {
                        client.restricted = restrict;
                        Reply::Ok { state: None }
                    }
                    Err(refusal) => refusal_reply(refusal),
                });
            }
            Request::Acquire { .. } | Request::Release { .. } if self.stalled().is_some() => {
                return Handled::Reply(Reply::Error {
                    kind: ErrorKind::Internal,
                    message: format!(
                        "no lock can be taken or released now: {}",
                        self.stalled().unwrap_or_default()
                    ),
                });
            }
            Request::Acquire {
                ref owner,
                ref resources,
                action,
                ref state,
            } => self
                .table
                .start_acquire(owner, resources, action, state.as_deref()),
            Request::Release {
                ref owner,
                ref resources,
            } => self
                .table
                .start_release(owner, resources)
                .map(|progress| progress.map(Some)),
            Request::Inquire { owner } => {
                return Handled::Reply(match self.table.inquire(&owner) {
                    Ok(state) => Reply::Ok { state: Some(state) },
                    Err(refusal) => refusal_reply(refusal),
                });
            }
            Request::Status => {
                let (owners, locks) = self.table.status();
                return Handled::Reply(fit_status(
                    self.table.backend_name(),
                    owners,
                    locks,
                    self.table.record_counts(),
                    self.restored,
                ));
            }
            Request::Events { after } => {
                return Handled::Reply(Reply::Events {
                    events: self
                        .events
                        .iter()
                        .filter(|e| e.seq > after)
                        .cloned()
                        .collect(),
                });
            }
        };
        match progress {
            Ok(Progress::Done(state)) => Handled::Reply(Reply::Ok { state }),
            Ok(Progress::Waiting(op)) => {
                Handled::Wait(op, is_handover(&request).then_some(request))
            }
            Ok(Progress::Blocked(_)) => Handled::Park(request),
            Err(refusal) if refusal.kind == ErrorKind::Busy && is_handover(&request) => {
                Handled::Retry(request, refusal)
            }
            Err(refusal) => Handled::Reply(refusal_reply(refusal)),
        }
    }
}

/// The status reply, with owners and locks left out (and said so) until it fits in a frame.
fn fit_status(
    backend: &str,
    mut owners: Vec<DomainStatus>,
    mut locks: Vec<LockStatus>,
    recorded: Recorded,
    restored: Option<Restored>,
) -> Reply {
    let (all_owners, all_locks) = (owners.len(), locks.len());
    let mut truncated = None;
    loop {
        let reply = Reply::Status {
            backend: backend.into(),
            owners,
            locks,
            truncated,
            recorded: Some(recorded),
            restored,
        };
        let size = serde_json::to_vec(&reply).map_or(usize::MAX, |body| body.len());
        // Room for the frame's version wrapper.
        if size + 64 <= proto::MAX_FRAME {
            return reply;
        }
        let Reply::Status {
            owners: mut o,
            locks: mut l,
            ..
        } = reply
        else {
            unreachable!("built above");
        };
        if l.len() >= o.len() {
            l.truncate(l.len() / 2);
        } else {
            o.truncate(o.len() / 2);
        }
        truncated = Some(format!(
            "{} of {all_owners} owner(s) and {} of {all_locks} lock(s) not shown: a reply must fit in {} bytes",
            all_owners - o.len(),
            all_locks - l.len(),
            proto::MAX_FRAME
        ));
        (owners, locks) = (o, l);
    }
}
