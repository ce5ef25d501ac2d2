//! `lockmgr-loader-test`: loads libvirt lock manager plugins exactly as libvirt 11.x does and
//! checks them against libvirt's contract.
#![deny(unsafe_code)]

mod agent;
mod bench;
mod daemons;
mod harness_sys;
mod known;
mod matrix;
mod node;
mod output;
mod scenario;
mod sequences;
mod step;
mod sys;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status when every plugin passed (warnings allowed).
const EXIT_PASS: u8 = 0;
/// Exit status when a plugin broke the contract or crashed.
const EXIT_FAIL: u8 = 1;
/// Exit status when nothing failed but some steps need a lock daemon that is not running.
const EXIT_INCOMPLETE: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "lockmgr-loader-test",
    version,
    about = "Load libvirt lock manager plugins the way libvirt does, and check them",
    long_about = "Loads lock manager plugins (the .so files libvirt selects with \
        lock_manager = \"NAME\" in /etc/libvirt/qemu.conf) exactly as libvirt 11.x does — \
        access(R_OK), dlopen(RTLD_NOW|RTLD_LOCAL), dlsym(\"virLockDriverImpl\"), \
        drvInit(1000000, \"/etc/libvirt/qemu-NAME.conf\", 0) — and drives their callbacks the way \
        libvirtd and its pre-exec child do.\n\n\
        A PLUGIN is a path (anything with a '/' or ending in .so) or a name, looked up as \
        $LIBVIRT_LOCK_MANAGER_PLUGIN_DIR/NAME.so (default /usr/lib/x86_64-linux-gnu/libvirt/lock-driver).",
    after_help = "Examples:\n  \
        lockmgr-loader-test validate target/release/libnop.so\n  \
        lockmgr-loader-test validate lockd sanlock --json\n  \
        lockmgr-loader-test validate ./file.so --config /etc/libvirt/qemu-file.conf\n\n\
        Exit status: 0 all passed, 1 something failed, 2 usage error, 3 incomplete (a step needs a \
        lock daemon that is not running)."
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Check each plugin against libvirt's lock driver contract, step by step.
    #[command(
        long_about = "Runs a checklist per plugin, each plugin in its own process so that a \
        crash is reported with the step it happened in: load, the 72-byte virLockDriverImpl table, \
        version and flags, every callback non-NULL, drvInit/drvDeinit with refcounting, New with \
        libvirt's five params, AddResource for disks and leases, libvirt's pre-exec child \
        (REGISTER_ONLY|RESTRICT in a forked process that then execs a QEMU stand-in keeping the \
        returned fd), Acquire / Inquire / Release / re-Acquire in the parent, state strings \
        allocated with malloc and XML-safe, drvDeinit + dlclose."
    )]
    Validate {
        /// Plugins to check: paths to .so files, or names resolved like libvirt does.
        #[arg(required = true, value_name = "PLUGIN")]
        plugins: Vec<String>,
        /// Config file passed to drvInit; it may not exist (libvirt passes the path anyway and
        /// the plugin uses its defaults). Default: a fresh, absent <tmp>/qemu-NAME.conf.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print JSON (an array of reports) instead of tables.
        #[arg(long)]
        json: bool,
        /// Also show what the plugins printed to stdout/stderr.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Internal: validate one plugin and stream JSON events (used by `validate`).
    #[command(name = "__validate-one", hide = true)]
    ValidateOne {
        plugin: PathBuf,
        #[arg(long)]
        config: PathBuf,
    },
    /// Run every conformance scenario against every plugin: one table, scenario × plugin.
    #[command(long_about = matrix::LONG_ABOUT, after_help = matrix::AFTER_HELP)]
    Matrix(matrix::MatrixArgs),
    /// Internal: one scenario against one plugin, streaming JSON events (used by `matrix`).
    #[command(name = "__matrix-cell", hide = true)]
    MatrixCell(matrix::CellCliArgs),
    /// Internal: the first drvInit against a fresh sanlock daemon (used by `matrix`).
    #[command(name = "__sanlock-join", hide = true)]
    SanlockJoin(matrix::SanlockJoinArgs),
    /// Time libvirt's resume/pause cycle per plugin against the floor, pinned and unpinned.
    #[command(long_about = bench::LONG_ABOUT, after_help = bench::AFTER_HELP)]
    Bench(bench::BenchArgs),
    /// Internal: one benchmark worker, driven over stdin/stdout (used by `bench`).
    #[command(name = "__bench-worker", hide = true)]
    BenchWorker(bench::WorkerArgs),
    /// Internal: the floor's peer: a unix socket server that takes raw OFD locks.
    #[command(name = "__bench-floor", hide = true)]
    BenchFloor(bench::FloorArgs),
    /// Run the owners b, d, … of matrix cells on this machine, for `matrix --remote-node`.
    #[command(
        hide = true,
        long_about = "Listens for matrix cells (matrix --remote-node ADDR:PORT). Each cell gets a \
        session process of its own on this machine: the plugin's daemon started here (for dlm, a \
        lockmgrd --backend dlm of this node), the plugin loaded as libvirtd does, and the calls \
        of the cell's remote owners made here, QEMU stand-ins included. Everything a session \
        started is stopped when its cell ends. Only the plugins given with --plugin are loaded. \
        A test tool: listen on a private test network only.",
        after_help = "Example:\n  \
        lockmgr-loader-test agent --listen 10.99.0.2:7311 --plugin dlm=/mnt/host/libdlm_plugin.so"
    )]
    Agent(agent::AgentArgs),
    /// Internal: one matrix cell's remote owners, on stdin/stdout (used by `agent`).
    #[command(name = "__agent-session", hide = true)]
    AgentSession(agent::SessionArgs),
    /// One libvirt operation per call (register, acquire, pause, release, inquire), each with
    /// the plugin loaded afresh; prints one JSON line. For scripts and the cluster tests.
    #[command(subcommand)]
    Step(step::StepCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Validate {
            plugins,
            config,
            json,
            verbose,
        } => run_validate(&plugins, config, json, verbose),
        Commands::ValidateOne { plugin, config } => {
            let mut events = match sys::take_stdout_for_events() {
                Ok(file) => file,
                Err(err) => {
                    eprintln!("lockmgr-loader-test: cannot set up the event stream: {err}");
                    return ExitCode::from(EXIT_FAIL);
                }
            };
            validate::run_steps(&plugin, &config, &mut events);
            ExitCode::SUCCESS
        }
        Commands::Matrix(args) => ExitCode::from(matrix::command(&args)),
        Commands::MatrixCell(args) => ExitCode::from(matrix::cell_command(&args)),
        Commands::SanlockJoin(args) => ExitCode::from(matrix::sanlock_join_command(&args)),
        Commands::Bench(args) => ExitCode::from(bench::command(&args)),
        Commands::BenchWorker(args) => ExitCode::from(bench::worker_command(&args)),
        Commands::BenchFloor(args) => ExitCode::from(bench::floor_command(&args)),
        Commands::Step(command) => ExitCode::from(step::command(&command)),
        Commands::Agent(args) => ExitCode::from(agent::command(&args)),
        Commands::AgentSession(args) => ExitCode::from(agent::session_command(&args)),
    }
}

fn run_validate(
    plugins: &[String],
    config: Option<PathBuf>,
    json: bool,
    verbose: bool,
) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            eprintln!("lockmgr-loader-test: cannot find my own executable: {err}");
            return ExitCode::from(EXIT_FAIL);
        }
    };
    let scratch = match tempfile::Builder::new()
        .prefix("lockmgr-loader-test-")
        .tempdir()
    {
        Ok(dir) => dir,
        Err(err) => {
            eprintln!("lockmgr-loader-test: cannot create a scratch directory: {err}");
            return ExitCode::from(EXIT_FAIL);
        }
    };
    let mut reports = Vec::new();
    for name in plugins {
        let path = lockmgr::host::locate(name);
        // libvirt names the config after lock_manager's NAME; cargo's lib prefix is not part of it.
        let stem = path
            .file_stem()
            .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned());
        let stem = stem.strip_prefix("lib").unwrap_or(&stem).to_owned();
        let config = config
            .clone()
            .unwrap_or_else(|| scratch.path().join(format!("qemu-{stem}.conf")));
        if !json {
            eprintln!("validating {} …", path.display());
        }
        let report = validate::validate_in_subprocess(&exe, &path, &config);
        if !json {
            print!("{}", output::render_report(&report, verbose));
        }
        reports.push(report);
    }
    if json {
        match serde_json::to_string_pretty(&reports) {
            Ok(text) => println!("{text}"),
            Err(err) => {
                eprintln!("lockmgr-loader-test: cannot encode JSON: {err}");
                return ExitCode::from(EXIT_FAIL);
            }
        }
    } else if reports.len() > 1 {
        print!("{}", output::render_summary(&reports));
    }
    let verdicts: Vec<_> = reports.iter().map(|r| r.verdict).collect();
    ExitCode::from(if verdicts.contains(&validate::Status::Fail) {
        EXIT_FAIL
    } else if verdicts.contains(&validate::Status::NeedsDaemon) {
        EXIT_INCOMPLETE
    } else {
        EXIT_PASS
    })
}
