//! What the cluster tests share: building the binaries the nodes run, the scratch share, and
//! dlm.so's config in a node.

use std::path::PathBuf;
use std::process::Command;

/// Builds lockmgrd, loader-test and the plugins into this profile's target dir and returns it:
/// the directory shared read-only at /mnt/host in every node (dlm-proof and dlm-floor are this
/// package's own binaries, built with the test).
pub fn build_node_binaries() -> PathBuf {
    let profile_dir = PathBuf::from(env!("CARGO_BIN_EXE_lockmgr-testbed"))
        .parent()
        .expect("a binary has a parent dir")
        .to_owned();
    let mut cargo = Command::new(env!("CARGO"));
    cargo.arg("build");
    for package in [
        "lockmgrd",
        "lockmgr-loader-test",
        "lockmgr-plugin-dlm",
        "lockmgr-plugin-file",
        "lockmgr-plugin-nop",
    ] {
        cargo.args(["-p", package]);
    }
    // Crash points are inert unless LOCKMGRD_FAILPOINT names one (tests/dlm_daemon.rs does).
    cargo.args(["--features", "lockmgrd/failpoints"]);
    if !cfg!(debug_assertions) {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("run cargo build");
    assert!(
        status.success(),
        "building the binaries for the nodes failed"
    );
    for file in [
        "lockmgrd",
        "lockmgr",
        "lockmgr-loader-test",
        "libdlm_plugin.so",
        "libfile.so",
        "libnop.so",
        "dlm-floor",
        "dlm-proof",
    ] {
        let path = profile_dir.join(file);
        assert!(path.exists(), "{} was not built", path.display());
    }
    profile_dir
}

/// A writable directory to share at /mnt/scratch (world-writable: 9p maps ids as they are).
#[allow(dead_code)] // not every test file shares a scratch dir
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    let scratch = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .expect("create a scratch dir in /var/tmp");
    std::fs::set_permissions(
        scratch.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("make the scratch dir world-writable");
    scratch
}

/// The shell command that writes dlm.so's (and `lockmgrd --backend dlm`'s) config to `config` in
/// a node: lockspace `libvirt`, socket `/run/lockmgr/dlm.sock`, state in `/run/lockmgr/dlm-state`.
#[allow(dead_code)] // the matrix test runs the daemon with its defaults
pub fn write_dlm_config(config: &str) -> String {
    format!(
        "mkdir -p /etc/libvirt /run/lockmgr && printf '%s\\n' \
         'lockspace_name = \"libvirt\"' 'socket_path = \"/run/lockmgr/dlm.sock\"' \
         'state_dir = \"/run/lockmgr/dlm-state\"' > {config}"
    )
}
