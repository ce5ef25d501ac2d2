//! The parser's errors: what it found ([`Found`]), where ([`ParseError`]) and what is wrong
//! ([`ParseErrorKind`], with libvirt's own message on each variant), and the hints some of them
//! add.

use std::fmt;

use super::MAX_LIST_DEPTH;
use super::cursor::{is_blank, is_eol};
use crate::position::Location;

/// What the parser found where it expected something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A character (shown quoted and escaped, e.g. `'x'` or `'\u{b}'`).
    Char(char),
    /// A line break (`'\n'` or `'\r'`).
    EndOfLine,
    /// The end of the text.
    EndOfFile,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Char(c) => write!(f, "{c:?}"),
            Found::EndOfLine => f.write_str("end of line"),
            Found::EndOfFile => f.write_str("end of file"),
        }
    }
}

/// A syntax error: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {kind}")]
pub struct ParseError {
    /// File, line and column of the offending character (for an unclosed string or list: of its
    /// opening quote or bracket).
    pub location: Location,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

/// What is wrong with the text. The comment on each variant gives libvirt's own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// libvirt: "expecting a name", for a non-empty file of only blanks and line breaks.
    #[error(
        "the file holds only blanks and line breaks, which libvirt rejects (\"expecting a name\"): \
         delete the file or add a '#' comment"
    )]
    OnlyBlanks,
    /// libvirt: "expecting a name".
    #[error("expected a key (an ASCII letter, then letters, digits or '_'), found {found}")]
    ExpectedKey {
        /// What is there instead.
        found: Found,
    },
    /// libvirt: "expecting an assignment".
    #[error("expected '=' after the key `{key}`, found {found}")]
    ExpectedEquals {
        /// The key just read.
        key: String,
        /// What is there instead.
        found: Found,
    },
    /// libvirt: "expecting a value".
    #[error(
        "expected a quoted string, an integer or a [list] after '=' for `{key}`, found \
         {found}{hint}"
    )]
    ExpectedValue {
        /// The key whose value is missing.
        key: String,
        /// What is there instead.
        found: Found,
        /// Empty, or a hint on what was probably meant (a bare `yes`, an unquoted path).
        hint: &'static str,
    },
    /// libvirt: "expecting a value", inside a list.
    #[error(
        "expected a quoted string, an integer or a [list] as the next element of the list of \
         `{key}`, found {found}"
    )]
    ExpectedListElement {
        /// The key whose list this is.
        key: String,
        /// What is there instead.
        found: Found,
    },
    /// libvirt: "expecting a separator in list".
    #[error(
        "expected ',' or ']' after an element of the list of `{key}`, found {found}{}",
        backslash_hint(.after_backslash)
    )]
    ExpectedListSeparator {
        /// The key whose list this is.
        key: String,
        /// What is there instead.
        found: Found,
        /// The string just read ended with a backslash: its author probably meant an escape.
        after_backslash: bool,
    },
    /// libvirt: "expecting a value" or "expecting a separator in list".
    #[error(
        "comments are not allowed inside a list (libvirt rejects them): move the comment above \
         `{key}`"
    )]
    CommentInList {
        /// The key whose list this is.
        key: String,
    },
    /// libvirt: "list is not closed with ]" or "expecting a value" at the end of the file.
    #[error("the list of `{key}` that opens here is never closed: the file ends before its ']'")]
    UnclosedList {
        /// The key whose list this is.
        key: String,
    },
    /// No libvirt equivalent: libvirt recurses without limit.
    #[error("the value of `{key}` nests lists deeper than {MAX_LIST_DEPTH} levels")]
    ListTooDeep {
        /// The key whose list this is.
        key: String,
    },
    /// libvirt: "unterminated string".
    #[error(
        "the string of `{key}` that opens here is not closed on its line: add the closing {quote:?} \
         (libvirt strings cannot span lines, except \"\"\"triple-quoted\"\"\" ones)"
    )]
    UnterminatedString {
        /// The key whose value this is.
        key: String,
        /// The opening quote character.
        quote: char,
    },
    /// libvirt: "unterminated string".
    #[error(
        "the \"\"\"triple-quoted\"\"\" string of `{key}` that opens here is never closed: the file \
         ends before its closing \"\"\""
    )]
    UnterminatedTripleQuotedString {
        /// The key whose value this is.
        key: String,
    },
    /// No libvirt equivalent: libvirt silently cuts the string at the NUL.
    #[error("the string of `{key}` contains a NUL character (libvirt would cut the string there)")]
    NulInString {
        /// The key whose value this is.
        key: String,
    },
    /// libvirt: "unterminated number".
    #[error("expected a digit after {sign:?} in the value of `{key}`, found {found}")]
    ExpectedDigit {
        /// The key whose value this is.
        key: String,
        /// The sign just read, `-` or `+`.
        sign: char,
        /// What is there instead.
        found: Found,
    },
    /// libvirt: "numeric overflow in conf value".
    #[error(
        "the integer of `{key}` is out of range: libvirt accepts -9223372036854775807 to \
         9223372036854775807"
    )]
    IntegerOutOfRange {
        /// The key whose value this is.
        key: String,
    },
    /// libvirt: "expecting a separator".
    #[error(
        "expected the end of the line, ';' or a '#' comment after the value of `{key}`, \
         found {found}{}",
        backslash_hint(.after_backslash)
    )]
    ExpectedSeparator {
        /// The key whose value was just read.
        key: String,
        /// What is there instead.
        found: Found,
        /// The string just read ended with a backslash: its author probably meant an escape.
        after_backslash: bool,
    },
}

/// What an unquoted word after `=` probably meant.
pub(super) fn bare_word_hint(rest: &str) -> &'static str {
    let word_length = rest.find(|c: char| is_blank(c) || is_eol(c) || c == '#' || c == ';');
    let word = &rest[..word_length.unwrap_or(rest.len())];
    const BOOLEAN_WORDS: &[&str] = &["yes", "no", "true", "false", "on", "off", "y", "n"];
    if BOOLEAN_WORDS
        .iter()
        .any(|boolean| word.eq_ignore_ascii_case(boolean))
    {
        " (libvirt booleans are the integers 0 and 1)"
    } else if word.starts_with(|c: char| c.is_alphanumeric() || c == '/' || c == '.') {
        " (strings must be quoted: \"...\")"
    } else {
        ""
    }
}

fn backslash_hint(after_backslash: &bool) -> &'static str {
    if *after_backslash {
        " (libvirt strings have no escape sequences: the backslash is an ordinary character and \
         the quote after it closed the string; use '...' or \"\"\"...\"\"\" to hold a '\"')"
    } else {
        ""
    }
}
