//! Things in a config file that do not stop it from being used but are probably mistakes.

use std::fmt;

use crate::position::{Location, Position};

/// A problem worth telling the operator about; the file is still used. Displays as
/// `file:line:col: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where the offending key is.
    pub location: Location,
    /// What is wrong.
    pub kind: WarningKind,
}

/// What a [`Warning`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WarningKind {
    /// `lockManager` (or another spelling of `lock_manager`) in `qemu.conf`: libvirt ignores it
    /// without a word and loads its built-in `nop` driver.
    MisspelledLockManager {
        /// The key as written.
        key: String,
    },
    /// A key the plugin does not know; it is ignored.
    UnknownKey {
        /// The key as written.
        key: String,
        /// The known key it is closest to, if any is close.
        suggestion: Option<&'static str>,
        /// Every key this file knows.
        known_keys: &'static [&'static str],
    },
    /// A key set a second time; libvirt (and lockmgr) use only the first value.
    DuplicateKey {
        /// The key.
        key: String,
        /// Where the value that counts is.
        first: Position,
    },
}

impl fmt::Display for WarningKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WarningKind::MisspelledLockManager { key } => write!(
                f,
                "libvirt ignores `{key}` silently and loads the built-in nop driver; the key is \
                 `lock_manager`"
            ),
            WarningKind::UnknownKey {
                key,
                suggestion,
                known_keys,
            } => {
                write!(f, "unknown key `{key}` is ignored")?;
                if let Some(suggestion) = suggestion {
                    write!(f, " (did you mean `{suggestion}`?)")?;
                }
                write!(f, "; the known keys are {}", known_keys.join(", "))
            }
            WarningKind::DuplicateKey { key, first } => write!(
                f,
                "`{key}` is set again here and this value is ignored: libvirt and lockmgr use \
                 only the first one, at {first}"
            ),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.kind)
    }
}
