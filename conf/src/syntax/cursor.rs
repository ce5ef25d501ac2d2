//! The character level shared by the parser and the renderer: a [`Cursor`] that walks the text
//! keeping line and column, and libvirt's blank, end-of-line and triple-quote definitions.

use super::Found;
use crate::position::Position;

/// A text position that moves one character at a time and keeps line and column up to date.
pub(super) struct Cursor<'t> {
    pub(super) text: &'t str,
    pub(super) offset: usize,
    pub(super) position: Position,
}

impl<'t> Cursor<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        Cursor {
            text,
            offset: 0,
            position: Position::START,
        }
    }

    pub(super) fn rest(&self) -> &'t str {
        self.text.get(self.offset..).unwrap_or_default()
    }

    pub(super) fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    pub(super) fn at_end(&self) -> bool {
        self.offset >= self.text.len()
    }

    pub(super) fn found(&self) -> Found {
        match self.peek() {
            None => Found::EndOfFile,
            Some(c) if is_eol(c) => Found::EndOfLine,
            Some(c) => Found::Char(c),
        }
    }

    pub(super) fn bump(&mut self) {
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

    pub(super) fn skip_while(&mut self, mut keep_going: impl FnMut(char) -> bool) {
        while self.peek().is_some_and(&mut keep_going) {
            self.bump();
        }
    }

    pub(super) fn skip_blanks(&mut self) {
        self.skip_while(is_blank);
    }

    pub(super) fn skip_blanks_and_eols(&mut self) {
        self.skip_while(|c| is_blank(c) || is_eol(c));
    }

    /// Skips a `#` comment up to, not including, the line break.
    pub(super) fn skip_comment(&mut self) {
        self.skip_while(|c| !is_eol(c));
    }
}

/// libvirt's `IS_BLANK`.
pub(super) fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// libvirt's `IS_EOL`: a lone carriage return ends a statement too.
pub(super) fn is_eol(c: char) -> bool {
    c == '\n' || c == '\r'
}

pub(super) const TRIPLE_QUOTE: &str = "\"\"\"";
