//! Plugin profiles: which lock daemon a plugin needs, with which config, and how the harness
//! starts, crashes and stops it.
//!
//! | profile | daemon | config passed to drvInit |
//! |---|---|---|
//! | `nop`, `generic` | none | an absent `qemu-NAME.conf` (defaults) |
//! | `lockd` | `virtlockd`, in a private mount namespace with an empty tmpfs on `/run` (its socket path is fixed) | `qemu-lockd.conf`: `auto_disk_leases = 1`, `require_lease_for_disks = 0`, `file_lockspace_dir` when the scenario wants a lockspace |
//! | `file` | `lockmgrd --config qemu-file.conf` | `qemu-file.conf`: `socket_path`, `state_dir`, `file_lockspace_dir` in scratch dirs |
//! | `dlm` | `lockmgrd --backend dlm --config qemu-dlm.conf` (needs a DLM cluster) | `qemu-dlm.conf`: `socket_path`, `state_dir` |
//! | `sanlock` | a real `sanlock daemon -w 0` (**no watchdog**), in a private mount namespace, `SANLOCK_RUN_DIR` in the scratch directory; one per matrix run, shared by the cells that do not crash it (`Tools::sanlock_shared`) | `qemu-sanlock.conf`: `auto_disk_leases = 1`, `host_id = 1`, `disk_lease_dir` in scratch, `require_lease_for_disks = 0` |
//!
//! The profile is guessed from the plugin's file name (`lockd.so`, `file.so` / `libfile.so`, …)
//! and can be named instead: `--plugin file=/some/where/x.so`.

use std::fmt;
use std::fs::File;
use std::io::Read as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness_sys;

/// What the harness knows about a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Locks nothing, needs nothing.
    Nop,
    /// libvirt's lockd.so + virtlockd.
    Lockd,
    /// lockmgr's file.so + lockmgrd.
    File,
    /// lockmgr's dlm.so + lockmgrd with the DLM backend.
    Dlm,
    /// libvirt's sanlock.so + a real sanlock daemon without a watchdog.
    Sanlock,
    /// Anything else: no daemon, an absent config.
    Generic,
}

impl Profile {
    /// Every profile name, as used in `--plugin NAME=PATH` and `by_plugin.NAME`.
    pub const KNOWN: [&'static str; 6] = ["nop", "lockd", "file", "dlm", "sanlock", "generic"];

    /// The profile called `name`.
    pub fn from_name(name: &str) -> Option<Profile> {
        Some(match name {
            "nop" => Profile::Nop,
            "lockd" => Profile::Lockd,
            "file" => Profile::File,
            "dlm" => Profile::Dlm,
            "sanlock" => Profile::Sanlock,
            "generic" => Profile::Generic,
            _ => return None,
        })
    }

    /// The profile a plugin file name implies (`libfile.so` → file; cargo's
    /// `libdlm_plugin.so` → dlm).
    pub fn discover(path: &Path) -> Profile {
        let name = libvirt_name(path);
        Profile::from_name(&name)
            .or_else(|| name.strip_suffix("_plugin").and_then(Profile::from_name))
            .unwrap_or(Profile::Generic)
    }

    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Nop => "nop",
            Profile::Lockd => "lockd",
            Profile::File => "file",
            Profile::Dlm => "dlm",
            Profile::Sanlock => "sanlock",
            Profile::Generic => "generic",
        }
    }

    /// The daemon the harness starts for this profile.
    pub fn daemon(self) -> Option<&'static str> {
        match self {
            Profile::Lockd => Some("virtlockd"),
            Profile::File | Profile::Dlm => Some("lockmgrd"),
            Profile::Sanlock => Some("sanlock"),
            _ => None,
        }
    }

    /// Whether `file_lockspace_dir` means something to the plugin (bench modes).
    pub fn has_lockspace_mode(self) -> bool {
        matches!(self, Profile::Lockd | Profile::File)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name libvirt would select the plugin by: the file stem without cargo's `lib` prefix.
pub fn libvirt_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned());
    stem.strip_prefix("lib").unwrap_or(&stem).to_owned()
}

/// A plugin given on the command line: `PATH`, `NAME` (libvirt's lookup) or `PROFILE=PATH`.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The column label (the profile name, made unique).
    pub label: String,
    /// The `.so`.
    pub path: PathBuf,
    /// Which daemon and config it gets.
    pub profile: Profile,
}

impl PluginSpec {
    /// Parses one `--plugin` value.
    pub fn parse(arg: &str) -> PluginSpec {
        let (profile, location) = match arg.split_once('=') {
            Some((name, rest)) if Profile::from_name(name).is_some() => {
                (Profile::from_name(name), rest)
            }
            _ => (None, arg),
        };
        let path = lockmgr::host::locate(location);
        let profile = profile.unwrap_or_else(|| Profile::discover(&path));
        let label = match profile {
            Profile::Generic => libvirt_name(&path),
            known => known.as_str().to_owned(),
        };
        PluginSpec {
            label,
            path,
            profile,
        }
    }

    /// Makes labels unique by appending `-2`, `-3`, … to repeats.
    pub fn dedupe_labels(specs: &mut [PluginSpec]) {
        let mut seen: Vec<String> = Vec::new();
        for spec in specs.iter_mut() {
            let mut label = spec.label.clone();
            let mut n = 2;
            while seen.contains(&label) {
                label = format!("{}-{n}", spec.label);
                n += 1;
            }
            seen.push(label.clone());
            spec.label = label;
        }
    }
}

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

/// The scratch directories of one run (a matrix cell or a bench worker).
#[derive(Debug, Clone)]
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
    fn cannot_run(message: impl Into<String>) -> Self {
        SetupError {
            cannot_run: true,
            message: message.into(),
        }
    }

    fn failed(message: impl Into<String>) -> Self {
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

/// A lock daemon the harness started, in the foreground, as its own child.
#[derive(Debug)]
pub struct Daemon {
    /// `virtlockd` or `lockmgrd`.
    pub name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Extra environment of the daemon.
    env: Vec<(String, String)>,
    /// Stop with SIGKILL at once (sanlock: see [`start_sanlock`]).
    kill_to_stop: bool,
    /// Start it in a process group of its own.
    own_group: bool,
}

/// How long a daemon may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

impl Daemon {
    fn new(
        name: &'static str,
        program: PathBuf,
        args: Vec<String>,
        socket: PathBuf,
        log: PathBuf,
    ) -> Daemon {
        Daemon {
            name,
            program,
            args,
            socket,
            log,
            child: None,
            env: Vec::new(),
            kill_to_stop: false,
            own_group: false,
        }
    }

    /// The running instance's pid (0 when stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Starts an instance and waits until its socket accepts connections.
    pub fn start(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: cannot open {}: {e}", self.name, self.log.display()))?;
        let log_err = log.try_clone().map_err(|e| format!("{}: {e}", self.name))?;
        let mut command = Command::new(&self.program);
        if self.own_group {
            command.process_group(0);
        }
        let mut child = command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                self.child = Some(child);
                return Ok(started.elapsed());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{} {} exited at start ({status}): {}",
                    self.program.display(),
                    self.args.join(" "),
                    self.log_tail()
                ));
            }
            if started.elapsed() > READY_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not accept connections on {} within {} s: {}",
                    self.name,
                    self.socket.display(),
                    READY_TIMEOUT.as_secs(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGKILLs the instance (a crash) and reaps it.
    pub fn crash(&mut self) -> Result<u32, String> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| format!("{} is not running", self.name))?;
        let pid = child.id();
        child
            .kill()
            .map_err(|e| format!("kill -9 {} ({pid}): {e}", self.name))?;
        child
            .wait()
            .map_err(|e| format!("waiting for {} ({pid}): {e}", self.name))?;
        Ok(pid)
    }

    /// SIGTERM, then SIGKILL after 5 s; reports an instance that had already died.
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{} had died before the end ({status}): {}",
                self.name,
                self.log_tail()
            ));
        }
        if self.kill_to_stop {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(());
        }
        let _ = harness_sys::signal_pid(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!(
            "{} ignored SIGTERM for 5 s and was killed",
            self.name
        ))
    }

    /// Everything every instance logged so far (they append to one file).
    /// When lockmgrd freed the locks of the domain with `uuid` after its QEMU exited (its
    /// `events`); `None` for another daemon, or when it reported no such release.
    pub fn released_at(&self, uuid: &str) -> Option<std::time::SystemTime> {
        use lockmgr_proto::{Client, EventKind, Reply, Request};
        if self.name != "lockmgrd" {
            return None;
        }
        let reply = Client::connect(&self.socket)
            .ok()?
            .call(&Request::Events { after: 0 })
            .ok()?;
        let Reply::Events { events } = reply else {
            return None;
        };
        events.iter().rev().find_map(|event| match &event.what {
            EventKind::OwnerExited { uuid: exited, .. } if exited == uuid => {
                Some(std::time::UNIX_EPOCH + Duration::from_millis(event.at_ms))
            }
            _ => None,
        })
    }

    /// The last lines the daemon logged.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(4)..].join(" | ");
        if tail.is_empty() {
            "(it logged nothing)".into()
        } else {
            tail
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The plugins used when none is named: nop and file built beside loader-test (cargo's
/// `lib*.so`), and libvirt's installed lockd.so.
pub fn default_plugins() -> Vec<PluginSpec> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
        .unwrap_or_default();
    let mut found = Vec::new();
    for name in ["nop", "file"] {
        if let Some(path) = [format!("lib{name}.so"), format!("{name}.so")]
            .iter()
            .map(|f| exe_dir.join(f))
            .find(|p| p.is_file())
        {
            found.push(PluginSpec::parse(&format!("{name}={}", path.display())));
        }
    }
    let lockd = Path::new(lockmgr::host::DEFAULT_PLUGIN_DIR).join("lockd.so");
    if lockd.is_file() {
        found.push(PluginSpec::parse(&format!("lockd={}", lockd.display())));
    }
    // libvirt's sanlock.so, when both it and the sanlock daemon are installed.
    let sanlock = Path::new(lockmgr::host::DEFAULT_PLUGIN_DIR).join("sanlock.so");
    if sanlock.is_file() && Path::new(DEFAULT_SANLOCK).is_file() {
        found.push(PluginSpec::parse(&format!("sanlock={}", sanlock.display())));
    }
    found
}

/// The plugins named on the command line, or the defaults; labels made unique.
pub fn plugins_from_args(args: &[String]) -> Result<Vec<PluginSpec>, String> {
    let mut specs: Vec<PluginSpec> = if args.is_empty() {
        default_plugins()
    } else {
        args.iter().map(|a| PluginSpec::parse(a)).collect()
    };
    if specs.is_empty() {
        return Err(
            "no plugin given and none found beside loader-test or in libvirt's plugin directory: \
             pass --plugin PATH"
                .into(),
        );
    }
    for spec in &specs {
        if !spec.path.is_file() {
            return Err(format!("plugin {} does not exist", spec.path.display()));
        }
    }
    PluginSpec::dedupe_labels(&mut specs);
    Ok(specs)
}
