//! A minimal QMP client (QEMU's JSON monitor protocol) over a node's unix sockets.
//!
//! Every node QEMU has two QMP monitors: `nodeN.qmp` for commands (one connection per use, e.g.
//! the `query-status` round trip that proves the main loop still runs while the vCPUs are frozen)
//! and `nodeN.events`, held by the cluster's event listener ([`crate::watchdog`]), which records
//! the `WATCHDOG` events.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One QMP connection, after the capabilities handshake.
pub(crate) struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// What [`Qmp::next_event`] saw.
pub(crate) enum Next {
    /// An asynchronous event (`{"event": ..., "data": ..., "timestamp": ...}`).
    Event(Value),
    /// Nothing within the read timeout.
    Idle,
    /// The connection is closed (QEMU exited).
    Closed,
}

impl Qmp {
    /// Connects to `socket` and negotiates capabilities; each read waits at most `timeout`.
    pub(crate) fn connect(socket: &Path, timeout: Duration) -> std::io::Result<Qmp> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let greeting = qmp.read_value(Instant::now() + timeout)?;
        if greeting.get("QMP").is_none() {
            return Err(std::io::Error::other(format!(
                "not a QMP greeting: {greeting}"
            )));
        }
        qmp.execute("qmp_capabilities", Instant::now() + timeout)?;
        Ok(qmp)
    }

    /// Runs `command` (no arguments) and returns its `return` value; events read meanwhile are
    /// dropped. Fails when no answer came before `deadline`.
    pub(crate) fn execute(&mut self, command: &str, deadline: Instant) -> std::io::Result<Value> {
        let line = json!({ "execute": command }).to_string() + "\n";
        self.writer.write_all(line.as_bytes())?;
        loop {
            let value = self.read_value(deadline)?;
            if let Some(answer) = value.get("return") {
                return Ok(answer.clone());
            }
            if let Some(error) = value.get("error") {
                return Err(std::io::Error::other(format!("{command}: {error}")));
            }
        }
    }

    /// The next event, or [`Next::Idle`] after the read timeout.
    pub(crate) fn next_event(&mut self) -> Next {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Next::Closed,
            Ok(_) => match serde_json::from_str::<Value>(line.trim()) {
                Ok(value) if value.get("event").is_some() => Next::Event(value),
                _ => Next::Idle,
            },
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Next::Idle
            }
            Err(_) => Next::Closed,
        }
    }

    fn read_value(&mut self, deadline: Instant) -> std::io::Result<Value> {
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Err(std::io::Error::from(ErrorKind::UnexpectedEof)),
                Ok(_) => {
                    if let Ok(value) = serde_json::from_str::<Value>(line.trim()) {
                        return Ok(value);
                    }
                }
                Err(err)
                    if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
                        && Instant::now() < deadline => {}
                Err(err) => return Err(err),
            }
            if Instant::now() >= deadline {
                return Err(std::io::Error::from(ErrorKind::TimedOut));
            }
        }
    }
}

/// One `query-status` round trip on the command socket: whether QEMU's main loop answered
/// within `timeout` (it cannot while a vCPU thread holds the big QEMU lock).
pub(crate) fn main_loop_answers(socket: &Path, timeout: Duration) -> std::io::Result<Value> {
    let deadline = Instant::now() + timeout;
    let mut qmp = Qmp::connect(socket, timeout)?;
    qmp.execute("query-status", deadline)
}
