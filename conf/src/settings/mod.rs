//! Typed settings read from config files: `qemu.conf`, lockmgr's plugin files and libvirt's
//! `qemu-lockd.conf`.
//!
//! Every type here is plain data with a [`Default`], built by `from_conf` (from a parsed file) or
//! `from_file` (a missing file gives the defaults). Both return the settings together with
//! [`Warning`]s for keys that are probably mistakes; a known key with a bad value is an error.

mod lockd;
mod plugins;
mod qemu;

pub use lockd::LockdSettings;
pub use plugins::{DlmPluginSettings, FilePluginSettings};
pub use qemu::QemuConf;

use std::collections::HashMap;
use std::path::Path;

use crate::error::ConfError;
use crate::file::read_file;
use crate::position::Position;
use crate::suggest::closest_key;
use crate::syntax::ConfFile;
use crate::warning::{Warning, WarningKind};

/// Warns about each key not in `known_keys`, and about each repeat of a known key.
fn check_keys(conf: &ConfFile, known_keys: &'static [&'static str], warnings: &mut Vec<Warning>) {
    let mut first_seen: HashMap<&str, Position> = HashMap::new();
    for entry in conf.entries() {
        let kind = if !known_keys.contains(&entry.key.as_str()) {
            WarningKind::UnknownKey {
                key: entry.key.clone(),
                suggestion: closest_key(&entry.key, known_keys),
                known_keys,
            }
        } else if let Some(first) = first_seen.get(entry.key.as_str()) {
            WarningKind::DuplicateKey {
                key: entry.key.clone(),
                first: *first,
            }
        } else {
            first_seen.insert(&entry.key, entry.key_position);
            continue;
        };
        warnings.push(Warning {
            location: conf.location(entry.key_position),
            kind,
        });
    }
}

/// `auto_disk_leases` (default true) and `require_lease_for_disks` (default: the opposite of
/// `auto_disk_leases`), the way libvirt's lockd plugin reads them.
fn disk_lease_keys(conf: &ConfFile) -> Result<(bool, bool), ConfError> {
    let auto_disk_leases = conf.get_bool("auto_disk_leases")?.unwrap_or(true);
    let require_lease_for_disks = conf
        .get_bool("require_lease_for_disks")?
        .unwrap_or(!auto_disk_leases);
    Ok((auto_disk_leases, require_lease_for_disks))
}

/// What every `from_conf` and `from_file` returns.
type SettingsAndWarnings<T> = Result<(T, Vec<Warning>), ConfError>;

/// Reads `path` with `from_conf`, or returns the defaults when the file does not exist.
fn settings_from_file<T: Default>(
    path: &Path,
    from_conf: fn(&ConfFile) -> SettingsAndWarnings<T>,
) -> SettingsAndWarnings<T> {
    match read_file(path)? {
        Some(conf) => from_conf(&conf),
        None => Ok((T::default(), Vec::new())),
    }
}
