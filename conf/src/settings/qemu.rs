//! The lock-manager part of libvirt's `qemu.conf`.

use std::path::Path;

use crate::error::{ConfError, ValueProblem};
use crate::syntax::ConfFile;
use crate::warning::{Warning, WarningKind};

/// What lockmgr needs from `/etc/libvirt/qemu.conf`: which lock manager libvirt loads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QemuConf {
    /// `lock_manager = "NAME"`: libvirt loads `<plugin dir>/NAME.so`. `None` when the key is
    /// absent, and then libvirt uses its built-in `nop` driver (see
    /// [`effective_lock_manager`](Self::effective_lock_manager)).
    pub lock_manager: Option<String>,
}

impl QemuConf {
    /// Where a privileged libvirt daemon reads it; there is no override.
    pub const PATH: &'static str = "/etc/libvirt/qemu.conf";

    /// The name libvirt ends up using: `lock_manager`, or `"nop"` without one.
    pub fn effective_lock_manager(&self) -> &str {
        self.lock_manager.as_deref().unwrap_or("nop")
    }

    /// Reads `lock_manager` from a parsed `qemu.conf`.
    ///
    /// Warns about `lockManager` and other spellings of it (`LOCK_MANAGER`, `lockmanager`), which
    /// libvirt ignores without a word, and about a second `lock_manager` (libvirt uses the first).
    /// Other keys are libvirt's business (there are hundreds) and are not checked. Errors: a
    /// `lock_manager` that is not a string or is empty (libvirt fails to start on both).
    pub fn from_conf(conf: &ConfFile) -> Result<(Self, Vec<Warning>), ConfError> {
        let mut warnings = Vec::new();
        let mut first_lock_manager = None;
        for entry in conf.entries() {
            let kind = if entry.key == "lock_manager" {
                match first_lock_manager {
                    None => {
                        first_lock_manager = Some(entry.key_position);
                        continue;
                    }
                    Some(first) => WarningKind::DuplicateKey {
                        key: entry.key.clone(),
                        first,
                    },
                }
            } else if is_other_spelling_of_lock_manager(&entry.key) {
                WarningKind::MisspelledLockManager {
                    key: entry.key.clone(),
                }
            } else {
                continue;
            };
            warnings.push(Warning {
                location: conf.location(entry.key_position),
                kind,
            });
        }
        let lock_manager = conf.string_entry("lock_manager")?;
        if let Some((entry, "")) = lock_manager {
            let problem = ValueProblem::Invalid(
                "an empty name makes libvirt look for the plugin `<plugin dir>/.so` and fail to \
                 start; remove the line to get the built-in nop driver"
                    .to_owned(),
            );
            return Err(conf.bad_value(entry, problem));
        }
        let settings = QemuConf {
            lock_manager: lock_manager.map(|(_, name)| name.to_owned()),
        };
        Ok((settings, warnings))
    }

    /// Reads `lock_manager` from the `qemu.conf` at `path` (usually [`QemuConf::PATH`]). A missing
    /// file gives the defaults, as it does for libvirt.
    pub fn from_file(path: &Path) -> Result<(Self, Vec<Warning>), ConfError> {
        super::settings_from_file(path, Self::from_conf)
    }
}

/// `lockManager`, `LockManager`, `LOCK_MANAGER`, `lockmanager`, `lock__manager`: the same letters
/// in another case or with other underscores, but not the one key libvirt reads.
fn is_other_spelling_of_lock_manager(key: &str) -> bool {
    let mut letters = key.bytes().filter(|byte| *byte != b'_');
    key != "lock_manager"
        && b"lockmanager".iter().all(|expected| {
            letters
                .next()
                .is_some_and(|byte| byte.eq_ignore_ascii_case(expected))
        })
        && letters.next().is_none()
}
