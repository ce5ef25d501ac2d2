//! `lockmgrd`: serve file.so's locks (and later dlm.so's) on a unix socket.
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use lockmgr_conf::FilePluginSettings;
use lockmgrd::file_backend::FileBackend;
use lockmgrd::persist::StateFile;
use lockmgrd::server::{self, Server};
use lockmgrd::table::LockTable;
use lockmgrd::{log, sys};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BackendKind {
    /// OFD locks on lock files (or the disks themselves).
    File,
}

#[derive(Parser, Debug)]
#[command(
    name = "lockmgrd",
    version,
    about = "The lock daemon behind lockmgr's libvirt plugins (file.so)",
    long_about = "Holds disk and lease locks on behalf of running domains, so they survive libvirtd \
        restarts and are freed the moment QEMU exits.\n\n\
        It reads the same configuration file as its plugin (libvirt syntax): socket_path, \
        file_lockspace_dir, state_dir. Runs in the foreground and logs to stderr; stop it with \
        SIGTERM. Its lock table is kept in <state_dir>/locks.json: after a restart (or a crash) \
        it takes back the locks of the domains that still run, and applies <on_lockfailure> to \
        those whose lock someone else took meanwhile.",
    after_help = "Example:\n  lockmgrd --config /etc/libvirt/qemu-file.conf --pid-file /run/lockmgr/file.pid"
)]
struct Cli {
    /// The plugin's configuration file (may be absent: defaults).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/libvirt/qemu-file.conf"
    )]
    config: PathBuf,
    /// The lock backend.
    #[arg(long, value_enum, default_value = "file")]
    backend: BackendKind,
    /// Write the daemon's pid here once it serves.
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
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

fn load_settings(path: &Path) -> Result<FilePluginSettings, String> {
    let (settings, warnings) = FilePluginSettings::from_file(path).map_err(|e| e.to_string())?;
    for warning in warnings {
        log(&format!("warning: {warning}"));
    }
    Ok(settings)
}

fn run(cli: &Cli) -> Result<(), String> {
    let BackendKind::File = cli.backend;
    let settings = load_settings(&cli.config)?;
    let backend =
        FileBackend::new(settings.file_lockspace_dir.clone()).map_err(|e| e.to_string())?;
    let state = StateFile::open(&settings.state_dir, false).map_err(|e| e.to_string())?;
    let mut table = LockTable::new(backend);
    if let Some(snapshot) = state
        .load(table.backend_name())
        .map_err(|e| e.to_string())?
    {
        let lost = table.restore(&snapshot);
        let (owners, locks) = table.status();
        log(&format!(
            "restored {} of {} lock(s) for {} running domain(s) from {}",
            locks.len(),
            snapshot.locks.len(),
            owners.len(),
            state.path().display()
        ));
        for lost in lost {
            log(&format!(
                "LOCK LOST: {} of domain '{}': {}",
                lost.resource, lost.owner, lost.outcome
            ));
        }
        state.save(&table.snapshot()).map_err(|e| e.to_string())?;
    }
    let listener = server::bind(&settings.socket_path)?;
    let stop =
        sys::install_stop_signals().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    if let Some(pid_file) = &cli.pid_file {
        std::fs::write(pid_file, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write {}: {e}", pid_file.display()))?;
    }
    let lockspace = settings
        .file_lockspace_dir
        .as_ref()
        .map_or("the disks themselves".into(), |d| d.display().to_string());
    log(&format!(
        "serving {} (backend file, locking {lockspace}, state {})",
        settings.socket_path.display(),
        state.path().display()
    ));
    let mut server = Server::new(listener, settings.socket_path.clone(), table, state, stop);
    let result = server.run();
    let _ = std::fs::remove_file(&settings.socket_path);
    if let Some(pid_file) = &cli.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    log("stopped; the locks of running domains will be taken back at the next start");
    result
}
