//! Requests that wait: in flight in the table until the backend answers or their deadline
//! passes, or parked behind requests in flight; and the replies they get later.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use lockmgr_proto::{ErrorKind, Reply, Request};

use super::connection::queue_reply;
use super::{
    Client, HANDOVER_GRACE, HANDOVER_RETRY_EVERY, Handled, PARKED_WITHIN, Parked, Server, Waiter,
    refusal_reply,
};
use crate::backend::{ANSWER_WITHIN, Backend};
use crate::table::{OpId, Refusal};

impl<B: Backend> Server<B> {
    /// How long until the first deadline of a request in flight or parked.
    pub(super) fn next_deadline(&self) -> Option<Duration> {
        let now = Instant::now();
        let in_flight = self
            .waiters
            .values()
            .map(|w| (w.since + ANSWER_WITHIN).saturating_duration_since(now));
        let parked = self.parked.iter().map(|p| {
            p.retry_at
                .unwrap_or(p.since + PARKED_WITHIN)
                .saturating_duration_since(now)
        });
        in_flight.chain(parked).min()
    }

    /// Replies to the requests the backend's answers finished, then tries the parked ones again.
    pub(super) fn answer_finished(&mut self) {
        let finished = self.table.take_finished();
        if finished.is_empty() {
            return;
        }
        for (op, result) in finished {
            let Some(waiter) = self.waiters.remove(&op) else {
                continue;
            };
            match (result, waiter.handover) {
                (Ok(state), _) => {
                    self.reply_later(waiter.fd, waiter.client, Reply::Ok { state });
                }
                (Err(refusal), Some(request)) if refusal.kind == ErrorKind::Busy => {
                    self.retry_or_refuse(waiter.fd, waiter.client, request, waiter.since, refusal);
                }
                (Err(refusal), _) => {
                    self.reply_later(waiter.fd, waiter.client, refusal_reply(refusal));
                }
            }
        }
        self.unpark();
    }

    /// A handover refused busy: parked to be tried again shortly while it is within
    /// [`HANDOVER_GRACE`] of its arrival (`since`), refused once past it.
    pub(super) fn retry_or_refuse(
        &mut self,
        fd: RawFd,
        client: u64,
        request: Request,
        since: Instant,
        refusal: Refusal,
    ) {
        if since.elapsed() < HANDOVER_GRACE {
            self.retry_later(fd, client, request, since);
        } else {
            self.reply_later(fd, client, refusal_reply(refusal));
        }
    }

    /// Parks a handover to be tried again shortly (see [`HANDOVER_GRACE`]).
    pub(super) fn retry_later(&mut self, fd: RawFd, client: u64, request: Request, since: Instant) {
        self.parked.push_back(Parked {
            fd,
            client,
            request,
            since,
            retry_at: Some(Instant::now() + HANDOVER_RETRY_EVERY),
        });
    }

    /// Tries the handovers whose time has come again.
    pub(super) fn retry_handovers(&mut self) {
        let now = Instant::now();
        if self
            .parked
            .iter()
            .any(|p| p.retry_at.is_some_and(|at| at <= now))
        {
            self.unpark();
        }
    }

    /// Gives up on requests in flight past their deadline, and refuses parked ones past theirs.
    pub(super) fn give_up_late(&mut self) {
        let late: Vec<OpId> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.since.elapsed() >= ANSWER_WITHIN)
            .map(|(op, _)| *op)
            .collect();
        if !late.is_empty() {
            for op in late {
                self.table.give_up(op, ANSWER_WITHIN);
            }
            self.answer_finished();
        }
        while self
            .parked
            .front()
            .is_some_and(|p| p.since.elapsed() >= PARKED_WITHIN)
        {
            let parked = self.parked.pop_front().expect("checked");
            let reply = Reply::Error {
                kind: ErrorKind::Busy,
                message: format!(
                    "the request waited {} s for requests ahead of it that the lock manager has not answered; try again",
                    PARKED_WITHIN.as_secs()
                ),
            };
            self.reply_later(parked.fd, parked.client, reply);
        }
    }

    /// Handles the parked requests again, in order (handovers only once their retry is due);
    /// those still blocked stay parked.
    pub(super) fn unpark(&mut self) {
        let now = Instant::now();
        for parked in std::mem::take(&mut self.parked) {
            if parked.retry_at.is_some_and(|at| at > now) {
                self.parked.push_back(parked);
                continue;
            }
            let Some(mut client) = self.take_client(parked.fd, parked.client) else {
                continue;
            };
            match self.handle(&mut client, parked.request) {
                Handled::Park(request) => {
                    self.parked.push_back(Parked {
                        request,
                        retry_at: None,
                        ..parked
                    });
                    self.clients.insert(parked.fd, client);
                }
                Handled::Wait(op, handover) => {
                    self.wait_for(op, &client, parked.since, handover);
                    self.clients.insert(parked.fd, client);
                }
                Handled::Retry(request, refusal) => {
                    self.clients.insert(parked.fd, client);
                    self.retry_or_refuse(parked.fd, parked.client, request, parked.since, refusal);
                }
                Handled::Reply(reply) => {
                    self.clients.insert(parked.fd, client);
                    self.reply_later(parked.fd, parked.client, reply);
                }
            }
        }
    }

    pub(super) fn wait_for(
        &mut self,
        op: OpId,
        client: &Client,
        since: Instant,
        handover: Option<Request>,
    ) {
        self.waiters.insert(
            op,
            Waiter {
                fd: client.stream.as_raw_fd(),
                client: client.id,
                since,
                handover,
            },
        );
    }

    /// The client on `fd`, if it is still the one with `id`.
    pub(super) fn take_client(&mut self, fd: RawFd, id: u64) -> Option<Client> {
        match self.clients.remove(&fd) {
            Some(client) if client.id == id => Some(client),
            Some(other) => {
                self.clients.insert(fd, other);
                None
            }
            None => None,
        }
    }

    /// Sends the reply a waiting client was waiting for, then handles what it sent meanwhile.
    pub(super) fn reply_later(&mut self, fd: RawFd, id: u64, reply: Reply) {
        // It may have gone meanwhile: the request was done all the same.
        let Some(mut client) = self.take_client(fd, id) else {
            return;
        };
        client.waiting = false;
        if self.send_reply(&mut client, reply) && self.process_frames(&mut client) {
            self.clients.insert(fd, client);
        }
    }

    /// Sends a reply (queued if the client does not read it yet); false if the connection is
    /// broken and the client is to be dropped.
    pub(super) fn send_reply(&self, client: &mut Client, reply: Reply) -> bool {
        // Before the reply: a domain granted a lock counts as at risk before it can write.
        self.publish_exposure();
        queue_reply(client, reply)
    }
}
