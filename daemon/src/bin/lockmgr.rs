//! `lockmgr`: ask this host's lockmgrd what it holds and what it did.
#![deny(unsafe_code)]

use std::io::ErrorKind as IoErrorKind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use lockmgr_conf::{DlmPluginSettings, FilePluginSettings};
use lockmgr_proto::{Client, DomainStatus, Event, LockStatus, Recorded, Reply, Request, Restored};
use serde::Serialize;

#[cfg(feature = "dlm")]
use lockmgrd::admin_text::render_cluster;
use lockmgrd::admin_text::{render_event, render_tables};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
enum Backend {
    /// dlm.so's daemon (/etc/libvirt/qemu-dlm.conf).
    Dlm,
    /// file.so's daemon (/etc/libvirt/qemu-file.conf).
    File,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Dlm => "dlm",
            Backend::File => "file",
        }
    }

    fn default_config(self) -> &'static str {
        match self {
            Backend::Dlm => DlmPluginSettings::PATH,
            Backend::File => FilePluginSettings::PATH,
        }
    }

    /// The daemon's socket, as its plugin's configuration names it.
    fn socket(self, config: &Path) -> Result<PathBuf, String> {
        let socket = match self {
            Backend::Dlm => DlmPluginSettings::from_file(config).map(|(s, _)| s.socket_path),
            Backend::File => FilePluginSettings::from_file(config).map(|(s, _)| s.socket_path),
        };
        socket.map_err(|e| e.to_string())
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "lockmgr",
    version,
    about = "Ask this host's lockmgrd what it holds and what it did",
    long_about = "Ask this host's lockmgrd (the daemon behind dlm.so and file.so) what it \
        holds and what it did. Without --backend, every daemon whose configuration file \
        (/etc/libvirt/qemu-dlm.conf, /etc/libvirt/qemu-file.conf; absent = defaults) names a \
        socket is asked.",
    after_help = "Examples:\n  lockmgr status\n  lockmgr status --backend dlm --json\n  \
        lockmgr events --follow\n  lockmgr events --after 41 --json\n  lockmgr doctor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Ask only this backend's daemon.
    #[arg(long, value_enum, global = true)]
    backend: Option<Backend>,
    /// The plugin's configuration file (status and events: with --backend). Default: the
    /// backend's file in /etc/libvirt.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Ask the daemon on this socket, whatever the configuration says.
    #[arg(long, value_name = "PATH", global = true, conflicts_with = "config")]
    socket: Option<PathBuf>,
    /// JSON instead of tables (one object per daemon; events: one object per line).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The domains lockmgrd knows on this host and every lock it holds for them.
    Status {
        /// dlm: every node's lockmgrd, asked through corosync (the lockmgrd process group); nodes
        /// that do not answer within 3 s are named.
        #[arg(long)]
        cluster: bool,
    },
    /// What lockmgrd did on its own: domains whose QEMU exited (and the locks freed), locks
    /// lost and the <on_lockfailure> applied. The daemon remembers the last 1024.
    Events {
        /// Only events after this sequence number.
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        after: u64,
        /// Keep printing new events until interrupted.
        #[arg(long)]
        follow: bool,
    },
    /// Check this host for dlm.so: qemu.conf's lock_manager, the plugin, qemu-dlm.conf,
    /// corosync and quorum, dlm_controld, fencing and a fence method, the watchdog when the
    /// cluster fences with it, and lockmgrd answering. Every finding names what fixes it; the
    /// exit status is 1 when one blocks dlm.so (--config: the qemu-dlm.conf to check).
    Doctor {
        /// libvirt's qemu.conf.
        #[arg(long, value_name = "FILE", default_value = "/etc/libvirt/qemu.conf")]
        qemu_conf: PathBuf,
        /// dlm_controld's configuration.
        #[arg(long, value_name = "FILE", default_value = "/etc/dlm/dlm.conf")]
        dlm_conf: PathBuf,
        /// Where libvirt loads lock plugins from.
        #[arg(
            long,
            value_name = "DIR",
            default_value = "/usr/lib/x86_64-linux-gnu/libvirt/lock-driver"
        )]
        plugin_dir: PathBuf,
        /// The watchdog device self-fencing uses.
        #[arg(long, value_name = "DEVICE", default_value = "/dev/watchdog")]
        watchdog_device: PathBuf,
    },
}

/// One daemon to ask.
#[derive(Debug, Clone, Serialize)]
struct Target {
    backend: Option<Backend>,
    /// Where the socket path came from (a configuration file), if from one.
    config: Option<PathBuf>,
    socket: PathBuf,
    /// Asked for by name (--backend, --socket): its absence is an error, not a note.
    explicit: bool,
}

impl Target {
    fn label(&self) -> String {
        match self.backend {
            Some(backend) => format!("lockmgrd ({}) at {}", backend.name(), self.socket.display()),
            None => format!("lockmgrd at {}", self.socket.display()),
        }
    }

    /// Why nothing answers on the socket, for a human.
    fn not_running(&self, error: &std::io::Error) -> String {
        let from = self.config.as_ref().map_or(String::new(), |config| {
            format!(" (socket_path of {})", config.display())
        });
        match error.kind() {
            IoErrorKind::NotFound => format!(
                "{} is not running: no socket {}{from}",
                self.label(),
                self.socket.display()
            ),
            IoErrorKind::ConnectionRefused => format!(
                "{} is not running: nothing listens on {}{from} (a stale socket?)",
                self.label(),
                self.socket.display()
            ),
            _ => format!("{}: {error}", self.label()),
        }
    }
}

fn targets(cli: &Cli) -> Result<Vec<Target>, String> {
    if let Some(socket) = &cli.socket {
        return Ok(vec![Target {
            backend: cli.backend,
            config: None,
            socket: socket.clone(),
            explicit: true,
        }]);
    }
    if cli.config.is_some() && cli.backend.is_none() {
        return Err("--config needs --backend: which plugin's configuration is it?".into());
    }
    let backends = match cli.backend {
        Some(backend) => vec![backend],
        None => vec![Backend::Dlm, Backend::File],
    };
    backends
        .into_iter()
        .map(|backend| {
            let config = cli
                .config
                .clone()
                .unwrap_or_else(|| backend.default_config().into());
            Ok(Target {
                backend: Some(backend),
                socket: backend.socket(&config)?,
                config: Some(config),
                explicit: cli.backend.is_some(),
            })
        })
        .collect()
}

/// Sends one request; a daemon that is not running is `Ok(Err(why))`, a refusal `Err`.
fn ask(target: &Target, request: &Request) -> Result<Result<Reply, String>, String> {
    let mut client = match Client::connect(&target.socket) {
        Ok(client) => client,
        Err(err) => {
            let why = match &err.error {
                lockmgr_proto::FrameError::Io(io) => target.not_running(io),
                other => format!("{}: {other}", target.label()),
            };
            return Ok(Err(why));
        }
    };
    match client.call(request) {
        Ok(Reply::Error { message, .. }) => Err(format!("{}: {message}", target.label())),
        Ok(reply) => Ok(Ok(reply)),
        Err(err) => Err(err.to_string()),
    }
}

#[derive(Debug, Serialize)]
struct StatusReport<'a> {
    #[serde(flatten)]
    target: &'a Target,
    running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock_backend: Option<String>,
    domains: Vec<DomainStatus>,
    locks: Vec<LockStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recorded: Option<Recorded>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restored: Option<Restored>,
}

fn status(cli: &Cli) -> Result<bool, String> {
    let targets = targets(cli)?;
    let mut reports = Vec::new();
    for target in &targets {
        let mut report = StatusReport {
            target,
            running: false,
            error: None,
            lock_backend: None,
            domains: Vec::new(),
            locks: Vec::new(),
            truncated: None,
            recorded: None,
            restored: None,
        };
        match ask(target, &Request::Status)? {
            Ok(Reply::Status {
                backend,
                owners,
                locks,
                truncated,
                recorded,
                restored,
            }) => {
                report.running = true;
                report.lock_backend = Some(backend);
                report.domains = owners;
                report.locks = locks;
                report.truncated = truncated;
                report.recorded = recorded;
                report.restored = restored;
            }
            Ok(other) => return Err(format!("{}: unexpected reply {other:?}", target.label())),
            Err(why) => report.error = Some(why),
        }
        reports.push(report);
    }
    if cli.json {
        let text = serde_json::to_string_pretty(&reports).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        for (index, report) in reports.iter().enumerate() {
            if index > 0 {
                println!();
            }
            print!("{}", render_status(report));
        }
    }
    let failed_explicit = reports.iter().any(|r| !r.running && r.target.explicit);
    let none_running = !reports.iter().any(|r| r.running);
    Ok(!(failed_explicit || none_running))
}

#[cfg(feature = "dlm")]
fn cluster_status(cli: &Cli) -> Result<bool, String> {
    if cli.backend == Some(Backend::File) || cli.socket.is_some() || cli.config.is_some() {
        return Err("--cluster asks every node's dlm lockmgrd through corosync: it takes no --backend file, --socket or --config".into());
    }
    let report = lockmgrd::cluster_status::ask_cluster()?;
    if cli.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", render_cluster(&report));
    }
    // Asking worked; nodes that did not answer are reported, not an error of this command.
    Ok(report.nodes.iter().any(|node| node.status.is_some()))
}

#[cfg(not(feature = "dlm"))]
fn cluster_status(_cli: &Cli) -> Result<bool, String> {
    Err("--cluster needs the dlm backend, which this lockmgr was built without".into())
}

fn render_status(report: &StatusReport<'_>) -> String {
    let Some(backend) = &report.lock_backend else {
        return format!("{}\n", report.error.as_deref().unwrap_or("no answer"));
    };
    let recorded = report.recorded.map_or_else(String::new, |r| {
        format!(
            "table written since start: {} journal record(s), {} whole table(s)\n",
            r.records, r.whole_tables
        )
    });
    let restored = report
        .restored
        .map_or_else(String::new, |r| format!("taken back at start: {r}\n"));
    format!(
        "{} (backend {backend}): {} domain(s), {} lock(s)\n{recorded}{restored}{}",
        report.target.label(),
        report.domains.len(),
        report.locks.len(),
        render_tables(&report.domains, &report.locks, report.truncated.as_deref())
    )
}

fn events(cli: &Cli, after: u64, follow: bool) -> Result<bool, String> {
    let targets = targets(cli)?;
    let mut seen: Vec<u64> = vec![after; targets.len()];
    let mut any_running = false;
    loop {
        for (target, last) in targets.iter().zip(seen.iter_mut()) {
            match ask(target, &Request::Events { after: *last })? {
                Ok(Reply::Events { events }) => {
                    any_running = true;
                    for event in events {
                        *last = (*last).max(event.seq);
                        if cli.json {
                            #[derive(Serialize)]
                            struct Line<'a> {
                                backend: Option<Backend>,
                                #[serde(flatten)]
                                event: &'a Event,
                            }
                            let line = Line {
                                backend: target.backend,
                                event: &event,
                            };
                            println!(
                                "{}",
                                serde_json::to_string(&line).map_err(|e| e.to_string())?
                            );
                        } else {
                            let from = target.backend.map_or("", Backend::name);
                            println!("{from:<4}  {}", render_event(&event));
                        }
                    }
                }
                Ok(other) => return Err(format!("{}: unexpected reply {other:?}", target.label())),
                Err(why) if target.explicit || !follow => eprintln!("lockmgr: {why}"),
                Err(_) => {}
            }
        }
        if !follow {
            return Ok(any_running);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(feature = "dlm")]
fn doctor(cli: &Cli, paths: lockmgrd::doctor::Paths) -> Result<bool, String> {
    use lockmgrd::doctor::{self, Severity};
    let quorum = lockmgr_quorum::Votequorum::connect()
        .and_then(|quorum| quorum.info())
        .map_err(|e| e.to_string());
    let findings = doctor::check_dlm_host(&paths, quorum);
    if cli.json {
        let text = serde_json::to_string_pretty(&findings).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        println!("lockmgr doctor: dlm.so on {}", host.trim());
        print!("{}", doctor::render(&findings));
    }
    Ok(!findings.iter().any(|f| f.severity == Severity::Error))
}

#[cfg(not(feature = "dlm"))]
fn doctor(_cli: &Cli, _paths: ()) -> Result<bool, String> {
    Err("this lockmgr was built without the dlm backend, which doctor checks".into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Status { cluster: false } => status(&cli),
        Command::Status { cluster: true } => cluster_status(&cli),
        Command::Events { after, follow } => events(&cli, *after, *follow),
        #[cfg(feature = "dlm")]
        Command::Doctor {
            qemu_conf,
            dlm_conf,
            plugin_dir,
            watchdog_device,
        } => doctor(
            &cli,
            lockmgrd::doctor::Paths {
                qemu_conf: qemu_conf.clone(),
                plugin_conf: cli
                    .config
                    .clone()
                    .unwrap_or_else(|| DlmPluginSettings::PATH.into()),
                dlm_conf: dlm_conf.clone(),
                plugin_dir: plugin_dir.clone(),
                watchdog: watchdog_device.clone(),
            },
        ),
        #[cfg(not(feature = "dlm"))]
        Command::Doctor { .. } => doctor(&cli, ()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("lockmgr: {message}");
            ExitCode::from(2)
        }
    }
}
