//! A qemu-guest-agent client: JSON over the node's unix socket (`guest-sync-delimited`, then
//! `guest-exec` + `guest-exec-status` with base64 output).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// How a command in a node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit code {code}"),
            ExitStatus::Signal(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// The result of a command run in a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.status == ExitStatus::Code(0)
    }

    /// The exit code, if it exited.
    pub fn code(&self) -> Option<i32> {
        match self.status {
            ExitStatus::Code(code) => Some(code),
            ExitStatus::Signal(_) => None,
        }
    }

    /// Standard output as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Status and both streams, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status,
            self.stdout_text(),
            self.stderr_text()
        )
    }
}

/// One connection to a node's guest agent. The socket serves one client at a time, so the
/// cluster keeps one per node behind a mutex.
#[derive(Debug)]
pub(crate) struct Agent {
    node: usize,
    socket: PathBuf,
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

/// Longest wait for one agent reply (a round trip is 0.3–0.5 s under TCG).
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

impl Agent {
    /// Connects and synchronises (`guest-sync-delimited`), discarding stale replies.
    pub(crate) fn connect(node: usize, socket: &Path) -> Result<Agent> {
        let agent_error = |reason: String| Error::Agent {
            node,
            socket: socket.to_owned(),
            reason,
        };
        let stream =
            UnixStream::connect(socket).map_err(|err| agent_error(format!("connect: {err}")))?;
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|err| agent_error(err.to_string()))?;
        stream
            .set_write_timeout(Some(REPLY_TIMEOUT))
            .map_err(|err| agent_error(err.to_string()))?;
        let reader = BufReader::new(
            stream
                .try_clone()
                .map_err(|err| agent_error(err.to_string()))?,
        );
        let mut agent = Agent {
            node,
            socket: socket.to_owned(),
            writer: stream,
            reader,
            next_id: 1,
        };
        agent.sync()?;
        Ok(agent)
    }

    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Agent {
            node: self.node,
            socket: self.socket.clone(),
            reason: reason.into(),
        }
    }

    /// Sends 0xFF + `guest-sync-delimited {id}`, then drops input up to the 0xFF the agent sends
    /// back and reads replies until the one carrying our id.
    fn sync(&mut self) -> Result<()> {
        let id = self.next_id + 1_000_000 * u64::from(std::process::id());
        self.next_id += 1;
        let request = json!({"execute": "guest-sync-delimited", "arguments": {"id": id}});
        let mut bytes = vec![0xff];
        bytes.extend_from_slice(request.to_string().as_bytes());
        bytes.push(b'\n');
        self.writer
            .write_all(&bytes)
            .map_err(|err| self.error(format!("send guest-sync-delimited: {err}")))?;
        loop {
            let mut skipped = Vec::new();
            self.reader
                .read_until(0xff, &mut skipped)
                .map_err(|err| self.error(format!("waiting for the sync delimiter: {err}")))?;
            if skipped.last() != Some(&0xff) {
                return Err(self.error("connection closed during guest-sync-delimited"));
            }
            let reply = self.read_reply()?;
            if reply.get("return").and_then(Value::as_u64) == Some(id) {
                return Ok(());
            }
        }
    }

    fn read_reply(&mut self) -> Result<Value> {
        loop {
            let mut line = String::new();
            let read = self
                .reader
                .read_line(&mut line)
                .map_err(|err| self.error(format!("read reply: {err}")))?;
            if read == 0 {
                return Err(self.error("the agent closed the connection"));
            }
            let trimmed = line.trim_matches(|c: char| c.is_whitespace() || c == '\u{ff}');
            if trimmed.is_empty() {
                continue;
            }
            return serde_json::from_str(trimmed)
                .map_err(|err| self.error(format!("bad reply {trimmed:?}: {err}")));
        }
    }

    /// Runs one agent command and returns its `return` value.
    pub(crate) fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let request = json!({"execute": command, "arguments": arguments});
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|err| self.error(format!("send {command}: {err}")))?;
        let reply = self.read_reply()?;
        if let Some(error) = reply.get("error") {
            return Err(self.error(format!("{command}: {}", error.get("desc").unwrap_or(error))));
        }
        reply
            .get("return")
            .cloned()
            .ok_or_else(|| self.error(format!("{command}: reply without return: {reply}")))
    }

    /// Runs `/bin/sh -c cmd` in the node as root and waits (up to `timeout`) for it to end.
    pub(crate) fn exec(&mut self, cmd: &str, timeout: Duration) -> Result<Output> {
        let started = self.execute(
            "guest-exec",
            json!({"path": "/bin/sh", "arg": ["-c", cmd], "capture-output": true}),
        )?;
        let pid = started
            .get("pid")
            .and_then(Value::as_i64)
            .ok_or_else(|| self.error(format!("guest-exec returned no pid: {started}")))?;
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            let status = self.execute("guest-exec-status", json!({"pid": pid}))?;
            if status.get("exited").and_then(Value::as_bool) == Some(true) {
                return self.output_of(&status);
            }
            if Instant::now() >= deadline {
                return Err(Error::Guest {
                    node: self.node,
                    command: cmd.to_owned(),
                    detail: format!(
                        "still running after {} s (guest pid {pid})",
                        timeout.as_secs()
                    ),
                });
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    fn output_of(&self, status: &Value) -> Result<Output> {
        let stream = |key: &str| -> Result<Vec<u8>> {
            match status.get(key).and_then(Value::as_str) {
                Some(data) => BASE64
                    .decode(data)
                    .map_err(|err| self.error(format!("{key} is not base64: {err}"))),
                None => Ok(Vec::new()),
            }
        };
        let number = |key: &str| {
            status
                .get(key)
                .and_then(Value::as_i64)
                .and_then(|n| i32::try_from(n).ok())
        };
        let exit = match (number("exitcode"), number("signal")) {
            (_, Some(signal)) => ExitStatus::Signal(signal),
            (Some(code), None) => ExitStatus::Code(code),
            (None, None) => {
                return Err(self.error(format!("guest-exec-status without exitcode: {status}")));
            }
        };
        Ok(Output {
            status: exit,
            stdout: stream("out-data")?,
            stderr: stream("err-data")?,
        })
    }
}

/// Quotes one word for `/bin/sh`.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake agent: answers sync after stale noise, then one guest-exec and two status polls.
    #[test]
    fn exec_syncs_then_polls_until_exited() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qga.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let mut requests = Vec::new();
            let mut line = Vec::new();
            reader.read_until(b'\n', &mut line).unwrap();
            assert_eq!(line[0], 0xff, "sync must start with 0xFF");
            let sync: Value = serde_json::from_slice(&line[1..]).unwrap();
            let id = sync["arguments"]["id"].clone();
            // a stale reply from an earlier client, then the delimiter and the real reply
            writer.write_all(b"{\"return\": {}}\n").unwrap();
            writer.write_all(&[0xff]).unwrap();
            writer
                .write_all(format!("{{\"return\": {id}}}\n").as_bytes())
                .unwrap();
            let replies = [
                json!({"return": {"pid": 42}}),
                json!({"return": {"exited": false}}),
                json!({"return": {"exited": true, "exitcode": 3,
                    "out-data": BASE64.encode("hello\n"), "err-data": BASE64.encode("oops")}}),
            ];
            for reply in replies {
                let mut request = String::new();
                reader.read_line(&mut request).unwrap();
                requests.push(serde_json::from_str::<Value>(&request).unwrap());
                writer.write_all(format!("{reply}\n").as_bytes()).unwrap();
            }
            requests
        });
        let mut agent = Agent::connect(1, &path).unwrap();
        let output = agent
            .exec("echo hello; exit 3", Duration::from_secs(5))
            .unwrap();
        assert_eq!(output.status, ExitStatus::Code(3));
        assert_eq!(output.stdout_text(), "hello\n");
        assert_eq!(output.stderr_text(), "oops");
        let requests = server.join().unwrap();
        assert_eq!(requests[0]["execute"], "guest-exec");
        assert_eq!(
            requests[0]["arguments"]["arg"],
            json!(["-c", "echo hello; exit 3"])
        );
        assert_eq!(requests[1]["arguments"]["pid"], 42);
    }

    #[test]
    fn agent_errors_name_the_node_and_socket() {
        let err = Agent::connect(2, Path::new("/nonexistent/node2.qga"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("node2 guest agent (/nonexistent/node2.qga): connect"),
            "{err}"
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("dlm_tool"), "dlm_tool");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
