//! The blocking client: one socket, one frame out and one back, with timeouts.

use super::*;

/// [`RequestFrame`] borrowing its request, for sending: the same JSON, without copying every
/// resource of the request.
#[derive(Serialize)]
struct RequestFrameRef<'a> {
    version: u32,
    request: &'a Request,
}

/// How long a plugin waits for the daemon before giving up (libvirtd must never hang forever).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A blocking connection to lockmgrd.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    socket: PathBuf,
}

/// Why a call to the daemon failed, before any reply.
#[derive(Debug)]
pub struct ClientError {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// What went wrong.
    pub error: FrameError,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lockmgrd at {}: {}", self.socket.display(), self.error)
    }
}

impl std::error::Error for ClientError {}

impl Client {
    /// Connects to the daemon's socket.
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        let fail = |error| ClientError {
            socket: socket.to_owned(),
            error,
        };
        let stream = UnixStream::connect(socket).map_err(|e| fail(FrameError::Io(e)))?;
        stream
            .set_read_timeout(Some(CALL_TIMEOUT))
            .map_err(|e| fail(FrameError::Io(e)))?;
        stream
            .set_write_timeout(Some(CALL_TIMEOUT))
            .map_err(|e| fail(FrameError::Io(e)))?;
        Ok(Client {
            stream,
            socket: socket.to_owned(),
        })
    }

    /// Sends one request and waits for its reply.
    pub fn call(&mut self, request: &Request) -> Result<Reply, ClientError> {
        let fail = |error| ClientError {
            socket: self.socket.clone(),
            error,
        };
        let frame = encode(&RequestFrameRef {
            version: PROTOCOL_VERSION,
            request,
        })
        .map_err(fail)?;
        self.stream
            .write_all(&frame)
            .map_err(|e| fail(FrameError::Io(e)))?;
        let body = read_frame(&mut self.stream).map_err(fail)?;
        let reply: ReplyFrame = decode(&body).map_err(fail)?;
        if reply.version != PROTOCOL_VERSION {
            return Err(fail(FrameError::Malformed(format!(
                "protocol version {} (this plugin speaks {PROTOCOL_VERSION})",
                reply.version
            ))));
        }
        Ok(reply.reply)
    }

    /// Gives up the connection, e.g. to hand it to QEMU.
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }
}
