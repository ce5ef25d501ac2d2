//! Unit tests that need no kernel DLM: validation happens before libdlm is called, errno
//! mapping, names, the configfs node-id lookup on a fake tree.

use std::fs;

use super::*;
use crate::error::request_error;

#[test]
fn lockspace_names_are_checked_before_libdlm() {
    assert!(validate_lockspace_name(&"a".repeat(MAX_LOCKSPACE_NAME)).is_ok());
    // Through the public API: a 65-byte name must be refused by the check, not by libdlm (on this
    // host without a DLM, libdlm would fail with ENXIO/ENOENT and a Lockspace error instead).
    let long = "a".repeat(MAX_LOCKSPACE_NAME + 1);
    for result in [
        Lockspace::create_or_open(&long, 0o600),
        Lockspace::open(&long),
    ] {
        match result {
            Err(Error::InvalidLockspaceName { name, reason }) => {
                assert_eq!(name, long);
                assert!(reason.contains("64"), "{reason}");
            }
            other => panic!("expected InvalidLockspaceName, got {other:?}"),
        }
    }
    for bad in ["", "a/b", "nul\0inside"] {
        assert!(
            matches!(
                Lockspace::open(bad),
                Err(Error::InvalidLockspaceName { .. })
            ),
            "{bad:?} was accepted"
        );
    }
}

#[test]
fn resource_names_are_checked_before_libdlm() {
    assert!(validate_resource(LockOp::Lock, &[b'r'; MAX_RESOURCE_NAME], "ls").is_ok());
    let err = validate_resource(LockOp::Adopt, &[b'r'; MAX_RESOURCE_NAME + 1], "ls").unwrap_err();
    let message = err.to_string();
    assert!(matches!(
        err,
        Error::InvalidResourceName {
            op: LockOp::Adopt,
            ..
        }
    ));
    assert!(
        message.contains("65 bytes") && message.contains("at most 64"),
        "{message}"
    );
    assert!(
        message.starts_with("adopt orphan on resource \"rrrr"),
        "{message}"
    );
    assert!(validate_resource(LockOp::Lock, b"", "ls").is_err());
}

#[test]
fn flags_the_kernel_would_refuse_are_refused_with_a_reason() {
    assert!(check_flags(LockOp::Lock, Mode::Nl, LockFlags::EXPEDITE).is_ok());
    assert!(check_flags(LockOp::Lock, Mode::Ex, LockFlags::EXPEDITE).is_err());
    assert!(check_flags(LockOp::Convert, Mode::Nl, LockFlags::EXPEDITE).is_err());
    assert!(check_flags(LockOp::Lock, Mode::Pr, LockFlags::QUECVT).is_err());
    assert!(
        check_flags(
            LockOp::Convert,
            Mode::Pr,
            LockFlags::QUECVT | LockFlags::NOQUEUE
        )
        .is_ok()
    );
    assert!(
        check_flags(
            LockOp::Lock,
            Mode::Ex,
            LockFlags::NOQUEUE | LockFlags::PERSISTENT
        )
        .is_ok()
    );
}

#[test]
fn errno_of_a_request_maps_to_the_variant_a_caller_acts_on() {
    let busy = request_error(LockOp::Lock, Mode::Ex, b"disk1", 0, "libvirt", libc::EAGAIN);
    assert!(
        matches!(&busy, Error::Busy { resource, mode: Mode::Ex, .. } if resource.as_bytes() == b"disk1")
    );
    assert_eq!(
        busy.to_string(),
        "lock EX on \"disk1\" in lockspace \"libvirt\": busy, an incompatible lock is held (EAGAIN)"
    );
    assert!(matches!(
        request_error(LockOp::Convert, Mode::Pr, b"d", 7, "ls", libc::EAGAIN),
        Error::Busy {
            op: LockOp::Convert,
            ..
        }
    ));
    assert!(matches!(
        request_error(LockOp::Adopt, Mode::Ex, b"d", 0, "ls", libc::ENOENT),
        Error::NoOrphan { .. }
    ));
    assert!(matches!(
        request_error(LockOp::Adopt, Mode::Pr, b"d", 0, "ls", libc::EAGAIN),
        Error::OrphanModeMismatch { mode: Mode::Pr, .. }
    ));
    // ENOENT is only "no orphan" for an adoption
    let other = request_error(
        LockOp::Unlock,
        Mode::Ex,
        &[0xff, 0x00],
        0x10001,
        "ls",
        libc::ENOENT,
    );
    assert!(matches!(
        other,
        Error::Lock {
            errno: Errno(libc::ENOENT),
            ..
        }
    ));
    assert_eq!(
        other.to_string(),
        "unlock EX on 0xff00 (lock 65537) in lockspace \"ls\" failed: ENOENT: No such file or directory"
    );
}

#[test]
fn lockspace_errors_carry_a_hint() {
    let err = error::lockspace_error("create", "libvirt", libc::EPERM);
    let message = err.to_string();
    assert!(
        message.starts_with("create lockspace \"libvirt\" failed: EPERM"),
        "{message}"
    );
    assert!(message.contains("CAP_SYS_ADMIN"), "{message}");
}

#[test]
fn errno_prints_its_name() {
    assert_eq!(
        Errno(libc::EAGAIN).to_string(),
        "EAGAIN: Resource temporarily unavailable"
    );
    assert_eq!(Errno(dlm_sys::EUNLOCK).to_string(), "EUNLOCK: unlocked");
    assert_eq!(Errno(dlm_sys::EINPROG).name(), Some("EINPROG"));
    assert!(Errno(4095).to_string().starts_with("errno 4095: "));
}

#[test]
fn resource_names_print_as_text_or_hex() {
    assert_eq!(ResourceName(b"disk1".to_vec()).to_string(), "\"disk1\"");
    assert_eq!(
        ResourceName(vec![0xde, 0xad, 0xbe, 0xef]).to_string(),
        "0xdeadbeef"
    );
    assert_eq!(
        ResourceName(b"tab\there".to_vec()).to_string(),
        "0x7461620968657265"
    );
    assert_eq!(ResourceName(Vec::new()).to_string(), "0x");
}

#[test]
fn modes_parse_print_and_follow_the_dlm_matrix() {
    for mode in Mode::ALL {
        assert_eq!(mode.name().parse::<Mode>(), Ok(mode));
        assert_eq!(mode.name().to_lowercase().parse::<Mode>(), Ok(mode));
    }
    assert_eq!("xx".parse::<Mode>(), Err(UnknownMode("xx".to_owned())));
    assert_eq!(Mode::ALL.map(Mode::raw), [0, 1, 2, 3, 4, 5]);
    // The DLM compatibility matrix, row = requested, column = held: NL CR CW PR PW EX
    let matrix = [
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 0, 1, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0],
    ];
    for (row, requested) in Mode::ALL.into_iter().enumerate() {
        for (column, held) in Mode::ALL.into_iter().enumerate() {
            assert_eq!(
                requested.compatible_with(held),
                matrix[row][column] == 1,
                "{requested} vs {held}"
            );
        }
    }
}

#[test]
fn flags_print_by_name() {
    assert_eq!(
        (LockFlags::NOQUEUE | LockFlags::PERSISTENT).to_string(),
        "NOQUEUE|PERSISTENT"
    );
    assert_eq!(LockFlags::NONE.to_string(), "none");
    assert_eq!((LockFlags::NOQUEUE | LockFlags::PERSISTENT).bits(), 0x81);
}

#[test]
fn local_node_id_is_the_comms_entry_marked_local() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path();
    let missing = local_node_id_in(cluster).unwrap_err().to_string();
    assert!(
        missing.contains(&cluster.join("comms").display().to_string()),
        "{missing}"
    );

    for (id, local) in [("1", "0\n"), ("2", "1\n"), ("3", "0\n")] {
        fs::create_dir_all(cluster.join("comms").join(id)).unwrap();
        fs::write(cluster.join("comms").join(id).join("local"), local).unwrap();
    }
    assert_eq!(local_node_id_in(cluster).unwrap(), 2);
    // The nodeid file wins over the directory name when present.
    fs::write(cluster.join("comms/2/nodeid"), "7\n").unwrap();
    assert_eq!(local_node_id_in(cluster).unwrap(), 7);

    fs::write(cluster.join("comms/2/local"), "0\n").unwrap();
    let none = local_node_id_in(cluster).unwrap_err().to_string();
    assert!(none.contains("no comms entry is marked local"), "{none}");

    fs::write(cluster.join("comms/1/local"), "1\n").unwrap();
    fs::write(cluster.join("comms/3/local"), "1\n").unwrap();
    assert!(
        local_node_id_in(cluster)
            .unwrap_err()
            .to_string()
            .contains("2 comms entries")
    );
}
