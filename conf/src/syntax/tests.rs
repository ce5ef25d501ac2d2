//! One test per grammar rule and per error, with exact positions. The libvirt behaviour each one
//! pins down was observed with libvirt 11.3's `virConfReadFile` (see `tests/libvirt_oracle.rs`).
//!
//! The shared helpers live here; the tests are grouped by what they cover: `statements` (the
//! whole file, separators, keys, values, duplicates, messages), `strings`, `numbers_and_lists`
//! and `render`.

mod numbers_and_lists;
mod render;
mod statements;
mod strings;

use super::*;

fn string(text: &str) -> Value {
    Value::String(text.to_owned())
}

fn list(elements: Vec<Value>) -> Value {
    Value::List(elements)
}

/// The (key, value) pairs of `text`, which must parse.
fn entries(text: &str) -> Vec<(String, Value)> {
    let conf = parse(text, "t.conf").unwrap_or_else(|error| panic!("{text:?}: {error}"));
    conf.entries()
        .iter()
        .map(|entry| (entry.key.clone(), entry.value.clone()))
        .collect()
}

fn pair(key: &str, value: Value) -> (String, Value) {
    (key.to_owned(), value)
}

/// The message for `found` (quoted as the parser quotes it) standing at `column` of line 1, after
/// the value of `a`.
fn not_the_end_of_the_line(column: u32, found: &str) -> String {
    format!(
        "t.conf:1:{column}: expected the end of the line, ';' or a '#' comment after the value of \
         `a`, found {found}"
    )
}

/// The error message of `text`, which must not parse.
fn error(text: &str) -> String {
    match parse(text, "t.conf") {
        Ok(conf) => panic!("{text:?} parsed: {:?}", conf.entries()),
        Err(error) => error.to_string(),
    }
}

fn error_kind(text: &str) -> ParseErrorKind {
    parse(text, "t.conf")
        .map(|conf| panic!("{text:?} parsed: {conf:?}"))
        .unwrap_err()
        .kind
}
