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
            let _ = send(
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
            let _ = send(
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

    /// Handles every complete frame, up to one that must wait; false to drop the connection.
    pub(super) fn process_frames(&mut self, client: &mut Client) -> bool {
        loop {
            if client.waiting {
                return true;
            }
            let body = match proto::take_frame(&mut client.buffer) {
                Ok(Some(body)) => body,
                Ok(None) => return true,
                Err(err) => return self.protocol_error(client, &err),
            };
            if client.restricted {
                let _ = send(
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
                let _ = send(
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
                Handled::Wait(op) => {
                    client.waiting = true;
                    self.wait_for(op, client, Instant::now());
                }
                Handled::Park(request) => {
                    client.waiting = true;
                    self.parked.push_back(Parked {
                        fd: client.stream.as_raw_fd(),
                        client: client.id,
                        request,
                        since: Instant::now(),
                    });
                }
            }
        }
    }

    pub(super) fn protocol_error(&self, client: &mut Client, err: &FrameError) -> bool {
        log(&format!(
            "bad request from peer pid {}: {err}; connection closed",
            client.peer_pid
        ));
        let _ = send(
            &mut client.stream,
            Reply::Error {
                kind: ErrorKind::Invalid,
                message: format!("bad request: {err}"),
            },
        );
        false
    }
}

pub(super) fn send(stream: &mut UnixStream, reply: Reply) -> Result<(), FrameError> {
    let frame = match proto::encode(&ReplyFrame {
        version: PROTOCOL_VERSION,
        reply,
    }) {
        Ok(frame) => frame,
        // Inputs are bounded so that this cannot happen; should it, say so rather than close.
        Err(err) => proto::encode(&ReplyFrame {
            version: PROTOCOL_VERSION,
            reply: Reply::Error {
                kind: ErrorKind::Internal,
                message: format!("the reply could not be sent: {err}"),
            },
        })?,
    };
    write_within(stream, &frame, Duration::from_secs(2)).map_err(FrameError::Io)
}

/// Writes all of `bytes` to a nonblocking socket. A reply is usually far smaller than the
/// socket buffer; a large one (a status) may wait for the reader, but only until `limit`: a
/// client that stops reading is dropped rather than allowed to stall the daemon.
fn write_within(stream: &mut UnixStream, bytes: &[u8], limit: Duration) -> std::io::Result<()> {
    let deadline = Instant::now() + limit;
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => return Err(IoErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(err) if err.kind() == IoErrorKind::Interrupted => {}
            Err(err) if err.kind() == IoErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(err);
                }
                let wait = i32::try_from(left.as_millis().min(100)).unwrap_or(100);
                sys::poll_writable(stream.as_raw_fd(), wait)?;
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
