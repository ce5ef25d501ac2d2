//! What a host-side call returns when it fails, with the error the plugin reported.

use std::fmt;
use std::path::PathBuf;

use crate::abi;

/// An error a plugin reported while a callback failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedError {
    /// `virErrorDomain` (42 = "Lock Driver error").
    pub domain: i32,
    /// `virErrorNumber` (87 = "resource busy").
    pub code: i32,
    /// The message, as the plugin formatted it.
    pub message: String,
}

impl ReportedError {
    /// The message as `virsh` shows it: libvirt prefixes a few codes with their meaning.
    pub fn rendered(&self) -> String {
        let prefix = match self.code {
            1 => "internal error: ",
            9 => "operation failed: ",
            29 => "operation forbidden: ",
            38 => "",
            67 => "unsupported configuration: ",
            87 => "resource busy: ",
            _ => "",
        };
        // Errors relayed through libvirt's RPC (lockd → virtlockd) already carry the prefix.
        if self.message.starts_with(prefix) {
            return self.message.clone();
        }
        format!("{prefix}{}", self.message)
    }
}

/// Why a host-side call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// `access(R_OK)` failed ("Plugin … not accessible").
    NotAccessible {
        /// The plugin path.
        path: PathBuf,
        /// The errno text.
        reason: String,
    },
    /// `dlopen` failed ("Failed to load plugin …").
    Load {
        /// The plugin path.
        path: PathBuf,
        /// `dlerror()`.
        reason: String,
    },
    /// `dlsym("virLockDriverImpl")` failed.
    MissingSymbol {
        /// The plugin path.
        path: PathBuf,
    },
    /// The table has a NULL slot where libvirt needs a callback.
    NullCallback {
        /// The slot name, e.g. `drvAcquire`.
        slot: &'static str,
    },
    /// A callback returned -1.
    Callback {
        /// The slot name.
        slot: &'static str,
        /// The error the plugin reported, if it reported one.
        reported: Option<ReportedError>,
    },
    /// Host-side misuse or an OS failure around a call.
    Host(String),
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::NotAccessible { path, reason } => {
                write!(f, "Plugin {} not accessible: {reason}", path.display())
            }
            HostError::Load { path, reason } => {
                write!(f, "Failed to load plugin {}: {reason}", path.display())
            }
            HostError::MissingSymbol { path } => write!(
                f,
                "Missing plugin initialization symbol '{}' in {}",
                abi::DRIVER_SYMBOL,
                path.display()
            ),
            HostError::NullCallback { slot } => {
                write!(f, "Missing '{slot}' field in lock manager driver")
            }
            HostError::Callback {
                slot,
                reported: Some(err),
            } => {
                write!(f, "{slot} failed: {}", err.rendered())
            }
            HostError::Callback {
                slot,
                reported: None,
            } => write!(
                f,
                "{slot} failed without reporting an error (libvirt would say: An error occurred, \
                 but the cause is unknown)"
            ),
            HostError::Host(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for HostError {}

/// Result of host-side calls.
pub type HostResult<T> = Result<T, HostError>;
