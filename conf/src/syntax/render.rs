//! The renderer: [`render`] writes entries back in libvirt's syntax, with the simplest quotes
//! that hold each string, and [`RenderError`] says why a value cannot be written.

use super::cursor::{TRIPLE_QUOTE, is_eol};
use super::{MAX_LIST_DEPTH, Value};

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

/// Writes `key = value` lines in libvirt's syntax that [`parse`](super::parse) (and libvirt) read
/// back as the same keys and values.
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

pub(super) fn write_value(
    value: &Value,
    depth: usize,
    text: &mut String,
) -> Result<(), RenderError> {
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
