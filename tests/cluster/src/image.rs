//! The node image: a generic Debian kernel plus the whole node root as one initramfs, built from
//! Debian packages only by `node/build-image.sh`, cached under `/var/cache/lockmgr/`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, flock};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::host;

/// The files the image is built from; compiled in so that the binary is self-contained, and
/// hashed into the stamp so that editing any of them triggers a rebuild.
const BUILD_SCRIPT: &str = include_str!("../node/build-image.sh");
const INIT: &str = include_str!("../node/init");
const PACKAGES: &str = include_str!("../node/packages");
/// The libvirt flavour's packages, from bookworm-backports.
const PACKAGES_LIBVIRT: &str = include_str!("../node/packages-libvirt");
const DLM_CONF: &str = include_str!("../node/dlm.conf");
const FENCE_AGENT: &str = include_str!("../node/fence_testbed");
/// lockmgr's agent for watchdog fencing, installed as `/usr/sbin/fence_lockmgr_watchdog`.
const WATCHDOG_FENCE_AGENT: &str = include_str!("../../../daemon/fence_lockmgr_watchdog");

/// Where images and downloaded .debs are kept (`LOCKMGR_CACHE_DIR` overrides).
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/lockmgr";
/// The meta package the kernel is resolved from (`LOCKMGR_KERNEL_META` overrides, e.g.
/// `linux-image-amd64/bookworm-backports` for 6.12).
pub const DEFAULT_KERNEL_META: &str = "linux-image-amd64";

/// Which node image: the DLM one, or the DLM one with libvirt and QEMU in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavour {
    /// corosync, dlm_controld, libdlm, the guest agent (`node/packages`): what every DLM test
    /// needs, kept small because many clusters boot from it.
    #[default]
    Dlm,
    /// The DLM image plus libvirt 11 and QEMU 10 from bookworm-backports
    /// (`node/packages-libvirt`), for the virsh tests: libvirtd runs in every node.
    Libvirt,
}

impl Flavour {
    /// The image's directory in the cache.
    fn dir_name(self) -> &'static str {
        match self {
            Flavour::Dlm => "image",
            Flavour::Libvirt => "image-libvirt",
        }
    }

    /// The backports package list the build script installs, if any.
    fn backports(self) -> Option<(&'static str, &'static str)> {
        match self {
            Flavour::Dlm => None,
            Flavour::Libvirt => Some(("packages-libvirt", PACKAGES_LIBVIRT)),
        }
    }
}

/// How to find or build the image.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// Which image.
    pub flavour: Flavour,
    /// Cache directory: `image/` (the result), `debs/` (downloads), `image.lock`.
    pub cache_dir: PathBuf,
    /// The kernel meta package, resolved with `apt-cache depends` to an exact package.
    pub kernel_meta: String,
    /// Rebuild even when the stamp matches.
    pub force: bool,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            flavour: Flavour::default(),
            cache_dir: std::env::var_os("LOCKMGR_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR)),
            kernel_meta: std::env::var("LOCKMGR_KERNEL_META")
                .unwrap_or_else(|_| DEFAULT_KERNEL_META.to_owned()),
            force: false,
        }
    }
}

/// A built node image.
#[derive(Debug, Clone)]
pub struct NodeImage {
    /// The image directory.
    pub dir: PathBuf,
    /// The kernel.
    pub vmlinuz: PathBuf,
    /// The node root as an uncompressed newc cpio.
    pub initrd: PathBuf,
    /// `uname -r` of the kernel, e.g. `6.1.0-56-amd64`.
    pub kernel_release: String,
    /// The exact kernel package and version, e.g. `linux-image-6.1.0-56-amd64 6.1.192-2`.
    pub kernel_package: String,
    /// Whether this call built it (false: the cached image was up to date).
    pub built: bool,
    /// How long `ensure` took.
    pub elapsed: Duration,
}

impl NodeImage {
    /// Returns the cached image, building it first when it is missing or its inputs changed
    /// (the build script, init, package list, dlm.conf, the fence agents, or the kernel version apt
    /// resolves).
    pub fn ensure() -> Result<NodeImage> {
        Self::ensure_with(&ImageOptions::default())
    }

    /// [`NodeImage::ensure`] for the image with libvirt in it ([`Flavour::Libvirt`]).
    pub fn ensure_libvirt() -> Result<NodeImage> {
        Self::ensure_with(&ImageOptions {
            flavour: Flavour::Libvirt,
            ..ImageOptions::default()
        })
    }

    /// [`NodeImage::ensure`] with explicit options.
    pub fn ensure_with(options: &ImageOptions) -> Result<NodeImage> {
        let started = Instant::now();
        let cache = &options.cache_dir;
        fs::create_dir_all(cache).at(cache, "create the cache directory")?;
        // Exclusive while checking and building; clusters hold it shared while QEMU reads the files.
        let _lock = lock_cache(cache, true)?;

        let (kernel_pkg, kernel_version) = resolve_kernel(&options.kernel_meta)?;
        let stamp = stamp(options.flavour, &kernel_pkg, &kernel_version);
        let image_dir = cache.join(options.flavour.dir_name());
        let stamp_file = image_dir.join("stamp");
        let current = fs::read_to_string(&stamp_file).unwrap_or_default();
        let complete = ["vmlinuz", "initrd.img", "kernel-release"]
            .iter()
            .all(|f| image_dir.join(f).is_file());
        if !options.force && complete && current.trim() == stamp {
            println!(
                "[image] {} is up to date ({kernel_pkg} {kernel_version})",
                image_dir.display()
            );
            return Self::load(&image_dir, false, started);
        }
        if !rustix::process::geteuid().is_root() {
            return Err(Error::Precondition(
                "not root: building the node image needs root (debootstrap, chroot, device nodes)"
                    .to_owned(),
            ));
        }
        let why = if options.force {
            "rebuild forced"
        } else if !complete {
            "no complete image yet"
        } else {
            "its inputs changed (build script, init, packages, dlm.conf, fence agents or kernel)"
        };
        println!(
            "[image] building the node image in {}: {why}",
            image_dir.display()
        );
        build(cache, options.flavour, &kernel_pkg, &stamp)?;
        let image = Self::load(&image_dir, true, started)?;
        println!(
            "[image] built in {:.1} s: {}",
            image.elapsed.as_secs_f64(),
            image.kernel_package
        );
        Ok(image)
    }

    fn load(dir: &Path, built: bool, started: Instant) -> Result<NodeImage> {
        let read = |name: &str| -> Result<String> {
            let path = dir.join(name);
            Ok(fs::read_to_string(&path)
                .at(&path, "read")?
                .trim()
                .to_owned())
        };
        Ok(NodeImage {
            dir: dir.to_owned(),
            vmlinuz: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            kernel_release: read("kernel-release")?,
            kernel_package: read("kernel-package")?,
            built,
            elapsed: started.elapsed(),
        })
    }
}

/// The cache's `image.lock`, held (`flock`) until dropped.
#[derive(Debug)]
pub(crate) struct CacheLock(File);

impl Drop for CacheLock {
    fn drop(&mut self) {
        let _ = flock(&self.0, FlockOperation::Unlock);
    }
}

/// Takes the cache's `image.lock` (exclusive to build, shared to boot from it).
pub(crate) fn lock_cache(cache: &Path, exclusive: bool) -> Result<CacheLock> {
    let path = cache.join("image.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .at(&path, "open")?;
    let operation = if exclusive {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::LockShared
    };
    flock(&file, operation).map_err(|errno| Error::Io {
        path,
        what: "lock",
        source: errno.into(),
    })?;
    Ok(CacheLock(file))
}

/// `apt-cache depends META` → the exact `linux-image-<abi>-amd64`, and its candidate version.
fn resolve_kernel(meta: &str) -> Result<(String, String)> {
    let depends = host::run(Command::new("apt-cache").args(["depends", meta]))?;
    let package = depends
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|pkg| pkg.strip_prefix("linux-image-").is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit())))
        .ok_or_else(|| {
            Error::Image(format!(
                "`apt-cache depends {meta}` names no linux-image-<version> package (run `apt-get update`)"
            ))
        })?
        .to_owned();
    // "linux-image-amd64/bookworm-backports" must resolve the version from the same suite
    let target = match meta.split_once('/') {
        Some((_, suite)) => format!("{package}/{suite}"),
        None => package.clone(),
    };
    let show = host::run(Command::new("apt-cache").args(["show", "--no-all-versions", &target]))?;
    let version = show
        .lines()
        .find_map(|line| line.strip_prefix("Version:"))
        .map(|version| version.trim().to_owned())
        .ok_or_else(|| Error::Image(format!("`apt-cache show {target}` gives no version")))?;
    Ok((package, version))
}

/// The hash of everything the image is built from.
fn stamp(flavour: Flavour, kernel_pkg: &str, kernel_version: &str) -> String {
    let mut hash = Sha256::new();
    let backports = flavour.backports().map_or("", |(_, list)| list);
    for part in [
        backports,
        BUILD_SCRIPT,
        INIT,
        PACKAGES,
        DLM_CONF,
        FENCE_AGENT,
        WATCHDOG_FENCE_AGENT,
        kernel_pkg,
        kernel_version,
    ] {
        hash.update(part.len().to_le_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Writes the node sources next to the cache, runs the build script, swaps the result in.
fn build(cache: &Path, flavour: Flavour, kernel_pkg: &str, stamp: &str) -> Result<()> {
    let src = cache.join("src");
    let _ = fs::remove_dir_all(&src);
    fs::create_dir_all(&src).at(&src, "create")?;
    for (name, text) in [
        ("build-image.sh", BUILD_SCRIPT),
        ("init", INIT),
        ("packages", PACKAGES),
        ("dlm.conf", DLM_CONF),
        ("fence_testbed", FENCE_AGENT),
        ("fence_lockmgr_watchdog", WATCHDOG_FENCE_AGENT),
    ]
    .into_iter()
    .chain(flavour.backports())
    {
        fs::write(src.join(name), text).at(src.join(name), "write")?;
    }
    let image_dir = cache.join(flavour.dir_name());
    let new_dir = image_dir.with_extension("new");
    let _ = fs::remove_dir_all(&new_dir);
    let mut command = Command::new("bash");
    command
        .arg(src.join("build-image.sh"))
        .arg(kernel_pkg)
        .arg(&src)
        .arg(cache)
        .arg(&new_dir)
        .args(flavour.backports().map(|(name, _)| name));
    let status = command
        .status()
        .map_err(|err| Error::Image(format!("cannot run {}: {err}", host::describe(&command))))?;
    if !status.success() {
        return Err(Error::Image(format!(
            "{} failed ({status}); its output is above",
            host::describe(&command)
        )));
    }
    fs::write(new_dir.join("stamp"), format!("{stamp}\n")).at(new_dir.join("stamp"), "write")?;
    let old_dir = image_dir.with_extension("old");
    let _ = fs::remove_dir_all(&old_dir);
    if image_dir.exists() {
        fs::rename(&image_dir, &old_dir).at(&image_dir, "move the old image aside")?;
    }
    fs::rename(&new_dir, &image_dir).at(&new_dir, "move the new image into place")?;
    let _ = fs::remove_dir_all(&old_dir);
    let _ = fs::remove_dir_all(&src);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_changes_with_every_input() {
        let base = stamp(Flavour::Dlm, "linux-image-6.1.0-56-amd64", "6.1.192-2");
        assert_eq!(base.len(), 64);
        assert_eq!(
            base,
            stamp(Flavour::Dlm, "linux-image-6.1.0-56-amd64", "6.1.192-2")
        );
        assert_ne!(
            base,
            stamp(Flavour::Dlm, "linux-image-6.1.0-56-amd64", "6.1.192-3")
        );
        assert_ne!(
            base,
            stamp(Flavour::Dlm, "linux-image-6.12.95+deb12-amd64", "6.1.192-2")
        );
        // length-prefixed: moving a byte from one part to the next changes the hash
        assert_ne!(
            stamp(Flavour::Dlm, "ab", "c"),
            stamp(Flavour::Dlm, "a", "bc")
        );
        assert_ne!(
            base,
            stamp(Flavour::Libvirt, "linux-image-6.1.0-56-amd64", "6.1.192-2")
        );
    }

    #[test]
    fn the_node_sources_agree_with_each_other() {
        // init loads the modules the build script copies, and both keep the marker contract.
        let modules = "virtio_pci virtio_net virtio_console virtio_rng virtio_blk 9pnet_virtio 9p configfs dlm";
        assert!(BUILD_SCRIPT.contains(modules));
        assert!(INIT.contains(modules));
        assert!(INIT.contains(crate::cluster::READY_MARKER));
        for package in ["corosync", "dlm-controld", "libdlm3", "qemu-guest-agent"] {
            assert!(
                PACKAGES.lines().any(|line| line.trim() == package),
                "{package} not in node/packages"
            );
        }
        // The libvirt flavour: libvirtd with its QEMU driver and QEMU itself, from backports.
        for package in [
            "libvirt-daemon-driver-qemu",
            "libvirt-clients",
            "qemu-system-x86",
        ] {
            assert!(
                PACKAGES_LIBVIRT.lines().any(|line| line.trim() == package),
                "{package} not in node/packages-libvirt"
            );
        }
        assert!(BUILD_SCRIPT.contains("-t bookworm-backports"));
        // dlm_controld runs the agent the build script installs, which talks through the port
        // init links and the host side serves.
        assert!(DLM_CONF.contains("fence_all /usr/sbin/fence_testbed"));
        assert!(BUILD_SCRIPT.contains("\"$root/usr/sbin/fence_testbed\""));
        assert!(INIT.contains(crate::fence::FENCE_PORT_NAME));
        assert!(FENCE_AGENT.contains(crate::fence::FENCE_PORT_NAME));
        assert!(INIT.contains("dlmnode.fencing"));
        // Watchdog fencing: the module and agent the build installs are what init loads and
        // writes into dlm.conf, with the wait the harness passes.
        assert!(BUILD_SCRIPT.contains("watchdog_modules=\"i6300esb softdog\""));
        assert!(INIT.contains("modprobe i6300esb"));
        assert!(INIT.contains("dlmnode.fence_wait"));
        assert!(INIT.contains(&format!(
            "fence_all {} wait=",
            crate::watchdog::WATCHDOG_FENCE_AGENT
        )));
        assert!(BUILD_SCRIPT.contains("\"$root/usr/sbin/fence_lockmgr_watchdog\""));
        assert!(WATCHDOG_FENCE_AGENT.contains("wait=*)"));
    }
}
