//! The run's shared sanlock daemon, `__sanlock-join`, and sanlock leases for a cell.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use lockmgr::{Domain, Resource};

use crate::daemons::{self, PluginSpec, SetupError, Tools};
use crate::harness_sys;
use crate::matrix::args::ToolArgs;
use crate::matrix::cell::owner_uuid;

/// The sanlock daemon of a whole matrix run, its lockspace joined.
pub(super) struct SharedSanlock {
    pub(super) dirs: daemons::SanlockDirs,
    pub(super) daemon: daemons::Daemon,
    pub(super) pid: u32,
    pub(super) note: String,
}

impl SharedSanlock {
    /// Starts the daemon and has the plugin join its lockspace once, in a subprocess
    /// (`__sanlock-join`), timing that first drvInit.
    pub(super) fn start(
        exe: &Path,
        plugin: &PluginSpec,
        tools: &Tools,
        scratch: &Path,
    ) -> Result<SharedSanlock, SetupError> {
        let dirs = daemons::SanlockDirs::new(&scratch.join("sanlock-shared"));
        eprintln!(
            "sanlock: starting one sanlock daemon for the run (sanlock daemon -w 0: NO watchdog), \
             SANLOCK_RUN_DIR {}",
            dirs.run.display()
        );
        let mut daemon = daemons::start_sanlock_grouped(tools, &dirs)?;
        let pid = daemon.pid();
        harness_sys::track_group(pid);
        eprintln!(
            "sanlock: daemon pid {pid}; the first drvInit of {} joins lockspace {} (sanlock \
             takes ~20 s) …",
            plugin.path.display(),
            daemons::LIBVIRT_SANLOCK_LOCKSPACE
        );
        let output = Command::new(exe)
            .arg("__sanlock-join")
            .arg("--plugin")
            .arg(&plugin.path)
            .arg("--shared")
            .arg(&dirs.root)
            .args(tools.to_args())
            .stdin(Stdio::null())
            .output();
        let mut probe = String::new();
        let joined: Result<f64, String> = match output {
            Err(err) => Err(format!("cannot run __sanlock-join: {err}")),
            Ok(output) => {
                let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
                let mut lines = text.lines();
                let first = lines.next().unwrap_or_default().parse::<f64>();
                probe = lines.next().unwrap_or_default().to_owned();
                match (output.status.success(), first) {
                    (true, Ok(seconds)) => Ok(seconds),
                    _ => Err(format!(
                        "joining the lockspace failed: {text}{} (daemon log: {})",
                        String::from_utf8_lossy(&output.stderr).trim(),
                        daemon.log_tail()
                    )),
                }
            }
        };
        let seconds = match joined {
            Ok(seconds) => seconds,
            Err(message) => {
                let _ = daemon.stop();
                harness_sys::untrack_group(pid);
                return Err(SetupError {
                    cannot_run: false,
                    message,
                });
            }
        };
        eprintln!("sanlock: lockspace joined in {seconds:.1} s");
        let note = format!(
            "one sanlock daemon for the run (pid {pid}), `sanlock daemon -w 0`: NO watchdog, so \
             nothing is fenced; SANLOCK_RUN_DIR and disk_lease_dir in scratch; auto_disk_leases \
             = 1, host_id = 1; the first drvInit joined lockspace {} in {seconds:.1} s (not \
             counted in any cell's time); {probe}",
            daemons::LIBVIRT_SANLOCK_LOCKSPACE
        );
        Ok(SharedSanlock {
            dirs,
            daemon,
            pid,
            note,
        })
    }
}

/// Arguments of `__sanlock-join`.
#[derive(clap::Args, Debug)]
pub struct SanlockJoinArgs {
    #[arg(long)]
    plugin: PathBuf,
    /// The shared daemon's directory ([`daemons::SanlockDirs`]).
    #[arg(long)]
    shared: PathBuf,
    #[command(flatten)]
    tools: ToolArgs,
}

/// What the plugin does with `<on_lockfailure>restart</on_lockfailure>`: one registration in a
/// forked pre-exec child with that action (a disk in the run's scratch), as one line.
fn probe_restart_action(plugin: &Path, dirs: &daemons::SanlockDirs) -> String {
    let probe = || -> Result<String, String> {
        let mut loaded = lockmgr::host::Plugin::open(plugin).map_err(|e| e.to_string())?;
        loaded.init(&dirs.config).map_err(|e| e.to_string())?;
        let disk = dirs.root.join("on-lockfailure-restart.img");
        std::fs::write(&disk, b"").map_err(|e| format!("{}: {e}", disk.display()))?;
        let domain = Domain {
            uuid: owner_uuid("on-lockfailure", "restart"),
            name: "matrix-on-lockfailure-restart".into(),
            id: 1,
            pid: 0,
            uri: Some("qemu:///system".into()),
        };
        let resources = [Resource::Disk {
            path: disk,
            access: lockmgr::Access::Exclusive,
        }];
        let mut owner = crate::sequences::register(
            &loaded,
            &domain,
            &resources,
            lockmgr::LockFailureAction::Restart,
        )
        .map_err(|e| e.to_string())?;
        let text = match &owner.outcome {
            lockmgr::host::RegisterOutcome::Failed { error, .. } => {
                format!("<on_lockfailure>restart</on_lockfailure> refused at registration: {error}")
            }
            lockmgr::host::RegisterOutcome::Registered { .. } => {
                "<on_lockfailure>restart</on_lockfailure> accepted at registration".to_owned()
            }
        };
        let _ = owner.kill();
        let _ = loaded.deinit();
        Ok(text)
    };
    probe().unwrap_or_else(|e| format!("<on_lockfailure>restart</on_lockfailure> not probed: {e}"))
}

/// `__sanlock-join`: the first drvInit against a fresh sanlock daemon; prints its seconds.
pub fn sanlock_join_command(args: &SanlockJoinArgs) -> u8 {
    let dirs = daemons::SanlockDirs::new(&args.shared);
    harness_sys::set_sanlock_env(&dirs.run);
    // As in the cells and libvirtd: libvirt.so.0 is loaded before the plugin.
    harness_sys::preload(c"libvirt.so.0");
    let tools = args.tools.tools();
    match daemons::join_lockspace(&args.plugin, &tools, &dirs) {
        Ok(took) => {
            println!("{:.3}", took.as_secs_f64());
            println!("{}", probe_restart_action(&args.plugin, &dirs));
            0
        }
        Err(err) => {
            eprintln!("{err}");
            crate::EXIT_FAIL
        }
    }
}

/// Makes `file` a sanlock lease named `key` in libvirt's lockspace (`sanlock direct init`, as
/// an administrator prepares a `<lease>` for sanlock.so).
pub(super) fn init_sanlock_lease(tools: &Tools, key: &str, file: &Path) -> Result<(), String> {
    let spec = format!(
        "{}:{key}:{}:0",
        daemons::LIBVIRT_SANLOCK_LOCKSPACE,
        file.display()
    );
    let output = Command::new(&tools.sanlock)
        .args(["direct", "init", "-r", &spec])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", tools.sanlock.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "sanlock direct init -r {spec} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The libvirt error code of sanlock.so's refusals (`VIR_ERR_SYSTEM_ERROR`).
pub(super) const SANLOCK_REFUSAL_CODE: i32 = 38;
