//! The cell's side: [`RemoteNode`], the owners a matrix cell runs on another machine, each call
//! a request to that machine's agent.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::Duration;

use lockmgr::host::ReportedError;
use lockmgr::{Domain, Resource};

use super::Setup;
use super::wire::{Reply, Request, WireDomain, wire};
use crate::node::{Failure, OwnerNode};

/// How long to wait for the agent to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The owners a matrix cell runs on another machine, through that machine's agent.
#[derive(Debug)]
pub struct RemoteNode {
    address: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    finished: bool,
}

impl RemoteNode {
    /// Connects to the agent at `address` and sets the plugin up there; returns the node and
    /// the agent's description of its environment (config, daemon pid).
    pub fn connect(address: &str, setup: &Setup) -> Result<(RemoteNode, String), String> {
        let place = |e: &dyn std::fmt::Display| format!("the agent on {address}: {e}");
        let target = address
            .to_socket_addrs()
            .map_err(|e| place(&e))?
            .next()
            .ok_or_else(|| place(&"the address resolves to nothing"))?;
        let stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT).map_err(|e| {
            place(&format!(
                "{e} (is `lockmgr-loader-test agent --listen {address}` running there?)"
            ))
        })?;
        stream.set_nodelay(true).map_err(|e| place(&e))?;
        let reader = BufReader::new(stream.try_clone().map_err(|e| place(&e))?);
        let mut node = RemoteNode {
            address: address.to_owned(),
            reader,
            writer: stream,
            finished: false,
        };
        let detail = match node.call(&Request::Setup(setup.clone())) {
            Ok(Reply::Done { detail, .. }) => detail.unwrap_or_default(),
            Ok(Reply::Failed { message, .. }) => return Err(place(&message)),
            Err(failure) => return Err(failure.message),
        };
        Ok((node, detail))
    }

    /// The agent's host, as given (`10.99.0.2`), for labels.
    pub fn host(&self) -> &str {
        self.address
            .rsplit_once(':')
            .map_or(self.address.as_str(), |(host, _)| host)
    }

    fn call(&mut self, request: &Request) -> Result<Reply, Failure> {
        let place = |e: &dyn std::fmt::Display| {
            Failure::harness(format!("the agent on {}: {e}", self.address))
        };
        let mut text = serde_json::to_vec(request).map_err(|e| place(&e))?;
        text.push(b'\n');
        self.writer
            .write_all(&text)
            .and_then(|()| self.writer.flush())
            .map_err(|e| place(&e))?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(place(
                &"the connection closed (the session ended or crashed)",
            )),
            Ok(_) => serde_json::from_str(&line)
                .map_err(|e| place(&format!("unreadable reply ({e}): {line}"))),
            Err(err) => Err(place(&err)),
        }
    }

    /// A request whose failure is the plugin's (or the agent's) failure.
    fn done(&mut self, request: &Request) -> Result<Done, Failure> {
        match self.call(request)? {
            Reply::Done { detail, pid, state } => Ok(Done { detail, pid, state }),
            Reply::Failed { message, reported } => Err(Failure {
                message,
                reported: reported.map(|r| ReportedError {
                    domain: r.domain,
                    code: r.code,
                    message: r.message,
                }),
            }),
        }
    }
}

/// What a successful request gave back.
struct Done {
    detail: Option<String>,
    pid: Option<u32>,
    state: Option<String>,
}

impl OwnerNode for RemoteNode {
    fn name(&self) -> String {
        self.address.clone()
    }

    fn register(
        &mut self,
        owner: &str,
        domain: &Domain,
        resources: &[Resource],
    ) -> Result<(u32, String), Failure> {
        let Done { detail, pid, .. } = self.done(&Request::Register {
            owner: owner.to_owned(),
            domain: WireDomain {
                uuid: domain.uuid.to_string(),
                name: domain.name.clone(),
                id: domain.id,
            },
            resources: wire(resources),
        })?;
        Ok((
            pid.unwrap_or(0),
            format!("on {}: {}", self.address, detail.unwrap_or_default()),
        ))
    }

    fn acquire(
        &mut self,
        owner: &str,
        resources: &[Resource],
        state: Option<&str>,
    ) -> Result<(), Failure> {
        self.done(&Request::Acquire {
            owner: owner.to_owned(),
            resources: wire(resources),
            state: state.map(str::to_owned),
        })
        .map(|_| ())
    }

    fn release(
        &mut self,
        owner: &str,
        resources: &[Resource],
        want_state: bool,
    ) -> Result<Option<String>, Failure> {
        self.done(&Request::Release {
            owner: owner.to_owned(),
            resources: wire(resources),
            want_state,
        })
        .map(|done| done.state)
    }

    fn inquire(&mut self, owner: &str, resources: &[Resource]) -> Result<Option<String>, Failure> {
        self.done(&Request::Inquire {
            owner: owner.to_owned(),
            resources: wire(resources),
        })
        .map(|done| done.state)
    }

    fn kill(&mut self, owner: &str) -> Result<String, Failure> {
        let Done { detail, .. } = self.done(&Request::Kill {
            owner: owner.to_owned(),
        })?;
        Ok(format!(
            "on {}: {}",
            self.address,
            detail.unwrap_or_default()
        ))
    }

    fn restart_libvirtd(&mut self) -> Result<String, Failure> {
        self.done(&Request::RestartLibvirtd)
            .map(|done| done.detail.unwrap_or_default())
    }

    fn restart_daemon(&mut self) -> Result<Option<String>, Failure> {
        self.done(&Request::RestartDaemon).map(|done| done.detail)
    }

    fn finish(&mut self) -> Result<(), String> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let result = self
            .done(&Request::Finish)
            .map(|_| ())
            .map_err(|f| f.message);
        let _ = self.writer.shutdown(Shutdown::Both);
        result
    }
}
