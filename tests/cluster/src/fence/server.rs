//! Serving the fence sockets: [`Fencer`], one thread per node of a cluster owned by this
//! process, and [`serve_fencing`], the `lockmgr-testbed fencer` process.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::request::handle_request;
use super::{FENCE_LOG, locked};
use crate::cluster::ClusterState;
use crate::error::{Error, Result};

/// Longest request line read from a node.
const MAX_LINE: u64 = 4096;

/// The host side of a cluster's fence channels: one thread per node, connected to its
/// `nodeN.fence` socket (reconnecting when the node is restarted), answering its requests.
#[derive(Debug)]
pub(crate) struct Fencer {
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<HashMap<usize, UnixStream>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Fencer {
    /// Starts serving every node of `state` that has a fence socket.
    pub(crate) fn start(state: &Arc<Mutex<ClusterState>>) -> Fencer {
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(HashMap::new()));
        let sockets: Vec<(usize, PathBuf)> = locked(state)
            .nodes
            .iter()
            .filter_map(|node| Some((node.index, node.fence_socket.clone()?)))
            .collect();
        let threads = sockets
            .into_iter()
            .map(|(index, socket)| {
                let (state, stop, streams) =
                    (Arc::clone(state), Arc::clone(&stop), Arc::clone(&streams));
                thread::spawn(move || serve_node(&state, index, &socket, &stop, &streams))
            })
            .collect();
        Fencer {
            stop,
            streams,
            threads,
        }
    }

    /// Stops every thread (a request being carried out is finished first).
    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for stream in locked(&self.streams).values() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn serve_node(
    state: &Mutex<ClusterState>,
    index: usize,
    socket: &Path,
    stop: &AtomicBool,
    streams: &Mutex<HashMap<usize, UnixStream>>,
) {
    while !stop.load(Ordering::SeqCst) {
        // The socket exists once QEMU runs; it refuses while the node is powered off.
        let Ok(stream) = UnixStream::connect(socket) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        let (Ok(reader), Ok(handle)) = (stream.try_clone(), stream.try_clone()) else {
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        locked(streams).insert(index, handle);
        // Registered before this check: stop() either sees the stream or we see the flag.
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let mut reader = BufReader::new(reader);
        let mut writer = stream;
        loop {
            let mut line = String::new();
            match reader.by_ref().take(MAX_LINE).read_line(&mut line) {
                Ok(0) | Err(_) => break, // QEMU gone, or stop()
                Ok(_) => {}
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let event = handle_request(state, index, line);
            if writer.write_all(event.answer_line().as_bytes()).is_err() {
                break;
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Serves the fence requests of a cluster recorded in `run_dir` (`lockmgr-testbed fencer`, the
/// background process `lockmgr-testbed up` leaves behind). Returns once none of the cluster's
/// QEMUs runs any more or its run dir is gone; `lockmgr-testbed down` stops it with SIGTERM.
pub fn serve_fencing(run_dir: &Path, name: &str) -> Result<()> {
    let dir = run_dir.join(name);
    let state = ClusterState::load(&dir)?;
    if !state.fencing {
        return Err(Error::Usage(format!(
            "cluster {name} runs without fencing: there is nothing to serve"
        )));
    }
    println!(
        "[fence] serving the fence requests of {name} ({} nodes), log {}",
        state.nodes.len(),
        dir.join(FENCE_LOG).display()
    );
    let state = Arc::new(Mutex::new(state));
    let fencer = Fencer::start(&state);
    loop {
        thread::sleep(Duration::from_secs(1));
        if !dir.join("state.json").exists() || locked(&state).running_pids().is_empty() {
            break;
        }
    }
    fencer.stop();
    println!("[fence] {name}: no node left running; exiting");
    Ok(())
}
