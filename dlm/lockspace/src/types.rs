//! Lock modes, request flags, lock ids and printable resource names.

use std::fmt;
use std::ops::BitOr;
use std::str::FromStr;

use dlm_sys as raw;

/// A DLM lock mode, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// Null: holds a place in the resource (keeps it mastered here), blocks nobody.
    Nl,
    /// Concurrent read.
    Cr,
    /// Concurrent write.
    Cw,
    /// Protected read: the shared mode (libvirt's `shared` disks).
    Pr,
    /// Protected write.
    Pw,
    /// Exclusive.
    Ex,
}

impl Mode {
    /// All modes, weakest first.
    pub const ALL: [Mode; 6] = [Mode::Nl, Mode::Cr, Mode::Cw, Mode::Pr, Mode::Pw, Mode::Ex];

    /// The `LKM_*` value passed to libdlm.
    pub fn raw(self) -> u32 {
        match self {
            Mode::Nl => raw::LKM_NLMODE,
            Mode::Cr => raw::LKM_CRMODE,
            Mode::Cw => raw::LKM_CWMODE,
            Mode::Pr => raw::LKM_PRMODE,
            Mode::Pw => raw::LKM_PWMODE,
            Mode::Ex => raw::LKM_EXMODE,
        }
    }

    /// The short name the DLM tools print (`NL`, `CR`, `CW`, `PR`, `PW`, `EX`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Nl => "NL",
            Mode::Cr => "CR",
            Mode::Cw => "CW",
            Mode::Pr => "PR",
            Mode::Pw => "PW",
            Mode::Ex => "EX",
        }
    }

    /// Whether a lock in `self` can be granted while another holds `other` (the DLM's
    /// compatibility matrix, as in the kernel's `__dlm_compat_matrix`).
    pub fn compatible_with(self, other: Mode) -> bool {
        use Mode::*;
        match (self, other) {
            (Nl, _) | (_, Nl) => true,
            (Cr, Ex) | (Ex, Cr) => false,
            (Cr, _) | (_, Cr) => true,
            (Cw, Cw) => true,
            (Pr, Pr) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A mode name that is not one of NL, CR, CW, PR, PW, EX.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown lock mode {0:?} (expected one of NL, CR, CW, PR, PW, EX)")]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|mode| mode.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| UnknownMode(text.to_owned()))
    }
}

/// Request flags a caller may set; `LKF_CONVERT` and `LKF_ORPHAN` are set by
/// [`Lockspace::convert`](crate::Lockspace::convert) and
/// [`Lockspace::adopt_orphan`](crate::Lockspace::adopt_orphan) themselves, value blocks
/// (`LKF_VALBLK`, `LKF_IVVALBLK`) by [`Lockspace::publish_value`](crate::Lockspace::publish_value),
/// [`Lockspace::read_value`](crate::Lockspace::read_value) and
/// [`Lockspace::unlock_invalidating_value`](crate::Lockspace::unlock_invalidating_value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LockFlags(u32);

impl LockFlags {
    /// No flags: the request waits in the queue until it is granted.
    pub const NONE: LockFlags = LockFlags(0);
    /// Fail at once with [`Error::Busy`](crate::Error::Busy) instead of queueing.
    pub const NOQUEUE: LockFlags = LockFlags(raw::LKF_NOQUEUE);
    /// When the holder closes the lockspace or dies, the lock stays granted as an *orphan*
    /// (still protecting the resource) until adopted or purged.
    pub const PERSISTENT: LockFlags = LockFlags(raw::LKF_PERSISTENT);
    /// Grant a new NL request ahead of the queue (only valid for NL requests).
    pub const EXPEDITE: LockFlags = LockFlags(raw::LKF_EXPEDITE);
    /// Exclude the request from deadlock detection.
    pub const NODLCKWT: LockFlags = LockFlags(raw::LKF_NODLCKWT);
    /// Conversions only: queue the conversion behind waiting conversions.
    pub const QUECVT: LockFlags = LockFlags(raw::LKF_QUECVT);
    /// Conversions only: allow the DLM to demote the granted mode to resolve a deadlock.
    pub const CONVDEADLK: LockFlags = LockFlags(raw::LKF_CONVDEADLK);

    /// The `LKF_*` bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag of `other` is set here.
    pub fn contains(self, other: LockFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for LockFlags {
    type Output = LockFlags;

    fn bitor(self, other: LockFlags) -> LockFlags {
        LockFlags(self.0 | other.0)
    }
}

impl fmt::Display for LockFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(LockFlags, &str); 6] = [
            (LockFlags::NOQUEUE, "NOQUEUE"),
            (LockFlags::PERSISTENT, "PERSISTENT"),
            (LockFlags::EXPEDITE, "EXPEDITE"),
            (LockFlags::NODLCKWT, "NODLCKWT"),
            (LockFlags::QUECVT, "QUECVT"),
            (LockFlags::CONVDEADLK, "CONVDEADLK"),
        ];
        let names: Vec<&str> = NAMES
            .iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, name)| *name)
            .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join("|"))
        }
    }
}

/// A lock id (`lkid`) as the kernel assigns it; an adopted orphan keeps its original id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockId(pub(crate) u32);

impl LockId {
    /// The kernel's lock id.
    pub fn raw(self) -> u32 {
        self.0
    }
}

impl fmt::Display for LockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A resource name as it appears in messages: quoted text when it is printable UTF-8,
/// otherwise hex (`0x…`), since DLM resource names are arbitrary bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceName(pub Vec<u8>);

impl ResourceName {
    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&[u8]> for ResourceName {
    fn from(bytes: &[u8]) -> Self {
        ResourceName(bytes.to_vec())
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) if !text.is_empty() && !text.chars().any(char::is_control) => {
                write!(f, "{text:?}")
            }
            _ => {
                f.write_str("0x")?;
                self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
            }
        }
    }
}
