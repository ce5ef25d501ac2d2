//! file.so (lockmgrd's OFD locks) and libvirt's lockd.so (virtlockd's POSIX locks) exclude each
//! other on one lockspace, in both directions: hosts running either can share an NFS lockspace.
//!
//! virtlockd's socket is fixed at /run/libvirt/virtlockd-sock, so the real work runs in a
//! private mount namespace with its own /run: the outer test re-runs this test binary there.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use lockmgr::host::{self, HostError, Plugin, RegisterOutcome};
use lockmgr::{Access, AcquireFlags, Domain, LockFailureAction, NewFlags, Resource, Uuid};

#[test]
fn file_so_and_lockd_so_exclude_each_other_on_one_lockspace() {
    require_private_mount_namespace();
    let lockd = libvirt_plugin("lockd");
    let scratch = tempfile::tempdir().unwrap();
    let file_so = build_plugin("lockmgr-plugin-file", "file", scratch.path());
    let lockmgrd = build_binary("lockmgrd", "lockmgrd");
    let test_binary = std::env::current_exe().unwrap();
    let script = format!(
        "set -e; mount -t tmpfs tmpfs /run; mkdir -p /run/libvirt; \
         virtlockd --daemon --pid-file /run/virtlockd.pid; \
         i=0; while [ ! -S /run/libvirt/virtlockd-sock ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; \
         rc=0; {} --exact interop_inside_private_run --ignored --nocapture || rc=$?; \
         kill $(cat /run/virtlockd.pid); exit $rc",
        test_binary.display()
    );
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("INTEROP_LOCKD", &lockd)
        .env("INTEROP_FILE_SO", &file_so)
        .env("INTEROP_LOCKMGRD", &lockmgrd)
        .env("INTEROP_SCRATCH", scratch.path())
        .status()
        .expect("run unshare");
    assert!(
        status.success(),
        "the interop checks failed inside the private mount namespace (see output above)"
    );
}

struct Lockmgrd(Child);

impl Drop for Lockmgrd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn domain(name: &str, tail: u8) -> Domain {
    Domain {
        uuid: Uuid::parse(&format!("9d3f{tail:04x}-1c2b-4a5e-9f8d-7a6b5c4d3e2f")).unwrap(),
        name: name.into(),
        id: u32::from(tail),
        pid: 0,
        uri: Some("qemu:///system".into()),
    }
}

/// libvirt's start: the pre-exec child registers, then libvirtd acquires for real.
fn start_domain(
    plugin: &Plugin,
    domain: &Domain,
    disk: &Resource,
) -> (host::ForkedOwner, Result<(), HostError>) {
    let owner = host::start_owner(
        plugin,
        domain,
        std::slice::from_ref(disk),
        LockFailureAction::Default,
    )
    .unwrap();
    assert!(
        matches!(owner.outcome, RegisterOutcome::Registered { .. }),
        "{}: {:?}",
        domain.name,
        owner.outcome
    );
    let mut domain = domain.clone();
    domain.pid = owner.pid();
    let mut manager = plugin.new_manager(&domain, NewFlags::default()).unwrap();
    manager.add_resource(disk).unwrap();
    let acquired = manager
        .acquire(
            None,
            AcquireFlags::default(),
            LockFailureAction::Default,
            false,
        )
        .map(|_| ());
    (owner, acquired)
}

fn refusal(result: Result<(), HostError>) -> String {
    match result {
        Err(HostError::Callback {
            reported: Some(err),
            ..
        }) => {
            assert_eq!(err.code, 87, "VIR_ERR_RESOURCE_BUSY: {err:?}");
            err.rendered()
        }
        other => panic!("expected a resource-busy refusal, got {other:?}"),
    }
}

#[test]
#[ignore = "runs inside the private mount namespace set up by file_so_and_lockd_so_exclude_each_other_on_one_lockspace"]
fn interop_inside_private_run() {
    let env = |key: &str| {
        PathBuf::from(
            std::env::var_os(key).unwrap_or_else(|| panic!("{key} not set: run the outer test")),
        )
    };
    let scratch = env("INTEROP_SCRATCH");
    let lockspace = scratch.join("lockspace");
    std::fs::create_dir_all(&lockspace).unwrap();
    let lockd_conf = scratch.join("qemu-lockd.conf");
    std::fs::write(
        &lockd_conf,
        format!("file_lockspace_dir = \"{}\"\n", lockspace.display()),
    )
    .unwrap();
    let file_conf = scratch.join("qemu-file.conf");
    std::fs::write(
        &file_conf,
        format!(
            "file_lockspace_dir = \"{}\"\nsocket_path = \"{}\"\nstate_dir = \"{}\"\n",
            lockspace.display(),
            scratch.join("file.sock").display(),
            scratch.join("state").display()
        ),
    )
    .unwrap();
    let _daemon = Lockmgrd(
        Command::new(env("INTEROP_LOCKMGRD"))
            .arg("--config")
            .arg(&file_conf)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(scratch.join("file.sock")).is_err() {
        assert!(Instant::now() < deadline, "lockmgrd did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut lockd = Plugin::open(&env("INTEROP_LOCKD")).unwrap();
    lockd.init(&lockd_conf).unwrap();
    let mut file = Plugin::open(&env("INTEROP_FILE_SO")).unwrap();
    file.init(&file_conf).unwrap();
    let image = scratch.join("shared-disk.img");
    std::fs::write(&image, b"").unwrap();
    let disk = Resource::Disk {
        path: image.clone(),
        access: Access::Exclusive,
    };

    // lockd first: file.so is refused, naming virtlockd.
    let (mut by_lockd, acquired) = start_domain(&lockd, &domain("via-lockd", 1), &disk);
    acquired.expect("lockd takes the free disk");
    let (mut refused_owner, refused) = start_domain(&file, &domain("via-file", 2), &disk);
    let message = refusal(refused);
    println!("file.so while lockd holds the disk: {message}");
    assert!(
        message.contains(&format!(
            "disk {} is locked by virtlockd (pid",
            image.display()
        )),
        "{message}"
    );
    refused_owner.kill().unwrap();

    // lockd's owner dies: virtlockd frees the lock and file.so gets it.
    by_lockd.kill().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut by_file, acquired) = loop {
        let (owner, acquired) = start_domain(&file, &domain("via-file", 2), &disk);
        if acquired.is_ok() || Instant::now() > deadline {
            break (owner, acquired);
        }
        drop(owner);
        std::thread::sleep(Duration::from_millis(20));
    };
    acquired.expect("file.so takes the disk once lockd's domain is gone");

    // Now the other way round: lockd is refused by file.so's OFD lock.
    let (_refused_owner, refused) = start_domain(&lockd, &domain("via-lockd-again", 3), &disk);
    let message = refusal(refused);
    println!("lockd.so while file.so holds the disk: {message}");
    assert!(message.contains("is locked"), "{message}");
    by_file.kill().unwrap();
    assert!(
        Path::new(&lockspace).read_dir().unwrap().count() >= 1,
        "both use the same lock file in the lockspace"
    );
}
