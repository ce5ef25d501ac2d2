//! `validate` gives the right verdict on nop.so, libvirt's lockd.so and sanlock.so, and on every
//! kind of broken plugin.

mod common;

use common::*;

const PASS: &str = "pass";
const FAIL: &str = "fail";

#[test]
fn nop_passes_every_step_and_exports_one_symbol() {
    let dir = tempfile::tempdir().unwrap();
    let nop = build_plugin("lockmgr-plugin-nop", "nop", dir.path());

    let nm = std::process::Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&nop)
        .output()
        .expect("run nm (binutils)");
    let symbols: Vec<String> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect();
    assert_eq!(
        symbols,
        ["virLockDriverImpl"],
        "nop.so must export exactly virLockDriverImpl"
    );
    let readelf = std::process::Command::new("readelf")
        .arg("-d")
        .arg(&nop)
        .output()
        .expect("run readelf");
    assert!(
        !String::from_utf8_lossy(&readelf.stdout).contains("libvirt"),
        "nop.so must not link libvirt"
    );

    let (code, report) = validate_json(&nop, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["verdict"], PASS);
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 17, "every step reported: {report:#}");
    assert!(steps.iter().all(|s| s["status"] == PASS), "{report:#}");
    assert!(step_detail(&report, "new-unknown-param").contains("unexpected domain param 'colour'"));
}

#[test]
fn missing_symbol_is_named() {
    let (code, report) = validate_json(&example_plugin("bad_missing_symbol"), &[]);
    assert_eq!(code, 1);
    assert_eq!(report["verdict"], FAIL);
    assert_eq!(step_status(&report, "load"), FAIL);
    assert!(
        step_detail(&report, "load")
            .contains("Missing plugin initialization symbol 'virLockDriverImpl'")
    );
    assert_eq!(step_status(&report, "init"), "skipped");
}

#[test]
fn foreign_abi_version_is_named() {
    let (code, report) = validate_json(&example_plugin("bad_abi_version"), &[]);
    assert_eq!(code, 1);
    assert_eq!(step_status(&report, "table"), FAIL);
    assert!(step_detail(&report, "table").contains("declares lock driver ABI version 2000000"));
    assert_eq!(step_status(&report, "init"), FAIL);
    let init = step_detail(&report, "init");
    assert!(init.contains("refuses libvirt's ABI 1000000"), "{init}");
    assert!(
        init.contains("this plugin needs 2000000"),
        "the plugin's own error is shown: {init}"
    );
}

#[test]
fn null_callback_is_named() {
    let (code, report) = validate_json(&example_plugin("bad_null_callback"), &[]);
    assert_eq!(code, 1);
    assert_eq!(step_status(&report, "callbacks"), FAIL);
    assert!(step_detail(&report, "callbacks").contains("NULL: drvInquire"));
    assert_eq!(step_status(&report, "inquire"), FAIL);
    assert!(step_detail(&report, "inquire").contains("Missing 'drvInquire' field"));
    assert_eq!(
        step_status(&report, "acquire"),
        PASS,
        "the other callbacks still work"
    );
}

#[test]
fn failing_init_is_named_with_its_message() {
    let (code, report) = validate_json(
        &example_plugin("bad_init_fails"),
        &["--config", "/etc/libvirt/qemu-broken.conf"],
    );
    assert_eq!(code, 1);
    assert_eq!(step_status(&report, "callbacks"), PASS);
    assert_eq!(step_status(&report, "init"), FAIL);
    let init = step_detail(&report, "init");
    assert!(
        init.contains("cannot read /etc/libvirt/qemu-broken.conf"),
        "{init}"
    );
    assert_eq!(step_status(&report, "new"), "skipped");
}

#[test]
fn panicking_callback_returns_an_error_and_never_aborts_the_host() {
    let (code, report) = validate_json(&example_plugin("bad_panics"), &[]);
    assert_eq!(code, 1);
    assert!(
        report["crashed"].is_null(),
        "the host must survive a plugin panic: {report:#}"
    );
    assert_eq!(step_status(&report, "register-child"), FAIL);
    let detail = step_detail(&report, "register-child");
    assert!(
        detail.contains("internal error: panic in drvAcquire: simulated bug"),
        "{detail}"
    );
    assert_eq!(
        step_status(&report, "deinit"),
        PASS,
        "the plugin still unloads after the panic"
    );
}

#[test]
fn lockd_and_sanlock_without_their_daemons_need_them_and_pass_the_rest() {
    require_private_mount_namespace();
    let lockd = libvirt_plugin("lockd");
    let sanlock = libvirt_plugin("sanlock");
    // An empty /run guarantees no virtlockd or sanlock daemon is reachable.
    let script = format!(
        "mount -t tmpfs tmpfs /run && exec {} validate --json {} {}",
        loader_test().display(),
        lockd.display(),
        sanlock.display()
    );
    let output = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    assert_eq!(
        output.status.code(),
        Some(3),
        "exit 3 = incomplete: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reports: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    for report in reports.as_array().unwrap() {
        for step in [
            "load",
            "symbol",
            "table",
            "callbacks",
            "init",
            "init-refcount",
            "new",
            "add-disk",
            "add-lease",
            "deinit",
        ] {
            assert_eq!(step_status(report, step), PASS, "{step}: {report:#}");
        }
        assert_eq!(
            step_status(report, "register-child"),
            "needs-daemon",
            "{report:#}"
        );
        assert_eq!(step_status(report, "acquire"), "skipped");
        assert_eq!(report["verdict"], "needs-daemon");
    }
    let lockd_report = &reports[0];
    assert!(
        step_detail(lockd_report, "register-child")
            .contains("Failed to connect socket to '/run/libvirt/virtlockd-sock'")
    );
    assert!(step_detail(lockd_report, "new-unknown-param").contains("Unexpected parameter colour"));
    let sanlock_report = &reports[1];
    assert!(step_detail(sanlock_report, "table").contains("USES_STATE"));
    assert!(step_detail(sanlock_report, "register-child").contains("no leases specified"));
    assert_eq!(
        step_status(sanlock_report, "new-unknown-param"),
        "warn",
        "sanlock accepts unknown params"
    );
}

#[test]
fn lockd_passes_every_step_with_a_real_virtlockd() {
    require_private_mount_namespace();
    let lockd = libvirt_plugin("lockd");
    assert!(
        std::path::Path::new("/usr/sbin/virtlockd").exists(),
        "install libvirt-daemon-lock (.ci/install-deps.sh)"
    );
    // virtlockd's socket is fixed at /run/libvirt/virtlockd-sock: give it a private /run.
    let script = format!(
        "set -e; mount -t tmpfs tmpfs /run; mkdir -p /run/libvirt; \
         virtlockd --daemon --pid-file /run/virtlockd.pid; \
         i=0; while [ ! -S /run/libvirt/virtlockd-sock ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; \
         rc=0; {} validate --json {} || rc=$?; kill $(cat /run/virtlockd.pid); exit $rc",
        loader_test().display(),
        lockd.display()
    );
    let output = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reports: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let report = &reports[0];
    assert_eq!(report["verdict"], PASS, "{report:#}");
    let register = step_detail(report, "register-child");
    assert!(
        register.contains("inherited by the exec'd QEMU stand-in"),
        "lockd leaks the virtlockd connection into QEMU: {register}"
    );
}
