//! libvirt's configuration-file syntax, and the typed settings lockmgr reads with it.
//!
//! - [`parse`] and [`read_file`] read libvirt's syntax (`key = "string"`, `key = 1`,
//!   `key = [ "a", "b" ]`, `#` comments) exactly as libvirt 11.3's `virconf.c` does: the
//!   [`syntax`] module lists the grammar and every decision. Errors name the file, line and
//!   column: `/etc/libvirt/qemu-file.conf:12:18: expected a quoted string, an integer or a [list]
//!   after '=' for `socket_path`, found end of line`.
//! - [`ConfFile`] keeps the entries in order with their positions; its getters
//!   ([`ConfFile::get_bool`], [`ConfFile::get_string`], [`ConfFile::get_u32`],
//!   [`ConfFile::get_string_list`], ...) apply libvirt's typing rules.
//! - [`QemuConf`], [`FilePluginSettings`], [`DlmPluginSettings`] and [`LockdSettings`] are the
//!   settings themselves, with [`Warning`]s for keys that are probably mistakes (`lockManager`,
//!   unknown keys with a "did you mean", repeated keys).
//!
//! ```
//! use lockmgr_conf::{FilePluginSettings, parse};
//!
//! let conf = parse("file_lockspace_dirs = \"/var/lib/lockmgr/files\"\n", "qemu-file.conf")?;
//! let (settings, warnings) = FilePluginSettings::from_conf(&conf)?;
//! assert_eq!(settings, FilePluginSettings::default());
//! assert!(warnings[0].to_string().starts_with(
//!     "qemu-file.conf:1:1: unknown key `file_lockspace_dirs` is ignored (did you mean \
//!      `file_lockspace_dir`?)"
//! ));
//! # Ok::<(), lockmgr_conf::ConfError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod file;
mod position;
mod settings;
mod suggest;
pub mod syntax;
mod typed;
mod warning;

pub use error::{ConfError, ValueProblem};
pub use file::{MAX_FILE_SIZE, read_file};
pub use position::{Location, Position};
pub use settings::{DlmPluginSettings, FilePluginSettings, LockdSettings, QemuConf};
pub use syntax::{
    ConfFile, Entry, Found, ParseError, ParseErrorKind, RenderError, Value, parse, render,
};
pub use warning::{Warning, WarningKind};
