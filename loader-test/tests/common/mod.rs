//! Helpers shared by loader-test's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The loader-test binary under test.
pub fn loader_test() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lockmgr-loader-test"))
}

/// `target/<profile>/`, derived from the binary's location.
pub fn profile_dir() -> PathBuf {
    loader_test()
        .parent()
        .expect("binary has a parent")
        .to_owned()
}

/// A broken example plugin that `cargo test` built as `examples/lib<name>.so`.
pub fn example_plugin(name: &str) -> PathBuf {
    let path = profile_dir().join("examples").join(format!("lib{name}.so"));
    assert!(
        path.exists(),
        "{} was not built (cargo test builds examples)",
        path.display()
    );
    path
}

/// `cargo build --quiet --message-format=json ARGS` in this test's profile; its stdout (one
/// JSON message a line), failing loudly when the build fails.
pub fn cargo_build(args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "--message-format=json"])
        .args(args);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let output = cmd.output().expect("run cargo build");
    assert!(
        output.status.success(),
        "cargo build {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `compiler-artifact` messages of a `cargo build --message-format=json` output.
fn artifacts(stdout: &str) -> impl Iterator<Item = serde_json::Value> + '_ {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
}

/// Builds a plugin package with cargo and returns its cdylib, copied to `<dir>/<libvirt name>.so`.
pub fn build_plugin(package: &str, libvirt_name: &str, dir: &Path) -> PathBuf {
    let stdout = cargo_build(&["-p", package, "--lib"]);
    let cdylib = artifacts(&stdout)
        .filter(|msg| {
            msg["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        })
        .flat_map(|msg| msg["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "so"))
        .unwrap_or_else(|| panic!("cargo build -p {package} produced no .so"));
    let target = dir.join(format!("{libvirt_name}.so"));
    std::fs::copy(&cdylib, &target).expect("copy plugin");
    target
}

/// Builds a binary of a workspace package and returns its path.
pub fn build_binary(package: &str, binary: &str) -> PathBuf {
    // All features, as `cargo test --workspace --all-features` builds it: a build with other
    // features would overwrite the binary other test crates run at the same time (lockmgrd's
    // tests need its `failpoints`).
    let stdout = cargo_build(&["-p", package, "--bin", binary, "--all-features"]);
    artifacts(&stdout)
        .filter(|msg| msg["target"]["name"] == binary)
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo build -p {package} produced no {binary}"))
}

/// A broken example plugin, built now if `cargo test` did not (e.g. with `--test matrix`).
pub fn example(name: &str) -> PathBuf {
    let path = profile_dir().join("examples").join(format!("lib{name}.so"));
    if !path.exists() {
        cargo_build(&["-p", "lockmgr-loader-test", "--example", name]);
    }
    example_plugin(name)
}

/// file.so (copied as `<dir>/file.so`) and the lockmgrd that serves it.
pub fn file_plugin(dir: &Path) -> (PathBuf, PathBuf) {
    (
        build_plugin("lockmgr-plugin-file", "file", dir),
        build_binary("lockmgrd", "lockmgrd"),
    )
}

/// Runs `lockmgr-loader-test ARGS`, returning the exit code, stdout and stderr.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(loader_test())
        .args(args)
        .output()
        .expect("run loader-test");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `validate --json PLUGIN`: the exit code and the one report.
pub fn validate_json(plugin: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let plugin = plugin.to_str().expect("utf-8 path");
    let mut args = vec!["validate", "--json", plugin];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = run(&args);
    let reports: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("validate printed no JSON ({e}); stdout:\n{stdout}\nstderr:\n{stderr}")
    });
    (code, reports[0].clone())
}

/// The status of `step` in a report.
pub fn step_status(report: &serde_json::Value, step: &str) -> String {
    step_field(report, step, "status")
}

/// The detail of `step` in a report.
pub fn step_detail(report: &serde_json::Value, step: &str) -> String {
    step_field(report, step, "detail")
}

fn step_field(report: &serde_json::Value, step: &str, field: &str) -> String {
    report["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["step"] == step))
        .and_then(|s| s[field].as_str())
        .unwrap_or_else(|| panic!("no step '{step}' in report: {report:#}"))
        .to_owned()
}

/// Fails loudly unless we can run commands in a private mount namespace (root + unshare).
pub fn require_private_mount_namespace() {
    // SAFETY-free check: root is uid 0 in /proc/self/status.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    assert!(
        root,
        "this test starts virtlockd in a private mount namespace and must run as root"
    );
    assert!(
        Path::new("/usr/bin/unshare").exists(),
        "this test needs unshare (package util-linux)"
    );
}

/// The path of libvirt's own plugin NAME, failing loudly when its package is missing.
pub fn libvirt_plugin(name: &str) -> PathBuf {
    let path = PathBuf::from(format!(
        "/usr/lib/x86_64-linux-gnu/libvirt/lock-driver/{name}.so"
    ));
    assert!(
        path.exists(),
        "{} is missing: install libvirt-daemon-plugin-{name} from bookworm-backports (.ci/install-deps.sh)",
        path.display()
    );
    path
}

/// The shipped scenario files, `tests/scenarios`.
pub fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios")
}

/// Command-line arguments as owned strings.
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// The processes whose environment names `tmpdir` as their TMPDIR: everything a run started
/// (zombies have no environment).
pub fn processes_of(tmpdir: &Path) -> Vec<String> {
    let needle = format!("TMPDIR={}", tmpdir.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if environ
            .split(|&b| b == 0)
            .any(|var| var == needle.as_bytes())
        {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

/// Asserts that a run with `tmpdir` as its TMPDIR left no process and no file there; `context`
/// (its stderr, a log) goes into the message.
pub fn assert_nothing_left(tmpdir: &Path, context: &str) {
    let leftovers = processes_of(tmpdir);
    assert!(
        leftovers.is_empty(),
        "processes left behind: {leftovers:#?}\n{context}"
    );
    let files: Vec<_> = std::fs::read_dir(tmpdir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    assert!(files.is_empty(), "files left behind: {files:?}");
}

/// Runs `lockmgr-loader-test ARGS` with `tmpdir` as its TMPDIR: exit code, stdout, stderr.
pub fn run_in(tmpdir: &Path, args: &[String]) -> (i32, String, String) {
    let output = Command::new(loader_test())
        .args(args)
        .env("TMPDIR", tmpdir)
        .output()
        .expect("run loader-test");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs loader-test with a TMPDIR of its own, then checks it left no process and no file.
pub fn run_clean(args: &[String]) -> (i32, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run_in(tmp.path(), args);
    assert_nothing_left(tmp.path(), &stderr);
    (code, stdout, stderr)
}

/// `matrix --json` over the shipped scenarios and `plugins` (each `PROFILE=PATH`), run clean:
/// the exit code, the report and stderr.
pub fn matrix_report(plugins: &[String], extra: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = strings(&["matrix", "--json", "--scenarios"]);
    args.push(scenario_dir().display().to_string());
    for plugin in plugins {
        args.push("--plugin".into());
        args.push(plugin.clone());
    }
    args.extend(strings(extra));
    let (code, stdout, stderr) = run_clean(&args);
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("matrix printed no JSON ({e}):\n{stdout}\n{stderr}"));
    (code, report, stderr)
}
