//! Shared by the integration tests: the shipped libvirt config files, their examples uncommented,
//! and generators of config-like text.

// Each test crate uses its own part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use lockmgr_conf::Value;
use proptest::prelude::*;

/// Where Debian's libvirt packages install their config files.
pub const LIBVIRT_CONF_DIR: &str = "/etc/libvirt";

/// Every `/etc/libvirt/*.conf`, sorted. Fails the test, naming the packages to install, when there
/// is none: these tests must never pass by having nothing to check.
pub fn shipped_conf_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(LIBVIRT_CONF_DIR)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| {
                    path.extension()
                        .is_some_and(|extension| extension == "conf")
                })
                .filter(|path| path.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    assert!(
        !files.is_empty(),
        "no {LIBVIRT_CONF_DIR}/*.conf on this machine: install libvirt's config files with \
         `apt-get install libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-daemon-lock \
         libvirt-daemon-log libvirt-daemon-plugin-lockd libvirt-daemon-plugin-sanlock` \
         (or run .ci/install-deps.sh)"
    );
    files
}

/// A shipped file that the facts below are about; fails naming its Debian package when missing.
pub fn shipped_file(name: &str, package: &str) -> PathBuf {
    let path = Path::new(LIBVIRT_CONF_DIR).join(name);
    assert!(
        path.is_file(),
        "{} is missing: install Debian's `{package}` package (or run .ci/install-deps.sh)",
        path.display()
    );
    path
}

/// A shipped file with its commented-out examples made live.
#[derive(Debug)]
pub struct Uncommented {
    /// The text, with the same lines and columns as the file: each `#` uncommented became a blank.
    pub text: String,
    /// 1-based numbers of the lines uncommented.
    pub example_lines: Vec<usize>,
    /// 1-based numbers of lines that look like `#key = ...` but are prose (no value after `=`).
    pub prose_lines: Vec<usize>,
}

/// Makes the examples of a shipped libvirt config file live, for the parser to read them.
///
/// The shipped files comment out every setting, and their examples are the best corpus of the
/// syntax as libvirt's authors write it. A line is an example when it is `#`, optional blanks, a
/// key, optional blanks, `=`, optional blanks, and the start of a value (a quote, `[`, a digit or a
/// sign): `#lock_manager = "lockd"`, or `#       user = "+0"     # Super user (uid=0)` from the
/// prose. A list left open on such a line also uncomments the `#` lines that follow, up to the one
/// that closes it. Lines of prose that happen to contain `word = word` (`# type=address but ...`,
/// `#   audit_level == 0  -> ...`) stay commented and are counted in `prose_lines`.
pub fn uncomment_examples(text: &str) -> Uncommented {
    let mut lines = Vec::new();
    let mut example_lines = Vec::new();
    let mut prose_lines = Vec::new();
    let mut open_brackets = 0_usize;
    for (index, line) in text.split('\n').enumerate() {
        let number = index + 1;
        let uncomment = if open_brackets > 0 && line.starts_with('#') {
            true
        } else {
            open_brackets = 0;
            match example_kind(line) {
                Some(true) => true,
                Some(false) => {
                    prose_lines.push(number);
                    false
                }
                None => false,
            }
        };
        if uncomment {
            let live = format!(" {}", &line[1..]);
            open_brackets = bracket_depth_after(&live, open_brackets);
            lines.push(live);
            example_lines.push(number);
        } else {
            lines.push(line.to_owned());
        }
    }
    Uncommented {
        text: lines.join("\n"),
        example_lines,
        prose_lines,
    }
}

/// `Some(true)` for `#key = <value>`, `Some(false)` for `#key = <prose>`, `None` otherwise.
fn example_kind(line: &str) -> Option<bool> {
    let rest = line.strip_prefix('#')?.trim_start_matches([' ', '\t']);
    let key_length = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    if key_length == 0 || !rest.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let after_key = rest[key_length..].trim_start_matches([' ', '\t']);
    let after_equals = after_key.strip_prefix('=')?.trim_start_matches([' ', '\t']);
    Some(
        after_equals.starts_with(['"', '\'', '[', '-', '+'])
            || after_equals.starts_with(|c: char| c.is_ascii_digit()),
    )
}

/// Brackets still open at the end of `line`, ignoring quoted text and a trailing comment.
fn bracket_depth_after(line: &str, mut depth: usize) -> usize {
    let mut quote = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(open), c) if c == open => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => depth = depth.saturating_sub(1),
            (None, '#') => break,
            (None, _) => {}
        }
    }
    depth
}

/// The line `number` (1-based) of `text`, for messages.
pub fn line_of(text: &str, number: usize) -> &str {
    text.split('\n')
        .nth(number.saturating_sub(1))
        .unwrap_or_default()
}

/// Pieces of libvirt's syntax, valid and broken, to glue into random texts.
pub const TOKENS: &[&str] = &[
    "a",
    "lock_manager",
    "B9_",
    "_x",
    "9",
    "x",
    "=",
    " = ",
    "\"",
    "'",
    "\"\"\"",
    "\"str\"",
    "'it''s'",
    "\"a#b\"",
    "[",
    "]",
    ",",
    "\n",
    "\r\n",
    "\r",
    "#",
    "# comment\n",
    " ",
    "\t",
    ";",
    "-",
    "+",
    "0",
    "12",
    "-7",
    "9223372036854775807",
    "9223372036854775808",
    "\\",
    "é",
    ".",
    "\"\\\"",
    "\u{b}",
    "\"\"\"x\n\"\"\"",
];

/// Random texts made of [`TOKENS`]: mostly broken, sometimes valid.
pub fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..48).prop_map(|tokens| tokens.concat())
}

/// Value-like text, right or slightly wrong: quotes, triple quotes, signs, lists with commas,
/// line breaks and comments in all places.
fn value_text() -> impl Strategy<Value = String> {
    let leaf = prop::sample::select(
        &[
            "\"s\"",
            "'s'",
            "''",
            "\"\"",
            "\"a\\\"b\"",
            "\"a#b\"",
            "\"\"\"m\nl\"\"\"",
            "\"\"\"\"\"\"",
            "\"\"\"x\"\"",
            "\"open",
            "'open",
            "0",
            "-1",
            "+2",
            "-",
            "007",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "1.5",
            "yes",
            "é",
        ][..],
    )
    .prop_map(str::to_owned);
    leaf.prop_recursive(3, 16, 4, |element| {
        let gap = prop::sample::select(&["", " ", "\n", "\t", "\r\n", " # c\n", "\n\n"][..]);
        let comma = prop::sample::select(&[",", ",", ",", "", ",,", ";"][..]);
        let close = prop::sample::select(&["]", "]", "]", ""][..]);
        (
            prop::collection::vec((gap.clone(), element, gap, comma), 0..4),
            close,
        )
            .prop_map(|(elements, close)| {
                let mut text = String::from("[");
                for (before, element, after, comma) in elements {
                    text.push_str(before);
                    text.push_str(&element);
                    text.push_str(after);
                    text.push_str(comma);
                }
                text.push_str(close);
                text
            })
    })
}

/// Statement-like texts: `key = value # comment` lines where any part may be slightly wrong.
pub fn statement_soup() -> impl Strategy<Value = String> {
    let key =
        prop::sample::select(&["a", "lock_manager", "B9_", "_x", "9x", "x.y", "é", "", "#c"][..]);
    let blank = prop::sample::select(&["", " ", "\t", "  "][..]);
    let equals = prop::sample::select(&["=", "=", "=", "", "==", ":"][..]);
    let trailer = prop::sample::select(&["", "", " # c", "#c", " x", " \"y\""][..]);
    let separator =
        prop::sample::select(&["\n", "\n", "\r\n", "\r", ";", "; ", "", "\n\n", " \n"][..]);
    let statement = (
        key,
        blank.clone(),
        equals,
        blank,
        value_text(),
        trailer,
        separator,
    )
        .prop_map(
            |(key, blank_before, equals, blank_after, value, trailer, separator)| {
                format!("{key}{blank_before}{equals}{blank_after}{value}{trailer}{separator}")
            },
        );
    let leading = prop::sample::select(&["", "", "\n", " ", "# header\n"][..]);
    (leading, prop::collection::vec(statement, 0..5))
        .prop_map(|(leading, statements)| format!("{leading}{}", statements.concat()))
}

/// Valid keys.
pub fn key() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9_]{0,12}"
}

/// Strings that some quoting of libvirt's can hold: no NUL; and when `"""` quotes are needed
/// (a line break, or both quote characters) no `"""` inside and no `"` at the end.
pub fn representable_string() -> impl Strategy<Value = String> {
    "[ -~é€\t\n\r]{0,16}".prop_filter("needs quoting libvirt does not have", |text| {
        let needs_triple_quotes =
            text.contains(['\n', '\r']) || (text.contains('"') && text.contains('\''));
        !needs_triple_quotes || !(text.contains("\"\"\"") || text.ends_with('"'))
    })
}

/// Values libvirt can read back: strings as above, integers in libvirt's range, nested lists.
pub fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        representable_string().prop_map(Value::String),
        (-i64::MAX..=i64::MAX).prop_map(Value::Integer),
        prop::sample::select(&[0_i64, 1, -1, i64::MAX, -i64::MAX][..]).prop_map(Value::Integer),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop::collection::vec(inner, 0..6).prop_map(Value::List)
    })
}

/// Whole files of valid entries (duplicate keys possible).
pub fn entries() -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::vec((key(), value()), 0..8)
}
