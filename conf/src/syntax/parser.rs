//! The parser: [`parse`] and libvirt's `virConfParse*` functions, one method each.

use super::cursor::{Cursor, TRIPLE_QUOTE, is_eol};
use super::error::bare_word_hint;
use super::{ConfFile, Entry, MAX_LIST_DEPTH, ParseError, ParseErrorKind, Value};
use crate::position::{Location, Position};

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
