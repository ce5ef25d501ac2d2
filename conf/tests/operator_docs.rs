//! Every error and warning quoted in `docs/configuration.md` is what the code prints today, and
//! every one the code prints for these cases is quoted there.

use lockmgr_conf::parse;
use lockmgr_conf::{ConfError, ConfFile, DlmPluginSettings, FilePluginSettings, QemuConf, Warning};

type Reader = fn(&ConfFile) -> Result<Vec<Warning>, ConfError>;

fn file(conf: &ConfFile) -> Result<Vec<Warning>, ConfError> {
    FilePluginSettings::from_conf(conf).map(|(_, warnings)| warnings)
}

fn dlm(conf: &ConfFile) -> Result<Vec<Warning>, ConfError> {
    DlmPluginSettings::from_conf(conf).map(|(_, warnings)| warnings)
}

fn qemu(conf: &ConfFile) -> Result<Vec<Warning>, ConfError> {
    QemuConf::from_conf(conf).map(|(_, warnings)| warnings)
}

const FILE: &str = "/etc/libvirt/qemu-file.conf";
const DLM: &str = "/etc/libvirt/qemu-dlm.conf";
const QEMU: &str = "/etc/libvirt/qemu.conf";

/// The mistakes the operator documentation shows.
const CASES: &[(&str, &str, Reader)] = &[
    (QEMU, "# lockmgr\nlockManager = \"dlm\"\n", qemu),
    (
        QEMU,
        "lock_manager = \"lockd\"\nlock_manager = \"dlm\"\n",
        qemu,
    ),
    (
        FILE,
        "file_lockspace_dirs = \"/var/lib/lockmgr/files\"\n",
        file,
    ),
    (FILE, "auto_disk_leases = yes\n", file),
    (FILE, "auto_disk_leases = \"1\"\n", file),
    (FILE, "auto_disk_leases = 2\n", file),
    (FILE, "file_lockspace_dir = \"lockmgr/files\"\n", file),
    (FILE, "file_lockspace_dir = \"C:\\dir\\\"x\"\n", file),
    (FILE, "file_lockspace_dir = /var/lib/lockmgr/files\n", file),
    (FILE, "socket_path = \"/run/lockmgr/file.sock\n", file),
    (DLM, "lockspace_name = \"libvirt/vms\"\n", dlm),
    (DLM, "lockspace = \"vms\"\n", dlm),
    (DLM, "socket_path =\n  \"/run/lockmgr/dlm.sock\"\n", dlm),
    (
        DLM,
        "auto_disk_leases = 1 require_lease_for_disks = 0\n",
        dlm,
    ),
    (
        DLM,
        "socket_path = [\n  # the default\n  \"/run/lockmgr/dlm.sock\"\n]\n",
        dlm,
    ),
    (DLM, "\n", dlm),
];

fn printed() -> Vec<String> {
    let mut lines = Vec::new();
    for (origin, text, read) in CASES {
        match parse(text, origin) {
            Err(error) => lines.push(error.to_string()),
            Ok(conf) => match read(&conf) {
                Err(error) => lines.push(error.to_string()),
                Ok(warnings) => lines.extend(warnings.iter().map(Warning::to_string)),
            },
        }
    }
    lines
}

fn documented() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let docs = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path}: {error}"));
    docs.lines()
        .filter(|line| line.starts_with("/etc/libvirt/"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_documented_messages_are_the_printed_ones() {
    let (printed, documented) = (printed(), documented());
    for line in &printed {
        assert!(
            documented.contains(line),
            "printed but not in docs/configuration.md:\n{line}"
        );
    }
    for line in &documented {
        assert!(
            printed.contains(line),
            "in docs/configuration.md but not printed:\n{line}"
        );
    }
}
