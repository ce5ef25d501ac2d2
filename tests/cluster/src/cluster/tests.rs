//! Unit tests of the cluster module: fence modes, addresses, state files, `down` and `attach`.

use std::net::Ipv4Addr;

use super::*;

fn state_in(dir: &Path, owner_pid: Option<u32>) -> ClusterState {
    ClusterState {
        name: dir.file_name().unwrap().to_string_lossy().into_owned(),
        dir: dir.to_owned(),
        owner_pid,
        owner_start: owner_pid.and_then(host::start_time),
        share: None,
        kernel: "k".to_owned(),
        fencing: false,
        fence_mode: None,
        fence_tie_break_ms: 0,
        fencer_pid: None,
        fencer_start: None,
        nodes: vec![NodeRecord {
            index: 1,
            qemu_name: "lockmgr-test-node1".to_owned(),
            // our own pid: never a QEMU, so teardown must not signal it
            pid: Some(std::process::id()),
            address: node_address(1),
            console: dir.join("node1.console"),
            agent_socket: dir.join("node1.qga"),
            fence_socket: None,
            qmp_socket: None,
            qmp_events: None,
            killed: false,
            fenced_by: None,
            started_unix: None,
        }],
    }
}

#[test]
fn fence_modes_and_old_state_files() {
    assert_eq!(FenceMode::Power.kernel_arg(), "1");
    assert_eq!(FenceMode::Watchdog.kernel_arg(), "watchdog");
    assert_eq!(FenceMode::Off.kernel_arg(), "0");
    assert!(FenceMode::Watchdog.fences() && !FenceMode::Off.fences());
    assert_eq!(ClusterSpec::default().fence_mode, FenceMode::Power);
    assert_eq!(
        ClusterSpec::default().fencing(false).fence_mode,
        FenceMode::Off
    );
    assert_eq!(
        ClusterSpec::default()
            .fence_mode(FenceMode::Watchdog)
            .fence_mode,
        FenceMode::Watchdog
    );
    // A state file written before fence modes existed: `fencing` decides.
    let root = tempfile::tempdir().unwrap();
    let mut state = state_in(root.path(), None);
    for (fencing, mode) in [(true, FenceMode::Power), (false, FenceMode::Off)] {
        state.fencing = fencing;
        let mut json = serde_json::to_value(&state).unwrap();
        json.as_object_mut().unwrap().remove("fence_mode");
        for node in json["nodes"].as_array_mut().unwrap() {
            node.as_object_mut().unwrap().remove("qmp_socket");
            node.as_object_mut().unwrap().remove("qmp_events");
        }
        fs::write(root.path().join("state.json"), json.to_string()).unwrap();
        let loaded = ClusterState::load(root.path()).unwrap();
        assert_eq!(loaded.fence_mode(), mode);
        assert_eq!(loaded.nodes[0].qmp_socket, None);
    }
    state.fence_mode = Some(FenceMode::Watchdog);
    state.save().unwrap();
    assert_eq!(
        ClusterState::load(root.path()).unwrap().fence_mode(),
        FenceMode::Watchdog
    );
    assert!(
        fs::read_to_string(root.path().join("state.json"))
            .unwrap()
            .contains("\"fence_mode\": \"watchdog\"")
    );
}

#[test]
fn addresses_are_in_the_private_test_network() {
    assert_eq!(node_address(1), Ipv4Addr::new(10, 99, 0, 1));
    assert_eq!(node_address(3).to_string(), "10.99.0.3");
}

#[test]
fn state_round_trips_and_down_respects_live_owners() {
    let root = tempfile::tempdir().unwrap();
    let owned_dir = root.path().join("lockmgr-owned");
    let stale_dir = root.path().join("lockmgr-stale");
    fs::create_dir(&owned_dir).unwrap();
    fs::create_dir(&stale_dir).unwrap();
    let owned = state_in(&owned_dir, Some(std::process::id()));
    owned.save().unwrap();
    let mut stale = state_in(&stale_dir, Some(std::process::id()));
    stale.owner_start = stale.owner_start.map(|start| start + 1); // a reused pid: owner is dead
    stale.save().unwrap();

    let loaded = ClusterState::load(&owned_dir).unwrap();
    assert_eq!(loaded.name, "lockmgr-owned");
    assert!(loaded.owner_alive());
    assert!(
        loaded.running_pids().is_empty(),
        "our own pid must not count as a QEMU"
    );
    assert_eq!(list(root.path()).len(), 2);

    let report = down(root.path(), None, false);
    assert!(
        report
            .iter()
            .any(|line| line.starts_with("lockmgr-owned: skipped")),
        "{report:?}"
    );
    assert!(
        report
            .iter()
            .any(|line| line.starts_with("lockmgr-stale: stopped 0")),
        "{report:?}"
    );
    assert!(owned_dir.exists() && !stale_dir.exists());
    assert!(
        std::process::id() > 0 && host::alive(std::process::id()),
        "teardown must not kill us"
    );

    down(root.path(), Some("lockmgr-owned"), true);
    assert!(!owned_dir.exists());
}

#[test]
fn attach_needs_a_unique_or_named_cluster() {
    let root = tempfile::tempdir().unwrap();
    assert!(
        Cluster::attach(root.path(), None)
            .unwrap_err()
            .to_string()
            .contains("no cluster")
    );
    for name in ["lockmgr-a", "lockmgr-b"] {
        let dir = root.path().join(name);
        fs::create_dir(&dir).unwrap();
        state_in(&dir, None).save().unwrap();
    }
    assert!(
        Cluster::attach(root.path(), None)
            .unwrap_err()
            .to_string()
            .contains("lockmgr-a, lockmgr-b")
    );
    let cluster = Cluster::attach(root.path(), Some("lockmgr-b")).unwrap();
    assert_eq!(cluster.name(), "lockmgr-b");
    assert!(
        cluster
            .exec(2, "true")
            .unwrap_err()
            .to_string()
            .contains("no node2")
    );
    drop(cluster);
    assert!(
        root.path().join("lockmgr-b").exists(),
        "an attached handle must not tear down"
    );
}
