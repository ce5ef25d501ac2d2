//! Reading files, the typed getters, and the settings of `qemu.conf`, `qemu-file.conf`,
//! `qemu-dlm.conf` and `qemu-lockd.conf`, with every message as the operator sees it.

use std::path::{Path, PathBuf};

use lockmgr_conf::{
    ConfError, ConfFile, DlmPluginSettings, FilePluginSettings, LockdSettings, MAX_FILE_SIZE,
    Position, QemuConf, ValueProblem, Warning, WarningKind, parse, read_file,
};

fn conf(text: &str, origin: &str) -> ConfFile {
    parse(text, origin).unwrap_or_else(|error| panic!("{error}"))
}

fn messages(warnings: &[Warning]) -> Vec<String> {
    warnings.iter().map(Warning::to_string).collect()
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

// ---- read_file ----

#[test]
fn a_missing_file_is_none() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        read_file(&dir.path().join("qemu-file.conf"))
            .unwrap()
            .is_none()
    );
    assert!(
        read_file(&dir.path().join("no/such/dir/qemu-file.conf"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_file_is_named_by_its_path_in_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "qemu-file.conf",
        b"# lockmgr\n\nsocket_path =\n",
    );
    let error = read_file(&path).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}:3:14: expected a quoted string, an integer or a [list] after '=' for \
             `socket_path`, found end of line",
            path.display()
        )
    );
    assert!(matches!(error, ConfError::Syntax(_)));
}

#[test]
fn a_directory_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let error = read_file(dir.path()).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("{}: cannot read the file: ", dir.path().display())),
        "{message}"
    );
    assert!(matches!(error, ConfError::Read { .. }));
}

#[test]
fn non_utf8_content_is_an_error_at_the_first_bad_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "qemu-dlm.conf", b"a = 1\nb = \"caf\xe9\"\n");
    assert_eq!(
        read_file(&path).unwrap_err().to_string(),
        format!(
            "{}:2:9: the file is not valid UTF-8 here; config files must be UTF-8 text",
            path.display()
        )
    );
}

#[test]
fn files_up_to_the_limit_are_read_and_bigger_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let limit = usize::try_from(MAX_FILE_SIZE).unwrap();
    let mut content = b"a = 1\n#".to_vec();
    content.resize(limit, b'x');
    let path = write(dir.path(), "big.conf", &content);
    assert_eq!(read_file(&path).unwrap().unwrap().entries().len(), 1);

    content.push(b'x');
    let path = write(dir.path(), "too-big.conf", &content);
    assert_eq!(
        read_file(&path).unwrap_err().to_string(),
        format!(
            "{}: the file is larger than 1048576 bytes, lockmgr's limit for a config file",
            path.display()
        )
    );
}

#[test]
fn an_endless_file_is_refused_after_the_limit() {
    let error = read_file(Path::new("/dev/zero")).unwrap_err();
    assert!(
        matches!(
            error,
            ConfError::TooLarge {
                limit: MAX_FILE_SIZE,
                ..
            }
        ),
        "{error}"
    );
}

// ---- typed getters ----

#[test]
fn booleans_are_0_or_1() {
    let conf = conf(
        "t = 1\nf = 0\ntwo = 2\nneg = -1\nword = \"yes\"\n",
        "b.conf",
    );
    assert_eq!(conf.get_bool("t").unwrap(), Some(true));
    assert_eq!(conf.get_bool("f").unwrap(), Some(false));
    assert_eq!(conf.get_bool("missing").unwrap(), None);
    assert_eq!(
        conf.get_bool("two").unwrap_err().to_string(),
        "b.conf:3:7: `two`: expected 0 or 1 (libvirt booleans are the integers 0 and 1), found 2"
    );
    assert!(matches!(
        conf.get_bool("neg").unwrap_err(),
        ConfError::BadValue {
            problem: ValueProblem::NotABoolean(-1),
            ..
        }
    ));
    assert_eq!(
        conf.get_bool("word").unwrap_err().to_string(),
        "b.conf:5:8: `word`: expected a boolean (0 or 1), found a string"
    );
}

#[test]
fn unsigned_integers_fit_in_u32() {
    let conf = conf(
        "a = 4294967295\nb = 4294967296\nc = -1\nd = [ 1 ]\n",
        "u.conf",
    );
    assert_eq!(conf.get_u32("a").unwrap(), Some(u32::MAX));
    assert_eq!(
        conf.get_u32("b").unwrap_err().to_string(),
        "u.conf:2:5: `b`: expected an integer from 0 to 4294967295, found 4294967296"
    );
    assert_eq!(
        conf.get_u32("c").unwrap_err().to_string(),
        "u.conf:3:5: `c`: expected an integer from 0 to 4294967295, found -1"
    );
    assert_eq!(
        conf.get_u32("d").unwrap_err().to_string(),
        "u.conf:4:5: `d`: expected an unsigned integer, found a list"
    );
    assert_eq!(conf.get_i64("c").unwrap(), Some(-1));
    assert_eq!(
        conf.get_i64("d").unwrap_err().to_string(),
        "u.conf:4:5: `d`: expected an integer, found a list"
    );
}

#[test]
fn strings_and_string_lists() {
    let conf = conf(
        "s = 'x'\nn = 1\nl = [ \"a\", 'b', ]\ne = []\nmixed = [ \"a\", 2 ]\n",
        "s.conf",
    );
    assert_eq!(conf.get_string("s").unwrap(), Some("x"));
    assert_eq!(
        conf.get_string("n").unwrap_err().to_string(),
        "s.conf:2:5: `n`: expected a quoted string, found an integer"
    );
    assert_eq!(conf.get_string_list("l").unwrap(), Some(vec!["a", "b"]));
    assert_eq!(conf.get_string_list("e").unwrap(), Some(vec![]));
    assert_eq!(
        conf.get_string_list("s").unwrap_err().to_string(),
        "s.conf:1:5: `s`: expected a list of strings, found a string"
    );
    assert_eq!(
        conf.get_string_list("mixed").unwrap_err().to_string(),
        "s.conf:5:9: `mixed`: expected a list of strings, but element 2 is an integer"
    );
}

#[test]
fn getters_read_the_first_of_duplicate_keys() {
    let conf = conf("a = 1\na = \"two\"\n", "d.conf");
    assert_eq!(conf.get_bool("a").unwrap(), Some(true));
}

#[test]
fn paths_must_be_absolute() {
    let conf = conf("a = \"/run/x\"\nr = \"run/x\"\ne = \"\"\ni = 1\n", "p.conf");
    assert_eq!(
        conf.get_absolute_path("a").unwrap(),
        Some(PathBuf::from("/run/x"))
    );
    assert_eq!(
        conf.get_absolute_path("r").unwrap_err().to_string(),
        "p.conf:2:5: `r`: \"run/x\" is a relative path; libvirt's daemons run in '/', so write \
         the absolute path"
    );
    assert_eq!(
        conf.get_absolute_path("e").unwrap_err().to_string(),
        "p.conf:3:5: `e`: the value is empty"
    );
    assert_eq!(
        conf.get_absolute_path("i").unwrap_err().to_string(),
        "p.conf:4:5: `i`: expected a quoted absolute path, found an integer"
    );
}

// ---- qemu.conf ----

#[test]
fn qemu_conf_without_lock_manager_means_nop() {
    let (settings, warnings) =
        QemuConf::from_conf(&conf("user = \"qemu\"\n", "qemu.conf")).unwrap();
    assert_eq!(settings, QemuConf::default());
    assert_eq!(settings.effective_lock_manager(), "nop");
    assert_eq!(warnings, []);
}

#[test]
fn qemu_conf_lock_manager_is_read() {
    let (settings, warnings) =
        QemuConf::from_conf(&conf("lock_manager = \"dlm\"\n", "qemu.conf")).unwrap();
    assert_eq!(settings.lock_manager.as_deref(), Some("dlm"));
    assert_eq!(settings.effective_lock_manager(), "dlm");
    assert_eq!(warnings, []);
}

#[test]
fn qemu_conf_lock_manager_in_camel_case_is_a_warning() {
    let text = "# from an old howto\nlockManager = \"dlm\"\n";
    let (settings, warnings) = QemuConf::from_conf(&conf(text, "/etc/libvirt/qemu.conf")).unwrap();
    assert_eq!(settings.lock_manager, None);
    assert_eq!(
        messages(&warnings),
        [
            "/etc/libvirt/qemu.conf:2:1: libvirt ignores `lockManager` silently and loads the \
          built-in nop driver; the key is `lock_manager`"
        ]
    );
}

#[test]
fn qemu_conf_other_spellings_of_lock_manager_are_warnings_too() {
    let text = "LOCK_MANAGER = \"a\"\nlockmanager = \"b\"\nLock_Manager = \"c\"\nlock_manager = \"dlm\"\n\
                lock_managers = \"d\"\n";
    let (settings, warnings) = QemuConf::from_conf(&conf(text, "qemu.conf")).unwrap();
    assert_eq!(settings.lock_manager.as_deref(), Some("dlm"));
    let keys: Vec<_> = warnings
        .iter()
        .map(|warning| match &warning.kind {
            WarningKind::MisspelledLockManager { key } => key.as_str(),
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(keys, ["LOCK_MANAGER", "lockmanager", "Lock_Manager"]);
}

#[test]
fn qemu_conf_second_lock_manager_is_a_warning_and_the_first_counts() {
    let text = "lock_manager = \"lockd\"\nlock_manager = \"dlm\"\n";
    let (settings, warnings) = QemuConf::from_conf(&conf(text, "qemu.conf")).unwrap();
    assert_eq!(settings.lock_manager.as_deref(), Some("lockd"));
    assert_eq!(
        messages(&warnings),
        [
            "qemu.conf:2:1: `lock_manager` is set again here and this value is ignored: libvirt \
          and lockmgr use only the first one, at 1:1"
        ]
    );
}

#[test]
fn qemu_conf_lock_manager_must_be_a_non_empty_string() {
    let error = QemuConf::from_conf(&conf("lock_manager = 1\n", "qemu.conf")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "qemu.conf:1:16: `lock_manager`: expected a quoted string, found an integer"
    );
    let error = QemuConf::from_conf(&conf("lock_manager = \"\"\n", "qemu.conf")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "qemu.conf:1:16: `lock_manager`: an empty name makes libvirt look for the plugin \
         `<plugin dir>/.so` and fail to start; remove the line to get the built-in nop driver"
    );
}

#[test]
fn qemu_conf_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, warnings) = QemuConf::from_file(&dir.path().join("qemu.conf")).unwrap();
    assert_eq!((settings, warnings), (QemuConf::default(), vec![]));
    let path = write(dir.path(), "qemu.conf", b"lock_manager = \"file\"\n");
    assert_eq!(
        QemuConf::from_file(&path)
            .unwrap()
            .0
            .lock_manager
            .as_deref(),
        Some("file")
    );
}

// ---- qemu-file.conf ----

#[test]
fn file_plugin_defaults() {
    let defaults = FilePluginSettings::default();
    assert_eq!(
        defaults,
        FilePluginSettings {
            auto_disk_leases: true,
            require_lease_for_disks: false,
            file_lockspace_dir: None,
            socket_path: "/run/lockmgr/file.sock".into(),
            state_dir: "/run/lockmgr/file-state".into(),
        }
    );
    let (settings, warnings) = FilePluginSettings::from_conf(&conf("", "qemu-file.conf")).unwrap();
    assert_eq!((settings, warnings), (defaults.clone(), vec![]));
    let dir = tempfile::tempdir().unwrap();
    let (settings, warnings) =
        FilePluginSettings::from_file(&dir.path().join("qemu-file.conf")).unwrap();
    assert_eq!((settings, warnings), (defaults, vec![]));
}

#[test]
fn file_plugin_reads_every_key() {
    let text = "auto_disk_leases = 1\nrequire_lease_for_disks = 1\n\
                file_lockspace_dir = \"/var/lib/libvirt/lockd/files\"\n\
                socket_path = \"/run/lockmgr/other.sock\"\nstate_dir = \"/srv/file\"\n";
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "qemu-file.conf", text.as_bytes());
    let (settings, warnings) = FilePluginSettings::from_file(&path).unwrap();
    assert_eq!(warnings, []);
    assert_eq!(
        settings,
        FilePluginSettings {
            auto_disk_leases: true,
            require_lease_for_disks: true,
            file_lockspace_dir: Some("/var/lib/libvirt/lockd/files".into()),
            socket_path: "/run/lockmgr/other.sock".into(),
            state_dir: "/srv/file".into(),
        }
    );
}

#[test]
fn require_lease_for_disks_defaults_to_the_opposite_of_auto_disk_leases() {
    let read = |text| {
        FilePluginSettings::from_conf(&conf(text, "f.conf"))
            .unwrap()
            .0
    };
    assert!(read("auto_disk_leases = 0\n").require_lease_for_disks);
    assert!(!read("auto_disk_leases = 1\n").require_lease_for_disks);
    assert!(!read("auto_disk_leases = 0\nrequire_lease_for_disks = 0\n").require_lease_for_disks);
    let read = |text| {
        DlmPluginSettings::from_conf(&conf(text, "d.conf"))
            .unwrap()
            .0
    };
    assert!(read("auto_disk_leases = 0\n").require_lease_for_disks);
}

#[test]
fn file_plugin_unknown_key_is_a_warning_with_a_suggestion() {
    let text = "file_lockspace_dirs = \"/var/lib/lockmgr\"\n";
    let (settings, warnings) =
        FilePluginSettings::from_conf(&conf(text, "/etc/libvirt/qemu-file.conf")).unwrap();
    assert_eq!(settings, FilePluginSettings::default());
    assert_eq!(
        messages(&warnings),
        [
            "/etc/libvirt/qemu-file.conf:1:1: unknown key `file_lockspace_dirs` is ignored (did you \
          mean `file_lockspace_dir`?); the known keys are auto_disk_leases, \
          require_lease_for_disks, file_lockspace_dir, socket_path, state_dir"
        ]
    );
    assert_eq!(
        warnings[0].kind,
        WarningKind::UnknownKey {
            key: "file_lockspace_dirs".into(),
            suggestion: Some("file_lockspace_dir"),
            known_keys: FilePluginSettings::KEYS,
        }
    );
}

#[test]
fn file_plugin_unrelated_unknown_key_gets_no_suggestion() {
    let text = "# sanlock's, not ours\n  host_id = 1\nlockspace_name = \"x\"\n";
    let (_, warnings) = FilePluginSettings::from_conf(&conf(text, "qemu-file.conf")).unwrap();
    assert_eq!(
        messages(&warnings),
        [
            "qemu-file.conf:2:3: unknown key `host_id` is ignored; the known keys are \
             auto_disk_leases, require_lease_for_disks, file_lockspace_dir, socket_path, \
             state_dir",
            "qemu-file.conf:3:1: unknown key `lockspace_name` is ignored; the known keys are \
             auto_disk_leases, require_lease_for_disks, file_lockspace_dir, socket_path, \
             state_dir",
        ]
    );
}

#[test]
fn file_plugin_repeated_key_is_a_warning() {
    let text = "socket_path = \"/run/a.sock\"\nsocket_path = \"/run/b.sock\"\n";
    let (settings, warnings) =
        FilePluginSettings::from_conf(&conf(text, "qemu-file.conf")).unwrap();
    assert_eq!(settings.socket_path, PathBuf::from("/run/a.sock"));
    assert_eq!(
        warnings[0].kind,
        WarningKind::DuplicateKey {
            key: "socket_path".into(),
            first: Position { line: 1, column: 1 }
        }
    );
}

#[test]
fn file_plugin_bad_values_are_errors() {
    let error = |text| {
        FilePluginSettings::from_conf(&conf(text, "qemu-file.conf"))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        error("auto_disk_leases = \"yes\"\n"),
        "qemu-file.conf:1:20: `auto_disk_leases`: expected a boolean (0 or 1), found a string"
    );
    assert_eq!(
        error("require_lease_for_disks = 2\n"),
        "qemu-file.conf:1:27: `require_lease_for_disks`: expected 0 or 1 (libvirt booleans are \
         the integers 0 and 1), found 2"
    );
    assert_eq!(
        error("file_lockspace_dir = \"lockd/files\"\n"),
        "qemu-file.conf:1:22: `file_lockspace_dir`: \"lockd/files\" is a relative path; libvirt's \
         daemons run in '/', so write the absolute path"
    );
    assert_eq!(
        error(&format!(
            "socket_path = \"/run/{}.sock\"\n",
            "s".repeat(100)
        )),
        "qemu-file.conf:1:15: `socket_path`: the path is 110 bytes long, but a Unix socket path \
         holds at most 107"
    );
}

// ---- qemu-dlm.conf ----

#[test]
fn dlm_plugin_defaults() {
    assert_eq!(
        DlmPluginSettings::default(),
        DlmPluginSettings {
            auto_disk_leases: true,
            require_lease_for_disks: false,
            lockspace_name: "libvirt".into(),
            socket_path: "/run/lockmgr/dlm.sock".into(),
            state_dir: "/run/lockmgr/dlm-state".into(),
        }
    );
    let dir = tempfile::tempdir().unwrap();
    let (settings, warnings) =
        DlmPluginSettings::from_file(&dir.path().join("qemu-dlm.conf")).unwrap();
    assert_eq!((settings, warnings), (DlmPluginSettings::default(), vec![]));
}

#[test]
fn dlm_plugin_reads_every_key() {
    let text = "auto_disk_leases = 0\nrequire_lease_for_disks = 0\nlockspace_name = \"vms_2\"\n\
                socket_path = \"/run/x.sock\"\nstate_dir = \"/srv/dlm\"\n";
    let (settings, warnings) = DlmPluginSettings::from_conf(&conf(text, "qemu-dlm.conf")).unwrap();
    assert_eq!(warnings, []);
    assert_eq!(
        settings,
        DlmPluginSettings {
            auto_disk_leases: false,
            require_lease_for_disks: false,
            lockspace_name: "vms_2".into(),
            socket_path: "/run/x.sock".into(),
            state_dir: "/srv/dlm".into(),
        }
    );
}

#[test]
fn dlm_plugin_lockspace_name_is_checked() {
    let read = |name: &str| {
        let text = format!("lockspace_name = \"{name}\"\n");
        DlmPluginSettings::from_conf(&conf(&text, "qemu-dlm.conf")).map(|(settings, _)| settings)
    };
    assert_eq!(read(&"l".repeat(64)).unwrap().lockspace_name.len(), 64);
    assert_eq!(
        read(&"l".repeat(65)).unwrap_err().to_string(),
        "qemu-dlm.conf:1:18: `lockspace_name`: the name is 65 bytes long; the DLM takes at most \
         64 (DLM_LOCKSPACE_LEN)"
    );
    assert_eq!(
        read("").unwrap_err().to_string(),
        "qemu-dlm.conf:1:18: `lockspace_name`: the value is empty"
    );
    assert_eq!(
        read("a/b").unwrap_err().to_string(),
        "qemu-dlm.conf:1:18: `lockspace_name`: '/' is not allowed in a lockspace name: use ASCII \
         letters, digits, '_', '-', '.' and '+'"
    );
    assert!(read("..").is_err());
    assert!(read("a b").is_err());
}

#[test]
fn dlm_plugin_unknown_key_suggests_a_known_one() {
    let text = "lockspace = \"vms\"\npurge_lockspace = 1\n";
    let (_, warnings) = DlmPluginSettings::from_conf(&conf(text, "qemu-dlm.conf")).unwrap();
    assert_eq!(
        messages(&warnings),
        [
            "qemu-dlm.conf:1:1: unknown key `lockspace` is ignored (did you mean \
             `lockspace_name`?); the known keys are auto_disk_leases, require_lease_for_disks, \
             lockspace_name, socket_path, state_dir",
            // The 2018 RFC's key for another setting: no misleading suggestion.
            "qemu-dlm.conf:2:1: unknown key `purge_lockspace` is ignored; the known keys are \
             auto_disk_leases, require_lease_for_disks, lockspace_name, socket_path, state_dir",
        ]
    );
}

#[test]
fn dlm_plugin_state_dir_must_be_absolute() {
    let error = DlmPluginSettings::from_conf(&conf("state_dir = \"var/lib\"\n", "qemu-dlm.conf"))
        .unwrap_err();
    assert!(matches!(
        error,
        ConfError::BadValue { problem: ValueProblem::RelativePath(_), ref key, .. } if key == "state_dir"
    ));
}

// ---- qemu-lockd.conf ----

#[test]
fn lockd_defaults_follow_lockd_with_and_without_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (missing, _) = LockdSettings::from_file(&dir.path().join("qemu-lockd.conf")).unwrap();
    assert!(missing.auto_disk_leases && missing.require_lease_for_disks);
    let path = write(dir.path(), "qemu-lockd.conf", b"# nothing set\n");
    let (empty, _) = LockdSettings::from_file(&path).unwrap();
    assert!(empty.auto_disk_leases && !empty.require_lease_for_disks);
}

#[test]
fn lockd_takes_paths_as_written() {
    let text = "file_lockspace_dir = \"relative\"\nlvm_lockspace_dir = \"/l\"\nscsi_lockspace_dir = \"\"\n";
    let (settings, warnings) = LockdSettings::from_conf(&conf(text, "qemu-lockd.conf")).unwrap();
    assert_eq!(warnings, []);
    assert_eq!(settings.file_lockspace_dir, Some(PathBuf::from("relative")));
    assert_eq!(settings.lvm_lockspace_dir, Some(PathBuf::from("/l")));
    assert_eq!(settings.scsi_lockspace_dir, Some(PathBuf::from("")));
}
