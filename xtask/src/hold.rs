//! `lockmgr-xtask hold SOCKET DISK`: a stand-in domain for the package test. It does what libvirt
//! does for a domain start, with `sleep` as the QEMU: a child registers itself with lockmgrd (from
//! its own pid, as libvirt's pre-exec child does) and then becomes `sleep infinity` by exec,
//! keeping its pid; the parent then acquires an exclusive lock on DISK for it, prints the owner's
//! pid and exits, leaving the owner running. Killing that pid frees the lock.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use lockmgr_proto::{
    Client, FailureAction, Mode, OwnerInfo, Reply, Request, ResourceKind, ResourceSpec,
};

/// Set in the child's environment: the socket to register on.
const CHILD: &str = "LOCKMGR_XTASK_HOLD_SOCKET";
const UUID: &str = "5b1a7c2e-9d40-4e6b-8f3a-0c2d4e6f8a10";
const NAME: &str = "pkgtest";

fn owner(pid: u32) -> OwnerInfo {
    OwnerInfo {
        uuid: UUID.to_owned(),
        name: NAME.to_owned(),
        id: 1,
        pid,
        uri: None,
    }
}

fn call(socket: &Path, request: &Request) -> Result<(), String> {
    let mut client = Client::connect(socket).map_err(|e| e.to_string())?;
    match client.call(request).map_err(|e| e.to_string())? {
        Reply::Ok { .. } => Ok(()),
        Reply::Error { message, .. } => Err(message),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

/// In the child: register this process, say so on stdout, become `sleep infinity`.
pub fn child() -> Option<Result<(), String>> {
    let socket = std::env::var_os(CHILD)?;
    let register = Request::Register {
        owner: owner(std::process::id()),
        restrict: true,
    };
    if let Err(error) = call(Path::new(&socket), &register) {
        return Some(Err(format!("register: {error}")));
    }
    println!("registered");
    let _ = std::io::stdout().flush();
    let error = Command::new("sleep")
        .arg("infinity")
        .env_remove(CHILD)
        .exec();
    Some(Err(format!("cannot exec sleep: {error}")))
}

/// In the parent: start the owner, lock `disk` for it, print its pid.
pub fn hold(socket: &Path, disk: &str) -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut owner_process = Command::new(me)
        .env(CHILD, socket)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the owner: {e}"))?;
    let pid = owner_process.id();
    let stdout = owner_process.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.trim() != "registered" {
        let _ = owner_process.kill();
        let _ = owner_process.wait();
        return Err("the owner did not register".to_owned());
    }
    let acquire = Request::Acquire {
        owner: owner(pid),
        resources: vec![ResourceSpec {
            kind: ResourceKind::Disk,
            name: disk.to_owned(),
            mode: Mode::Exclusive,
        }],
        action: FailureAction::Default,
        state: None,
    };
    if let Err(error) = call(socket, &acquire) {
        let _ = owner_process.kill();
        let _ = owner_process.wait();
        return Err(format!("acquire: {error}"));
    }
    println!("{pid}");
    Ok(())
}
