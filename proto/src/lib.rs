//! The protocol between lockmgr's plugins and the lock daemon `lockmgrd`, and its client: one
//! home for the wire types, the framing, the state strings and the resource names, shared by the
//! plugins (through the `lockmgr` crate's `client` feature) and the daemon, which needs nothing
//! of the plugin ABI.
//!
//! Frames are a 4-byte big-endian length and a JSON body of at most [`MAX_FRAME`] bytes. Every
//! message is versioned ([`PROTOCOL_VERSION`]) and decoded strictly: unknown fields, unknown
//! variants and wrong types are errors, so a mismatched or hostile peer is refused, never
//! half-understood.
//!
//! The client side is written for libvirt's pre-exec child too: no threads, no global state,
//! blocking calls on one socket with timeouts.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod client;
pub mod cluster;
mod frame;
mod limits;
mod message;
#[cfg(feature = "os")]
pub mod os;
mod state;

pub use client::{CALL_TIMEOUT, Client, ClientError};
use frame::read_frame;
pub use frame::{FrameError, decode, encode, take_frame};
pub use limits::{MAX_NAME, MAX_PATH, MAX_RESOURCES, MAX_UUID};
pub use message::*;
use state::hex;
pub use state::{MAX_STATE_LEN, STATE_PREFIX, decode_state, encode_state, hex_lower};

/// The protocol version; a daemon refuses any other.
pub const PROTOCOL_VERSION: u32 = 1;
/// The largest frame either side accepts (100 disks with long paths fit easily).
pub const MAX_FRAME: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, mode: Mode) -> ResourceSpec {
        ResourceSpec {
            kind: ResourceKind::Disk,
            name: name.into(),
            mode,
        }
    }

    #[test]
    fn state_round_trips_and_detects_corruption() {
        let resources = [
            disk("/a.img", Mode::Exclusive),
            disk("/b.img", Mode::Shared),
        ];
        let entries: Vec<_> = resources
            .iter()
            .map(|r| (r.mode, r.fingerprint()))
            .collect();
        let state = encode_state(&entries);
        assert!(state.starts_with("lockmgr1:"));
        assert!(
            !state.contains(['<', '>', '&', '\0']),
            "libvirt embeds it unescaped in XML"
        );
        let mut decoded = decode_state(&state).unwrap();
        decoded.sort();
        let mut expected = entries.clone();
        expected.sort();
        assert_eq!(decoded, expected);

        let flipped = state.replacen('E', "S", 1);
        assert!(
            decode_state(&flipped)
                .unwrap_err()
                .contains("checksum mismatch")
        );
        assert!(
            decode_state("garbage")
                .unwrap_err()
                .contains("expected 'lockmgr1:")
        );
        assert!(
            decode_state("lockmgr9:E0011223344556677:00000000")
                .unwrap_err()
                .contains("unknown version")
        );
        assert_eq!(decode_state(&encode_state(&[])).unwrap(), vec![]);
    }

    #[test]
    fn hashed_names_are_virtlockds_for_disks_and_namespaced_for_leases() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let image = disk("/var/lib/libvirt/images/demo.img", Mode::Exclusive);
        assert_eq!(
            image.hashed_name(),
            sha256_hex("/var/lib/libvirt/images/demo.img")
        );
        let lease = ResourceSpec {
            kind: ResourceKind::Lease {
                lockspace: Some("ls".into()),
                path: None,
                offset: None,
            },
            name: "key".into(),
            mode: Mode::Exclusive,
        };
        assert_eq!(lease.hashed_name(), sha256_hex("lease:ls:key"));
        assert_eq!(lease.hashed_name().len(), 64, "DLM_RESNAME_MAXLEN");
    }

    #[test]
    fn inputs_beyond_libvirts_limits_are_refused_with_the_field_named() {
        let owner = OwnerInfo {
            uuid: "7c1e0001-5a2b-4c3d-8e9f-0a1b2c3d4e5f".into(),
            name: "vm".into(),
            id: 1,
            pid: 42,
            uri: None,
        };
        let acquire = |resources: Vec<ResourceSpec>| Request::Acquire {
            owner: owner.clone(),
            resources,
            action: FailureAction::Poweroff,
            state: None,
        };
        assert!(
            acquire(vec![disk(&"/a".repeat(2047), Mode::Exclusive)])
                .check_limits()
                .is_ok()
        );
        let long = acquire(vec![disk(
            &format!("/{}", "a".repeat(MAX_PATH)),
            Mode::Exclusive,
        )]);
        let why = long.check_limits().unwrap_err();
        assert!(
            why.starts_with("disk path '/aaa") && why.contains("4096 bytes long"),
            "{why}"
        );
        let many = acquire(vec![disk("/a", Mode::Shared); MAX_RESOURCES + 1]);
        assert!(many.check_limits().unwrap_err().contains("1025 resources"));
        let lease = ResourceSpec {
            kind: ResourceKind::Lease {
                lockspace: Some("ls".into()),
                path: None,
                offset: None,
            },
            name: "k".repeat(MAX_NAME + 1),
            mode: Mode::Exclusive,
        };
        assert!(
            acquire(vec![lease])
                .check_limits()
                .unwrap_err()
                .contains("lease key")
        );
        let named = Request::Register {
            owner: OwnerInfo {
                name: "n".repeat(300),
                ..owner.clone()
            },
            restrict: false,
        };
        assert!(named.check_limits().unwrap_err().contains("domain name"));
        let nul = acquire(vec![disk("/a\0b", Mode::Exclusive)]);
        assert!(nul.check_limits().unwrap_err().contains("NUL"));
    }

    #[test]
    fn frames_are_bounded_and_strict() {
        let request = RequestFrame {
            version: 1,
            request: Request::Status,
        };
        let mut buffer = encode(&request).unwrap();
        buffer.extend_from_slice(&[0, 0]);
        let body = take_frame(&mut buffer).unwrap().unwrap();
        assert_eq!(decode::<RequestFrame>(&body).unwrap(), request);
        assert_eq!(buffer, [0, 0], "the partial next frame stays buffered");
        assert!(take_frame(&mut buffer).unwrap().is_none());

        let mut huge = (u32::try_from(MAX_FRAME).unwrap() + 1)
            .to_be_bytes()
            .to_vec();
        assert!(matches!(
            take_frame(&mut huge),
            Err(FrameError::TooLarge(_))
        ));

        let unknown_field = br#"{"version":1,"request":"status","extra":true}"#;
        assert!(decode::<RequestFrame>(unknown_field).is_err());
        let unknown_op = br#"{"version":1,"request":{"steal":{}}}"#;
        assert!(decode::<RequestFrame>(unknown_op).is_err());
        let wrong_type = br#"{"version":"1","request":"status"}"#;
        assert!(decode::<RequestFrame>(wrong_type).is_err());
    }
}
