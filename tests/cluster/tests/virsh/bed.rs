//! The virsh test bed: lockmgr installed in every node from its Debian packages, lockmgrd and
//! libvirtd started as their units would start them, and the domains the scenarios run.

use std::time::{Duration, Instant};

use lockmgr_testbed::{Cluster, SHARED_DISK_DEVICE, watchdog::LOCK_FAILURE_TIMEOUT_S};

/// Where the packages are in every node (the host's `target/debian`, shared read-only).
pub(crate) const DEBS: &str = "/mnt/host";
/// libvirt's URI in a node.
const URI: &str = "qemu:///system";
/// lockmgrd's pid file and log in a node (no systemd: started by hand, as the unit would).
const DAEMON_PID: &str = "/run/lockmgr/dlm.pid";
const DAEMON_LOG: &str = "/var/log/lockmgrd-dlm.log";
/// File disks live here in each node (node-local files at the same path on every node).
pub(crate) const IMAGES: &str = "/var/lib/libvirt/images";

/// The shared LUN every node sees (`/dev/vda`).
pub(crate) const LUN: &str = SHARED_DISK_DEVICE;

/// What a virsh command did.
#[derive(Debug)]
pub(crate) struct Virsh {
    pub(crate) ok: bool,
    pub(crate) text: String,
    pub(crate) took: Duration,
}

pub(crate) struct Bed<'c> {
    pub(crate) cluster: &'c Cluster,
}

/// One disk of a domain.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Disk<'a> {
    /// The shared LUN as `<disk type='block'>`, exclusive.
    Lun,
    /// The shared LUN with `<shareable/>`.
    LunShared,
    /// The shared LUN with `<readonly/>`.
    LunReadOnly,
    /// A raw file in [`IMAGES`] on the domain's node.
    File(&'a str),
}

/// A domain's definition.
#[derive(Debug, Clone)]
pub(crate) struct Domain<'a> {
    pub(crate) name: &'a str,
    pub(crate) uuid: String,
    pub(crate) disks: Vec<Disk<'a>>,
    /// A `<lease>`: (lockspace, key).
    pub(crate) lease: Option<(&'a str, &'a str)>,
}

impl<'a> Domain<'a> {
    pub(crate) fn new(name: &'a str, disks: &[Disk<'a>]) -> Self {
        Domain {
            name,
            uuid: uuid_for(name),
            disks: disks.to_vec(),
            lease: None,
        }
    }

    pub(crate) fn with_lease(mut self, lockspace: &'a str, key: &'a str) -> Self {
        self.lease = Some((lockspace, key));
        self
    }

    /// libvirt's XML: a no-OS TCG guest (SeaBIOS looks for a boot disk forever, which is enough).
    pub(crate) fn xml(&self) -> String {
        let mut devices = String::new();
        for (index, disk) in self.disks.iter().enumerate() {
            let target = format!("vd{}", char::from(b'a' + u8::try_from(index).unwrap_or(0)));
            devices += &disk_xml(*disk, &target);
        }
        if let Some((lockspace, key)) = self.lease {
            devices += &format!(
                "<lease><lockspace>{lockspace}</lockspace><key>{key}</key>\
                 <target path='{IMAGES}/{lockspace}.leases'/></lease>\n"
            );
        }
        format!(
            "<domain type='qemu'>\n<name>{}</name>\n<uuid>{}</uuid>\n\
             <memory unit='MiB'>32</memory>\n<vcpu>1</vcpu>\n\
             <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>\n\
             <features><acpi/></features>\n\
             <on_poweroff>destroy</on_poweroff><on_crash>destroy</on_crash>\n<devices>\n\
             <emulator>/usr/bin/qemu-system-x86_64</emulator>\n{devices}\
             <controller type='usb' model='none'/>\n\
             <controller type='scsi' index='0' model='virtio-scsi'/>\n\
             <memballoon model='none'/>\n</devices>\n</domain>\n",
            self.name, self.uuid
        )
    }
}

/// A disk's XML at `target` (`vdX` on virtio, `sdX` on the SCSI controller).
pub(crate) fn disk_xml(disk: Disk<'_>, target: &str) -> String {
    let bus = if target.starts_with("sd") {
        "scsi"
    } else {
        "virtio"
    };
    // The LUN with cache='none', as a SAN LUN is used (libvirt refuses to migrate a domain whose
    // disk is cached on storage it does not know to be shared); files live on the node's tmpfs,
    // which has no O_DIRECT, so they keep the default cache.
    let (kind, source, cache, extra) = match disk {
        Disk::Lun => ("block", format!("dev='{LUN}'"), " cache='none'", ""),
        Disk::LunShared => (
            "block",
            format!("dev='{LUN}'"),
            " cache='none'",
            "<shareable/>",
        ),
        Disk::LunReadOnly => (
            "block",
            format!("dev='{LUN}'"),
            " cache='none'",
            "<readonly/>",
        ),
        Disk::File(name) => ("file", format!("file='{IMAGES}/{name}'"), "", ""),
    };
    format!(
        "<disk type='{kind}' device='disk'><driver name='qemu' type='raw'{cache}/>\
         <source {source}/><target dev='{target}' bus='{bus}'/>{extra}</disk>\n"
    )
}

/// Whether a refusal on `node` names `holder` on `holder_node`: across nodes by domain and node
/// name (from the DLM's lock value block), on the holder's own node as "on this host".
pub(crate) fn names_holder(text: &str, node: usize, holder: &str, holder_node: usize) -> bool {
    let place = if node == holder_node {
        "on this host".to_owned()
    } else {
        format!("on node 'node{holder_node}'")
    };
    text.contains(&format!("domain '{holder}'")) && text.contains(&place)
}

/// A stable uuid per domain name (the sha256 of the name, as `lockmgr-loader-test step` does).
fn uuid_for(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&Sha256::digest(name.as_bytes())[..16]);
    lockmgr::Uuid::version4(bytes).to_string()
}

impl<'c> Bed<'c> {
    pub(crate) fn new(cluster: &'c Cluster) -> Self {
        Bed { cluster }
    }

    /// Runs `cmd` in `node`; its stdout and stderr together, and whether it exited 0.
    pub(crate) fn sh(&self, node: usize, cmd: &str) -> (bool, String) {
        let out = self
            .cluster
            .exec_timeout(node, cmd, Duration::from_secs(240))
            .unwrap_or_else(|err| panic!("node{node}: {cmd}: {err}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.success(), text)
    }

    /// [`Bed::sh`] that must succeed.
    pub(crate) fn must(&self, node: usize, cmd: &str) -> String {
        let (ok, text) = self.sh(node, cmd);
        assert!(ok, "node{node}: `{cmd}` failed:\n{text}");
        text
    }

    /// Installs lockmgr's packages as an operator would (`dpkg -i` of the .debs), selects the
    /// plugin in qemu.conf, and starts virtlogd, lockmgrd and libvirtd (listening on TCP for
    /// migrations: the test bed's private network only, no auth). Returns how long libvirtd
    /// took to answer its first `virsh version` (its QEMU capability probe).
    pub(crate) fn install_and_start(&self, node: usize) -> Duration {
        self.must(
            node,
            &format!(
                "dpkg -i {DEBS}/lockmgr_*_amd64.deb {DEBS}/libvirt-daemon-plugin-lockmgr-dlm_*_amd64.deb \
                 >/var/log/lockmgr-install.log 2>&1 || {{ cat /var/log/lockmgr-install.log; exit 1; }}; \
                 test -f /usr/lib/x86_64-linux-gnu/libvirt/lock-driver/dlm.so"
            ),
        );
        self.set_lock_manager(node, "dlm");
        // /etc/default/lockmgrd-dlm is the operator's place for the daemon's arguments; the
        // lock-failure timeout agrees with the test bed's fence timing.
        self.must(
            node,
            &format!(
                "echo 'LOCKMGRD_ARGS=\"--lock-failure-timeout {LOCK_FAILURE_TIMEOUT_S}\"' >> /etc/default/lockmgrd-dlm; \
                 printf '%s\\n' 'listen_tls = 0' 'listen_tcp = 1' 'auth_tcp = \"none\"' >> /etc/libvirt/libvirtd.conf; \
                 mkdir -p {IMAGES} /var/log/libvirt/qemu && virtlogd --daemon"
            ),
        );
        self.start_daemon(node);
        self.start_libvirtd(node)
    }

    /// `lock_manager = "NAME"` in the node's qemu.conf (libvirtd must be restarted to see it).
    pub(crate) fn set_lock_manager(&self, node: usize, name: &str) {
        self.must(
            node,
            &format!(
                "sed -i '/^lock_manager *=/d' /etc/libvirt/qemu.conf && \
                 echo 'lock_manager = \"{name}\"' >> /etc/libvirt/qemu.conf"
            ),
        );
    }

    /// Starts lockmgrd as lockmgrd-dlm.service does (its ExecStart with /etc/default/lockmgrd-dlm)
    /// and waits for its pid file (written once it serves).
    pub(crate) fn start_daemon(&self, node: usize) {
        self.must(node, &format!("rm -f {DAEMON_PID}; mkdir -p /run/lockmgr"));
        let unit_start = ". /etc/default/lockmgrd-dlm; exec /usr/sbin/lockmgrd --backend dlm \
                          --config /etc/libvirt/qemu-dlm.conf --pid-file /run/lockmgr/dlm.pid $LOCKMGRD_ARGS";
        self.must(
            node,
            &format!(
                "setsid sh -c '{unit_start}' >>{DAEMON_LOG} 2>&1 </dev/null & \
                 i=0; until test -s {DAEMON_PID}; do i=$((i+1)); [ $i -gt 150 ] && \
                 {{ echo 'lockmgrd did not start'; tail -20 {DAEMON_LOG}; exit 1; }}; sleep 0.2; done"
            ),
        );
    }

    /// SIGKILL of lockmgrd (a crash).
    pub(crate) fn crash_daemon(&self, node: usize) {
        self.must(
            node,
            &format!("kill -9 $(cat {DAEMON_PID}) && rm -f {DAEMON_PID}"),
        );
    }

    /// Starts libvirtd (`--listen`: TCP for migrations) and waits until it answers.
    pub(crate) fn start_libvirtd(&self, node: usize) -> Duration {
        let started = Instant::now();
        self.must(
            node,
            "rm -f /run/libvirtd.pid; libvirtd --daemon --listen -p /run/libvirtd.pid; i=0; \
             until virsh -c qemu:///system version >/dev/null 2>&1; do i=$((i+1)); \
             [ $i -gt 900 ] && { echo 'libvirtd did not answer within 180 s'; exit 1; }; sleep 0.2; done",
        );
        started.elapsed()
    }

    /// Stops libvirtd (SIGTERM, as `systemctl stop`): running domains stay.
    pub(crate) fn stop_libvirtd(&self, node: usize) {
        self.must(
            node,
            "pid=$(cat /run/libvirtd.pid) && kill -TERM $pid && \
             i=0; while kill -0 $pid 2>/dev/null; do i=$((i+1)); [ $i -gt 150 ] && exit 1; sleep 0.2; done",
        );
    }

    /// `virsh -c qemu:///system ARGS` on `node`.
    pub(crate) fn virsh(&self, node: usize, args: &str) -> Virsh {
        let started = Instant::now();
        let (ok, text) = self.sh(node, &format!("virsh -c {URI} {args}"));
        Virsh {
            ok,
            text: text.trim().to_owned(),
            took: started.elapsed(),
        }
    }

    /// Defines `domain` on `node` (creating its file disks there) and starts it.
    pub(crate) fn start(&self, node: usize, domain: &Domain<'_>) -> Virsh {
        for disk in &domain.disks {
            if let Disk::File(name) = disk {
                self.must(
                    node,
                    &format!("test -e {IMAGES}/{name} || truncate -s 16M {IMAGES}/{name}"),
                );
            }
        }
        let path = format!("/tmp/{}.xml", domain.name);
        self.must(node, &format!("cat > {path} <<'EOF'\n{}EOF", domain.xml()));
        let defined = self.virsh(node, &format!("define {path}"));
        assert!(
            defined.ok,
            "node{node}: virsh define {}: {}",
            domain.name, defined.text
        );
        self.virsh(node, &format!("start {}", domain.name))
    }

    /// Stops `name` on `node` if it runs (destroy), leaving it defined.
    pub(crate) fn destroy(&self, node: usize, name: &str) {
        self.sh(
            node,
            &format!("virsh -c {URI} domstate {name} 2>/dev/null | grep -qx 'shut off' || virsh -c {URI} destroy {name}"),
        );
    }

    /// The state `virsh domstate` prints ("running", "paused", "shut off", or the error).
    pub(crate) fn state(&self, node: usize, name: &str) -> String {
        self.virsh(node, &format!("domstate {name}")).text
    }

    /// The pid of `name`'s QEMU on `node`.
    pub(crate) fn qemu_pid(&self, node: usize, name: &str) -> u32 {
        let text = self.must(node, &format!("cat /run/libvirt/qemu/{name}.pid"));
        text.trim().parse().unwrap_or_else(|_| {
            panic!("node{node}: no pid in /run/libvirt/qemu/{name}.pid: {text:?}")
        })
    }

    /// `lockmgr status` on `node` (the locks its lockmgrd holds).
    pub(crate) fn status(&self, node: usize) -> String {
        self.sh(node, "lockmgr status --backend dlm 2>&1").1
    }

    /// lockmgrd's and libvirtd's view, for a failed scenario's report.
    pub(crate) fn logs(&self, node: usize) -> String {
        self.sh(
            node,
            &format!("echo '--- lockmgrd'; tail -n 30 {DAEMON_LOG}; echo '--- virsh list'; virsh -c {URI} list --all"),
        )
        .1
    }
}
