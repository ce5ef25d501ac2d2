//! Where something is in a config file.

use std::fmt;

/// A place in a config text: 1-based line and column.
///
/// Lines are counted at `'\n'` only, exactly as libvirt counts them (a lone `'\r'` ends a statement
/// for libvirt but does not start a new line number). Columns count Unicode characters from the
/// start of the line, so a tab is one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl Position {
    /// The first character of a text.
    pub const START: Position = Position { line: 1, column: 1 };
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A position in a named file (or other origin): displays as `origin:line:column`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file the text came from, as given to the parser (usually its path).
    pub origin: String,
    /// Where in that file.
    pub position: Position,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.origin, self.position)
    }
}
