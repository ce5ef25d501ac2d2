//! The sanlock column runs for real: libvirt's sanlock.so against a real sanlock daemon
//! (`sanlock daemon -w 0`, no watchdog) that the matrix starts in a private mount namespace with
//! `SANLOCK_RUN_DIR` in its scratch directory. When sanlock cannot start here, the test fails
//! with the reason; it is never skipped.

mod common;

use std::path::Path;

use common::*;

#[test]
fn sanlock_runs_against_a_real_sanlock_daemon_without_a_watchdog() {
    require_private_mount_namespace();
    let plugin = libvirt_plugin("sanlock");
    assert!(
        Path::new("/usr/sbin/sanlock").is_file(),
        "/usr/sbin/sanlock is missing: install the sanlock package (.ci/install-deps.sh); this \
         test must run sanlock for real"
    );
    let (_, report, stderr) = matrix_report(&[format!("sanlock={}", plugin.display())], &[]);

    // The column says how sanlock ran: no watchdog, and how long the lockspace took to join.
    let note = report["plugins"][0]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("NO watchdog") && note.contains("joined lockspace __LIBVIRT__DISKS__ in"),
        "column note: {note}\n{stderr}"
    );
    let cells = report["cells"].as_array().unwrap();
    let cell = |name: &str| {
        cells
            .iter()
            .find(|c| c["scenario"] == name)
            .unwrap_or_else(|| panic!("no cell {name}"))
    };
    let reason = |name: &str| cell(name)["reason"].as_str().unwrap().to_owned();
    let verdict = |name: &str| cell(name)["verdict"].as_str().unwrap().to_owned();

    // Every cell ran against the daemon: none "cannot run here", none failed in its setup.
    for c in cells {
        assert!(
            matches!(c["verdict"].as_str(), Some("pass" | "fail"))
                && !c["steps"].as_array().unwrap().is_empty(),
            "sanlock did not run for real in this cell: {c:#}\n{stderr}"
        );
    }
    // Exclusion holds, through sanlock's own refusal (a system error, not "resource busy").
    for name in [
        "double-release",
        "exclusive-vs-exclusive",
        "exclusive-vs-exclusive-lockspace",
        "hotplug",
        "kill-owner",
        "lease-conflict",
        "pause-resume",
        "restart-libvirtd",
        "shared-vs-exclusive",
    ] {
        if name == "kill-owner" && verdict(name) == "fail" {
            assert!(
                reason(name).contains("OVER the 5000 ms bound"),
                "{:#}",
                cell(name)
            );
            continue;
        }
        assert_eq!(verdict(name), "pass", "{name}: {:#}", cell(name));
        assert!(
            reason(name).contains("Failed to acquire lock"),
            "{name}: the footnote says how sanlock refuses: {:#}",
            cell(name)
        );
        assert!(
            cell(name)["setup"]
                .as_str()
                .unwrap()
                .contains("the run's sanlock daemon (-w 0: NO watchdog)"),
            "{:#}",
            cell(name)
        );
    }
    for name in ["read-only", "register-only", "shared-shared"] {
        assert_eq!(verdict(name), "pass", "{name}: {:#}", cell(name));
    }
    // At most 8 resources per domain: the 100-disk domain is refused with sanlock.so's message.
    assert_eq!(verdict("hundred-disks"), "fail");
    assert!(
        reason("hundred-disks").contains("step 1 (register by a)")
            && reason("hundred-disks").contains("Too many resources 8 for object"),
        "{:#}",
        cell("hundred-disks")
    );
    // sanlock.so does not pass the state string to sanlock_acquire: a corrupted one resumes.
    assert_eq!(verdict("corrupted-state"), "fail");
    assert!(
        reason("corrupted-state").contains("expected refused, got granted"),
        "{:#}",
        cell("corrupted-state")
    );
    // The daemon of its own, crashed and restarted, has lost every registration.
    let restart = cell("restart-daemon");
    assert_eq!(verdict("restart-daemon"), "fail", "{restart:#}");
    assert!(
        restart["setup"].as_str().unwrap().contains("NO watchdog")
            && restart["setup"]
                .as_str()
                .unwrap()
                .contains("the first drvInit joined lockspace"),
        "{restart:#}"
    );
    assert!(
        reason("restart-daemon").contains("step 5 (acquire by b)"),
        "{restart:#}"
    );
}
