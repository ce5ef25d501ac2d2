//! Broken plugin: drvInit fails (as a plugin whose config cannot be read would).

mod common;

use common::{Init, WithInit};
use lockmgr::{Error, InitArgs, Result};

/// Fails to initialise.
#[derive(Debug)]
pub struct Unreadable;

impl Init for Unreadable {
    fn init(args: &InitArgs) -> Result<()> {
        let path = args
            .config_path
            .as_deref()
            .map_or("(none)".into(), |p| p.display().to_string());
        Err(Error::config(format!(
            "cannot read {path}: simulated permission denied"
        )))
    }
}

lockmgr::export_lock_driver!(WithInit<Unreadable>);
