//! Properties over random input: the parser never panics, every position it reports is inside the
//! text, and what the renderer writes parses back to the same entries.

mod common;

use std::io::Write;

use lockmgr_conf::{ConfError, ConfFile, Position, Value, parse, read_file, render};
use proptest::prelude::*;

/// Panics unless `position` names a character of `text`, or the end of one of its lines.
fn assert_inside(text: &str, position: Position) {
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        (1..=lines.len()).contains(&position.line),
        "line {} of a {}-line text {text:?}",
        position.line,
        lines.len()
    );
    let line_length = lines[position.line - 1].chars().count();
    assert!(
        (1..=line_length + 1).contains(&position.column),
        "column {} of line {} that has {line_length} characters, in {text:?}",
        position.column,
        position.line
    );
}

/// Parses `text`, checking every position reported either way.
fn parse_checked(text: &str) -> Option<ConfFile> {
    match parse(text, "random.conf") {
        Ok(conf) => {
            for entry in conf.entries() {
                assert_inside(text, entry.key_position);
                assert_inside(text, entry.value_position);
                assert!(entry.key_position < entry.value_position);
            }
            Some(conf)
        }
        Err(error) => {
            assert_eq!(error.location.origin, "random.conf");
            assert_inside(text, error.location.position);
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("random.conf:{}: ", error.location.position))
            );
            None
        }
    }
}

fn pairs(conf: &ConfFile) -> Vec<(String, Value)> {
    conf.entries()
        .iter()
        .map(|entry| (entry.key.clone(), entry.value.clone()))
        .collect()
}

/// Whatever parses renders, and the rendering parses back to the same entries.
fn assert_renders_back(conf: &ConfFile) {
    let text = conf
        .to_text()
        .unwrap_or_else(|error| panic!("{error}: {conf:?}"));
    let reparsed =
        parse(&text, "rendered.conf").unwrap_or_else(|error| panic!("{error}: {text:?}"));
    assert_eq!(pairs(&reparsed), pairs(conf), "{text:?}");
}

/// Bytes drawn from libvirt's syntax characters, so that the parser gets past the first one.
fn syntax_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::sample::select(b"ab_9=\"'[],#\n\r;-+0 \t\\".as_slice()),
        0..256,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_checked(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_syntax_characters_never_panic(bytes in syntax_bytes()) {
        if let Some(conf) = parse_checked(&String::from_utf8_lossy(&bytes)) {
            assert_renders_back(&conf);
        }
    }

    #[test]
    fn token_soups_never_panic(text in common::token_soup()) {
        if let Some(conf) = parse_checked(&text) {
            assert_renders_back(&conf);
        }
    }

    #[test]
    fn statement_soups_never_panic(text in common::statement_soup()) {
        if let Some(conf) = parse_checked(&text) {
            assert_renders_back(&conf);
        }
    }

    #[test]
    fn rendered_entries_parse_back_the_same(entries in common::entries()) {
        let text = render(entries.iter().map(|(key, value)| (key.as_str(), value))).unwrap();
        let conf = parse_checked(&text).unwrap_or_else(|| panic!("{text:?} does not parse"));
        prop_assert_eq!(pairs(&conf), entries);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Files of any bytes: read_file reports non-UTF-8 at a position inside the valid prefix.
    #[test]
    fn random_files_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&bytes).unwrap();
        match read_file(file.path()) {
            Ok(conf) => prop_assert!(conf.is_some()),
            Err(ConfError::NotUtf8 { location }) => {
                let valid = std::str::from_utf8(&bytes).map_err(|error| error.valid_up_to());
                let valid_prefix = &bytes[..valid.unwrap_err()];
                assert_inside(std::str::from_utf8(valid_prefix).unwrap(), location.position);
            }
            Err(ConfError::Syntax(error)) => {
                assert_inside(std::str::from_utf8(&bytes).unwrap(), error.location.position);
            }
            Err(other) => panic!("{other}"),
        }
    }
}
