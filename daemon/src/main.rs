//! `lockmgrd`: serve file.so's locks (and later dlm.so's) on a unix socket.
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
#[cfg(feature = "dlm")]
use lockmgr_conf::DlmPluginSettings;
use lockmgr_conf::FilePluginSettings;
use lockmgr_proto::{EventKind, Restored};
use lockmgrd::backend::Backend;
use lockmgrd::file_backend::FileBackend;
use lockmgrd::instance::{self, Instance};
use lockmgrd::persist::StateFile;
use lockmgrd::server::Server;
use lockmgrd::table::LockTable;
use lockmgrd::watchdog::SelfFencing;
#[cfg(feature = "dlm")]
use lockmgrd::watchdog::WatchdogDevice;
use lockmgrd::{log, sys};
use std::os::unix::net::UnixListener;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// OFD locks on lock files (or the disks themselves): file.so, /etc/libvirt/qemu-file.conf.
    File,
    /// Cluster-wide DLM locks (corosync + dlm_controld): dlm.so, /etc/libvirt/qemu-dlm.conf.
    Dlm,
}

#[derive(Parser, Debug)]
#[command(
    name = "lockmgrd",
    version,
    about = "The lock daemon behind lockmgr's libvirt plugins (file.so, dlm.so)",
    long_about = "Holds disk and lease locks on behalf of running domains, so they survive libvirtd \
        restarts and are freed the moment QEMU exits.\n\n\
        It reads the same configuration file as its plugin (libvirt syntax): socket_path, \
        state_dir, and file_lockspace_dir (file) or lockspace_name (dlm). Runs in the foreground \
        and logs to stderr; stop it with SIGTERM. Its lock table is kept in \
        <state_dir>/locks.json: after a restart (or a crash) it takes back the locks of the \
        domains that still run — file locks are taken again, DLM persistent locks are adopted \
        from the orphans they became — drops those of domains that stopped meanwhile, and \
        applies <on_lockfailure> to any lock someone else took in between.\n\n\
        With --backend dlm it refuses to start unless dlm_controld fences failed nodes \
        (enable_fencing=1 with a fence agent): without fencing, the other nodes take a cut-off \
        node's disks while its domains may still write to them. Without fence hardware, fence \
        with the watchdog: fence_lockmgr_watchdog in dlm.conf and --watchdog here, on every \
        node of a cluster of three or more (or two with a quorum device).",
    after_help = "Examples:\n  lockmgrd --config /etc/libvirt/qemu-file.conf\n  \
        lockmgrd --backend dlm --config /etc/libvirt/qemu-dlm.conf --pid-file /run/lockmgr/dlm.pid\n  \
        # self-fencing; dlm.conf: fence_all /usr/sbin/fence_lockmgr_watchdog wait=32\n  \
        lockmgrd --backend dlm --watchdog /dev/watchdog --watchdog-timeout 10 --lock-failure-timeout 20"
)]
struct Cli {
    /// The plugin's configuration file (may be absent: defaults). Default:
    /// /etc/libvirt/qemu-file.conf or /etc/libvirt/qemu-dlm.conf, after --backend.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The lock backend.
    #[arg(long, value_enum, default_value = "file")]
    backend: BackendKind,
    /// Write the daemon's pid here once it serves.
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// dlm: after this many seconds without an answer from the DLM (lockspace stopped, quorum
    /// lost), apply every domain's <on_lockfailure> and refuse new locks. Fencing, not this
    /// timeout, is what keeps a cut-off node from writing while the others take its disks.
    /// With --watchdog, losing membership (quorum, dlm_controld) applies them at once instead,
    /// and a DLM that is only recovering keeps the domains.
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    lock_failure_timeout: u64,
    /// dlm: self-fencing, for clusters without fence hardware: arm this watchdog device
    /// (/dev/watchdog) and pet it only while this node is a quorate member of the cluster with
    /// dlm_controld running, or while no domain with a lock runs. When membership is lost every
    /// lock-holding domain's <on_lockfailure> is applied at once; a domain that keeps running
    /// lets the watchdog reset the node.
    /// Required when /etc/dlm/dlm.conf fences with fence_lockmgr_watchdog.
    #[arg(long, value_name = "DEVICE")]
    watchdog: Option<PathBuf>,
    /// dlm: the watchdog's timeout. fence_lockmgr_watchdog's wait= (in dlm.conf) must be at
    /// least this + --lock-failure-timeout + 2 on every node.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    watchdog_timeout: u32,
    /// dlm: dlm_controld's configuration, read for its fence agents.
    #[arg(long, value_name = "FILE", default_value = "/etc/dlm/dlm.conf")]
    dlm_conf: PathBuf,
    /// dlm: start even though dlm_controld runs without fencing (enable_fencing=0). UNSAFE:
    /// a cut-off or frozen node keeps writing while the other nodes take its disks. Only for
    /// test beds that must show that failure.
    #[arg(long)]
    unsafe_allow_no_fencing: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            log(&format!("error: {message}"));
            ExitCode::FAILURE
        }
    }
}

fn print_warnings(warnings: Vec<lockmgr_conf::Warning>) {
    for warning in warnings {
        log(&format!("warning: {warning}"));
    }
}

/// Self-fencing to arm once the lock table is loaded (`--watchdog`).
#[cfg_attr(not(feature = "dlm"), allow(dead_code))]
struct WatchdogPlan {
    device: PathBuf,
    timeout_secs: u32,
    /// What corosync said at start.
    quorate_now: bool,
}

/// What a daemon owns before it touches anything: its state directory and its socket.
struct Claim {
    _instance: Instance,
    listener: UnixListener,
    /// Where `listener` is bound.
    socket_path: PathBuf,
    /// The claimed state directory.
    state_dir: PathBuf,
    /// The soft limit on open files, raised to the hard one.
    fd_limit: u64,
}

/// Claims `state_dir`, then binds `socket_path`: a second daemon on the same configuration
/// stops here, before it restores, locks or kills anything.
fn claim(state_dir: &Path, socket_path: &Path) -> Result<Claim, String> {
    let instance = Instance::claim(state_dir)?;
    let listener = instance::bind(socket_path)?;
    let fd_limit =
        sys::raise_fd_limit().map_err(|e| format!("cannot read the open-files limit: {e}"))?;
    Ok(Claim {
        _instance: instance,
        listener,
        socket_path: socket_path.to_owned(),
        state_dir: state_dir.to_owned(),
        fd_limit,
    })
}

fn run(cli: &Cli) -> Result<(), String> {
    match cli.backend {
        BackendKind::File => {
            let config = cli
                .config
                .clone()
                .unwrap_or_else(|| FilePluginSettings::PATH.into());
            let (settings, warnings) =
                FilePluginSettings::from_file(&config).map_err(|e| e.to_string())?;
            print_warnings(warnings);
            let claim = claim(&settings.state_dir, &settings.socket_path)?;
            let backend = FileBackend::new(settings.file_lockspace_dir.clone())
                .map_err(|e| e.to_string())?
                .idle_limit(claim.fd_limit);
            let what = settings
                .file_lockspace_dir
                .as_ref()
                .map_or("the disks themselves".into(), |d| d.display().to_string());
            let what = format!("locking {what}");
            #[cfg(feature = "failpoints")]
            if let Some(stall) = lockmgrd::stall::Stall::from_env()? {
                let backend = lockmgrd::stall::Stalling::new(backend, stall)
                    .map_err(|e| format!("LOCKMGRD_STALL: {e}"))?;
                return serve(cli, claim, backend, &what, None);
            }
            serve(cli, claim, backend, &what, None)
        }
        BackendKind::Dlm => run_dlm(cli),
    }
}

#[cfg(feature = "dlm")]
fn run_dlm(cli: &Cli) -> Result<(), String> {
    let config = cli
        .config
        .clone()
        .unwrap_or_else(|| DlmPluginSettings::PATH.into());
    let (settings, warnings) = DlmPluginSettings::from_file(&config).map_err(|e| e.to_string())?;
    print_warnings(warnings);
    match lockmgrd::fencing::check_running_cluster() {
        Ok(fencing) => log(&fencing),
        Err(unsafe_cluster) if cli.unsafe_allow_no_fencing => log(&format!(
            "UNSAFE: {unsafe_cluster} (started anyway: --unsafe-allow-no-fencing)"
        )),
        Err(unsafe_cluster) => {
            return Err(format!(
                "refusing to serve DLM locks: {unsafe_cluster}. (--unsafe-allow-no-fencing starts anyway, for test beds only)"
            ));
        }
    }
    let quorate_now = check_self_fencing(cli)?;
    let claim = claim(&settings.state_dir, &settings.socket_path)?;
    let watchdog = cli.watchdog.as_ref().map(|device| WatchdogPlan {
        device: device.clone(),
        timeout_secs: cli.watchdog_timeout,
        quorate_now,
    });
    let backend = lockmgrd::dlm_backend::DlmBackend::join(&settings.lockspace_name)
        .map_err(|e| e.to_string())?;
    let what = format!(
        "lockspace '{}' of cluster '{}'",
        settings.lockspace_name,
        backend.cluster()
    );
    lockmgrd::cluster_status::spawn_responder(settings.socket_path.clone());
    serve(cli, claim, backend, &what, watchdog)
}

/// Arms the watchdog and starts self-fencing.
#[cfg(feature = "dlm")]
fn arm(plan: &WatchdogPlan) -> Result<SelfFencing, String> {
    let device = WatchdogDevice::open(&plan.device, plan.timeout_secs)?;
    log(&format!(
        "watchdog {} armed ({} s): petted while this node is a quorate member with dlm_controld \
         running, or while no domain with a lock runs",
        plan.device.display(),
        device.timeout_secs()
    ));
    SelfFencing::start(device, plan.quorate_now)
}

#[cfg(not(feature = "dlm"))]
fn arm(_plan: &WatchdogPlan) -> Result<SelfFencing, String> {
    Err("this lockmgrd was built without the dlm backend, which self-fencing needs".into())
}

/// Refuses every unsafe combination of the cluster's fencing and this daemon's self-fencing
/// (see `lockmgrd::fencing`); returns whether corosync said this node is quorate.
#[cfg(feature = "dlm")]
fn check_self_fencing(cli: &Cli) -> Result<bool, String> {
    use lockmgrd::fencing::{self, SelfFenceSettings};
    let refuse = |why: String| format!("refusing to serve DLM locks: {why}");
    let dlm_conf = match std::fs::read_to_string(&cli.dlm_conf) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => {
            return Err(refuse(format!(
                "cannot read {}: {err}",
                cli.dlm_conf.display()
            )));
        }
    };
    let settings = SelfFenceSettings {
        watchdog_timeout: cli
            .watchdog
            .as_ref()
            .map(|_| u64::from(cli.watchdog_timeout)),
        lock_failure_timeout: cli.lock_failure_timeout,
    };
    let (relies_on_watchdog, said) =
        fencing::check_self_fencing(&cli.dlm_conf, &dlm_conf, settings).map_err(refuse)?;
    log(&said);
    if !relies_on_watchdog && cli.watchdog.is_none() {
        return Ok(false);
    }
    let info = lockmgr_quorum::Votequorum::connect()
        .and_then(|quorum| quorum.info())
        .map_err(|e| refuse(format!("self-fencing needs corosync's quorum, and {e}")))?;
    if relies_on_watchdog {
        fencing::check_quorum_for_watchdog(&info).map_err(refuse)?;
    }
    log(&format!(
        "corosync: node {}, {} ({} of {} votes, {} needed)",
        info.node_id,
        if info.quorate {
            "quorate"
        } else {
            "NOT quorate"
        },
        info.total_votes,
        info.expected_votes,
        info.quorum
    ));
    Ok(info.quorate)
}

#[cfg(not(feature = "dlm"))]
fn run_dlm(_cli: &Cli) -> Result<(), String> {
    Err("this lockmgrd was built without the dlm backend (cargo feature 'dlm')".into())
}

fn serve<B: Backend>(
    cli: &Cli,
    claim: Claim,
    backend: B,
    what: &str,
    watchdog: Option<WatchdogPlan>,
) -> Result<(), String> {
    let socket_path = claim.socket_path.as_path();
    let mut state = StateFile::in_claimed_dir(&claim.state_dir);
    let reading = std::time::Instant::now();
    let snapshot = state.load(backend.name()).map_err(|e| e.to_string())?;
    let read_ms = reading.elapsed().as_millis();
    // Armed once the table is known to be readable: a refusal before this leaves the watchdog as
    // it was (armed by a lockmgrd that stopped with locks held, or not at all).
    let self_fencing = watchdog.map(|plan| arm(&plan)).transpose()?;
    if let Some(self_fencing) = &self_fencing {
        if snapshot.as_ref().is_none_or(|s| s.locks.is_empty()) {
            self_fencing.shared().publish(Vec::new());
        }
    }
    let mut table = LockTable::new(backend, state);
    let mut lost_locks = Vec::new();
    let mut restored = None;
    if let Some(snapshot) = snapshot {
        let restoring = std::time::Instant::now();
        let lost = table.restore(&snapshot);
        let (owners, locks) = table.status();
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let summary = Restored {
            found: count(snapshot.locks.len()),
            locks: count(locks.len()),
            domains: count(owners.len()),
            read_ms: u64::try_from(read_ms).unwrap_or(u64::MAX),
            reclaim_ms: u64::try_from(restoring.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        log(&format!(
            "restored {summary} from {}",
            table.store().path().display()
        ));
        restored = Some(summary);
        for lost in lost {
            log(&format!(
                "LOCK LOST: {} of domain '{}': {}",
                lost.resource, lost.owner, lost.outcome
            ));
            lost_locks.push(EventKind::LockLost {
                domain: lost.owner,
                detail: format!("{}: {}", lost.resource, lost.outcome),
            });
        }
        table.save().map_err(|refusal| refusal.message)?;
    }
    let stop =
        sys::install_stop_signals().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    if let Some(pid_file) = &cli.pid_file {
        std::fs::write(pid_file, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write {}: {e}", pid_file.display()))?;
    }
    log(&format!(
        "serving {} (backend {}, {what}, state {}, up to {} open files)",
        socket_path.display(),
        table.backend_name(),
        table.store().path().display(),
        claim.fd_limit
    ));
    lockmgrd::notify::ready(&format!("serving {}", socket_path.display()));
    let timeout = std::time::Duration::from_secs(cli.lock_failure_timeout);
    let mut server = Server::new(claim.listener, socket_path.to_owned(), table, stop, timeout)
        .restored(restored);
    if let Some(self_fencing) = &self_fencing {
        server = server.self_fence(self_fencing.shared());
    }
    for lost in lost_locks {
        server.record(lost);
    }
    let result = server.run();
    // Its last word depends on the table: disarmed when no domain holds a lock.
    drop(server);
    drop(self_fencing);
    let _ = std::fs::remove_file(socket_path);
    if let Some(pid_file) = &cli.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    log("stopped; the locks of running domains will be taken back at the next start");
    result
}
