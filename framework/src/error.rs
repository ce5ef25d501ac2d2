//! Errors a plugin returns, and the libvirt error code each one is reported with.

use std::fmt;

/// The libvirt error code (`virErrorNumber`) an [`Error`] is reported with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// `VIR_ERR_INTERNAL_ERROR` (1): bugs, panics.
    Internal,
    /// `VIR_ERR_OPERATION_FAILED` (9): a generic failure.
    OperationFailed,
    /// `VIR_ERR_INVALID_ARG` (8): a bad argument from the caller.
    InvalidArg,
    /// `VIR_ERR_OPERATION_DENIED` (29): permission.
    OperationDenied,
    /// `VIR_ERR_SYSTEM_ERROR` (38): an errno failure.
    SystemError,
    /// `VIR_ERR_CONFIG_UNSUPPORTED` (67): bad config or an unsupported request.
    ConfigUnsupported,
    /// `VIR_ERR_RESOURCE_BUSY` (87): the lock is held elsewhere.
    ResourceBusy,
}

impl ErrorCode {
    /// The numeric `virErrorNumber`.
    pub fn as_raw(self) -> i32 {
        match self {
            ErrorCode::Internal => 1,
            ErrorCode::InvalidArg => 8,
            ErrorCode::OperationFailed => 9,
            ErrorCode::OperationDenied => 29,
            ErrorCode::SystemError => 38,
            ErrorCode::ConfigUnsupported => 67,
            ErrorCode::ResourceBusy => 87,
        }
    }
}

/// An error a plugin callback returns; the framework reports it into libvirt and returns -1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: ErrorCode,
    message: String,
}

/// The result type of every [`crate::LockDriver`] method.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with an explicit code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }
    /// The resource is held by someone else (`resource busy: …` in virsh).
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceBusy, message)
    }
    /// Bad configuration, or a request this plugin does not support.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ConfigUnsupported, message)
    }
    /// A bad argument from libvirt (unknown key, type or flag).
    pub fn invalid_arg(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArg, message)
    }
    /// A bug or an impossible state.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    /// A failure that is neither of the above.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::OperationFailed, message)
    }
    /// An I/O failure while doing `what` (e.g. "open /var/lib/x").
    pub fn system(what: impl fmt::Display, err: &std::io::Error) -> Self {
        Self::new(ErrorCode::SystemError, format!("{what}: {err}"))
    }
    /// The libvirt error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
    /// The message, without any prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
