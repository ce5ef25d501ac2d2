//! `bench` prints its table and JSON: a smoke test, no timing is asserted, ever.

mod common;

use std::path::Path;

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
    let nop = build_plugin("lockmgr-plugin-nop", "nop", dir.path());
    let (file, lockmgrd) = file_plugin(dir.path());
    let plugins = [
        format!("nop={}", nop.display()),
        format!("file={}", file.display()),
    ];
    let base = bench_args(
        &plugins,
        &lockmgrd,
        &[SMALL, &["--modes", "direct"]].concat(),
    );

    let (report, stderr) = bench_json(&base);
    assert_eq!(report["iterations"], 4);
    let series = report["series"].as_array().unwrap();
    // (floor, nop, file/direct) × (pinned, unpinned) × (1, 3 disks)
    assert_eq!(series.len(), 12, "{report:#}");
    for s in series {
        assert_eq!(s["cycles"], 4, "{s}");
        for key in ["median_ns", "p99_ns", "mean_ns", "min_ns"] {
            assert!(s[key].as_u64().unwrap() > 0, "{key}: {s}");
        }
    }
    let ratios = report["ratios"].as_array().unwrap();
    let file_floor: Vec<_> = ratios
        .iter()
        .filter(|r| r["what"] == "file/floor")
        .collect();
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
    let (code, stdout, _) = run_clean(&table_args);
    assert_eq!(code, 0);
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
    require_private_mount_namespace();
    let dir = tempfile::tempdir().unwrap();
    let (file, lockmgrd) = file_plugin(dir.path());
    let lockd = libvirt_plugin("lockd");
    let plugins = [
        format!("file={}", file.display()),
        format!("lockd={}", lockd.display()),
    ];
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
    let lockd_file: Vec<_> = report["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["what"] == "lockd/file")
        .collect();
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
    let (report, stderr) = bench_json(&bench_args(
        &[format!("file={}", file.display())],
        &lockmgrd,
        &rest,
    ));
    assert!(
        report["floor"]
            .as_str()
            .unwrap()
            .contains("floor.sh worker")
    );
    let floors: Vec<_> = report["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["plugin"] == "floor")
        .collect();
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
