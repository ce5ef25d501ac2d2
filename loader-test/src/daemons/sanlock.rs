//! A real sanlock daemon without a watchdog (`sanlock daemon -w 0`) in a private mount
//! namespace, and libvirt's lockspace joined by the first drvInit.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemons::daemon::Daemon;
use crate::daemons::env::{SetupError, Tools};
use crate::harness_sys;

/// Where Debian's sanlock package installs the daemon.
pub const DEFAULT_SANLOCK: &str = "/usr/sbin/sanlock";

/// The lockspace libvirt's sanlock.so creates and joins with `auto_disk_leases = 1`.
pub const LIBVIRT_SANLOCK_LOCKSPACE: &str = "__LIBVIRT__DISKS__";

/// Where one sanlock daemon keeps things: `run/` (`SANLOCK_RUN_DIR`: its socket and pid file),
/// `log/` (bound over `/var/log` in its mount namespace: `sanlock.log`), `leases/`
/// (`disk_lease_dir`: the lockspace file and one lease file per disk) and `qemu-sanlock.conf`.
#[derive(Debug, Clone)]
pub struct SanlockDirs {
    /// The directory itself.
    pub root: PathBuf,
    /// `SANLOCK_RUN_DIR`.
    pub run: PathBuf,
    /// Bound over `/var/log` for the daemon.
    pub log: PathBuf,
    /// `disk_lease_dir`.
    pub leases: PathBuf,
    /// The config passed to drvInit.
    pub config: PathBuf,
}

impl SanlockDirs {
    /// The layout under `root` (nothing created).
    pub fn new(root: &Path) -> SanlockDirs {
        SanlockDirs {
            root: root.to_owned(),
            run: root.join("run"),
            log: root.join("log"),
            leases: root.join("leases"),
            config: root.join("qemu-sanlock.conf"),
        }
    }
}

/// Starts a real sanlock daemon for `dirs` and writes its `qemu-sanlock.conf`; the lockspace is
/// joined later, by the first drvInit (about 20 s: sanlock's delta lease on the host id).
///
/// The daemon runs `sanlock daemon -D -w 0 -l 0 -U root -G root` through `unshare --mount
/// --propagation private` with an empty tmpfs on `/run` and `dirs.log` bound over `/var/log`,
/// with `SANLOCK_RUN_DIR=dirs.run` and `SANLOCK_PRIVILEGED=0` (sanlock's own test setting: it
/// skips raising RLIMIT_MEMLOCK/RTPRIO to unlimited, which needs CAP_SYS_RESOURCE). `-w 0`:
/// **no watchdog** — a real deployment runs wdmd, which resets the host when sanlock cannot
/// renew its leases or dies while holding them; here nothing is fenced.
pub fn start_sanlock(tools: &Tools, dirs: &SanlockDirs) -> Result<Daemon, SetupError> {
    start_sanlock_with(tools, dirs, false)
}

fn start_sanlock_with(
    tools: &Tools,
    dirs: &SanlockDirs,
    own_group: bool,
) -> Result<Daemon, SetupError> {
    if !harness_sys::is_root() {
        return Err(SetupError::cannot_run("sanlock needs root"));
    }
    if !tools.sanlock.is_file() {
        return Err(SetupError::cannot_run(format!(
            "{} not found (package sanlock, or pass --sanlock)",
            tools.sanlock.display()
        )));
    }
    for dir in [&dirs.run, &dirs.log, &dirs.leases] {
        std::fs::create_dir_all(dir)
            .map_err(|e| SetupError::failed(format!("creating {}: {e}", dir.display())))?;
    }
    let text = format!(
        "# written by lockmgr-loader-test\nauto_disk_leases = 1\nhost_id = 1\n\
         disk_lease_dir = \"{}\"\nrequire_lease_for_disks = 0\n",
        dirs.leases.display()
    );
    std::fs::write(&dirs.config, text)
        .map_err(|e| SetupError::failed(format!("writing {}: {e}", dirs.config.display())))?;
    let script = "mount -n -t tmpfs -o mode=0755 tmpfs /run && mount -n --bind \"$2\" /var/log \
                  && exec \"$1\" daemon -D -w 0 -l 0 -U root -G root -S -1";
    let mut daemon = Daemon::new(
        "sanlock",
        PathBuf::from("unshare"),
        vec![
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "--".into(),
            "/bin/sh".into(),
            "-c".into(),
            script.into(),
            "sanlock".into(),
            tools.sanlock.display().to_string(),
            dirs.log.display().to_string(),
        ],
        dirs.run.join("sanlock.sock"),
        dirs.root.join("sanlock-daemon.log"),
    );
    daemon.env = vec![
        ("SANLOCK_RUN_DIR".into(), dirs.run.display().to_string()),
        ("SANLOCK_PRIVILEGED".into(), "0".into()),
    ];
    // sanlock ignores SIGTERM while it is in a lockspace; without a watchdog a SIGKILL harms
    // nothing, and its lease files go with the scratch directory.
    daemon.kill_to_stop = true;
    daemon.own_group = own_group;
    daemon.start().map_err(SetupError::failed)?;
    Ok(daemon)
}

/// [`start_sanlock`] with the daemon in a process group of its own (a daemon that outlives the
/// cells: the caller tracks the group for interrupts).
pub fn start_sanlock_grouped(tools: &Tools, dirs: &SanlockDirs) -> Result<Daemon, SetupError> {
    start_sanlock_with(tools, dirs, true)
}

/// The first drvInit against a fresh sanlock daemon ([`first_init`]; `SANLOCK_RUN_DIR` set
/// already), then checks with `sanlock client status` that the daemon really is in libvirt's
/// lockspace (sanlock.so's drvInit returns 0 even when it could not reach the daemon).
pub fn join_lockspace(
    plugin: &Path,
    tools: &Tools,
    dirs: &SanlockDirs,
) -> Result<Duration, String> {
    let took = first_init(plugin, &dirs.config)?;
    let output = Command::new(&tools.sanlock)
        .args(["client", "status"])
        .env("SANLOCK_RUN_DIR", &dirs.run)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} client status: {e}", tools.sanlock.display()))?;
    let status = String::from_utf8_lossy(&output.stdout);
    let wanted = format!("s {LIBVIRT_SANLOCK_LOCKSPACE}:1:");
    if status.lines().any(|l| l.starts_with(&wanted)) {
        Ok(took)
    } else {
        Err(format!(
            "drvInit returned after {:.1} s but the sanlock daemon is not in lockspace \
             {LIBVIRT_SANLOCK_LOCKSPACE} (sanlock client status: {}{})",
            took.as_secs_f64(),
            status.trim().replace('\n', " | "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Loads the plugin, calls drvInit with `config` (for sanlock.so with a fresh daemon: joins
/// the lockspace) and drvDeinit, and returns how long drvInit took.
pub fn first_init(plugin: &Path, config: &Path) -> Result<Duration, String> {
    let mut loaded = lockmgr::host::Plugin::open(plugin).map_err(|e| e.to_string())?;
    let started = Instant::now();
    loaded
        .init(config)
        .map_err(|e| format!("the first drvInit (joining the lockspace): {e}"))?;
    let took = started.elapsed();
    loaded.deinit().map_err(|e| format!("drvDeinit: {e}"))?;
    Ok(took)
}
