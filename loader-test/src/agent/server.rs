//! The agent itself: listens for cells and runs each connection in a session process of its
//! own, then sweeps that session's process group and scratch directory.

use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::AgentArgs;
use crate::daemons;
use crate::harness_sys;

/// `agent`: accepts cells until SIGINT / SIGTERM; each in a session process of its own.
pub fn command(args: &AgentArgs) -> u8 {
    match serve(args) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("lockmgr-loader-test agent: {err}");
            2
        }
    }
}

fn log(message: &str) {
    eprintln!("lockmgr-loader-test agent: {message}");
}

fn serve(args: &AgentArgs) -> Result<(), String> {
    let plugins = daemons::plugins_from_args(&args.plugins)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    harness_sys::kill_groups_on_interrupt()
        .map_err(|e| format!("cannot set up the interrupt handler: {e}"))?;
    let listener = TcpListener::bind(&args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    // Polled, so that SIGTERM (whose handler restarts system calls) ends the loop.
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("{}: {e}", args.listen))?;
    log(&format!(
        "listening on {} for matrix cells; plugins: {}",
        args.listen,
        plugins
            .iter()
            .map(|p| format!("{}={}", p.profile, p.path.display()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut sessions: Vec<std::thread::JoinHandle<()>> = Vec::new();
    while !harness_sys::terminating() {
        match listener.accept() {
            Ok((stream, peer)) => {
                let exe = exe.clone();
                let session_args = session_args(args);
                sessions.retain(|s| !s.is_finished());
                sessions.push(std::thread::spawn(move || {
                    if let Err(err) = run_session(&exe, &session_args, stream) {
                        log(&format!("session from {peer}: {err}"));
                    }
                }));
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => {
                log(&format!("accept: {err}"));
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    // The signal handler has SIGKILLed every session's group; let the threads reap and clean up.
    for session in sessions {
        let _ = session.join();
    }
    log("stopped");
    Ok(())
}

fn session_args(args: &AgentArgs) -> Vec<String> {
    let mut out = Vec::new();
    for plugin in &args.plugins {
        out.push("--plugin".to_owned());
        out.push(plugin.clone());
    }
    out.extend(args.tools.tools().to_args());
    out
}

/// One cell: a session process on the connection, then the sweep of its group and scratch.
fn run_session(exe: &Path, args: &[String], stream: TcpStream) -> Result<(), String> {
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| e.to_string())?;
    let scratch = tempfile::Builder::new()
        .prefix("lockmgr-agent-")
        .tempdir()
        .map_err(|e| format!("cannot create a scratch directory: {e}"))?;
    let input = stream.try_clone().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .arg("__agent-session")
        .arg("--scratch")
        .arg(scratch.path())
        .args(args)
        .stdin(Stdio::from(OwnedFd::from(input)))
        .stdout(Stdio::from(OwnedFd::from(stream)))
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start a session: {e}"))?;
    let pid = child.id();
    harness_sys::track_group(pid);
    // The session leaves when its cell does; keep it unreaped until its group is swept.
    while !harness_sys::wait_exit_keep_zombie(pid, Duration::ZERO).unwrap_or(true) {
        std::thread::sleep(Duration::from_millis(50));
    }
    harness_sys::signal_process_group(pid, rustix::process::Signal::KILL);
    harness_sys::untrack_group(pid);
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("the session process ended with {status}"));
    }
    Ok(())
}
