//! The command line of `matrix` and `__matrix-cell`, and the two commands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::daemons::{self, Profile, Tools};
use crate::harness_sys;
use crate::matrix::cell::{CellArgs, run_cell};
use crate::matrix::render::render_table;
use crate::matrix::report::exit_code;
use crate::matrix::run::{MatrixOptions, run_matrix};

/// `matrix --help`, long form.
pub const LONG_ABOUT: &str = "Runs every conformance scenario (tests/scenarios/*.toml) against every \
    plugin and prints one table, scenario × plugin: ✓ when every step had the outcome the \
    scenario expects, ✗ with the step and the reason otherwise, – when the scenario cannot apply \
    (no daemon to restart, no state string to corrupt), … when this machine lacks something.\n\n\
    Each cell runs in a process of its own, with the plugin's daemon started for it: virtlockd \
    for lockd.so (in a private mount namespace with an empty /run: its socket path is fixed), \
    lockmgrd for file.so (with a generated qemu-file.conf in a scratch directory), none for \
    nop.so. libvirt's sanlock.so runs against a real sanlock daemon WITHOUT a watchdog \
    (sanlock daemon -w 0), in a private mount namespace with SANLOCK_RUN_DIR in scratch: one \
    daemon for the whole run, whose lockspace the first drvInit joins (~20 s, printed, never \
    counted in a cell), plus one of its own for each cell that crashes the daemon. Owners are registered by libvirt's pre-exec child in a real fork that execs a QEMU \
    stand-in; every other call is made in the harness with libvirt's call shapes. Nothing is \
    left behind: daemons are stopped by pid, stand-ins killed, scratch directories removed.\n\n\
    A PLUGIN is a path, a name looked up like libvirt does, or PROFILE=PATH to choose the \
    daemon and config profile (nop, lockd, file, dlm, sanlock, generic) when the file name does \
    not tell it. Without --plugin: nop.so and file.so built beside this binary, and libvirt's \
    lockd.so and (when /usr/sbin/sanlock is installed) sanlock.so.";

/// `matrix --help`, examples.
pub const AFTER_HELP: &str = "Examples:\n  \
    lockmgr-loader-test matrix --plugin target/debug/libnop.so --plugin lockd --plugin target/debug/libfile.so\n  \
    lockmgr-loader-test matrix --scenario kill-owner --plugin file=/tmp/x.so --json\n\n\
    Exit status: 0 every cell ✓ or –, 1 some cell ✗, 2 usage error, 3 nothing failed but some \
    cell cannot run on this machine.";

/// Where the lock daemons are, for `matrix` and `bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct ToolArgs {
    /// virtlockd, started for lockd.so.
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/virtlockd")]
    pub virtlockd: PathBuf,
    /// lockmgrd, started for file.so (default: beside the plugin, beside this binary, or on
    /// $PATH).
    #[arg(long, value_name = "PATH")]
    pub lockmgrd: Option<PathBuf>,
    /// sanlock, started (with -w 0: no watchdog) for libvirt's sanlock.so.
    #[arg(long, value_name = "PATH", default_value = daemons::DEFAULT_SANLOCK)]
    pub sanlock: PathBuf,
    /// Internal: the directory of the run's shared sanlock daemon.
    #[arg(long, value_name = "DIR", hide = true)]
    pub sanlock_shared: Option<PathBuf>,
}

impl ToolArgs {
    /// As the profile layer wants them.
    pub fn tools(&self) -> Tools {
        Tools {
            virtlockd: self.virtlockd.clone(),
            lockmgrd: self.lockmgrd.clone(),
            sanlock: self.sanlock.clone(),
            sanlock_shared: self.sanlock_shared.clone(),
        }
    }
}

/// Arguments of `matrix`.
#[derive(clap::Args, Debug)]
pub struct MatrixArgs {
    /// A plugin (a column); repeat for each. PATH, NAME or PROFILE=PATH.
    #[arg(long = "plugin", value_name = "PLUGIN")]
    pub plugins: Vec<String>,
    /// The scenario directory (default: the source tree's tests/scenarios).
    #[arg(long, value_name = "DIR")]
    pub scenarios: Option<PathBuf>,
    /// Run only this scenario (file stem); repeat for more.
    #[arg(long = "scenario", value_name = "NAME")]
    pub only: Vec<String>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also show every step of every cell.
    #[arg(long, short)]
    pub verbose: bool,
    /// Seconds a cell may take before it is killed and marked ✗.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub timeout: u64,
    /// Also write the JSON report to this file (with the table or --json on stdout).
    #[arg(long, value_name = "FILE")]
    pub json_file: Option<PathBuf>,
    /// Put every second owner of a scenario (b, d, …) on another machine, whose
    /// `lockmgr-loader-test agent` listens at ADDR:PORT, in the cells of the --remote-profiles.
    #[arg(long, value_name = "ADDR:PORT")]
    pub remote_node: Option<String>,
    /// The plugin profiles whose cells get owners on --remote-node: plugins whose locks reach
    /// that machine (dlm; file when both run on one host, for testing the agent).
    #[arg(
        long,
        value_name = "PROFILE",
        value_delimiter = ',',
        default_value = "dlm"
    )]
    pub remote_profiles: Vec<String>,
    #[command(flatten)]
    pub tools: ToolArgs,
}

/// Arguments of `__matrix-cell`.
#[derive(clap::Args, Debug)]
pub struct CellCliArgs {
    #[arg(long)]
    scenario: PathBuf,
    #[arg(long)]
    plugin: PathBuf,
    #[arg(long)]
    profile: String,
    #[arg(long)]
    scratch: PathBuf,
    #[arg(long)]
    remote_node: Option<String>,
    #[command(flatten)]
    tools: ToolArgs,
}

/// The scenario directory of the source tree this binary was built from, else `./tests/scenarios`.
pub fn default_scenario_dir() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios");
    if built.is_dir() {
        return built.canonicalize().unwrap_or(built);
    }
    PathBuf::from("tests/scenarios")
}

/// `matrix`.
pub fn command(args: &MatrixArgs) -> u8 {
    let plugins = match daemons::plugins_from_args(&args.plugins) {
        Ok(plugins) => plugins,
        Err(err) => {
            eprintln!("lockmgr-loader-test matrix: {err}");
            return if harness_sys::terminating() { 130 } else { 2 };
        }
    };
    let mut remote_profiles = Vec::new();
    for name in &args.remote_profiles {
        match Profile::from_name(name) {
            Some(profile) => remote_profiles.push(profile),
            None => {
                eprintln!(
                    "lockmgr-loader-test matrix: --remote-profiles {name}: unknown profile \
                     (known: {})",
                    Profile::KNOWN.join(", ")
                );
                return 2;
            }
        }
    }
    let options = MatrixOptions {
        plugins,
        scenarios: args.scenarios.clone().unwrap_or_else(default_scenario_dir),
        only: args.only.clone(),
        tools: args.tools.tools(),
        timeout: Duration::from_secs(args.timeout.max(1)),
        remote_node: args.remote_node.clone(),
        remote_profiles,
    };
    let report = match run_matrix(&options) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("lockmgr-loader-test matrix: {err}");
            return if harness_sys::terminating() { 130 } else { 2 };
        }
    };
    let printed = crate::output::emit_report(&report, args.json, args.json_file.as_deref(), |r| {
        render_table(r, args.verbose)
    });
    if let Err(err) = printed {
        eprintln!("lockmgr-loader-test matrix: {err}");
        return crate::EXIT_FAIL;
    }
    exit_code(&report)
}

/// `__matrix-cell`.
pub fn cell_command(args: &CellCliArgs) -> u8 {
    let mut events = match crate::sys::take_stdout_for_events() {
        Ok(file) => file,
        Err(err) => {
            eprintln!("lockmgr-loader-test: cannot set up the event stream: {err}");
            return crate::EXIT_FAIL;
        }
    };
    let Some(profile) = Profile::from_name(&args.profile) else {
        eprintln!("lockmgr-loader-test: unknown profile {}", args.profile);
        return 2;
    };
    run_cell(
        &CellArgs {
            scenario: args.scenario.clone(),
            plugin: args.plugin.clone(),
            profile,
            scratch: args.scratch.clone(),
            tools: args.tools.tools(),
            remote_node: args.remote_node.clone(),
        },
        &mut events,
    );
    0
}
