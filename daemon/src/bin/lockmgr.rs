//! `lockmgr`: ask this host's lockmgrd what it holds and what it did.
#![deny(unsafe_code)]

use std::io::ErrorKind as IoErrorKind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use lockmgr_conf::{DlmPluginSettings, FilePluginSettings};
use lockmgr_proto::{
    Client, DomainStatus, Event, EventKind, LockStatus, Mode, Recorded, Reply, Request, Restored,
};
use serde::Serialize;

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

#[cfg(feature = "dlm")]
fn render_cluster(report: &lockmgrd::cluster_status::ClusterReport) -> String {
    let answered = report.nodes.iter().filter(|n| n.answered).count();
    let mut out = format!(
        "lockmgrd on every node of the cluster, asked from node id {}{}: {answered} of {} node(s) answered\n",
        report.asked_from,
        match report.quorate {
            Some(true) => " (quorate)",
            Some(false) => " (NOT QUORATE: only this node's partition can answer)",
            None => "",
        },
        report.nodes.len()
    );
    for node in &report.nodes {
        out.push_str(&format!("\nnode '{}' (id {}): ", node.name, node.node_id));
        match (&node.status, &node.error) {
            (Some(status), _) => {
                out.push_str(&format!(
                    "{} domain(s), {} lock(s)\n",
                    status.owners.len(),
                    status.locks.len()
                ));
                out.push_str(&render_tables(
                    &status.owners,
                    &status.locks,
                    status.truncated.as_deref(),
                ));
            }
            (None, Some(error)) => out.push_str(&format!("{error}\n")),
            (None, None) => out.push_str("no answer\n"),
        }
    }
    out
}

#[cfg(not(feature = "dlm"))]
fn cluster_status(_cli: &Cli) -> Result<bool, String> {
    Err("--cluster needs the dlm backend, which this lockmgr was built without".into())
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Exclusive => "exclusive",
        Mode::Shared => "shared",
    }
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
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
    let restored = report.restored.map_or_else(String::new, |r| {
        format!(
            "taken back at start: {} of {} lock(s) for {} running domain(s) \
             (read in {} ms, taken back in {} ms)\n",
            r.locks, r.found, r.domains, r.read_ms, r.reclaim_ms
        )
    });
    format!(
        "{} (backend {backend}): {} domain(s), {} lock(s)\n{recorded}{restored}{}",
        report.target.label(),
        report.domains.len(),
        report.locks.len(),
        render_tables(&report.domains, &report.locks, report.truncated.as_deref())
    )
}

/// The DOMAIN and RESOURCE tables of one daemon's status.
fn render_tables(
    domains: &[DomainStatus],
    locks: &[LockStatus],
    truncated: Option<&str>,
) -> String {
    let mut out = String::new();
    if !domains.is_empty() {
        let rows: Vec<Vec<String>> = domains
            .iter()
            .map(|d| {
                let held = locks.iter().filter(|l| l.owners.contains(&d.name)).count();
                vec![
                    d.name.clone(),
                    d.uuid.clone(),
                    d.pid.to_string(),
                    held.to_string(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&["DOMAIN", "UUID", "PID", "LOCKS"], &rows));
    }
    if !locks.is_empty() {
        let rows: Vec<Vec<String>> = locks
            .iter()
            .map(|l| {
                vec![
                    l.resource.clone(),
                    mode_name(l.mode).to_owned(),
                    l.owners.join(", "),
                    l.since_ms.map_or_else(|| "-".to_owned(), utc),
                    l.target.clone(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["RESOURCE", "MODE", "HELD BY", "SINCE (UTC)", "LOCK"],
            &rows,
        ));
    }
    if let Some(truncated) = truncated {
        out.push_str(&format!("\n({truncated})\n"));
    }
    out
}

/// `seconds since the epoch` as `YYYY-MM-DD HH:MM:SS.mmm` UTC.
fn utc(at_ms: u64) -> String {
    let (secs, millis) = (at_ms / 1000, at_ms % 1000);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rest = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{millis:03}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn render_event(event: &Event) -> String {
    let what = match &event.what {
        EventKind::OwnerExited {
            uuid,
            freed,
            micros,
        } => format!("domain {uuid}: QEMU exited; {freed} lock(s) freed in {micros} µs"),
        EventKind::LockLost { domain, detail } => format!("LOCK LOST: domain '{domain}': {detail}"),
    };
    format!("{} UTC  #{}  {what}", utc(event.at_ms), event.seq)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(1_796_194_801_123), "2026-12-02 07:00:01.123");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00.000");
    }

    #[test]
    fn tables_align_their_columns() {
        let text = table(
            &["DOMAIN", "PID"],
            &[
                vec!["vm-long-name".into(), "7".into()],
                vec!["a".into(), "1234".into()],
            ],
        );
        assert_eq!(
            text,
            "DOMAIN        PID\nvm-long-name  7\na             1234\n"
        );
    }
}
