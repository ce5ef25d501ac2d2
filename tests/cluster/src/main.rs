//! `lockmgr-testbed`: the DLM test bed by hand (build the image, boot a cluster that stays up,
//! run commands in its nodes, stop it).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lockmgr_testbed::{
    Cluster, ClusterSpec, ExitStatus, Flavour, ImageOptions, NodeImage, shell_quote,
};

const AFTER_HELP: &str = "\
What it builds and runs (all as root, nothing installed on the host):
  image  The node image, from Debian packages only: the generic linux-image-amd64 kernel
         (unpacked, never installed) and a debootstrap minbase root with corosync,
         dlm-controld, libdlm3 and qemu-guest-agent, packed as one initramfs. Cached in
         /var/cache/lockmgr/image (debs in /var/cache/lockmgr/debs); rebuilt only when the
         build script, the node's init, the package list or the kernel version change.
         About 1 minute from an empty cache, 1-2 s when up to date.
         --libvirt: the same plus libvirt 11 and QEMU 10 from bookworm-backports
         (node/packages-libvirt; about 280 MB, in /var/cache/lockmgr/image-libvirt), for
         the virsh tests; `up --libvirt` boots it with 1536 MiB per node.
  up     Boots the nodes under QEMU (TCG here: this host's KVM cannot run Debian kernels) on a
         bridge inside a private network namespace (node N = 10.99.0.N, no uplink), waits until
         every node is quorate and dlm_tool answers (about 11 s for 2 nodes), prints how to
         reach them and exits, leaving the cluster running. State: /run/lockmgr-testbed/NAME.
         Power fencing is on: dlm_controld's agent (fence_testbed) asks the host, over the
         node's own virtio-serial port, to power a failed node off; a background
         `lockmgr-testbed fencer` kills that node's QEMU and logs to NAME/fence.log.
         --no-fencing boots the nodes with enable_fencing=0 (unsafe; control runs only).
  exec   Runs a shell command in a node through its guest agent (no ssh in the nodes).
  down   Stops detached clusters and leftovers of dead test runs (SIGTERM, then SIGKILL of
         the recorded QEMU and fencer pids, cmdline-checked), deletes their namespaces and run
         dirs.

Examples:
  lockmgr-testbed up --nodes 3 --share target/debug
  lockmgr-testbed exec 1 -- dlm_tool ls
  lockmgr-testbed exec 2 -- 'corosync-quorumtool -s | grep Quorate'
  lockmgr-testbed exec 1 -- /mnt/host/dlm-proof lock demo disk1 EX --noqueue
  lockmgr-testbed up --libvirt --share target/debian --shared-disk /var/tmp/lun.img
  lockmgr-testbed down

Environment: LOCKMGR_CACHE_DIR, LOCKMGR_RUN_DIR, LOCKMGR_KERNEL_META
(e.g. linux-image-amd64/bookworm-backports for kernel 6.12).";

#[derive(Debug, Parser)]
#[command(
    name = "lockmgr-testbed",
    about = "A real DLM cluster (corosync + dlm_controld + dlm.ko) in QEMU virtual machines on this machine",
    after_help = AFTER_HELP
)]
struct Cli {
    /// Where cluster run dirs are recorded.
    #[arg(long, global = true, env = "LOCKMGR_RUN_DIR", default_value = lockmgr_testbed::DEFAULT_RUN_DIR)]
    run_dir: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the node image (or say that the cached one is up to date).
    Image {
        /// Rebuild even when the cached image is up to date.
        #[arg(long)]
        force: bool,
        /// The image with libvirt 11 and QEMU 10 (bookworm-backports) in it, for the virsh tests
        /// (/var/cache/lockmgr/image-libvirt).
        #[arg(long)]
        libvirt: bool,
    },
    /// Boot a cluster, print how to reach it, and leave it running.
    Up {
        /// Number of nodes (1 to 8; corosync's two_node mode for 2).
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Host directory shared read-only at /mnt/host in every node (e.g. target/debug).
        #[arg(long)]
        share: Option<PathBuf>,
        /// Memory per node in MiB (default 768, with --libvirt 1536).
        #[arg(long)]
        memory: Option<u32>,
        /// Boot the image with libvirt in it (see `image --libvirt`).
        #[arg(long)]
        libvirt: bool,
        /// A raw image file on the host attached to every node as /dev/vda, shared read-write
        /// as a SAN LUN (created sparse, 256 MiB, when missing).
        #[arg(long)]
        shared_disk: Option<PathBuf>,
        /// Boot the nodes with dlm_controld's fencing off (enable_fencing=0): the survivors take
        /// a failed node's locks even while it still runs. For control runs only.
        #[arg(long, conflicts_with = "watchdog")]
        no_fencing: bool,
        /// Watchdog self-fencing instead of power fencing: an i6300esb in every node
        /// (/dev/watchdog, QEMU powers the VM off when it expires) and dlm_controld's agent
        /// fence_lockmgr_watchdog, which waits; lockmgrd must then run with --watchdog.
        #[arg(long)]
        watchdog: bool,
    },
    /// Serve the fence requests of a detached cluster (started in the background by `up`).
    #[command(hide = true)]
    Fencer {
        /// The cluster.
        #[arg(long)]
        cluster: String,
    },
    /// Run a shell command in a node (1-based: 1 or node1) and exit with its status.
    Exec {
        /// The cluster, when several are up (see `status`).
        #[arg(long)]
        cluster: Option<String>,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// The node: 1, 2, ... or node1, node2, ...
        node: String,
        /// The command; one argument is taken as a shell line, several are quoted word by word.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// List the clusters recorded in the run dir.
    Status,
    /// Stop detached clusters and leftovers of dead runs.
    Down {
        /// Only this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Also stop clusters whose owning process (a running test) is alive.
        #[arg(long)]
        force: bool,
    },
}

/// The size of `up --shared-disk`'s image when it is created.
const SHARED_DISK_BYTES: u64 = 256 << 20;

fn flavour(libvirt: bool) -> Flavour {
    if libvirt {
        Flavour::Libvirt
    } else {
        Flavour::Dlm
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("lockmgr-testbed: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> lockmgr_testbed::Result<ExitCode> {
    match cli.command {
        Command::Image { force, libvirt } => {
            let image = NodeImage::ensure_with(&ImageOptions {
                force,
                flavour: flavour(libvirt),
                ..ImageOptions::default()
            })?;
            println!(
                "kernel:    {} ({})",
                image.vmlinuz.display(),
                image.kernel_package
            );
            println!("initramfs: {}", image.initrd.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Up {
            nodes,
            share,
            memory,
            libvirt,
            shared_disk,
            no_fencing,
            watchdog,
        } => {
            let image = NodeImage::ensure_with(&ImageOptions {
                flavour: flavour(libvirt),
                ..ImageOptions::default()
            })?;
            let share = share
                .map(|dir| {
                    dir.canonicalize().map_err(|err| {
                        lockmgr_testbed::Error::Usage(format!("{}: {err}", dir.display()))
                    })
                })
                .transpose()?;
            let spec = ClusterSpec {
                nodes,
                share,
                memory_mib: memory.unwrap_or(if libvirt {
                    lockmgr_testbed::LIBVIRT_NODE_MEMORY_MIB
                } else {
                    ClusterSpec::default().memory_mib
                }),
                shared_disk: shared_disk.map(|path| (path, SHARED_DISK_BYTES)),
                run_dir: cli.run_dir,
                fence_mode: if no_fencing {
                    lockmgr_testbed::FenceMode::Off
                } else if watchdog {
                    lockmgr_testbed::FenceMode::Watchdog
                } else {
                    lockmgr_testbed::FenceMode::Power
                },
                ..ClusterSpec::default()
            };
            let fencer = std::env::current_exe().map_err(|err| {
                lockmgr_testbed::Error::Usage(format!("cannot find this program's path: {err}"))
            })?;
            let cluster = Cluster::start(&image, &spec)?;
            let boot = cluster.boot_time();
            let state = cluster.detach(&fencer)?;
            print_up(&state, boot);
            Ok(ExitCode::SUCCESS)
        }
        Command::Fencer { cluster } => {
            lockmgr_testbed::serve_fencing(&cli.run_dir, &cluster)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec {
            cluster,
            timeout,
            node,
            command,
        } => {
            let index: usize =
                node.strip_prefix("node")
                    .unwrap_or(&node)
                    .parse()
                    .map_err(|_| {
                        lockmgr_testbed::Error::Usage(format!(
                            "node {node:?} is not 1, 2, ... or node1, node2, ..."
                        ))
                    })?;
            let line = match command.as_slice() {
                [single] => single.clone(),
                words => words
                    .iter()
                    .map(|word| shell_quote(word))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            let cluster = Cluster::attach(&cli.run_dir, cluster.as_deref())?;
            let output = cluster.exec_timeout(index, &line, Duration::from_secs(timeout))?;
            std::io::stdout().write_all(&output.stdout).ok();
            std::io::stderr().write_all(&output.stderr).ok();
            Ok(match output.status {
                ExitStatus::Code(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
                ExitStatus::Signal(signal) => {
                    ExitCode::from(u8::try_from(128 + signal).unwrap_or(1))
                }
            })
        }
        Command::Status => {
            let all = lockmgr_testbed::list(&cli.run_dir);
            if all.is_empty() {
                println!("no cluster recorded in {}", cli.run_dir.display());
            }
            for state in all {
                let owner = match state.owner_pid {
                    None => "detached".to_owned(),
                    Some(pid) if state.owner_alive() => format!("owned by live pid {pid}"),
                    Some(pid) => format!("LEFTOVER of dead pid {pid} (`down` removes it)"),
                };
                let fencing = match (state.fencing, state.fencer_pid) {
                    (false, _) if state.fence_mode() == lockmgr_testbed::FenceMode::Watchdog => {
                        "watchdog fencing (no host side)".to_owned()
                    }
                    (false, _) => "fencing OFF".to_owned(),
                    (true, Some(pid)) if lockmgr_testbed::fencer_alive(&state) => {
                        format!("fencing on (fencer pid {pid})")
                    }
                    (true, Some(pid)) => format!("fencing on, but its fencer (pid {pid}) is GONE"),
                    (true, None) => "fencing on (served by its owner)".to_owned(),
                };
                println!(
                    "{}: {} node(s), {} QEMU running, {owner}, {fencing}",
                    state.name,
                    state.nodes.len(),
                    state.running_pids().len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Down { cluster, force } => {
            let report = lockmgr_testbed::down(&cli.run_dir, cluster.as_deref(), force);
            if report.is_empty() {
                println!("nothing to stop in {}", cli.run_dir.display());
            }
            for line in report {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_up(state: &lockmgr_testbed::ClusterState, boot: Duration) {
    println!();
    println!(
        "cluster {} is up: {} node(s), {}, ready {:.1} s after QEMU start",
        state.name,
        state.nodes.len(),
        state.kernel,
        boot.as_secs_f64()
    );
    println!("  run dir   {}", state.dir.display());
    match state.fencer_pid {
        Some(pid) if state.fencing => println!(
            "  fencing   on: fencer pid {pid} powers off the nodes dlm_controld asks for; log {}",
            state.dir.join(lockmgr_testbed::FENCE_LOG).display()
        ),
        _ if state.fence_mode() == lockmgr_testbed::FenceMode::Watchdog => println!(
            "  fencing   watchdog: an i6300esb in each node powers it off unless lockmgrd --watchdog pets it; \
             survivors run fence_lockmgr_watchdog wait={}",
            lockmgr_testbed::WATCHDOG_FENCE_WAIT_S
        ),
        _ => {
            println!("  fencing   OFF (enable_fencing=0): a cut-off node keeps its domains running")
        }
    }
    for node in &state.nodes {
        println!(
            "  node{}     {}  qemu pid {}  console {}  agent {}",
            node.index,
            node.address,
            node.pid.unwrap_or(0),
            node.console.display(),
            node.agent_socket.display()
        );
    }
    if let Some(share) = &state.share {
        println!(
            "  share     {} -> /mnt/host in every node (read-only, live)",
            share.display()
        );
    }
    println!();
    println!("reach the nodes (no ssh; commands go through the guest agent, as root):");
    println!("  lockmgr-testbed exec 1 -- dlm_tool status");
    println!("  lockmgr-testbed exec 2 -- 'corosync-quorumtool -s'");
    println!(
        "  tail -f {}",
        state
            .nodes
            .first()
            .map(|node| node.console.display().to_string())
            .unwrap_or_default()
    );
    println!(
        "  ip netns exec {} ping -c1 10.99.0.1     (the namespace has no uplink)",
        state.name
    );
    println!("stop it:");
    println!("  lockmgr-testbed down");
}
