//! Connections: accepting (within the descriptor budget, from this uid only), reading frames,
//! and writing replies without letting a slow reader stall the daemon.

use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use lockmgr_proto::{
    self as proto, ErrorKind, FrameError, PROTOCOL_VERSION, Reply, ReplyFrame, RequestFrame,
};

use super::{Client, Handled, Parked, Server, open_reserve};
use crate::backend::Backend;
use crate::log;
use crate::sys;

impl<B: Backend> Server<B> {
    pub(super) fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(err) if err.kind() == IoErrorKind::WouldBlock => return,
                Err(err) if matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    self.turn_away(&err);
                    return;
                }
                Err(err) => {
                    log(&format!("accept on {}: {err}", self.socket_path.display()));
                    return;
                }
            }
        }
    }

    /// Out of descriptors: spends the reserve to take one waiting connection, tells it why,
    /// and closes it, so the listener does not stay readable; logs at most every 10 s.
    pub(super) fn turn_away(&mut self, err: &std::io::Error) {
        let open = self.clients.len();
        if self
            .fd_shortage_logged
            .is_none_or(|at| at.elapsed() > Duration::from_secs(10))
        {
            log(&format!(
                "accept on {}: {err} ({open} client connection(s) open); refusing new connections until some close",
                self.socket_path.display()
            ));
            self.fd_shortage_logged = Some(Instant::now());
        }
        self.reserve = None;
        if let Ok((mut stream, _)) = self.listener.accept() {
            send(
                &mut stream,
                Reply::Error {
                    kind: ErrorKind::Internal,
                    message: format!(
                        "lockmgrd is out of file descriptors ({open} connections open); try again"
                    ),
                },
            );
        }
        self.reserve = open_reserve();
    }

    pub(super) fn admit(&mut self, stream: UnixStream) {
        let (uid, pid) = match sys::peer_credentials(stream.as_fd()) {
            Ok(cred) => cred,
            Err(err) => {
                log(&format!(
                    "cannot read peer credentials: {err}; connection dropped"
                ));
                return;
            }
        };
        let own_uid = sys::effective_uid();
        if uid != own_uid {
            log(&format!(
                "refused a connection from uid {uid} (pid {pid}): only uid {own_uid} may lock"
            ));
            let mut stream = stream;
            send(
                &mut stream,
                Reply::Error {
                    kind: ErrorKind::Denied,
                    message: format!("uid {uid} may not use lockmgrd"),
                },
            );
            return;
        }
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let fd = stream.as_raw_fd();
        let id = self.next_client;
        self.next_client += 1;
        self.clients.insert(
            fd,
            Client {
                id,
                stream,
                buffer: Vec::new(),
                peer_pid: pid,
                restricted: false,
                waiting: false,
                outbox: Vec::new(),
            },
        );
    }

    pub(super) fn serve_client(&mut self, fd: RawFd) {
        let Some(mut client) = self.clients.remove(&fd) else {
            return;
        };
        let mut chunk = [0u8; 16 * 1024];
        let keep = loop {
            match client.stream.read(&mut chunk) {
                Ok(0) => break false,
                Ok(n) => client.buffer.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == IoErrorKind::WouldBlock => break true,
                Err(err) if err.kind() == IoErrorKind::Interrupted => continue,
                Err(_) => break false,
            }
            if client.buffer.len() > proto::MAX_FRAME + 4 {
                break true;
            }
        };
        let keep = keep && self.process_frames(&mut client);
        if keep {
            self.clients.insert(fd, client);
        }
    }

    /// Writes what it can of a client's unread replies; once they are all written, handles the
    /// requests it sent meanwhile.
    pub(super) fn flush_client(&mut self, fd: RawFd) {
        let Some(mut client) = self.clients.remove(&fd) else {
            return;
        };
        let keep = flush(&mut client) && self.process_frames(&mut client);
        if keep {
            self.clients.insert(fd, client);
        }
    }

    /// Handles every complete frame, up to one that must wait or a reply the client has not read
    /// yet; false to drop the connection.
    pub(super) fn process_frames(&mut self, client: &mut Client) -> bool {
        loop {
            if client.waiting || !client.outbox.is_empty() {
                return true;
            }
            let body = match proto::take_frame(&mut client.buffer) {
                Ok(Some(body)) => body,
                Ok(None) => return true,
                Err(err) => return self.protocol_error(client, &err),
            };
            if client.restricted {
                send(
                    &mut client.stream,
                    Reply::Error {
                        kind: ErrorKind::Denied,
                        message: "this lock manager connection has been restricted".into(),
                    },
                );
                log(&format!(
                    "request on a restricted connection (peer pid {}); closed",
                    client.peer_pid
                ));
                return false;
            }
            let frame: RequestFrame = match proto::decode(&body) {
                Ok(frame) => frame,
                Err(err) => return self.protocol_error(client, &err),
            };
            if frame.version != PROTOCOL_VERSION {
                let message = format!(
                    "protocol version {} is not supported (this daemon speaks {PROTOCOL_VERSION})",
                    frame.version
                );
                send(
                    &mut client.stream,
                    Reply::Error {
                        kind: ErrorKind::Invalid,
                        message,
                    },
                );
                return false;
            }
            let handled = match frame.request.check_limits() {
                Ok(()) => self.handle(client, frame.request),
                Err(message) => Handled::Reply(Reply::Error {
                    kind: ErrorKind::Invalid,
                    message,
                }),
            };
            match handled {
                Handled::Reply(reply) => {
                    if !self.send_reply(client, reply) {
                        return false;
                    }
                }
                Handled::Wait(op, handover) => {
                    client.waiting = true;
                    self.wait_for(op, client, Instant::now(), handover);
                }
                Handled::Park(request) => {
                    client.waiting = true;
                    self.parked.push_back(Parked {
                        fd: client.stream.as_raw_fd(),
                        client: client.id,
                        request,
                        since: Instant::now(),
                        retry_at: None,
                    });
                }
                Handled::Retry(request, _) => {
                    // Just arrived: well within its grace.
                    client.waiting = true;
                    self.retry_later(
                        client.stream.as_raw_fd(),
                        client.id,
                        request,
                        Instant::now(),
                    );
                }
            }
        }
    }

    pub(super) fn protocol_error(&self, client: &mut Client, err: &FrameError) -> bool {
        log(&format!(
            "bad request from peer pid {}: {err}; connection closed",
            client.peer_pid
        ));
        send(
            &mut client.stream,
            Reply::Error {
                kind: ErrorKind::Invalid,
                message: format!("bad request: {err}"),
            },
        );
        false
    }
}

/// A reply as a frame (a reply too large to encode becomes an error saying so: inputs are
/// bounded so that this cannot happen).
fn encode_reply(reply: Reply) -> Vec<u8> {
    proto::encode(&ReplyFrame {
        version: PROTOCOL_VERSION,
        reply,
    })
    .or_else(|err| {
        proto::encode(&ReplyFrame {
            version: PROTOCOL_VERSION,
            reply: Reply::Error {
                kind: ErrorKind::Internal,
                message: format!("the reply could not be sent: {err}"),
            },
        })
    })
    .unwrap_or_default()
}

/// The last word to a connection about to be closed: written if the socket has room (a fresh
/// connection always has for one short frame), never waited for.
pub(super) fn send(stream: &mut UnixStream, reply: Reply) {
    let _ = stream.write(&encode_reply(reply));
}

/// Queues `reply` for `client` and writes what the socket takes now; the rest is written when
/// the client reads (the server polls for it), so a client that does not read holds up no one.
/// False when the connection is broken.
pub(super) fn queue_reply(client: &mut Client, reply: Reply) -> bool {
    client.outbox.extend_from_slice(&encode_reply(reply));
    flush(client)
}

/// Writes what the socket takes of the client's unread replies; false when it is broken.
fn flush(client: &mut Client) -> bool {
    while !client.outbox.is_empty() {
        match client.stream.write(&client.outbox) {
            Ok(0) => return false,
            Ok(n) => {
                client.outbox.drain(..n);
            }
            Err(err) if err.kind() == IoErrorKind::Interrupted => {}
            Err(err) if err.kind() == IoErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
    true
}
