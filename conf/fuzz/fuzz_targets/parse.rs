//! Any bytes: parsing never panics, every reported position is inside the text, and whatever
//! parses renders back to text that parses to the same entries.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lockmgr_conf::{Position, parse};

fn assert_inside(text: &str, position: Position) {
    let line = text.split('\n').nth(position.line - 1).expect("line inside the text");
    assert!((1..=line.chars().count() + 1).contains(&position.column));
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    match parse(text, "fuzz.conf") {
        Ok(conf) => {
            for entry in conf.entries() {
                assert_inside(text, entry.key_position);
                assert_inside(text, entry.value_position);
            }
            let rendered = conf.to_text().expect("a parsed file renders");
            let reparsed = parse(&rendered, "rendered.conf").expect("a rendered file parses");
            let values = |entries: &[lockmgr_conf::Entry]| {
                entries.iter().map(|entry| (entry.key.clone(), entry.value.clone())).collect::<Vec<_>>()
            };
            assert_eq!(values(reparsed.entries()), values(conf.entries()));
        }
        Err(error) => assert_inside(text, error.location.position),
    }
});
