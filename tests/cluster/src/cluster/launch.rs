//! Booting nodes: each node's QEMU command line, its shared disk, and the waits until every
//! node is quorate and its guest agent answers.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::agent::Agent;
use crate::error::{Error, IoContext, Result};
use crate::fence::FENCE_PORT_NAME;
use crate::host;
use crate::image::NodeImage;
use crate::watchdog::{WATCHDOG_FENCE_WAIT_S, WATCHDOG_TIMEOUT_S};

use super::{
    Cluster, ClusterSpec, FenceMode, KICKED_MARKER, NETWORK_PREFIX, NodeRecord, READY_MARKER,
    consoles_tail, locked,
};

impl Cluster {
    /// Starts node `index`'s QEMU and records its pid.
    pub(super) fn launch(
        &self,
        image: &NodeImage,
        spec: &ClusterSpec,
        accel: &[&str],
        index: usize,
    ) -> Result<u32> {
        let (name, record, dir) = {
            let state = self.state();
            (
                state.name.clone(),
                state.nodes[index - 1].clone(),
                state.dir.clone(),
            )
        };
        let pidfile = dir.join(format!("node{index}.pid"));
        let log_path = dir.join(format!("node{index}.qemu.log"));
        let log = fs::File::create(&log_path).at(&log_path, "create")?;
        let log_err = log.try_clone().at(&log_path, "dup")?;
        let mut append = format!(
            "console=ttyS0 quiet panic=-1 mitigations=off random.trust_cpu=on \
             dlmnode.node={index} dlmnode.nodes={} dlmnode.net={NETWORK_PREFIX} dlmnode.fencing={}",
            spec.nodes,
            spec.fence_mode.kernel_arg()
        );
        if spec.fence_mode == FenceMode::Watchdog {
            append.push_str(&format!(
                " dlmnode.fence_wait={WATCHDOG_FENCE_WAIT_S} dlmnode.watchdog_timeout={WATCHDOG_TIMEOUT_S}"
            ));
        }
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                &name,
                "qemu-system-x86_64",
                "-name",
                &record.qemu_name,
            ])
            // Names its threads (`CPU 0/TCG`, ...) for freeze_vcpus; merged into the -name above,
            // which stays the 2nd argument that is_our_qemu checks.
            .args(["-name", "debug-threads=on"])
            .args(accel)
            .args(["-M", "pc", "-smp", "1", "-m", &spec.memory_mib.to_string()])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&image.vmlinuz)
            .arg("-initrd")
            .arg(&image.initrd)
            .args(["-append", &append])
            .arg("-serial")
            .arg(format!("file:{}", record.console.display()))
            .args([
                "-netdev",
                &format!("tap,id=net0,ifname=tap{index},script=no,downscript=no"),
            ])
            .args([
                "-device",
                &format!("virtio-net-pci,romfile=,netdev=net0,mac=52:54:00:99:00:{index:02x}"),
            ])
            .args(["-device", "virtio-rng-pci", "-device", "virtio-serial-pci"])
            .args([
                "-chardev",
                &format!(
                    "socket,id=qga0,path={},server=on,wait=off",
                    record.agent_socket.display()
                ),
            ])
            .args([
                "-device",
                "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            ]);
        if let Some(fence_socket) = &record.fence_socket {
            // The node's own fence channel: the host knows who asks by the socket.
            command
                .args([
                    "-chardev",
                    &format!(
                        "socket,id=fence0,path={},server=on,wait=off",
                        fence_socket.display()
                    ),
                ])
                .args([
                    "-device",
                    &format!("virtserialport,chardev=fence0,name={FENCE_PORT_NAME}"),
                ]);
        }
        for socket in record.qmp_socket.iter().chain(record.qmp_events.iter()) {
            command.args([
                "-qmp",
                &format!("unix:{},server=on,wait=off", socket.display()),
            ]);
        }
        if spec.fence_mode == FenceMode::Watchdog {
            // The emulated watchdog runs in QEMU's main loop, outside the guest's CPU; when it
            // expires QEMU exits (power off, no reset: -no-reboot would make a reset one anyway).
            command.args(["-device", "i6300esb", "-action", "watchdog=poweroff"]);
        }
        if let Some(share) = &spec.share {
            command.args([
                "-virtfs",
                &format!(
                    "local,path={},mount_tag=share,security_model=none,readonly=on",
                    share.display()
                ),
            ]);
        }
        if let Some(scratch) = &spec.scratch {
            command.args([
                "-virtfs",
                &format!(
                    "local,path={},mount_tag=scratch,security_model=none",
                    scratch.display()
                ),
            ]);
        }
        if let Some((disk, _)) = &spec.shared_disk {
            command
                .args([
                    "-drive",
                    &format!(
                        "file={},format=raw,if=none,cache=none,file.locking=off,id=shared0",
                        disk.display()
                    ),
                ])
                .args(["-device", "virtio-blk-pci,drive=shared0,share-rw=on"]);
        }
        command.arg("-pidfile").arg(&pidfile).arg("-daemonize");
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let status = command.status().map_err(|err| Error::Command {
            command: host::describe(&command),
            detail: err.to_string(),
        })?;
        if !status.success() {
            return Err(Error::Command {
                command: host::describe(&command),
                detail: format!("{status}: {}", host::tail(&log_path, 20)),
            });
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(pid) = fs::read_to_string(&pidfile)
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok())
            {
                if host::is_our_qemu(pid, &record.qemu_name) {
                    let mut state = self.state();
                    let node = &mut state.nodes[index - 1];
                    node.pid = Some(pid);
                    node.killed = false;
                    node.fenced_by = None;
                    node.started_unix = Some(
                        SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |since| since.as_secs()),
                    );
                    state.save()?;
                    return Ok(pid);
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Command {
                    command: host::describe(&command),
                    detail: format!(
                        "no live QEMU in pidfile {}: {}",
                        pidfile.display(),
                        host::tail(&log_path, 20)
                    ),
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub(super) fn boot_error(&self, reason: String) -> Error {
        let state = self.state();
        let mut consoles = consoles_tail(&state, 25);
        for node in &state.nodes {
            let qemu_log = state.dir.join(format!("node{}.qemu.log", node.index));
            let text = host::tail(&qemu_log, 10);
            if !text.trim().is_empty() {
                consoles.push_str(&format!("--- node{} QEMU log ---\n{text}\n", node.index));
            }
        }
        Error::Boot {
            cluster: state.name.clone(),
            reason,
            consoles,
        }
    }

    /// Waits for the readiness marker of each of `indexes` on its console.
    pub(super) fn wait_ready(
        &self,
        indexes: &[usize],
        started: Instant,
        timeout: Duration,
    ) -> Result<()> {
        let nodes: Vec<NodeRecord> = self
            .snapshot()
            .nodes
            .into_iter()
            .filter(|node| indexes.contains(&node.index))
            .collect();
        let mut ready = vec![false; nodes.len()];
        let deadline = started + timeout;
        while ready.iter().any(|ready| !ready) {
            for (slot, node) in nodes.iter().enumerate() {
                if ready[slot] {
                    continue;
                }
                let pid = node.pid.unwrap_or(0);
                if !host::alive(pid) {
                    return Err(self.boot_error(format!(
                        "node{}'s QEMU (pid {pid}) exited during boot after {:.1} s",
                        node.index,
                        started.elapsed().as_secs_f64()
                    )));
                }
                let marker = format!("{READY_MARKER} node={}", node.index);
                let console = fs::read(&node.console)
                    .map(|text| String::from_utf8_lossy(&text).into_owned())
                    .unwrap_or_default();
                if !console.contains(&marker) && console.contains(KICKED_MARKER) {
                    // It will never be ready: no need to wait for the timeout.
                    return Err(self.boot_error(format!(
                        "node{}'s dlm_controld exited during boot (`{KICKED_MARKER}`): the \
                         cluster threw it out, e.g. because a fence of its previous incarnation \
                         completed after it had rejoined",
                        node.index
                    )));
                }
                if console.contains(&marker) {
                    ready[slot] = true;
                    println!(
                        "[cluster]   node{} ready at {:.1} s",
                        node.index,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            if Instant::now() >= deadline {
                let waiting: Vec<String> = nodes
                    .iter()
                    .zip(&ready)
                    .filter(|(_, ready)| !**ready)
                    .map(|(node, _)| format!("node{}", node.index))
                    .collect();
                return Err(self.boot_error(format!(
                    "{} not ready (no `{READY_MARKER}` on the console) after {} s",
                    waiting.join(", "),
                    timeout.as_secs()
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The agent socket exists before qemu-ga runs (server=on,wait=off): ping with retries.
    pub(super) fn connect_agents(&self, indexes: &[usize], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for node in self.snapshot().nodes.iter() {
            if !indexes.contains(&node.index) {
                continue;
            }
            let slot = node.index - 1;
            loop {
                match Agent::connect(node.index, &node.agent_socket) {
                    Ok(agent) => {
                        *locked(&self.agents[slot]) = Some(agent);
                        break;
                    }
                    Err(err) if Instant::now() >= deadline => {
                        return Err(self.boot_error(format!("guest agent never answered: {err}")));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(250)),
                }
            }
        }
        Ok(())
    }
}

/// Creates the shared disk's image (sparse) or grows it to `size`.
pub(super) fn prepare_shared_disk(path: &Path, size: u64) -> Result<()> {
    if path.to_string_lossy().contains(',') {
        return Err(Error::Usage(format!(
            "shared disk {} contains ',' (QEMU cannot take it)",
            path.display()
        )));
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .at(path, "open the shared disk")?;
    let len = file.metadata().at(path, "stat the shared disk")?.len();
    if len < size {
        file.set_len(size).at(path, "size the shared disk")?;
    }
    Ok(())
}
