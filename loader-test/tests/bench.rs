//! `bench` prints its table and JSON: a smoke test, no timing is asserted, ever.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A small run: 4 cycles in each of 2 rounds after 1 warm-up, with 1 and 3 disks.
const SMALL: &[&str] = &[
    "--iterations",
    "4",
    "--rounds",
    "2",
    "--warmup",
    "1",
    "--disks",
    "1,3",
];

/// `bench` over `plugins` (each `PROFILE=PATH`) with file.so's `lockmgrd`, then `rest`.
fn bench_args(plugins: &[String], lockmgrd: &Path, rest: &[&str]) -> Vec<String> {
    let mut args = strings(&["bench"]);
    for plugin in plugins {
        args.extend(["--plugin".to_owned(), plugin.clone()]);
    }
    args.extend(["--lockmgrd".to_owned(), lockmgrd.display().to_string()]);
    args.extend(strings(rest));
    args
}

/// `PROFILE=PATH`, as `--plugin` takes it.
fn plugin_arg(profile: &str, path: &Path) -> String {
    format!("{profile}={}", path.display())
}

/// nop.so and file.so as `--plugin` values, and file.so's lockmgrd.
fn nop_and_file(dir: &Path) -> ([String; 2], PathBuf) {
    let nop = build_plugin("lockmgr-plugin-nop", "nop", dir);
    let (file, lockmgrd) = file_plugin(dir);
    (
        [plugin_arg("nop", &nop), plugin_arg("file", &file)],
        lockmgrd,
    )
}

/// file.so and libvirt's lockd.so as `--plugin` values, and file.so's lockmgrd (lockd's
/// virtlockd needs a private mount namespace).
fn file_and_lockd(dir: &Path) -> ([String; 2], PathBuf) {
    require_private_mount_namespace();
    let (file, lockmgrd) = file_plugin(dir);
    let lockd = libvirt_plugin("lockd");
    (
        [plugin_arg("file", &file), plugin_arg("lockd", &lockd)],
        lockmgrd,
    )
}

/// The entries of the report's array `key` whose `field` is `value` (e.g. the ratios `what`
/// `file/floor`).
fn entries<'a>(
    report: &'a serde_json::Value,
    key: &str,
    field: &str,
    value: &str,
) -> Vec<&'a serde_json::Value> {
    report[key]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r[field] == value)
        .collect()
}

/// The table `ARGS` (without `--json`) prints, run clean: it exits 0.
fn bench_table(args: &[String]) -> String {
    let mut args = args.to_vec();
    args.retain(|a| a != "--json");
    let (code, stdout, stderr) = run_clean(&args);
    assert_eq!(code, 0, "{stderr}");
    stdout
}

/// `ARGS --json`, run clean: it exits 0 and reports no error. The report and stderr.
fn bench_json(args: &[String]) -> (serde_json::Value, String) {
    let mut args = args.to_vec();
    args.push("--json".into());
    let (code, stdout, stderr) = run_clean(&args);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        report["errors"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    (report, stderr)
}

#[test]
fn bench_smoke_prints_every_series_and_the_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let (plugins, lockmgrd) = nop_and_file(dir.path());
    let base = bench_args(
        &plugins,
        &lockmgrd,
        &[SMALL, &["--modes", "direct"]].concat(),
    );

    let (report, stderr) = bench_json(&base);
    assert_eq!(report["iterations"], 4);
    let series = report["series"].as_array().unwrap();
    // (floor, nop, file/direct) × (pinned, unpinned) × (1, 3 disks): the default suite is the
    // cycle alone, as before the other suites existed.
    assert_eq!(series.len(), 12, "{report:#}");
    for key in ["floors", "storm", "storm_ratios", "scale"] {
        assert!(
            report.get(key).is_none(),
            "{key} without --suite: {report:#}"
        );
    }
    for s in series {
        assert_eq!(s["cycles"], 4, "{s}");
        for key in ["median_ns", "p99_ns", "mean_ns", "min_ns"] {
            assert!(s[key].as_u64().unwrap() > 0, "{key}: {s}");
        }
    }
    let file_floor = entries(&report, "ratios", "what", "file/floor");
    assert_eq!(
        file_floor.len(),
        4,
        "file ÷ floor per N and placement: {report:#}"
    );
    assert!(
        file_floor
            .iter()
            .any(|r| r["disks"] == 3 && r["target"] == "<= 2"),
        "the target is shown at the largest N: {report:#}"
    );
    assert!(
        stderr.contains("bench: round 2/2 done"),
        "progress: {stderr}"
    );

    let mut table_args = base;
    table_args.extend(["--pinning".to_owned(), "pinned".to_owned()]);
    let stdout = bench_table(&table_args);
    assert!(stdout.contains("pinned (taskset -c 0)"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("file")
            && l.contains("direct")
            && (l.contains(" µs") || l.contains(" ms"))),
        "{stdout}"
    );
    assert!(stdout.contains("file/floor"), "{stdout}");
}

#[test]
fn bench_smoke_with_lockd_and_its_virtlockd() {
    let dir = tempfile::tempdir().unwrap();
    let (plugins, lockmgrd) = file_and_lockd(dir.path());
    let (report, _) = bench_json(&bench_args(
        &plugins,
        &lockmgrd,
        &[
            "--iterations",
            "2",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--disks",
            "2",
            "--no-floor",
            "--pinning",
            "unpinned",
        ],
    ));
    // (file, lockd) × (lockspace, direct), one placement, one N
    assert_eq!(report["series"].as_array().unwrap().len(), 4, "{report:#}");
    let lockd_file = entries(&report, "ratios", "what", "lockd/file");
    assert_eq!(lockd_file.len(), 2, "one per mode: {report:#}");
    assert!(
        lockd_file.iter().all(|r| r["target"] == ">= 10"),
        "{report:#}"
    );
}

#[test]
fn bench_with_an_external_floor_and_a_shared_disk_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (file, lockmgrd) = file_plugin(dir.path());
    let disks = dir.path().join("disks");
    std::fs::create_dir(&disks).unwrap();
    // A floor that answers 1000 ns per cycle and records how it was started.
    let floor = dir.path().join("floor.sh");
    let argv = dir.path().join("floor.args");
    std::fs::write(
        &floor,
        format!(
            "#!/bin/sh\necho \"$@\" > {}\necho '{{\"ready\":{{\"detail\":\"fake floor\"}}}}'\n\
             while read cmd n count; do\n  case $cmd in\n    run)\n      printf '{{\"samples\":{{\"ns\":['\n\
             i=0; while [ $i -lt $count ]; do [ $i -gt 0 ] && printf ','; printf 1000; i=$((i+1)); done\n\
             printf ']}}}}\\n' ;;\n    quit) exit 0 ;;\n  esac\ndone\n",
            argv.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&floor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let floor_command = format!("{} worker --lockspace x", floor.display());
    let rest = [
        SMALL,
        &[
            "--modes",
            "direct",
            "--pinning",
            "unpinned",
            "--disk-dir",
            disks.to_str().unwrap(),
            "--floor-command",
            &floor_command,
        ],
    ]
    .concat();
    let (report, stderr) = bench_json(&bench_args(&[plugin_arg("file", &file)], &lockmgrd, &rest));
    assert!(
        report["floor"]
            .as_str()
            .unwrap()
            .contains("floor.sh worker")
    );
    let floors = entries(&report, "series", "plugin", "floor");
    assert_eq!(floors.len(), 2, "{report:#}");
    assert!(
        floors
            .iter()
            .all(|s| s["median_ns"] == 1000 && s["cycles"] == 4)
    );
    assert_eq!(
        std::fs::read_to_string(&argv).unwrap().trim(),
        format!(
            "worker --lockspace x --disks 1,3 --disk-dir {}",
            disks.display()
        )
    );
    // file.so locked the images of the shared directory, named as the floor names them.
    for name in ["n1-000.img", "n3-000.img", "n3-002.img"] {
        assert!(disks.join(name).exists(), "{name}");
    }
    assert!(
        stderr.contains("ready: fake floor"),
        "the floor's own description: {stderr}"
    );
}

#[test]
fn bench_ipc_floor_suite_prints_the_ipc_inclusive_floor_and_its_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let (file, lockmgrd) = file_plugin(dir.path());
    let args = bench_args(
        &[plugin_arg("file", &file)],
        &lockmgrd,
        &[
            SMALL,
            &[
                "--modes",
                "direct",
                "--pinning",
                "unpinned",
                "--suite",
                "ipc-floor",
            ],
        ]
        .concat(),
    );
    let (report, _) = bench_json(&args);
    let series = report["series"].as_array().unwrap();
    // (floor, ipc-floor, ofd-raw, 2rtt, file/direct) × (1, 3 disks), measured in one run
    assert_eq!(series.len(), 10, "{report:#}");
    for label in ["floor", "ipc-floor", "ofd-raw", "2rtt", "file"] {
        let of: Vec<_> = series.iter().filter(|s| s["plugin"] == label).collect();
        assert_eq!(of.len(), 2, "{label}: {report:#}");
        assert!(
            of.iter()
                .all(|s| s["cycles"] == 4 && s["median_ns"].as_u64().unwrap() > 0),
            "{label}: {report:#}"
        );
    }
    assert_eq!(report["floors"].as_array().unwrap().len(), 3, "{report:#}");
    let file_ipc = entries(&report, "ratios", "what", "file/ipc-floor");
    assert_eq!(file_ipc.len(), 2, "one per N: {report:#}");
    assert!(
        file_ipc.iter().all(|r| r["median"].as_f64().unwrap() > 0.0),
        "{report:#}"
    );
    assert!(
        file_ipc
            .iter()
            .any(|r| r["disks"] == 3 && r["target"] == "<= 2" && r["met"].is_boolean()),
        "the target at the largest N: {report:#}"
    );
    assert_eq!(
        entries(&report, "ratios", "what", "ipc/(ofd+2rtt)").len(),
        2,
        "{report:#}"
    );
    // The file/floor ratio of the cycle is still there.
    assert_eq!(
        entries(&report, "ratios", "what", "file/floor").len(),
        2,
        "{report:#}"
    );

    let stdout = bench_table(&args);
    for text in [
        "ipc-floor = ",
        "ofd-raw = ",
        "2rtt = ",
        "file/ipc-floor",
        "ipc/(ofd+2rtt)",
    ] {
        assert!(stdout.contains(text), "{text}: {stdout}");
    }
    assert!(
        stdout.lines().any(|l| l.starts_with("file/ipc-floor")
            && l.contains("N=3")
            && l.contains("target <= 2×")),
        "{stdout}"
    );
}

/// A tiny boot storm (5 domains × 2 disks, 2 storms) and a tiny scale run (200 locks, 4
/// owners of 60 disks at most).
const TINY_STORM_AND_SCALE: &[&str] = &[
    "--storm-domains",
    "5",
    "--storm-disks",
    "2",
    "--storm-rounds",
    "2",
    "--scale-locks",
    "200",
    "--scale-per-owner",
    "60",
    "--scale-probes",
    "5",
];

#[test]
fn bench_storm_and_scale_suites_report_numbers_and_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let (plugins, lockmgrd) = nop_and_file(dir.path());
    let args = bench_args(
        &plugins,
        &lockmgrd,
        &[
            TINY_STORM_AND_SCALE,
            &["--modes", "direct", "--suite", "storm,scale"],
        ]
        .concat(),
    );
    let (report, stderr) = bench_json(&args);
    assert!(
        report["series"].as_array().unwrap().is_empty(),
        "no cycle without --suite cycle: {report:#}"
    );

    let storm = report["storm"].as_array().unwrap();
    assert_eq!(storm.len(), 2, "nop and file/direct: {report:#}");
    for row in storm {
        assert_eq!(row["domains"], 5, "{row}");
        assert_eq!(row["disks"], 2, "{row}");
        assert_eq!(row["storms"], 2, "{row}");
        for key in [
            "wall_median_ns",
            "wall_max_ns",
            "domain_p50_ns",
            "domain_p99_ns",
            "release_wall_median_ns",
            "register_ns",
        ] {
            assert!(row[key].as_u64().unwrap() > 0, "{key}: {row}");
        }
    }
    let file_nop = entries(&report, "storm_ratios", "what", "file/nop");
    assert_eq!(file_nop.len(), 1, "{report:#}");
    assert!(file_nop[0]["wall"].as_f64().unwrap() > 0.0);
    assert!(stderr.contains("bench: storm round 2/2 done"), "{stderr}");

    let scale = report["scale"].as_array().unwrap();
    assert_eq!(scale.len(), 1, "file.so, direct mode: {report:#}");
    let scale = &scale[0];
    assert_eq!(scale["plugin"], "file");
    assert_eq!(scale["mode"], "direct");
    assert_eq!(scale["locks"], 200);
    assert_eq!(scale["owners"], 4, "60 + 60 + 60 + 20");
    let levels = scale["levels"].as_array().unwrap();
    let held: Vec<u64> = levels.iter().map(|l| l["held"].as_u64().unwrap()).collect();
    assert_eq!(held, [0, 20, 100, 200, 200], "{scale:#}");
    assert_eq!(levels[4]["when"], "after restart");
    for level in levels {
        assert_eq!(level["probes"], 5, "{level}");
        for key in [
            "acquire_p50_ns",
            "acquire_p99_ns",
            "release_p50_ns",
            "release_p99_ns",
            "rss_kb",
        ] {
            assert!(level[key].as_u64().unwrap() > 0, "{key}: {level}");
        }
    }
    // The restarted lockmgrd took every lock back from its state file, owners alive.
    assert_eq!(scale["restored"]["locks"], 200, "{scale:#}");
    assert_eq!(scale["restored"]["found"], 200, "{scale:#}");
    assert!(scale["restart_ns"].as_u64().unwrap() > 0);
    assert!(scale["rss_after_restart_kb"].as_u64().unwrap() > 0);

    let stdout = bench_table(&args);
    for text in [
        "boot storm: 5 domains × 2 disks",
        "storm ratios",
        "file/nop",
        "scale: file (direct mode)",
        "flat? at 200 held ÷ at 0",
        "restored 200 of 200 lock(s)",
        "target < 2 s: ",
    ] {
        assert!(stdout.contains(text), "{text}: {stdout}");
    }
}

#[test]
fn bench_storm_with_lockd_reports_lockd_over_file() {
    let dir = tempfile::tempdir().unwrap();
    let (plugins, lockmgrd) = file_and_lockd(dir.path());
    let (report, _) = bench_json(&bench_args(
        &plugins,
        &lockmgrd,
        &[
            TINY_STORM_AND_SCALE,
            &["--modes", "lockspace", "--suite", "storm"],
        ]
        .concat(),
    ));
    assert_eq!(report["storm"].as_array().unwrap().len(), 2, "{report:#}");
    let lockd_file = entries(&report, "storm_ratios", "what", "lockd/file");
    assert_eq!(lockd_file.len(), 1, "{report:#}");
    assert_eq!(lockd_file[0]["target"], ">= 10");
    assert!(lockd_file[0]["met"].is_boolean());
    assert!(lockd_file[0]["wall"].as_f64().unwrap() > 0.0);
    assert!(report.get("scale").is_none(), "{report:#}");
}
