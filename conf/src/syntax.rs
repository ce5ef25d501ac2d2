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

use std::fmt;

use crate::position::{Location, Position};

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
fn bare_word_hint(rest: &str) -> &'static str {
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

/// Parses `text` in libvirt's config syntax. `origin` names the text in messages (a path, or
/// e.g. `"qemu-file.conf"`).
///
/// Never panics; memory use is linear in the size of `text`.
pub fn parse(text: &str, origin: &str) -> Result<ConfFile, ParseError> {
    let mut parser = Parser {
        cursor: Cursor::new(text),
        origin,
        last_string_ended_with_backslash: false,
    };
    let mut entries = Vec::new();
    while !parser.cursor.at_end() {
        match parser.statement()? {
            Statement::Comment => parser.cursor.skip_blanks_and_eols(),
            Statement::Entry(entry) => {
                parser.separator(&entry.key)?;
                entries.push(entry);
            }
        }
    }
    Ok(ConfFile {
        origin: origin.to_owned(),
        entries,
    })
}

/// A text position that moves one character at a time and keeps line and column up to date.
struct Cursor<'t> {
    text: &'t str,
    offset: usize,
    position: Position,
}

impl<'t> Cursor<'t> {
    fn new(text: &'t str) -> Self {
        Cursor {
            text,
            offset: 0,
            position: Position::START,
        }
    }

    fn rest(&self) -> &'t str {
        self.text.get(self.offset..).unwrap_or_default()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn at_end(&self) -> bool {
        self.offset >= self.text.len()
    }

    fn found(&self) -> Found {
        match self.peek() {
            None => Found::EndOfFile,
            Some(c) if is_eol(c) => Found::EndOfLine,
            Some(c) => Found::Char(c),
        }
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.offset += c.len_utf8();
            if c == '\n' {
                self.position.line += 1;
                self.position.column = 1;
            } else {
                self.position.column += 1;
            }
        }
    }

    fn skip_while(&mut self, mut keep_going: impl FnMut(char) -> bool) {
        while self.peek().is_some_and(&mut keep_going) {
            self.bump();
        }
    }

    fn skip_blanks(&mut self) {
        self.skip_while(is_blank);
    }

    fn skip_blanks_and_eols(&mut self) {
        self.skip_while(|c| is_blank(c) || is_eol(c));
    }

    /// Skips a `#` comment up to, not including, the line break.
    fn skip_comment(&mut self) {
        self.skip_while(|c| !is_eol(c));
    }
}

/// libvirt's `IS_BLANK`.
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// libvirt's `IS_EOL`: a lone carriage return ends a statement too.
fn is_eol(c: char) -> bool {
    c == '\n' || c == '\r'
}

enum Statement {
    Comment,
    Entry(Entry),
}

struct Parser<'t> {
    cursor: Cursor<'t>,
    origin: &'t str,
    /// Remembered for the "no escape sequences" hint on the error that usually follows `"a\"b"`.
    last_string_ended_with_backslash: bool,
}

impl Parser<'_> {
    fn error_at(&self, position: Position, kind: ParseErrorKind) -> ParseError {
        ParseError {
            location: Location {
                origin: self.origin.to_owned(),
                position,
            },
            kind,
        }
    }

    fn error_here(&self, kind: ParseErrorKind) -> ParseError {
        self.error_at(self.cursor.position, kind)
    }

    /// libvirt's `virConfParseStatement`.
    fn statement(&mut self) -> Result<Statement, ParseError> {
        self.cursor.skip_blanks_and_eols();
        match self.cursor.peek() {
            // Separators eat trailing blanks, so only a file of nothing but blanks gets here.
            None => return Err(self.error_here(ParseErrorKind::OnlyBlanks)),
            Some('#') => {
                self.cursor.skip_comment();
                return Ok(Statement::Comment);
            }
            Some(_) => {}
        }
        let key_position = self.cursor.position;
        let key = self.key()?;
        self.cursor.skip_blanks();
        if self.cursor.peek() != Some('=') {
            let found = self.cursor.found();
            return Err(self.error_here(ParseErrorKind::ExpectedEquals { key, found }));
        }
        self.cursor.bump();
        self.cursor.skip_blanks();
        let value_position = self.cursor.position;
        let value = self.value(&key, 0)?;
        self.cursor.skip_blanks();
        if self.cursor.peek() == Some('#') {
            self.cursor.skip_comment();
        }
        Ok(Statement::Entry(Entry {
            key,
            value,
            key_position,
            value_position,
        }))
    }

    /// libvirt's `virConfParseSeparator`.
    fn separator(&mut self, key: &str) -> Result<(), ParseError> {
        self.cursor.skip_blanks();
        match self.cursor.peek() {
            None => Ok(()),
            Some(c) if is_eol(c) => {
                self.cursor.skip_blanks_and_eols();
                Ok(())
            }
            Some(';') => {
                self.cursor.bump();
                self.cursor.skip_blanks_and_eols();
                Ok(())
            }
            Some(_) => Err(self.error_here(ParseErrorKind::ExpectedSeparator {
                key: key.to_owned(),
                found: self.cursor.found(),
                after_backslash: self.last_string_ended_with_backslash,
            })),
        }
    }

    /// libvirt's `virConfParseName`.
    fn key(&mut self) -> Result<String, ParseError> {
        if !self.cursor.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            let found = self.cursor.found();
            return Err(self.error_here(ParseErrorKind::ExpectedKey { found }));
        }
        let start = self.cursor.offset;
        self.cursor
            .skip_while(|c| c.is_ascii_alphanumeric() || c == '_');
        Ok(self.cursor.text[start..self.cursor.offset].to_owned())
    }

    /// libvirt's `virConfParseValue`, for a value after `=` (`depth` 0) or inside a list.
    fn value(&mut self, key: &str, depth: usize) -> Result<Value, ParseError> {
        self.cursor.skip_blanks();
        self.last_string_ended_with_backslash = false;
        match self.cursor.peek() {
            Some('"' | '\'') => self.string(key),
            Some('[') => self.list(key, depth),
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' => self.integer(key),
            Some('#') if depth > 0 => Err(self.error_here(ParseErrorKind::CommentInList {
                key: key.to_owned(),
            })),
            _ => {
                let key = key.to_owned();
                let found = self.cursor.found();
                Err(self.error_here(if depth > 0 {
                    ParseErrorKind::ExpectedListElement { key, found }
                } else {
                    let hint = bare_word_hint(self.cursor.rest());
                    ParseErrorKind::ExpectedValue { key, found, hint }
                }))
            }
        }
    }

    fn list(&mut self, key: &str, depth: usize) -> Result<Value, ParseError> {
        let open = self.cursor.position;
        if depth >= MAX_LIST_DEPTH {
            return Err(self.error_at(
                open,
                ParseErrorKind::ListTooDeep {
                    key: key.to_owned(),
                },
            ));
        }
        let unclosed = |parser: &Self| {
            parser.error_at(
                open,
                ParseErrorKind::UnclosedList {
                    key: key.to_owned(),
                },
            )
        };
        self.cursor.bump();
        self.cursor.skip_blanks_and_eols();
        let mut elements = Vec::new();
        if !self.cursor.at_end() && self.cursor.peek() != Some(']') {
            elements.push(self.value(key, depth + 1)?);
            self.cursor.skip_blanks_and_eols();
        }
        loop {
            match self.cursor.peek() {
                None => return Err(unclosed(self)),
                Some(']') => break,
                Some(',') => {
                    self.cursor.bump();
                    self.cursor.skip_blanks_and_eols();
                    match self.cursor.peek() {
                        None => return Err(unclosed(self)),
                        // A trailing comma.
                        Some(']') => break,
                        Some(_) => {
                            elements.push(self.value(key, depth + 1)?);
                            self.cursor.skip_blanks_and_eols();
                        }
                    }
                }
                Some('#') => {
                    let kind = ParseErrorKind::CommentInList {
                        key: key.to_owned(),
                    };
                    return Err(self.error_here(kind));
                }
                Some(_) => {
                    return Err(self.error_here(ParseErrorKind::ExpectedListSeparator {
                        key: key.to_owned(),
                        found: self.cursor.found(),
                        after_backslash: self.last_string_ended_with_backslash,
                    }));
                }
            }
        }
        self.cursor.bump();
        self.last_string_ended_with_backslash = false;
        Ok(Value::List(elements))
    }

    /// libvirt's `virConfParseString` (without the LXC-format bare words).
    fn string(&mut self, key: &str) -> Result<Value, ParseError> {
        let open = self.cursor.position;
        let rest = self.cursor.rest();
        // libvirt tests `cur + 6 < end` first: `"""` needs 7 bytes left, or it is `""` then `"`.
        let triple = rest.len() >= 7 && rest.starts_with(TRIPLE_QUOTE);
        let quote = if triple {
            '"'
        } else {
            self.cursor.peek().unwrap_or('"')
        };
        let opener_len = if triple { TRIPLE_QUOTE.len() } else { 1 };
        for _ in 0..opener_len {
            self.cursor.bump();
        }
        let start = self.cursor.offset;
        let end = if triple {
            let Some(length) = self.cursor.rest().find(TRIPLE_QUOTE) else {
                let kind = ParseErrorKind::UnterminatedTripleQuotedString {
                    key: key.to_owned(),
                };
                return Err(self.error_at(open, kind));
            };
            start + length
        } else {
            let line_length = self.cursor.rest().find([quote, '\n', '\r']);
            match line_length {
                Some(length) if self.cursor.rest()[length..].starts_with(quote) => start + length,
                _ => {
                    let kind = ParseErrorKind::UnterminatedString {
                        key: key.to_owned(),
                        quote,
                    };
                    return Err(self.error_at(open, kind));
                }
            }
        };
        // Walk the content rather than jump, to keep line and column right (and find any NUL).
        while self.cursor.offset < end {
            if self.cursor.peek() == Some('\0') {
                return Err(self.error_here(ParseErrorKind::NulInString {
                    key: key.to_owned(),
                }));
            }
            self.cursor.bump();
        }
        for _ in 0..opener_len {
            self.cursor.bump();
        }
        let content = &self.cursor.text[start..end];
        self.last_string_ended_with_backslash = content.ends_with('\\');
        Ok(Value::String(content.to_owned()))
    }

    /// libvirt's `virConfParseLong`.
    fn integer(&mut self, key: &str) -> Result<Value, ParseError> {
        let start = self.cursor.position;
        let sign = self.cursor.peek().filter(|c| *c == '-' || *c == '+');
        if sign.is_some() {
            self.cursor.bump();
        }
        if !self.cursor.peek().is_some_and(|c| c.is_ascii_digit()) {
            let key = key.to_owned();
            let found = self.cursor.found();
            return Err(self.error_here(match sign {
                Some(sign) => ParseErrorKind::ExpectedDigit { key, sign, found },
                None => ParseErrorKind::ExpectedValue {
                    key,
                    found,
                    hint: "",
                },
            }));
        }
        // Accumulated as a positive magnitude, like libvirt: so -2^63 is out of range there too.
        let mut magnitude: i64 = 0;
        while let Some(digit) = self.cursor.peek().and_then(|c| c.to_digit(10)) {
            magnitude = magnitude
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(digit)))
                .ok_or_else(|| {
                    let kind = ParseErrorKind::IntegerOutOfRange {
                        key: key.to_owned(),
                    };
                    self.error_at(start, kind)
                })?;
            self.cursor.bump();
        }
        Ok(Value::Integer(if sign == Some('-') {
            -magnitude
        } else {
            magnitude
        }))
    }
}

const TRIPLE_QUOTE: &str = "\"\"\"";

/// Why a value cannot be written in libvirt's syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// The key is not `[A-Za-z][A-Za-z0-9_]*`.
    #[error("`{0}` is not a valid key: it must be an ASCII letter, then letters, digits or '_'")]
    InvalidKey(String),
    /// No quoting holds this string: it has a NUL, or needs `"""` quotes (it has a line break, or
    /// both quote characters) but contains `"""` or ends with `"`.
    #[error(
        "the string {0:?} cannot be written in libvirt's syntax, which has no escape sequences"
    )]
    UnrepresentableString(String),
    /// `i64::MIN`: libvirt's integers stop at `-i64::MAX`.
    #[error("{0} is outside libvirt's integer range (-9223372036854775807 to 9223372036854775807)")]
    IntegerOutOfRange(i64),
    /// Lists nested deeper than [`MAX_LIST_DEPTH`].
    #[error("lists nested deeper than {MAX_LIST_DEPTH} levels cannot be read back")]
    ListTooDeep,
}

/// Writes `key = value` lines in libvirt's syntax that [`parse`] (and libvirt) read back as the
/// same keys and values.
pub fn render<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a Value)>,
) -> Result<String, RenderError> {
    let mut text = String::new();
    for (key, value) in entries {
        let mut chars = key.chars();
        let valid_key = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err(RenderError::InvalidKey(key.to_owned()));
        }
        text.push_str(key);
        text.push_str(" = ");
        write_value(value, 0, &mut text)?;
        text.push('\n');
    }
    Ok(text)
}

fn write_value(value: &Value, depth: usize, text: &mut String) -> Result<(), RenderError> {
    match value {
        Value::String(string) => text.push_str(&quote(string)?),
        Value::Integer(i64::MIN) => return Err(RenderError::IntegerOutOfRange(i64::MIN)),
        Value::Integer(integer) => text.push_str(&integer.to_string()),
        Value::List(elements) => {
            if depth >= MAX_LIST_DEPTH {
                return Err(RenderError::ListTooDeep);
            }
            text.push('[');
            for (index, element) in elements.iter().enumerate() {
                text.push_str(if index == 0 { " " } else { ", " });
                write_value(element, depth + 1, text)?;
            }
            text.push_str(" ]");
        }
    }
    Ok(())
}

/// Quotes `string` with `"..."`, else `'...'`, else `"""..."""`: the first that holds it.
fn quote(string: &str) -> Result<String, RenderError> {
    let unrepresentable = || RenderError::UnrepresentableString(string.to_owned());
    if string.contains('\0') {
        return Err(unrepresentable());
    }
    if !string.contains(is_eol) {
        if !string.contains('"') {
            return Ok(format!("\"{string}\""));
        }
        if !string.contains('\'') {
            return Ok(format!("'{string}'"));
        }
    }
    // A closing `"""` is the first one found, so the content may neither hold one nor end with '"'.
    // The 7-byte rule always holds: the renderer writes something (at least '\n') after a value.
    if string.contains(TRIPLE_QUOTE) || string.ends_with('"') {
        return Err(unrepresentable());
    }
    Ok(format!("{TRIPLE_QUOTE}{string}{TRIPLE_QUOTE}"))
}

#[cfg(test)]
mod tests;
