//! Plugin profiles and the plugins of a run: the profile guessed from a plugin's file name or
//! named (`--plugin file=/some/where/x.so`), and the default columns.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::daemons::sanlock::DEFAULT_SANLOCK;

/// What the harness knows about a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Locks nothing, needs nothing.
    Nop,
    /// libvirt's lockd.so + virtlockd.
    Lockd,
    /// lockmgr's file.so + lockmgrd.
    File,
    /// lockmgr's dlm.so + lockmgrd with the DLM backend.
    Dlm,
    /// libvirt's sanlock.so + a real sanlock daemon without a watchdog.
    Sanlock,
    /// Anything else: no daemon, an absent config.
    Generic,
}

impl Profile {
    /// Every profile name, as used in `--plugin NAME=PATH` and `by_plugin.NAME`.
    pub const KNOWN: [&'static str; 6] = ["nop", "lockd", "file", "dlm", "sanlock", "generic"];

    /// The profile called `name`.
    pub fn from_name(name: &str) -> Option<Profile> {
        Some(match name {
            "nop" => Profile::Nop,
            "lockd" => Profile::Lockd,
            "file" => Profile::File,
            "dlm" => Profile::Dlm,
            "sanlock" => Profile::Sanlock,
            "generic" => Profile::Generic,
            _ => return None,
        })
    }

    /// The profile a plugin file name implies (`libfile.so` → file; cargo's
    /// `libdlm_plugin.so` → dlm).
    pub fn discover(path: &Path) -> Profile {
        let name = libvirt_name(path);
        Profile::from_name(&name)
            .or_else(|| name.strip_suffix("_plugin").and_then(Profile::from_name))
            .unwrap_or(Profile::Generic)
    }

    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Nop => "nop",
            Profile::Lockd => "lockd",
            Profile::File => "file",
            Profile::Dlm => "dlm",
            Profile::Sanlock => "sanlock",
            Profile::Generic => "generic",
        }
    }

    /// The daemon the harness starts for this profile.
    pub fn daemon(self) -> Option<&'static str> {
        match self {
            Profile::Lockd => Some("virtlockd"),
            Profile::File | Profile::Dlm => Some("lockmgrd"),
            Profile::Sanlock => Some("sanlock"),
            _ => None,
        }
    }

    /// Whether `file_lockspace_dir` means something to the plugin (bench modes).
    pub fn has_lockspace_mode(self) -> bool {
        matches!(self, Profile::Lockd | Profile::File)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name libvirt would select the plugin by: the file stem without cargo's `lib` prefix.
pub fn libvirt_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned());
    stem.strip_prefix("lib").unwrap_or(&stem).to_owned()
}

/// A plugin given on the command line: `PATH`, `NAME` (libvirt's lookup) or `PROFILE=PATH`.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The column label (the profile name, made unique).
    pub label: String,
    /// The `.so`.
    pub path: PathBuf,
    /// Which daemon and config it gets.
    pub profile: Profile,
}

impl PluginSpec {
    /// Parses one `--plugin` value.
    pub fn parse(arg: &str) -> PluginSpec {
        let (profile, location) = match arg.split_once('=') {
            Some((name, rest)) if Profile::from_name(name).is_some() => {
                (Profile::from_name(name), rest)
            }
            _ => (None, arg),
        };
        let path = lockmgr::host::locate(location);
        let profile = profile.unwrap_or_else(|| Profile::discover(&path));
        let label = match profile {
            Profile::Generic => libvirt_name(&path),
            known => known.as_str().to_owned(),
        };
        PluginSpec {
            label,
            path,
            profile,
        }
    }

    /// Makes labels unique by appending `-2`, `-3`, … to repeats.
    pub fn dedupe_labels(specs: &mut [PluginSpec]) {
        let mut seen: Vec<String> = Vec::new();
        for spec in specs.iter_mut() {
            let mut label = spec.label.clone();
            let mut n = 2;
            while seen.contains(&label) {
                label = format!("{}-{n}", spec.label);
                n += 1;
            }
            seen.push(label.clone());
            spec.label = label;
        }
    }
}

/// The plugins used when none is named: nop and file built beside loader-test (cargo's
/// `lib*.so`), and libvirt's installed lockd.so.
pub fn default_plugins() -> Vec<PluginSpec> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
        .unwrap_or_default();
    let mut found = Vec::new();
    for name in ["nop", "file"] {
        if let Some(path) = [format!("lib{name}.so"), format!("{name}.so")]
            .iter()
            .map(|f| exe_dir.join(f))
            .find(|p| p.is_file())
        {
            found.push(PluginSpec::parse(&format!("{name}={}", path.display())));
        }
    }
    let lockd = Path::new(lockmgr::host::DEFAULT_PLUGIN_DIR).join("lockd.so");
    if lockd.is_file() {
        found.push(PluginSpec::parse(&format!("lockd={}", lockd.display())));
    }
    // libvirt's sanlock.so, when both it and the sanlock daemon are installed.
    let sanlock = Path::new(lockmgr::host::DEFAULT_PLUGIN_DIR).join("sanlock.so");
    if sanlock.is_file() && Path::new(DEFAULT_SANLOCK).is_file() {
        found.push(PluginSpec::parse(&format!("sanlock={}", sanlock.display())));
    }
    found
}

/// The plugins named on the command line, or the defaults; labels made unique.
pub fn plugins_from_args(args: &[String]) -> Result<Vec<PluginSpec>, String> {
    let mut specs: Vec<PluginSpec> = if args.is_empty() {
        default_plugins()
    } else {
        args.iter().map(|a| PluginSpec::parse(a)).collect()
    };
    if specs.is_empty() {
        return Err(
            "no plugin given and none found beside loader-test or in libvirt's plugin directory: \
             pass --plugin PATH"
                .into(),
        );
    }
    for spec in &specs {
        if !spec.path.is_file() {
            return Err(format!("plugin {} does not exist", spec.path.display()));
        }
    }
    PluginSpec::dedupe_labels(&mut specs);
    Ok(specs)
}
