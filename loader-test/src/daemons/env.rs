//! A plugin's environment for one run: the daemon binaries, the scratch layout, the config
//! written for drvInit and the daemon started with it.

use std::fmt;
use std::path::{Path, PathBuf};

use lockmgr::host::Plugin;

use crate::daemons::daemon::Daemon;
use crate::daemons::profile::{Profile, libvirt_name};
use crate::daemons::sanlock::{
    LIBVIRT_SANLOCK_LOCKSPACE, SanlockDirs, join_lockspace, start_sanlock,
};
use crate::harness_sys;

/// Where the daemons' binaries are.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `virtlockd` (default `/usr/sbin/virtlockd`).
    pub virtlockd: PathBuf,
    /// `lockmgrd`, when given; otherwise looked up beside the plugin and the harness.
    pub lockmgrd: Option<PathBuf>,
    /// `sanlock` (default `/usr/sbin/sanlock`).
    pub sanlock: PathBuf,
    /// The directory of a sanlock daemon already running for the whole run (matrix), whose
    /// lockspace is joined: sanlock cells use it instead of starting their own.
    pub sanlock_shared: Option<PathBuf>,
}

impl Tools {
    /// Arguments that pass these tools on to a subprocess.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--virtlockd".to_owned(),
            self.virtlockd.display().to_string(),
        ];
        if let Some(lockmgrd) = &self.lockmgrd {
            args.push("--lockmgrd".into());
            args.push(lockmgrd.display().to_string());
        }
        args.push("--sanlock".into());
        args.push(self.sanlock.display().to_string());
        if let Some(shared) = &self.sanlock_shared {
            args.push("--sanlock-shared".into());
            args.push(shared.display().to_string());
        }
        args
    }

    /// `lockmgrd`: the one given, else beside the plugin, beside the harness (and its parent
    /// directory, for cargo's `deps/`), else on `$PATH`.
    pub fn find_lockmgrd(&self, plugin: &Path) -> Option<PathBuf> {
        if let Some(given) = &self.lockmgrd {
            return Some(given.clone());
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        dirs.extend(plugin.parent().map(Path::to_owned));
        if let Ok(exe) = std::env::current_exe() {
            if let Some(dir) = exe.parent() {
                dirs.push(dir.to_owned());
                dirs.extend(dir.parent().map(Path::to_owned));
            }
        }
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        dirs.into_iter()
            .map(|d| d.join("lockmgrd"))
            .find(|p| p.is_file())
    }
}

/// The scratch directories of one run (a matrix cell or a bench worker); empty (the default)
/// for a plugin used as this machine configured it ([`PluginEnv::installed`]), which has none.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// The root; everything below is removed with it.
    pub root: PathBuf,
    /// Disk images.
    pub disks: PathBuf,
    /// `<target path>` of leases.
    pub leases: PathBuf,
    /// `<leases>/matrix`: the lockspace directory (`file_lockspace_dir`), holding lease files.
    pub lockspace: PathBuf,
    /// Sockets and pid files.
    pub run: PathBuf,
    /// The daemon's state directory.
    pub state: PathBuf,
}

/// The `<lockspace>` name given with leases.
pub const LEASE_LOCKSPACE: &str = "matrix";

impl Layout {
    /// Creates the directories under `root`.
    pub fn create(root: &Path) -> std::io::Result<Layout> {
        let leases = root.join("leases");
        let layout = Layout {
            root: root.to_owned(),
            disks: root.join("disks"),
            lockspace: leases.join(LEASE_LOCKSPACE),
            leases,
            run: root.join("run"),
            state: root.join("state"),
        };
        for dir in [&layout.disks, &layout.lockspace, &layout.run, &layout.state] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(layout)
    }
}

/// Why a plugin's environment could not be set up.
#[derive(Debug, Clone)]
pub struct SetupError {
    /// `true`: this machine lacks something (not root, a daemon binary, a DLM); `false`: the
    /// daemon itself failed.
    pub cannot_run: bool,
    /// What happened.
    pub message: String,
}

impl SetupError {
    pub(super) fn cannot_run(message: impl Into<String>) -> Self {
        SetupError {
            cannot_run: true,
            message: message.into(),
        }
    }

    pub(super) fn failed(message: impl Into<String>) -> Self {
        SetupError {
            cannot_run: false,
            message: message.into(),
        }
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A plugin's environment: the config file for drvInit and its running daemon.
#[derive(Debug)]
pub struct PluginEnv {
    /// Passed to drvInit.
    pub config: PathBuf,
    /// The daemon, when the profile has one.
    pub daemon: Option<Daemon>,
    /// The scratch directories.
    pub layout: Layout,
    /// What else a report should say about the environment (sanlock: no watchdog, the time the
    /// first drvInit took to join the lockspace).
    pub notes: Vec<String>,
}

impl PluginEnv {
    /// The plugin as this machine configured it: drvInit reads `config`, and its daemon, if it
    /// has one, is the machine's own, already running and not this process's to manage.
    pub fn installed(config: PathBuf) -> Self {
        PluginEnv {
            config,
            daemon: None,
            layout: Layout::default(),
            notes: Vec::new(),
        }
    }

    /// One line about the environment, for reports.
    pub fn describe(&self) -> String {
        let config = if self.config.exists() {
            format!("config {}", self.config.display())
        } else {
            "no config (defaults)".to_owned()
        };
        let mut text = match &self.daemon {
            Some(daemon) => format!("{config}; {} pid {}", daemon.name, daemon.pid()),
            None => config,
        };
        for note in &self.notes {
            text.push_str("; ");
            text.push_str(note);
        }
        text
    }

    /// Stops the daemon (SIGTERM, then SIGKILL) and returns its log when it misbehaved.
    pub fn stop(&mut self) -> Result<(), String> {
        match self.daemon.as_mut() {
            Some(daemon) => daemon.stop(),
            None => Ok(()),
        }
    }

    /// The end of a run: drvDeinit of `plugin` when it is still loaded (and its dlclose), then
    /// [`PluginEnv::stop`]. Every problem, joined by `; `; a drvDeinit error is prefixed with
    /// `deinit_context` (e.g. `"at the end, "`, or nothing).
    pub fn unload(&mut self, plugin: Option<Plugin>, deinit_context: &str) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Some(mut plugin) = plugin {
            if let Err(err) = plugin.deinit() {
                problems.push(format!("{deinit_context}{err}"));
            }
        }
        if let Err(err) = self.stop() {
            problems.push(err);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Sets up what `profile` needs in `layout`: config file, private `/run`, daemon.
///
/// For lockd this moves the **whole process** into a private mount namespace (virtlockd's
/// socket path is fixed): call it first thing in a subprocess of its own.
pub fn prepare(
    profile: Profile,
    plugin: &Path,
    tools: &Tools,
    layout: &Layout,
    lockspace: bool,
) -> Result<PluginEnv, SetupError> {
    // libvirt names the config after the plugin's `lock_manager` name (file.so → qemu-file.conf).
    let name = match profile {
        Profile::Generic => libvirt_name(plugin),
        known => known.as_str().to_owned(),
    };
    let config = layout.root.join(format!("qemu-{name}.conf"));
    let lockspace_line = |out: &mut String| {
        if lockspace {
            out.push_str(&format!(
                "file_lockspace_dir = \"{}\"\n",
                layout.lockspace.display()
            ));
        }
    };
    let write_config = |text: &str| {
        std::fs::write(&config, text)
            .map_err(|e| SetupError::failed(format!("writing {}: {e}", config.display())))
    };
    let mut notes = Vec::new();
    let daemon = match profile {
        Profile::Nop | Profile::Generic => None,
        Profile::Sanlock => {
            // The cell's own /run is private too: nothing can reach the host's /run/sanlock even
            // if SANLOCK_RUN_DIR were lost on the way.
            if !harness_sys::is_root() {
                return Err(SetupError::cannot_run(
                    "sanlock needs root (its daemon, a private mount namespace)",
                ));
            }
            harness_sys::enter_private_run().map_err(|e| {
                SetupError::cannot_run(format!("cannot give sanlock a private /run: {e}"))
            })?;
            match &tools.sanlock_shared {
                Some(shared) => {
                    let sanlock = SanlockDirs::new(shared);
                    harness_sys::set_sanlock_env(&sanlock.run);
                    notes.push(format!(
                        "the run's sanlock daemon (-w 0: NO watchdog), SANLOCK_RUN_DIR {}, \
                         lockspace {LIBVIRT_SANLOCK_LOCKSPACE} already joined",
                        sanlock.run.display()
                    ));
                    return Ok(PluginEnv {
                        config: sanlock.config,
                        daemon: None,
                        layout: layout.clone(),
                        notes,
                    });
                }
                None => {
                    let sanlock = SanlockDirs::new(&layout.root.join("sanlock"));
                    harness_sys::set_sanlock_env(&sanlock.run);
                    let daemon = start_sanlock(tools, &sanlock)?;
                    let joined =
                        join_lockspace(plugin, tools, &sanlock).map_err(SetupError::failed)?;
                    notes.push(format!(
                        "-w 0: NO watchdog; SANLOCK_RUN_DIR {}; the first drvInit joined \
                         lockspace {LIBVIRT_SANLOCK_LOCKSPACE} in {:.1} s (not counted in step \
                         or cycle times)",
                        sanlock.run.display(),
                        joined.as_secs_f64()
                    ));
                    return Ok(PluginEnv {
                        config: sanlock.config,
                        daemon: Some(daemon),
                        layout: layout.clone(),
                        notes,
                    });
                }
            }
        }
        Profile::Lockd => {
            if !harness_sys::is_root() {
                return Err(SetupError::cannot_run(
                    "lockd needs virtlockd on its fixed socket /run/libvirt/virtlockd-sock, which \
                     the harness runs in a private mount namespace: run as root",
                ));
            }
            if !tools.virtlockd.is_file() {
                return Err(SetupError::cannot_run(format!(
                    "{} not found (package libvirt-daemon-lock, or pass --virtlockd)",
                    tools.virtlockd.display()
                )));
            }
            let mut text = String::from(
                "# written by lockmgr-loader-test\nauto_disk_leases = 1\nrequire_lease_for_disks = 0\n",
            );
            lockspace_line(&mut text);
            write_config(&text)?;
            harness_sys::enter_private_run().map_err(|e| {
                SetupError::cannot_run(format!("cannot give virtlockd a private /run: {e}"))
            })?;
            let daemon_conf = layout.root.join("virtlockd.conf");
            std::fs::write(&daemon_conf, "# written by lockmgr-loader-test\n").map_err(|e| {
                SetupError::failed(format!("writing {}: {e}", daemon_conf.display()))
            })?;
            let mut daemon = Daemon::new(
                "virtlockd",
                tools.virtlockd.clone(),
                vec![
                    "-f".into(),
                    daemon_conf.display().to_string(),
                    "-p".into(),
                    "/run/virtlockd.pid".into(),
                ],
                PathBuf::from("/run/libvirt/virtlockd-sock"),
                layout.root.join("virtlockd.log"),
            );
            daemon.start().map_err(SetupError::failed)?;
            Some(daemon)
        }
        Profile::File | Profile::Dlm => {
            let Some(lockmgrd) = tools.find_lockmgrd(plugin) else {
                return Err(SetupError::cannot_run(
                    "lockmgrd not found beside the plugin, beside loader-test or on $PATH \
                     (cargo build -p lockmgrd, or pass --lockmgrd)",
                ));
            };
            let socket = layout.run.join(format!("{}.sock", profile.as_str()));
            let mut text = format!(
                "# written by lockmgr-loader-test\nsocket_path = \"{}\"\nstate_dir = \"{}\"\n",
                socket.display(),
                layout.state.display()
            );
            if profile == Profile::File {
                lockspace_line(&mut text);
            }
            write_config(&text)?;
            let mut args = vec!["--config".to_owned(), config.display().to_string()];
            if profile == Profile::Dlm {
                args.extend(["--backend".to_owned(), "dlm".to_owned()]);
            }
            let mut daemon = Daemon::new(
                "lockmgrd",
                lockmgrd,
                args,
                socket,
                layout.root.join("lockmgrd.log"),
            );
            daemon.start().map_err(|e| SetupError {
                // Without a DLM on this machine, lockmgrd --backend dlm cannot start.
                cannot_run: profile == Profile::Dlm,
                message: e,
            })?;
            Some(daemon)
        }
    };
    Ok(PluginEnv {
        config,
        daemon,
        layout: layout.clone(),
        notes,
    })
}
