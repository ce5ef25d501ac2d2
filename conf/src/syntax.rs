//! libvirt's configuration syntax, as `src/util/virconf.c` (libvirt 11.3) reads it without flags.
//!
//! The grammar, checked against libvirt's own parser (`virConfReadFile` in `libvirt.so.0`, see
//! `conf/tests/libvirt_oracle.rs`):
//!
//! ```text
//! file       = { { blank | eol } ( comment | entry separator ) } ;  (but see "whole file" below)
//! entry      = key { blank } '=' { blank } value { blank } [ comment ] ;
//! separator  = { blank } ( ( eol | ';' ) { blank | eol } | end of file ) ;
//! comment    = '#' { any character but eol } ;
//! key        = ASCII letter { ASCII letter | digit | '_' } ;
//! value      = string | integer | list ;
//! integer    = [ '-' | '+' ] digit { digit } ;             (decimal, -(2^63-1) ..= 2^63-1)
//! string     = '"' { not '"', not eol } '"'
//!            | "'" { not "'", not eol } "'"
//!            | '"""' { any character } '"""' ;               (may span lines)
//! list       = '[' { blank | eol } [ value { blank | eol }
//!                  { ',' { blank | eol } value { blank | eol } } [ ',' { blank | eol } ] ] ']' ;
//! blank      = ' ' | '\t' ;
//! eol        = '\n' | '\r' ;
//! ```
//!
//! What that means in practice, each point observed on libvirt 11.3:
//!
//! - **No escape sequences.** A backslash is an ordinary character: `"C:\dir"` is the four
//!   characters `C:\dir`, and `"a\"b"` is the string `a\` followed by junk (a syntax error). A
//!   string that must hold both quote characters or a line break uses `"""triple quotes"""`
//!   (libvirt only recognises `"""` when at least 7 bytes remain in the file from the opening quote).
//! - **Keys** start with an ASCII letter, then letters, digits and `_`. No dots, dashes or a leading
//!   `_` (those are only for libvirt's VMX and LXC formats, which no `.conf` file uses).
//! - **A statement ends** at a line break, at `;` or at the end of the file; `a = 1; b = 2` is two
//!   entries. A value must start on the line of its `=`.
//! - **Comments** run from `#` to the end of the line, at the start of a statement or after a
//!   value. **Not inside a list**: libvirt rejects `[ "a", # note` with "expecting a value".
//! - **Lists** may span lines, may end with a trailing comma, may be empty, and may hold integers
//!   and nested lists (no getter of libvirt accepts those, but the parser does).
//! - **Integers** are decimal with an optional `-` or `+`; leading zeros are decimal too
//!   (`010` is ten). libvirt fails with "numeric overflow" beyond ±(2^63−1); so do we.
//! - **Duplicate keys** are all kept in order; every getter of libvirt (`virConfGetValue`) returns
//!   the **first** one, and so does [`ConfFile::get`].
//! - **Whole file.** An empty file is valid; a non-empty file that holds only blanks and line breaks
//!   is rejected by libvirt ("expecting a name"), and by this parser with a clearer message.
//!
//! Where this parser is stricter than libvirt (each documented on its error): text must be UTF-8
//! (libvirt takes any bytes; see [`read_file`](crate::read_file)), a NUL character inside a string
//! is an error (libvirt silently cuts the string there), and lists nest at most [`MAX_LIST_DEPTH`]
//! levels (libvirt recurses without limit). Errors point at the offending character, so their line
//! is libvirt's too, except for an unclosed list or `"""` string: lockmgr points at its opening
//! bracket or quotes, libvirt at the end of the file. Integers keep no sign of their own, so
//! `-0` is simply 0 (libvirt types it as signed and its boolean and unsigned getters refuse it).
//!
//! The parts, one file each: [`Value`], [`Entry`] and [`ConfFile`] here; the errors in `error`;
//! the character-level cursor in `cursor`; the parser in `parser`; the renderer in `render`.

mod cursor;
mod error;
mod parser;
mod render;

use crate::position::{Location, Position};

pub use error::{Found, ParseError, ParseErrorKind};
pub use parser::parse;
pub use render::{RenderError, render};

use render::write_value;

/// How deeply lists may nest (`[[[...]]]`) before the parser gives up, so that hostile input cannot
/// exhaust the stack. No libvirt setting takes a nested list at all.
pub const MAX_LIST_DEPTH: usize = 64;

/// A value on the right of `=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A quoted string, quotes removed (there are no escape sequences to undo).
    String(String),
    /// A decimal integer. libvirt's own range is `-i64::MAX..=i64::MAX`.
    Integer(i64),
    /// `[ ... ]`: strings, integers or lists.
    List(Vec<Value>),
}

impl Value {
    /// What kind of value this is, for messages: "a string", "an integer" or "a list".
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::List(_) => "a list",
        }
    }

    /// This value in libvirt's syntax (`"text"`, `-5`, `[ "a", "b" ]`), as [`render`] writes it.
    pub fn to_text(&self) -> Result<String, RenderError> {
        let mut text = String::new();
        write_value(self, 0, &mut text)?;
        Ok(text)
    }
}

/// One `key = value` statement of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, e.g. `lock_manager`.
    pub key: String,
    /// The value.
    pub value: Value,
    /// Where the key starts: unknown-key warnings point here.
    pub key_position: Position,
    /// Where the value starts: bad-value errors point here.
    pub value_position: Position,
}

/// A parsed config file: its entries in file order (comments are dropped), and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfFile {
    origin: String,
    entries: Vec<Entry>,
}

impl ConfFile {
    /// The name given to [`parse`] (usually the file's path); it starts every message.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Every entry, in file order, duplicates included.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry libvirt would use for `key`: the **first** one, as `virConfGetValue` returns it.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.key == key)
    }

    /// Every entry for `key`, in file order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |entry| entry.key == key)
    }

    /// `position` in this file, for messages.
    pub fn location(&self, position: Position) -> Location {
        Location {
            origin: self.origin.clone(),
            position,
        }
    }

    /// The whole file in libvirt's syntax, one `key = value` line per entry (comments are gone).
    /// Parsing the result gives back the same keys and values.
    pub fn to_text(&self) -> Result<String, RenderError> {
        render(
            self.entries
                .iter()
                .map(|entry| (entry.key.as_str(), &entry.value)),
        )
    }
}

#[cfg(test)]
mod tests;
