//! A backend that answers some lock requests late, for tests (`failpoints` feature only):
//! `LOCKMGRD_STALL=TEXT:MS` makes every lock request for a resource whose description contains
//! TEXT wait MS milliseconds before the wrapped backend takes it, as a DLM request waits while
//! the resource's master node is being fenced. The server must serve everyone else meanwhile.
//! `TEXT:MS:block` answers them on the server's thread after MS instead, as lockmgrd did before
//! its requests were asynchronous: the control that shows the tests catch a blocked server.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use lockmgr_proto::{Mode, ResourceSpec};

use crate::backend::{Answer, Backend, BackendError, Outcome, Target, Ticket, UnlockFailed};

/// Which requests stall, and for how long.
#[derive(Debug, Clone)]
pub struct Stall {
    matching: String,
    delay: Duration,
    blocking: bool,
}

impl Stall {
    /// From `LOCKMGRD_STALL`, if set.
    pub fn from_env() -> Result<Option<Stall>, String> {
        let Ok(value) = std::env::var("LOCKMGRD_STALL") else {
            return Ok(None);
        };
        let (rest, blocking) = match value.strip_suffix(":block") {
            Some(rest) => (rest, true),
            None => (value.as_str(), false),
        };
        let (matching, ms) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("LOCKMGRD_STALL={value}: expected TEXT:MILLISECONDS[:block]"))?;
        let ms: u64 = ms
            .parse()
            .map_err(|_| format!("LOCKMGRD_STALL={value}: {ms} is not a number of milliseconds"))?;
        Ok(Some(Stall {
            matching: matching.to_owned(),
            delay: Duration::from_millis(ms),
            blocking,
        }))
    }
}

/// A request held back.
#[derive(Debug)]
struct Held {
    ticket: Ticket,
    due: Instant,
    target: Target,
    spec: ResourceSpec,
    mode: Mode,
}

/// `inner`, with the requests [`Stall`] names answered late.
#[derive(Debug)]
pub struct Stalling<B> {
    inner: B,
    stall: Stall,
    held: Vec<Held>,
    next: Ticket,
    wake: UnixStream,
    wake_writer: UnixStream,
}

impl<B: Backend> Stalling<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, stall: Stall) -> std::io::Result<Self> {
        let (wake, wake_writer) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        crate::log(&format!(
            "test mode: lock requests for resources matching '{}' are answered after {} ms{}",
            stall.matching,
            stall.delay.as_millis(),
            if stall.blocking {
                ", blocking the server"
            } else {
                ""
            }
        ));
        Ok(Stalling {
            inner,
            stall,
            held: Vec::new(),
            next: 1,
            wake,
            wake_writer,
        })
    }
}

impl<B: Backend> Backend for Stalling<B> {
    type Handle = B::Handle;

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn resolve(&self, spec: &ResourceSpec) -> Result<Target, BackendError> {
        self.inner.resolve(spec)
    }

    fn lock(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Result<B::Handle, BackendError> {
        self.inner.lock(target, spec, mode)
    }

    fn unlock(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
        handle: B::Handle,
    ) -> Result<(), UnlockFailed<B::Handle>> {
        self.inner.unlock(target, spec, mode, handle)
    }

    fn start_lock(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Answer<Result<B::Handle, BackendError>> {
        if !spec.describe().contains(&self.stall.matching) {
            return self.inner.start_lock(target, spec, mode);
        }
        if self.stall.blocking {
            std::thread::sleep(self.stall.delay);
            return Answer::Now(self.inner.lock(target, spec, mode));
        }
        let ticket = self.next;
        self.next += 1;
        self.held.push(Held {
            ticket,
            due: Instant::now() + self.stall.delay,
            target: target.clone(),
            spec: spec.clone(),
            mode,
        });
        let (delay, writer) = (self.stall.delay, self.wake_writer.try_clone());
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            if let Ok(mut writer) = writer {
                let _ = writer.write(&[1]);
            }
        });
        Answer::Later(ticket)
    }

    fn submit(&mut self) {
        self.inner.submit();
    }

    fn abandon(&mut self, ticket: Ticket) -> bool {
        // Nothing is taken before it is due: giving up drops the request.
        let before = self.held.len();
        self.held.retain(|h| h.ticket != ticket);
        self.held.len() < before
    }

    fn answers_fd(&self) -> Option<RawFd> {
        Some(self.wake.as_raw_fd())
    }

    fn take_answers(&mut self) -> Vec<(Ticket, Outcome<B::Handle>)> {
        let mut drain = [0u8; 64];
        while matches!((&self.wake).read(&mut drain), Ok(n) if n > 0) {}
        let now = Instant::now();
        let (due, later): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.due <= now);
        self.held = later;
        let mut answers = self.inner.take_answers();
        for held in due {
            let result = self.inner.lock(&held.target, &held.spec, held.mode);
            answers.push((held.ticket, Outcome::Locked(result)));
        }
        answers
    }

    fn reclaim_order(&self, handle: &B::Handle) -> Option<(u32, u64)> {
        self.inner.reclaim_order(handle)
    }

    fn reclaim(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Result<B::Handle, BackendError> {
        self.inner.reclaim(target, spec, mode)
    }

    fn reclaim_all(
        &mut self,
        locks: &[(&Target, &ResourceSpec, Mode)],
    ) -> Vec<Result<B::Handle, BackendError>> {
        self.inner.reclaim_all(locks)
    }

    fn discard(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Result<(), BackendError> {
        self.inner.discard(target, spec, mode)
    }

    fn durable_state(&self) -> bool {
        self.inner.durable_state()
    }
}
