//! Errors of reading a config file and of the values in it.

use std::io;
use std::path::PathBuf;

use crate::position::Location;
use crate::syntax::ParseError;

/// Anything that stops a config file from being used. Each displays as `file:line:col: message`
/// (or `file: message` when there is no position, e.g. an unreadable file).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfError {
    /// The text is not valid libvirt config syntax.
    #[error(transparent)]
    Syntax(#[from] ParseError),
    /// The file exists but cannot be read (permissions, a directory, an I/O error).
    #[error("{}: cannot read the file: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The file is bigger than [`MAX_FILE_SIZE`](crate::MAX_FILE_SIZE).
    #[error(
        "{}: the file is larger than {limit} bytes, lockmgr's limit for a config file",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The file is not UTF-8. libvirt itself would read the bytes as they are; lockmgr wants
    /// text it can show in messages and pass on as paths and names.
    #[error("{location}: the file is not valid UTF-8 here; config files must be UTF-8 text")]
    NotUtf8 {
        /// Where the first invalid byte is.
        location: Location,
    },
    /// A known key has a value of the wrong type, or out of range.
    #[error("{location}: `{key}`: {problem}")]
    BadValue {
        /// Where the value starts.
        location: Location,
        /// The key.
        key: String,
        /// What is wrong with the value.
        problem: ValueProblem,
    },
}

/// What is wrong with a value that parsed but is not what its key needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueProblem {
    /// A string where an integer belongs, and so on.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// What the key takes, e.g. "a boolean (0 or 1)".
        expected: &'static str,
        /// What the file has, e.g. "a string".
        found: &'static str,
    },
    /// A boolean that is neither 0 nor 1 (libvirt's `virConfGetValueBool` refuses those too).
    #[error("expected 0 or 1 (libvirt booleans are the integers 0 and 1), found {0}")]
    NotABoolean(i64),
    /// An integer outside the key's range.
    #[error("expected an integer from {min} to {max}, found {value}")]
    OutOfRange {
        /// The value in the file.
        value: i64,
        /// The smallest allowed value.
        min: i64,
        /// The largest allowed value.
        max: i64,
    },
    /// A list that should hold only strings holds something else.
    #[error("expected a list of strings, but element {position} is {found}")]
    ListElementNotString {
        /// 1-based position of the element in the list.
        position: usize,
        /// What that element is.
        found: &'static str,
    },
    /// A path key holds a relative path.
    #[error("{0:?} is a relative path; libvirt's daemons run in '/', so write the absolute path")]
    RelativePath(String),
    /// An empty string where a name or path belongs.
    #[error("the value is empty")]
    Empty,
    /// Anything else, explained in the message.
    #[error("{0}")]
    Invalid(String),
}
