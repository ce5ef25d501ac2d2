//! `matrix` gives the expected cell for every scenario × {nop, lockd, file}, survives a crashing
//! plugin, names mistakes in scenario files, runs owners on an agent, and leaves nothing behind
//! (`bench`'s smoke tests are in tests/bench.rs).

mod common;
#[path = "../../tests/scenarios/expected.rs"]
mod expected;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;
use expected::{EXCLUSION, NEEDS_DAEMON_OR_STATE, NO_EXCLUSION, cells};

fn scenario_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(scenario_dir())
        .expect("tests/scenarios")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `matrix --json` over `plugins` (each `PROFILE=PATH`), as cells by (scenario, plugin label).
fn matrix(
    plugins: &[String],
    extra: &[&str],
) -> (i32, BTreeMap<(String, String), serde_json::Value>) {
    let (code, report, _) = matrix_report(plugins, extra);
    (code, cells(&report))
}

fn cell<'a>(
    cells: &'a BTreeMap<(String, String), serde_json::Value>,
    scenario: &str,
    plugin: &str,
) -> &'a serde_json::Value {
    cells
        .get(&(scenario.to_owned(), plugin.to_owned()))
        .unwrap_or_else(|| panic!("no cell {scenario} × {plugin}"))
}

fn verdict(cell: &serde_json::Value) -> &str {
    cell["verdict"].as_str().unwrap()
}

fn reason(cell: &serde_json::Value) -> &str {
    cell["reason"].as_str().unwrap()
}

#[test]
fn every_scenario_is_classified_here() {
    let mut classified: Vec<String> = EXCLUSION
        .iter()
        .chain(&NO_EXCLUSION)
        .chain(&NEEDS_DAEMON_OR_STATE)
        .map(|s| (*s).to_owned())
        .collect();
    classified.sort();
    assert_eq!(
        classified,
        scenario_names(),
        "a scenario was added or renamed: say here what nop should do with it"
    );
}

#[test]
fn nop_fails_the_exclusion_scenarios_and_passes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let nop = build_plugin("lockmgr-plugin-nop", "nop", dir.path());
    let (code, cells) = matrix(&[format!("nop={}", nop.display())], &[]);
    assert_eq!(code, 1, "a ✗ makes the exit status 1");
    for scenario in EXCLUSION {
        let c = cell(&cells, scenario, "nop");
        assert_eq!(verdict(c), "fail", "{scenario}: {c:#}");
        assert!(
            reason(c).contains("expected refused, got granted"),
            "{scenario}: nop fails by letting the second domain in: {}",
            reason(c)
        );
    }
    for scenario in NO_EXCLUSION {
        let c = cell(&cells, scenario, "nop");
        assert_eq!(verdict(c), "pass", "{scenario}: {c:#}");
    }
    let restart = cell(&cells, "restart-daemon", "nop");
    assert_eq!(verdict(restart), "not-applicable");
    assert!(
        reason(restart).contains("has no lock daemon"),
        "{restart:#}"
    );
    let corrupt = cell(&cells, "corrupted-state", "nop");
    assert_eq!(verdict(corrupt), "not-applicable");
    assert!(
        reason(corrupt).contains("returned no state string"),
        "{corrupt:#}"
    );
    // The steps are reported with libvirt's call shapes and the owner's real pid.
    let register = &cell(&cells, "exclusive-vs-exclusive", "nop")["steps"][0];
    assert_eq!(register["label"], "register by a");
    assert!(
        register["detail"]
            .as_str()
            .unwrap()
            .contains("QEMU stand-in pid"),
        "{register:#}"
    );
}

#[test]
fn lockd_runs_against_a_virtlockd_of_its_own() {
    require_private_mount_namespace();
    let lockd = libvirt_plugin("lockd");
    let (code, cells) = matrix(&[format!("lockd={}", lockd.display())], &[]);
    assert_eq!(code, 1, "lockd has ✗ cells (below)");
    for scenario in [
        "exclusive-vs-exclusive",
        "exclusive-vs-exclusive-lockspace",
        "hotplug",
        "lease-conflict",
        "pause-resume",
        "read-only",
        "register-only",
        "restart-libvirtd",
        "shared-shared",
        "shared-vs-exclusive",
    ] {
        let c = cell(&cells, scenario, "lockd");
        assert_eq!(verdict(c), "pass", "{scenario}: {c:#}");
        assert!(
            c["setup"].as_str().unwrap().contains("virtlockd pid"),
            "{c:#}"
        );
    }
    // A virtlockd restart drops every lock: the scenario's per-plugin expectation, said so.
    let restart = cell(&cells, "restart-daemon", "lockd");
    assert_eq!(verdict(restart), "pass", "{restart:#}");
    assert!(
        reason(restart)
            .contains("granted as expected for lockd: virtlockd keeps its locks in memory"),
        "{restart:#}"
    );
    // lockd's refused Acquire keeps the locks it took before the busy one.
    let hundred = cell(&cells, "hundred-disks", "lockd");
    assert_eq!(verdict(hundred), "fail", "{hundred:#}");
    assert!(
        reason(hundred).contains("step 6 (acquire by c")
            && reason(hundred).contains("disk-000.img' is locked"),
        "{hundred:#}"
    );
    // virtlockd refuses to release what is not held: suspend's second Release fails.
    let double = cell(&cells, "double-release", "lockd");
    assert_eq!(verdict(double), "fail", "{double:#}");
    assert!(
        reason(double).contains("pause by a") && reason(double).contains("is not locked"),
        "{double:#}"
    );
    // virtlockd frees the lock at once but then sleeps 200 ms in its event loop while the dead
    // owner is unreaped; whether that happens depends on a race, so either outcome is allowed.
    let kill = cell(&cells, "kill-owner", "lockd");
    assert!(
        verdict(kill) == "pass" || reason(kill).contains("OVER the 5000 ms bound"),
        "{kill:#}"
    );
    let corrupt = cell(&cells, "corrupted-state", "lockd");
    assert_eq!(verdict(corrupt), "not-applicable", "{corrupt:#}");
}

#[test]
fn file_passes_every_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let (file, lockmgrd) = file_plugin(dir.path());
    let (code, cells) = matrix(
        &[format!("file={}", file.display())],
        &["--lockmgrd", lockmgrd.to_str().unwrap()],
    );
    for scenario in scenario_names() {
        let c = cell(&cells, &scenario, "file");
        assert_eq!(verdict(c), "pass", "{scenario}: {c:#}");
        assert!(
            c["setup"].as_str().unwrap().contains("lockmgrd pid"),
            "{c:#}"
        );
    }
    assert_eq!(code, 0);
    let kill = &cell(&cells, "kill-owner", "file")["steps"][5];
    assert!(
        kill["detail"]
            .as_str()
            .unwrap()
            .contains("within the 5000 ms bound"),
        "{kill:#}"
    );
    let corrupt = &cell(&cells, "corrupted-state", "file")["steps"];
    for step in 4..7 {
        assert_eq!(corrupt[step]["outcome"], "refused", "{corrupt:#}");
    }
}

#[test]
fn a_crashing_plugin_is_a_cross_naming_the_step_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let nop = build_plugin("lockmgr-plugin-nop", "nop", dir.path());
    let aborts = example("bad_aborts");
    let (code, cells) = matrix(
        &[
            format!("generic={}", aborts.display()),
            format!("nop={}", nop.display()),
        ],
        &[
            "--scenario",
            "exclusive-vs-exclusive",
            "--scenario",
            "shared-shared",
        ],
    );
    assert_eq!(code, 1);
    for scenario in ["exclusive-vs-exclusive", "shared-shared"] {
        let c = cell(&cells, scenario, "bad_aborts");
        assert_eq!(verdict(c), "fail", "{c:#}");
        assert!(
            reason(c).contains("killed by signal 6 (SIGABRT) during step 3 (acquire by a)"),
            "{c:#}"
        );
    }
    assert_eq!(verdict(cell(&cells, "shared-shared", "nop")), "pass");
}

#[test]
fn scenario_file_mistakes_are_named_with_file_and_step() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.toml"),
        "title = \"broken\"\n[resources]\ndisk = { disk = \"vm.img\" }\n[owners]\na = [\"disk\"]\n\
         [[steps]]\ndo = \"register\"\nowner = \"a\"\n[[steps]]\ndo = \"acquire\"\nowner = \"b\"\n",
    )
    .unwrap();
    let nop = build_plugin("lockmgr-plugin-nop", "nop", dir.path());
    let (code, _, stderr) = run(&[
        "matrix",
        "--scenarios",
        dir.path().to_str().unwrap(),
        "--plugin",
        nop.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("broken.toml: step 2 (acquire by b): unknown owner 'b'"),
        "{stderr}"
    );
}

#[test]
fn the_table_has_a_row_per_scenario_and_footnotes() {
    let dir = tempfile::tempdir().unwrap();
    let nop = build_plugin("lockmgr-plugin-nop", "nop", dir.path());
    let args = strings(&[
        "matrix",
        "--scenarios",
        scenario_dir().to_str().unwrap(),
        "--plugin",
        &format!("nop={}", nop.display()),
        "--scenario",
        "kill-owner",
        "--scenario",
        "register-only",
    ]);
    let (code, stdout, stderr) = run_clean(&args);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let rows: Vec<&str> = stdout.lines().collect();
    assert!(
        rows.iter()
            .any(|l| l.starts_with("kill-owner") && l.contains("✗ 1")),
        "{stdout}"
    );
    assert!(
        rows.iter()
            .any(|l| l.starts_with("register-only") && l.contains('✓')),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("1. nop × kill-owner: step 4 (acquire by b): expected refused, got granted"),
        "{stdout}"
    );
    assert!(
        stderr.contains("[  1/2] kill-owner"),
        "progress on stderr: {stderr}"
    );
}

/// A free TCP port on the loopback (bound, then released for the agent to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `lockmgr-loader-test agent` on the loopback, with `tmpdir` as its TMPDIR; stopped with
/// SIGTERM (and its log returned) by `stop`.
struct Agent {
    child: std::process::Child,
    address: String,
    log: std::thread::JoinHandle<String>,
}

impl Agent {
    fn start(plugins: &[String], extra: &[&str], tmpdir: &Path) -> Agent {
        use std::io::BufRead as _;
        let address = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["agent".to_owned(), "--listen".to_owned(), address.clone()];
        for plugin in plugins {
            args.extend(["--plugin".to_owned(), plugin.clone()]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut child = Command::new(loader_test())
            .args(&args)
            .env("TMPDIR", tmpdir)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the agent");
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        stderr.read_line(&mut first).unwrap();
        assert!(first.contains("listening on"), "agent: {first}");
        let log = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
            first + &rest
        });
        Agent {
            child,
            address,
            log,
        }
    }

    fn stop(mut self) -> String {
        let status = Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        let log = self.log.join().unwrap();
        assert!(exit.success(), "agent exit {exit}: {log}");
        log
    }
}

#[test]
fn owners_b_d_on_an_agent_keep_their_locks_against_this_hosts_owners() {
    let dir = tempfile::tempdir().unwrap();
    let (file, lockmgrd) = file_plugin(dir.path());
    let tmp = tempfile::tempdir().unwrap();
    // Two lockmgrd on one host, one per "node", lock the same disk files (OFD locks): the file
    // profile stands in for dlm, whose locks reach another machine.
    let agent = Agent::start(
        &[format!("file={}", file.display())],
        &["--lockmgrd", lockmgrd.to_str().unwrap()],
        tmp.path(),
    );
    let mut args = strings(&[
        "matrix",
        "--json",
        "--scenarios",
        scenario_dir().to_str().unwrap(),
        "--plugin",
        &format!("file={}", file.display()),
        "--lockmgrd",
        lockmgrd.to_str().unwrap(),
        "--remote-node",
        &agent.address,
        "--remote-profiles",
        "file",
    ]);
    for scenario in [
        "exclusive-vs-exclusive-lockspace",
        "hundred-disks",
        "kill-owner",
        "restart-daemon",
        "pause-resume",
    ] {
        args.extend(["--scenario".to_owned(), scenario.to_owned()]);
    }
    let (_, stdout, stderr) = run_in(tmp.path(), &args);
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {stdout}\n{stderr}"));
    let log = agent.stop();
    assert_eq!(report["plugins"][0]["remote_node"], agent_address(&log));
    let remote = "by b@127.0.0.1 ";
    for c in report["cells"].as_array().unwrap() {
        assert_eq!(c["verdict"], "pass", "{c:#}\nagent log:\n{log}");
        assert!(
            c["setup"]
                .as_str()
                .unwrap()
                .contains("owners b on 127.0.0.1:"),
            "{c:#}"
        );
        let labels: Vec<&str> = c["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["label"].as_str().unwrap())
            .collect();
        assert!(
            labels
                .iter()
                .any(|l| format!("{l} ").contains(remote) && l.starts_with("register")),
            "b registered on the agent: {labels:?}"
        );
        assert!(
            labels.iter().any(|l| l == &"register by a"),
            "a registered here: {labels:?}"
        );
    }
    let cells: BTreeMap<String, &serde_json::Value> = report["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["scenario"].as_str().unwrap().to_owned(), c))
        .collect();
    // b, on the agent with its own lockmgrd, is refused a's disk, and the message names it.
    let refusal = &cells["exclusive-vs-exclusive-lockspace"]["steps"][3];
    assert_eq!(refusal["label"], "acquire by b@127.0.0.1");
    assert_eq!(refusal["outcome"], "refused");
    assert!(
        refusal["detail"].as_str().unwrap().contains("vm.img"),
        "{refusal:#}"
    );
    // The kill of a here frees the disk for b there: the daemon's part is timed from its events.
    let grant = cells["kill-owner"]["steps"][5]["detail"].as_str().unwrap();
    assert!(
        grant.contains("after the SIGKILL on the other node")
            && grant.contains("within the 5000 ms bound across nodes")
            && grant.contains("this host's daemon reported the release")
            && grant.contains("within the 5000 ms bound"),
        "{grant}"
    );
    assert!(
        cells["kill-owner"]["reason"]
            .as_str()
            .unwrap()
            .contains("across nodes"),
        "the footnote says how the bound was applied: {:#}",
        cells["kill-owner"]
    );
    // The agent ran one session per cell and its daemons are gone with them.
    assert_eq!(log.matches(" set up (").count(), 5, "{log}");
    assert_nothing_left(tmp.path(), &log);
}

/// The address in the agent's first log line.
fn agent_address(log: &str) -> String {
    log.split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn an_agent_loads_only_the_plugins_it_was_given_and_the_cell_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let (file, lockmgrd) = file_plugin(dir.path());
    let nop = build_plugin("lockmgr-plugin-nop", "nop", dir.path());
    let tmp = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        &[format!("file={}", file.display())],
        &["--lockmgrd", lockmgrd.to_str().unwrap()],
        tmp.path(),
    );
    let (_, stdout, _) = run_in(
        tmp.path(),
        &strings(&[
            "matrix",
            "--json",
            "--scenarios",
            scenario_dir().to_str().unwrap(),
            "--plugin",
            &format!("nop={}", nop.display()),
            "--remote-node",
            &agent.address,
            "--remote-profiles",
            "nop",
            "--scenario",
            "shared-shared",
        ]),
    );
    let log = agent.stop();
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let c = &report["cells"][0];
    assert_eq!(c["verdict"], "fail", "{c:#}");
    let reason = c["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("the agent on {}", agent_address(&log)))
            && reason.contains("does not load")
            && reason.contains("nop.so"),
        "{reason}"
    );
    assert!(processes_of(tmp.path()).is_empty());
}
