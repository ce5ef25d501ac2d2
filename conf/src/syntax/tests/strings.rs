//! Strings: quotes, backslashes, unterminated and triple-quoted strings, NULs, columns.

use super::*;

// ---- strings ----

#[test]
fn double_and_single_quoted_strings() {
    assert_eq!(
        entries("a = \"x y\"\nb = 'it \"is\"'\nc = \"\"\nd = ''\n"),
        [
            pair("a", string("x y")),
            pair("b", string("it \"is\"")),
            pair("c", string("")),
            pair("d", string(""))
        ]
    );
}

#[test]
fn a_hash_inside_a_string_is_not_a_comment() {
    assert_eq!(entries("a = \"#x\" # y\n"), [pair("a", string("#x"))]);
}

#[test]
fn backslashes_are_ordinary_characters() {
    assert_eq!(
        entries(r#"a = "C:\dir\n\""#),
        [pair("a", string(r"C:\dir\n\"))]
    );
    assert_eq!(entries(r"a = '\\'"), [pair("a", string(r"\\"))]);
}

#[test]
fn a_backslash_before_a_quote_gets_a_hint() {
    assert_eq!(
        error("a = \"x\\\"y\"\n"),
        not_the_end_of_the_line(
            9,
            "'y' (libvirt strings have no escape sequences: the backslash is an ordinary \
             character and the quote after it closed the string; use '...' or \"\"\"...\"\"\" to \
             hold a '\"')"
        )
    );
    assert!(matches!(
        error_kind("a = [ \"x\\\"y\" ]\n"),
        ParseErrorKind::ExpectedListSeparator {
            after_backslash: true,
            ..
        }
    ));
    assert!(matches!(
        error_kind("a = \"x\\\" y\n"),
        ParseErrorKind::ExpectedSeparator {
            after_backslash: true,
            ..
        }
    ));
    assert!(matches!(
        error_kind("a = \"x\" y\n"),
        ParseErrorKind::ExpectedSeparator {
            after_backslash: false,
            ..
        }
    ));
}

#[test]
fn an_unterminated_string_points_at_its_opening_quote() {
    assert_eq!(
        error("a = 1\nb = \"x\nc = 2\n"),
        "t.conf:2:5: the string of `b` that opens here is not closed on its line: add the closing \
         '\"' (libvirt strings cannot span lines, except \"\"\"triple-quoted\"\"\" ones)"
    );
    assert_eq!(
        error_kind("a = 'x"),
        ParseErrorKind::UnterminatedString {
            key: "a".into(),
            quote: '\''
        }
    );
    // A carriage return ends the line for libvirt, inside strings too.
    assert_eq!(
        error_kind("a = \"x\ry\"\n"),
        ParseErrorKind::UnterminatedString {
            key: "a".into(),
            quote: '"'
        }
    );
}

#[test]
fn two_strings_in_a_row_are_an_error() {
    assert_eq!(
        error("a = \"x\" \"y\"\n"),
        not_the_end_of_the_line(9, "'\"'")
    );
    // No doubled-quote escape either.
    assert!(error("a = 'it''s'\n").starts_with("t.conf:1:9: expected the end of the line"));
}

#[test]
fn triple_quoted_strings_span_lines() {
    let conf = parse("a = \"\"\"one\n'two' \"three\"\n\"\"\"\nb = 1\n", "t.conf").unwrap();
    assert_eq!(conf.entries()[0].value, string("one\n'two' \"three\"\n"));
    assert_eq!(
        conf.entries()[1].key_position,
        Position { line: 4, column: 1 }
    );
    assert_eq!(
        entries("a = \"\"\"x\"\"y\"\"\"\n"),
        [pair("a", string("x\"\"y"))]
    );
    assert_eq!(entries("a = \"\"\"\"\"\"\n"), [pair("a", string(""))]);
    assert_eq!(entries("a = \"\"\"ab\"\"\""), [pair("a", string("ab"))]);
}

#[test]
fn triple_quotes_need_seven_bytes_left_in_the_file() {
    // libvirt only looks for `"""` when at least 7 bytes remain from the opening quote; otherwise
    // it reads `""` and then chokes on the third quote.
    assert_eq!(entries("a = \"\"\"a\"\"\""), [pair("a", string("a"))]);
    assert_eq!(
        error("a = \"\"\"\"\"\""),
        not_the_end_of_the_line(7, "'\"'")
    );
    assert!(error("a = \"\"\"x\"\"").starts_with("t.conf:1:7: expected the end of the line"));
}

#[test]
fn an_unterminated_triple_quoted_string_points_at_its_opening_quotes() {
    assert_eq!(
        error("a = \"\"\"one\ntwo\"\"\n"),
        "t.conf:1:5: the \"\"\"triple-quoted\"\"\" string of `a` that opens here is never closed: \
         the file ends before its closing \"\"\""
    );
}

#[test]
fn a_nul_inside_a_string_is_an_error() {
    assert_eq!(
        error("a = \"xy\0z\"\n"),
        "t.conf:1:8: the string of `a` contains a NUL character (libvirt would cut the string \
         there)"
    );
    assert_eq!(
        error_kind("a = \"\"\"x\n\0\"\"\"\n"),
        ParseErrorKind::NulInString { key: "a".into() }
    );
    // In a comment it is harmless, as for libvirt.
    assert_eq!(entries("# \0\na = 1\n"), [pair("a", Value::Integer(1))]);
}

#[test]
fn columns_count_characters_not_bytes() {
    assert_eq!(
        error("a = \"é€😀\" b\n"),
        not_the_end_of_the_line(11, "'b'")
    );
}
