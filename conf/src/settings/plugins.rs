//! Settings of lockmgr's own plugins: `qemu-file.conf` and `qemu-dlm.conf`.

use std::path::{Path, PathBuf};

use crate::error::{ConfError, ValueProblem};
use crate::syntax::ConfFile;
use crate::warning::Warning;

use super::{check_keys, disk_lease_keys, settings_from_file};

/// The longest path a Unix socket address holds: `sun_path` is 108 bytes with the final NUL.
const MAX_SOCKET_PATH_LENGTH: usize = 107;

/// `file.so`'s settings, from `/etc/libvirt/qemu-file.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePluginSettings {
    /// `auto_disk_leases` (default 1): lock every disk of a domain automatically.
    pub auto_disk_leases: bool,
    /// `require_lease_for_disks` (default: the opposite of `auto_disk_leases`, as in libvirt's
    /// lockd): refuse to start a domain with writable exclusive disks but no lease.
    pub require_lease_for_disks: bool,
    /// `file_lockspace_dir` (default unset): lock `<dir>/<sha256 hex of the disk path>`, the names
    /// virtlockd uses; unset means the disk file itself is locked.
    pub file_lockspace_dir: Option<PathBuf>,
    /// `socket_path` (default [`FilePluginSettings::DEFAULT_SOCKET_PATH`]): where `lockmgrd`
    /// listens for this plugin.
    pub socket_path: PathBuf,
    /// `state_dir` (default [`FilePluginSettings::DEFAULT_STATE_DIR`]): where `lockmgrd` keeps
    /// its lock table, to take the locks of running domains back after a restart.
    pub state_dir: PathBuf,
}

impl FilePluginSettings {
    /// The file libvirt passes to `file.so`.
    pub const PATH: &'static str = "/etc/libvirt/qemu-file.conf";
    /// The default `socket_path`.
    pub const DEFAULT_SOCKET_PATH: &'static str = "/run/lockmgr/file.sock";
    /// The default `state_dir`.
    pub const DEFAULT_STATE_DIR: &'static str = "/run/lockmgr/file-state";
    /// Every key the file knows.
    pub const KEYS: &'static [&'static str] = &plugin_keys("file_lockspace_dir");

    /// Reads the settings from a parsed file; see [`FilePluginSettings::KEYS`]. Unknown and
    /// repeated keys are warnings; a bad value (wrong type, a boolean that is not 0 or 1, a relative
    /// path, a socket path too long for a Unix socket) is an error.
    pub fn from_conf(conf: &ConfFile) -> Result<(Self, Vec<Warning>), ConfError> {
        let mut warnings = Vec::new();
        check_keys(conf, Self::KEYS, &mut warnings);
        let (auto_disk_leases, require_lease_for_disks) = disk_lease_keys(conf)?;
        let file_lockspace_dir = conf.get_absolute_path("file_lockspace_dir")?;
        let (socket_path, state_dir) =
            daemon_paths(conf, Self::DEFAULT_SOCKET_PATH, Self::DEFAULT_STATE_DIR)?;
        let settings = FilePluginSettings {
            auto_disk_leases,
            require_lease_for_disks,
            file_lockspace_dir,
            socket_path,
            state_dir,
        };
        Ok((settings, warnings))
    }

    /// Reads the file at `path`; a missing file gives the defaults.
    pub fn from_file(path: &Path) -> Result<(Self, Vec<Warning>), ConfError> {
        settings_from_file(path, Self::from_conf)
    }
}

impl Default for FilePluginSettings {
    fn default() -> Self {
        FilePluginSettings {
            auto_disk_leases: true,
            require_lease_for_disks: false,
            file_lockspace_dir: None,
            socket_path: Self::DEFAULT_SOCKET_PATH.into(),
            state_dir: Self::DEFAULT_STATE_DIR.into(),
        }
    }
}

/// `dlm.so`'s settings, from `/etc/libvirt/qemu-dlm.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlmPluginSettings {
    /// `auto_disk_leases` (default 1): lock every disk of a domain automatically.
    pub auto_disk_leases: bool,
    /// `require_lease_for_disks` (default: the opposite of `auto_disk_leases`): refuse to start a
    /// domain with writable exclusive disks but no lease.
    pub require_lease_for_disks: bool,
    /// `lockspace_name` (default `"libvirt"`): the DLM lockspace, the same on every host of the
    /// cluster. 1 to 64 bytes (`DLM_LOCKSPACE_LEN`) of ASCII letters, digits, `_`, `-`, `.`, `+`.
    pub lockspace_name: String,
    /// `socket_path` (default [`DlmPluginSettings::DEFAULT_SOCKET_PATH`]): where `lockmgrd`
    /// listens for this plugin.
    pub socket_path: PathBuf,
    /// `state_dir` (default [`DlmPluginSettings::DEFAULT_STATE_DIR`]): where `lockmgrd` keeps its
    /// lock table, to adopt its orphan locks after a restart.
    pub state_dir: PathBuf,
}

impl DlmPluginSettings {
    /// The file libvirt passes to `dlm.so`.
    pub const PATH: &'static str = "/etc/libvirt/qemu-dlm.conf";
    /// The default `lockspace_name`.
    pub const DEFAULT_LOCKSPACE_NAME: &'static str = "libvirt";
    /// The longest lockspace name the DLM takes (`DLM_LOCKSPACE_LEN`).
    pub const MAX_LOCKSPACE_NAME_LENGTH: usize = 64;
    /// The default `socket_path`.
    pub const DEFAULT_SOCKET_PATH: &'static str = "/run/lockmgr/dlm.sock";
    /// The default `state_dir`.
    pub const DEFAULT_STATE_DIR: &'static str = "/run/lockmgr/dlm-state";
    /// Every key the file knows.
    pub const KEYS: &'static [&'static str] = &plugin_keys("lockspace_name");

    /// Reads the settings from a parsed file; see [`DlmPluginSettings::KEYS`]. Unknown and
    /// repeated keys are warnings; a bad value is an error.
    pub fn from_conf(conf: &ConfFile) -> Result<(Self, Vec<Warning>), ConfError> {
        let mut warnings = Vec::new();
        check_keys(conf, Self::KEYS, &mut warnings);
        let (auto_disk_leases, require_lease_for_disks) = disk_lease_keys(conf)?;
        let lockspace_name =
            lockspace_name(conf)?.unwrap_or_else(|| Self::DEFAULT_LOCKSPACE_NAME.to_owned());
        let (socket_path, state_dir) =
            daemon_paths(conf, Self::DEFAULT_SOCKET_PATH, Self::DEFAULT_STATE_DIR)?;
        let settings = DlmPluginSettings {
            auto_disk_leases,
            require_lease_for_disks,
            lockspace_name,
            socket_path,
            state_dir,
        };
        Ok((settings, warnings))
    }

    /// Reads the file at `path`; a missing file gives the defaults.
    pub fn from_file(path: &Path) -> Result<(Self, Vec<Warning>), ConfError> {
        settings_from_file(path, Self::from_conf)
    }
}

impl Default for DlmPluginSettings {
    fn default() -> Self {
        DlmPluginSettings {
            auto_disk_leases: true,
            require_lease_for_disks: false,
            lockspace_name: Self::DEFAULT_LOCKSPACE_NAME.to_owned(),
            socket_path: Self::DEFAULT_SOCKET_PATH.into(),
            state_dir: Self::DEFAULT_STATE_DIR.into(),
        }
    }
}

/// The keys of both plugin files: the disk-lease pair, the plugin's `own` key, then where
/// `lockmgrd` listens and keeps its lock table.
const fn plugin_keys(own: &'static str) -> [&'static str; 5] {
    [
        "auto_disk_leases",
        "require_lease_for_disks",
        own,
        "socket_path",
        "state_dir",
    ]
}

/// `socket_path` and `state_dir`, each with the plugin's default when the file does not set it.
fn daemon_paths(
    conf: &ConfFile,
    default_socket_path: &str,
    default_state_dir: &str,
) -> Result<(PathBuf, PathBuf), ConfError> {
    let socket_path = socket_path(conf)?.unwrap_or_else(|| default_socket_path.into());
    let state_dir = conf
        .get_absolute_path("state_dir")?
        .unwrap_or_else(|| default_state_dir.into());
    Ok((socket_path, state_dir))
}

/// `socket_path`: absolute, and short enough for a Unix socket address.
fn socket_path(conf: &ConfFile) -> Result<Option<PathBuf>, ConfError> {
    let Some((entry, path)) = conf.absolute_path_entry("socket_path")? else {
        return Ok(None);
    };
    let length = path.as_os_str().len();
    if length > MAX_SOCKET_PATH_LENGTH {
        let problem = ValueProblem::Invalid(format!(
            "the path is {length} bytes long, but a Unix socket path holds at most \
             {MAX_SOCKET_PATH_LENGTH}"
        ));
        return Err(conf.bad_value(entry, problem));
    }
    Ok(Some(path))
}

/// `lockspace_name`: becomes the device `/dev/misc/dlm_<name>` and a configfs directory, so only
/// a conservative character set, and at most `DLM_LOCKSPACE_LEN` bytes.
fn lockspace_name(conf: &ConfFile) -> Result<Option<String>, ConfError> {
    let Some((entry, name)) = conf.string_entry("lockspace_name")? else {
        return Ok(None);
    };
    let max_length = DlmPluginSettings::MAX_LOCKSPACE_NAME_LENGTH;
    let is_allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+');
    let problem = if name.is_empty() {
        ValueProblem::Empty
    } else if name.len() > max_length {
        ValueProblem::Invalid(format!(
            "the name is {} bytes long; the DLM takes at most {max_length} (DLM_LOCKSPACE_LEN)",
            name.len()
        ))
    } else if let Some(bad) = name.chars().find(|c| !is_allowed(*c)) {
        ValueProblem::Invalid(format!(
            "{bad:?} is not allowed in a lockspace name: use ASCII letters, digits, '_', '-', '.' \
             and '+'"
        ))
    } else if name == "." || name == ".." {
        ValueProblem::Invalid(format!("{name:?} is not usable as a lockspace name"))
    } else {
        return Ok(Some(name.to_owned()));
    };
    Err(conf.bad_value(entry, problem))
}
