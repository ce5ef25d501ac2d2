//! Every config file Debian's libvirt 11.3 packages ship in `/etc/libvirt` parses, and so does each
//! with its commented-out examples made live (the best corpus of real syntax there is).
//!
//! Facts about a file's content are only asserted while the file is still the one its package
//! installed (checked against dpkg's md5sum of the conffile); an edited file is still parsed.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{line_of, shipped_conf_files, shipped_file, uncomment_examples};
use lockmgr_conf::{ConfFile, LockdSettings, QemuConf, Value, WarningKind, parse, read_file};

fn read_shipped(path: &Path) -> (String, ConfFile) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let conf = read_file(path)
        .unwrap_or_else(|error| panic!("{error}"))
        .unwrap_or_else(|| panic!("{} vanished", path.display()));
    (text, conf)
}

/// Parses `path` with its examples uncommented; fails with file:line:col and the line's text.
fn parse_uncommented(path: &Path) -> (common::Uncommented, ConfFile) {
    let (text, _) = read_shipped(path);
    let uncommented = uncomment_examples(&text);
    let origin = format!("{} (examples uncommented)", path.display());
    match parse(&uncommented.text, &origin) {
        Ok(conf) => (uncommented, conf),
        Err(error) => panic!(
            "{error}\n  the line: {:?}",
            line_of(&uncommented.text, error.location.position.line)
        ),
    }
}

/// Whether `path` is byte for byte the conffile its Debian package installed. `None` when dpkg
/// cannot tell (not a Debian package, or no dpkg).
fn is_pristine(path: &Path) -> Option<bool> {
    let status = std::fs::read_to_string("/var/lib/dpkg/status").ok()?;
    let prefix = format!(" {} ", path.display());
    let packaged_md5 = status
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))?
        .split(' ')
        .next()?
        .to_owned();
    let output = Command::new("md5sum").arg(path).output().ok()?;
    let actual_md5 = String::from_utf8(output.stdout).ok()?;
    Some(actual_md5.split(' ').next() == Some(packaged_md5.as_str()))
}

/// Runs `facts` only on a pristine file, and says so when it cannot.
fn if_pristine(path: &Path, facts: impl FnOnce()) {
    match is_pristine(path) {
        Some(true) => facts(),
        Some(false) => {
            eprintln!(
                "{}: edited since installed; only its syntax was checked",
                path.display()
            )
        }
        None => eprintln!(
            "{}: not a dpkg conffile (or no dpkg); only its syntax was checked",
            path.display()
        ),
    }
}

#[test]
fn every_shipped_file_parses_with_one_entry_per_uncommented_statement_line() {
    for path in shipped_conf_files() {
        let (text, conf) = read_shipped(&path);
        // Shipped files hold one statement per line: a line that starts with a letter.
        let statement_lines: BTreeSet<usize> = text
            .split('\n')
            .enumerate()
            .filter(|(_, line)| {
                line.trim_start()
                    .starts_with(|c: char| c.is_ascii_alphabetic())
            })
            .map(|(index, _)| index + 1)
            .collect();
        let entry_lines: BTreeSet<usize> = conf
            .entries()
            .iter()
            .map(|entry| entry.key_position.line)
            .collect();
        assert_eq!(entry_lines, statement_lines, "{}", path.display());
        if_pristine(&path, || {
            assert_eq!(
                conf.entries(),
                [],
                "{}: Debian ships every setting commented out",
                path.display()
            );
        });
    }
}

#[test]
fn every_shipped_file_parses_with_its_examples_uncommented() {
    let mut examples = 0;
    for path in shipped_conf_files() {
        let (uncommented, conf) = parse_uncommented(&path);
        examples += uncommented.example_lines.len();
        // Each uncommented line that starts a statement gives exactly one entry.
        let entry_lines: BTreeSet<usize> = conf
            .entries()
            .iter()
            .map(|entry| entry.key_position.line)
            .collect();
        let example_lines: BTreeSet<usize> = uncommented.example_lines.iter().copied().collect();
        assert!(entry_lines.is_subset(&example_lines), "{}", path.display());
        eprintln!(
            "{}: {} example lines uncommented, {} entries, {} prose lines left commented: {:?}",
            path.display(),
            uncommented.example_lines.len(),
            conf.entries().len(),
            uncommented.prose_lines.len(),
            uncommented.prose_lines,
        );
    }
    assert!(
        examples > 0,
        "no commented example at all in the shipped files"
    );
}

#[test]
fn qemu_conf_selects_no_lock_manager_until_uncommented() {
    let path = shipped_file("qemu.conf", "libvirt-daemon-driver-qemu");
    if_pristine(&path, || {
        let (settings, warnings) = QemuConf::from_file(&path).unwrap();
        assert_eq!(settings.lock_manager, None);
        assert_eq!(settings.effective_lock_manager(), "nop");
        assert_eq!(warnings, []);

        let (uncommented, conf) = parse_uncommented(&path);
        let (settings, warnings) = QemuConf::from_conf(&conf).unwrap();
        assert_eq!(settings.lock_manager.as_deref(), Some("lockd"));
        assert_eq!(warnings, []);
        let lock_manager = conf.get("lock_manager").unwrap();
        assert_eq!(
            line_of(&uncommented.text, lock_manager.key_position.line).trim(),
            "lock_manager = \"lockd\""
        );
        // Lists written over several lines, with a trailing comma or none.
        let acl = conf.get_string_list("cgroup_device_acl").unwrap().unwrap();
        assert_eq!(acl.first(), Some(&"/dev/null"));
        assert!(acl.contains(&"/dev/kvm"), "{acl:?}");
        let nvram = conf.get_string_list("nvram").unwrap().unwrap();
        assert_eq!(nvram.len(), 4, "{nvram:?}");
        // An example inside the prose: `#       user = "qemu"   # A user named "qemu"`.
        assert!(conf.get_all("user").count() > 1);
    });
}

#[test]
fn qemu_lockd_conf_gives_lockd_settings() {
    let path = shipped_file("qemu-lockd.conf", "libvirt-daemon-driver-qemu");
    if_pristine(&path, || {
        let (settings, warnings) = LockdSettings::from_file(&path).unwrap();
        // The file exists, so require_lease_for_disks follows auto_disk_leases, as in lockd.
        assert_eq!(
            settings,
            LockdSettings {
                require_lease_for_disks: false,
                ..LockdSettings::default()
            }
        );
        assert_eq!(warnings, []);

        let (_, conf) = parse_uncommented(&path);
        let (settings, warnings) = LockdSettings::from_conf(&conf).unwrap();
        assert_eq!(warnings, []);
        assert_eq!(
            settings,
            LockdSettings {
                auto_disk_leases: false,
                require_lease_for_disks: true,
                file_lockspace_dir: Some("/var/lib/libvirt/lockd/files".into()),
                lvm_lockspace_dir: Some("/var/lib/libvirt/lockd/lvmvolumes".into()),
                scsi_lockspace_dir: Some("/var/lib/libvirt/lockd/scsivolumes".into()),
            }
        );
    });
}

#[test]
fn qemu_sanlock_conf_has_sanlocks_keys() {
    let path = shipped_file("qemu-sanlock.conf", "libvirt-daemon-driver-qemu");
    if_pristine(&path, || {
        let (_, conf) = parse_uncommented(&path);
        assert_eq!(conf.get_bool("auto_disk_leases").unwrap(), Some(true));
        assert_eq!(conf.get_u32("host_id").unwrap(), Some(1));
        assert_eq!(
            conf.get_string("disk_lease_dir").unwrap(),
            Some("/var/lib/libvirt/sanlock")
        );
        // Read as lockd settings, sanlock's own keys are unknown: warnings, not errors.
        let (_, warnings) = LockdSettings::from_conf(&conf).unwrap();
        let unknown: Vec<_> = warnings
            .iter()
            .filter_map(|warning| match &warning.kind {
                WarningKind::UnknownKey { key, .. } => Some(key.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            unknown,
            ["disk_lease_dir", "host_id", "io_timeout", "user", "group"]
        );
    });
}

#[test]
fn daemon_confs_hold_their_daemons_settings() {
    let virtlockd = shipped_file("virtlockd.conf", "libvirt-daemon-lock");
    if_pristine(&virtlockd, || {
        let (_, conf) = parse_uncommented(&virtlockd);
        assert_eq!(conf.get_u32("max_clients").unwrap(), Some(1024));
        assert_eq!(
            conf.get_string("log_outputs").unwrap(),
            Some("3:syslog:virtlockd")
        );
    });
    let libvirtd = shipped_file("libvirtd.conf", "libvirt-daemon");
    if_pristine(&libvirtd, || {
        let (_, conf) = parse_uncommented(&libvirtd);
        assert_eq!(
            conf.get_string_list("access_drivers").unwrap(),
            Some(vec!["polkit"])
        );
        assert_eq!(
            conf.get_string_list("sasl_allowed_username_list").unwrap(),
            Some(vec!["joe@EXAMPLE.COM", "fred@EXAMPLE.COM"])
        );
        // Written without blanks around '=' in the file: `#tls_priority="NORMAL"`.
        assert_eq!(conf.get_string("tls_priority").unwrap(), Some("NORMAL"));
    });
    let libvirt = shipped_file("libvirt.conf", "libvirt-common");
    if_pristine(&libvirt, || {
        let (_, conf) = parse_uncommented(&libvirt);
        let aliases = conf.get("uri_aliases").unwrap();
        let Value::List(aliases) = &aliases.value else {
            panic!("{aliases:?}")
        };
        assert_eq!(aliases.len(), 2);
    });
}
