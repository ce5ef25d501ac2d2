//! `lockmgr status` and `lockmgr events` against a real lockmgrd (file backend): what an operator
//! sees, in tables and in JSON, and a clear answer when the daemon is down.

mod common;

use std::process::Command;

use common::{Daemon, Owner, acquire, disk, expect_ok};
use lockmgr_proto::Mode;

fn lockmgr(daemon: &Daemon, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lockmgr"))
        .args(args)
        .args(["--backend", "file", "--config"])
        .arg(daemon.config())
        .output()
        .expect("run lockmgr");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn status_lists_domains_and_locks() {
    let daemon = Daemon::start();
    let vm1 = Owner::new("vm1", 1);
    let vm2 = Owner::new("vm2", 2);
    expect_ok(acquire(
        &daemon,
        &vm1,
        &[disk("/img/a.img", Mode::Exclusive)],
    ));
    expect_ok(acquire(
        &daemon,
        &vm2,
        &[
            disk("/img/shared.img", Mode::Shared),
            disk("/img/b.img", Mode::Exclusive),
        ],
    ));
    expect_ok(acquire(
        &daemon,
        &vm1,
        &[disk("/img/shared.img", Mode::Shared)],
    ));

    let (code, table, err) = lockmgr(&daemon, &["status"]);
    assert_eq!(code, 0, "{table}{err}");
    assert!(
        table.contains("(backend file): 2 domain(s), 3 lock(s)"),
        "{table}"
    );
    let vm1_row = format!("vm1     {}  {}  2", vm1.info.uuid, vm1.info.pid);
    assert!(table.contains(&vm1_row), "no row '{vm1_row}' in:\n{table}");
    let shared_row = table
        .lines()
        .find(|l| l.starts_with("disk /img/shared.img"))
        .unwrap_or_default();
    assert!(
        shared_row.contains("shared") && shared_row.contains("vm1, vm2"),
        "{table}"
    );

    let (code, json, err) = lockmgr(&daemon, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let report = &parsed[0];
    assert_eq!(report["running"], true, "{json}");
    assert_eq!(
        report["domains"].as_array().map(Vec::len),
        Some(2),
        "{json}"
    );
    assert_eq!(report["locks"].as_array().map(Vec::len), Some(3), "{json}");
    assert_eq!(report["domains"][0]["pid"], vm1.info.pid, "{json}");
}

#[test]
fn status_after_a_restart_says_what_was_taken_back() {
    let mut daemon = Daemon::start();
    let (code, table, _) = lockmgr(&daemon, &["status"]);
    assert_eq!(code, 0);
    assert!(!table.contains("taken back at start"), "{table}");
    let vm1 = Owner::new("vm1", 1);
    let mut vm2 = Owner::new("vm2", 2);
    expect_ok(acquire(
        &daemon,
        &vm1,
        &[
            disk("/img/a.img", Mode::Exclusive),
            disk("/img/b.img", Mode::Exclusive),
        ],
    ));
    expect_ok(acquire(
        &daemon,
        &vm2,
        &[disk("/img/c.img", Mode::Exclusive)],
    ));
    daemon.kill();
    vm2.kill(); // vm2 stops while the daemon is down: its lock is not taken back
    daemon.spawn();

    let (code, table, err) = lockmgr(&daemon, &["status"]);
    assert_eq!(code, 0, "{table}{err}");
    assert!(
        table.contains("taken back at start: 2 of 3 lock(s) for 1 running domain(s) (read in "),
        "{table}"
    );
    let (_, json, _) = lockmgr(&daemon, &["status", "--json"]);
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let restored = &parsed[0]["restored"];
    assert_eq!(
        (&restored["found"], &restored["locks"], &restored["domains"]),
        (&3.into(), &2.into(), &1.into()),
        "{json}"
    );
}

#[test]
fn events_report_an_exited_domain() {
    let daemon = Daemon::start();
    let mut vm1 = Owner::new("vm1", 1);
    expect_ok(acquire(
        &daemon,
        &vm1,
        &[disk("/img/a.img", Mode::Exclusive)],
    ));
    vm1.kill();
    // The daemon sees the exit through the pidfd; wait for the event, not for a time.
    let mut seen = String::new();
    for _ in 0..100 {
        let (code, text, err) = lockmgr(&daemon, &["events", "--json"]);
        assert_eq!(code, 0, "{err}");
        seen = text;
        if !seen.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let event: serde_json::Value =
        serde_json::from_str(seen.lines().next().unwrap_or_default()).expect("one JSON event");
    assert_eq!(event["backend"], "file", "{seen}");
    assert_eq!(
        event["what"]["owner_exited"]["uuid"],
        vm1.info.uuid.as_str(),
        "{seen}"
    );
    assert_eq!(event["what"]["owner_exited"]["freed"], 1, "{seen}");
    let (_, text, _) = lockmgr(&daemon, &["events"]);
    assert!(
        text.contains(&format!(
            "domain {}: QEMU exited; 1 lock(s) freed",
            vm1.info.uuid
        )),
        "{text}"
    );
    let (_, after, _) = lockmgr(&daemon, &["events", "--after", "1"]);
    assert_eq!(after, "", "nothing after the first event");
}

#[test]
fn a_stopped_daemon_is_said_so_and_fails() {
    let mut daemon = Daemon::start();
    daemon.kill();
    let (code, out, err) = lockmgr(&daemon, &["status"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("is not running"), "{out}");
    assert!(
        out.contains(&daemon.config().display().to_string()),
        "{out}"
    );
}

/// `lockmgr doctor` on this host, which runs no cluster: every blocking problem is found and
/// named with its fix, and the exit status says "not ready".
#[test]
fn doctor_on_a_host_without_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let qemu_conf = dir.path().join("qemu.conf");
    std::fs::write(&qemu_conf, "lockManager = \"dlm\"\n").unwrap();
    let plugin_conf = dir.path().join("qemu-dlm.conf");
    std::fs::write(&plugin_conf, "socket_path = \"/nonexistent/dlm.sock\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lockmgr"))
        .args(["doctor", "--json", "--qemu-conf"])
        .arg(&qemu_conf)
        .arg("--config")
        .arg(&plugin_conf)
        .arg("--dlm-conf")
        .arg(dir.path().join("dlm.conf"))
        .arg("--plugin-dir")
        .arg(dir.path())
        .output()
        .expect("run lockmgr doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let findings: Vec<serde_json::Value> = serde_json::from_str(&text).expect("JSON");
    let finding = |check: &str| {
        findings
            .iter()
            .find(|f| f["check"] == check)
            .unwrap_or_else(|| panic!("no '{check}' finding in {text}"))
    };
    let qemu = finding("qemu.conf");
    assert_eq!(qemu["severity"], "error", "{text}");
    assert!(
        qemu["detail"].as_str().unwrap().contains("lockManager"),
        "the misspelling is named: {text}"
    );
    assert!(
        qemu["fix"]
            .as_str()
            .unwrap()
            .contains(&qemu_conf.display().to_string())
    );
    assert_eq!(finding("plugin")["severity"], "error", "{text}");
    assert_eq!(finding("qemu-dlm.conf")["severity"], "ok", "{text}");
    let corosync = finding("corosync");
    assert_eq!(corosync["severity"], "error", "{text}");
    assert!(
        corosync["detail"]
            .as_str()
            .unwrap()
            .contains("does not answer")
    );
    assert_eq!(finding("dlm_controld")["severity"], "error", "{text}");
    assert_eq!(finding("fence method")["severity"], "error", "{text}");
    let daemon = finding("lockmgrd");
    assert!(
        daemon["detail"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/dlm.sock"),
        "{text}"
    );
}
