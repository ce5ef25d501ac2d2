//! Whole files, statements and separators, keys, where a value must be, duplicate keys, and
//! the wording of what was found.

use super::*;

// ---- whole file, statements, separators ----

#[test]
fn empty_text_has_no_entries() {
    assert_eq!(entries(""), []);
}

#[test]
fn comments_are_dropped_with_or_without_final_newline() {
    assert_eq!(entries("# a comment\n#\n   # indented\n"), []);
    assert_eq!(entries("#"), []);
    assert_eq!(entries("# no newline"), []);
}

#[test]
fn blank_lines_around_entries_are_fine() {
    assert_eq!(entries("\n\n  a = 1\n\n\n"), [pair("a", Value::Integer(1))]);
    assert_eq!(entries("# c\n\n  \n"), []);
}

#[test]
fn a_file_of_only_blanks_is_rejected_like_libvirt_does() {
    assert_eq!(
        error("\n"),
        "t.conf:2:1: the file holds only blanks and line breaks, which libvirt rejects \
         (\"expecting a name\"): delete the file or add a '#' comment"
    );
    assert_eq!(error_kind("   "), ParseErrorKind::OnlyBlanks);
    assert!(error("  \t").starts_with("t.conf:1:4: "));
}

#[test]
fn entries_keep_their_positions() {
    let conf = parse("# header\n  key = \"v\"\nother\t=\t[ 1 ]\n", "t.conf").unwrap();
    let positions: Vec<_> = conf
        .entries()
        .iter()
        .map(|entry| (entry.key_position, entry.value_position))
        .collect();
    assert_eq!(
        positions,
        [
            (
                Position { line: 2, column: 3 },
                Position { line: 2, column: 9 }
            ),
            (
                Position { line: 3, column: 1 },
                Position { line: 3, column: 9 }
            ),
        ]
    );
    assert_eq!(conf.origin(), "t.conf");
    assert_eq!(conf.location(positions[0].1).to_string(), "t.conf:2:9");
}

#[test]
fn a_semicolon_ends_a_statement_too() {
    assert_eq!(
        entries("a = 1; b = 2 ;\nc = 3;"),
        [
            pair("a", Value::Integer(1)),
            pair("b", Value::Integer(2)),
            pair("c", Value::Integer(3))
        ]
    );
    assert_eq!(
        entries("a = 1;   # comment after a semicolon\n"),
        [pair("a", Value::Integer(1))]
    );
}

#[test]
fn an_empty_statement_is_an_error() {
    assert_eq!(
        error("a = 1;;\n"),
        "t.conf:1:7: expected a key (an ASCII letter, then letters, digits or '_'), found ';'"
    );
    assert_eq!(
        error_kind("a = 1;\n;\n"),
        ParseErrorKind::ExpectedKey {
            found: Found::Char(';')
        }
    );
}

#[test]
fn crlf_and_lone_cr_end_statements_but_only_lf_counts_lines() {
    assert_eq!(
        entries("a = 1\r\nb = 2\r\n"),
        [pair("a", Value::Integer(1)), pair("b", Value::Integer(2))]
    );
    let conf = parse("a = 1\rb = 2\nc = 3", "t.conf").unwrap();
    let positions: Vec<_> = conf
        .entries()
        .iter()
        .map(|entry| entry.key_position)
        .collect();
    assert_eq!(
        positions,
        [
            Position { line: 1, column: 1 },
            Position { line: 1, column: 7 },
            Position { line: 2, column: 1 }
        ]
    );
}

#[test]
fn tabs_and_spaces_are_blanks_but_other_whitespace_is_not() {
    assert_eq!(entries("\ta\t=\t1\t\n"), [pair("a", Value::Integer(1))]);
    assert_eq!(
        error("a = 1\u{b}\n"),
        not_the_end_of_the_line(6, "'\\u{b}'")
    );
}

#[test]
fn a_comment_may_follow_a_value_with_or_without_blanks() {
    assert_eq!(
        entries("a = 1 # one\nb = \"x\"# two\nc = [ 1 ]#three"),
        [
            pair("a", Value::Integer(1)),
            pair("b", string("x")),
            pair("c", list(vec![Value::Integer(1)]))
        ]
    );
}

#[test]
fn two_statements_on_a_line_need_a_semicolon() {
    assert_eq!(error("a = 1 b = 2\n"), not_the_end_of_the_line(7, "'b'"));
}

// ---- keys ----

#[test]
fn keys_are_a_letter_then_letters_digits_and_underscores() {
    assert_eq!(
        entries("a = 1\nAbC9_x_ = 2\nlock_manager = 3\n"),
        [
            pair("a", Value::Integer(1)),
            pair("AbC9_x_", Value::Integer(2)),
            pair("lock_manager", Value::Integer(3))
        ]
    );
}

#[test]
fn a_key_cannot_start_with_an_underscore_or_a_digit() {
    assert_eq!(
        error("_a = 1\n"),
        "t.conf:1:1: expected a key (an ASCII letter, then letters, digits or '_'), found '_'"
    );
    assert_eq!(
        error_kind("9a = 1\n"),
        ParseErrorKind::ExpectedKey {
            found: Found::Char('9')
        }
    );
    assert_eq!(
        error_kind("= 1\n"),
        ParseErrorKind::ExpectedKey {
            found: Found::Char('=')
        }
    );
    assert_eq!(
        error_kind("\"a\" = 1\n"),
        ParseErrorKind::ExpectedKey {
            found: Found::Char('"')
        }
    );
    assert_eq!(
        error_kind("é = 1\n"),
        ParseErrorKind::ExpectedKey {
            found: Found::Char('é')
        }
    );
}

#[test]
fn keys_have_no_dots_or_dashes() {
    assert_eq!(
        error("a.b = 1\n"),
        "t.conf:1:2: expected '=' after the key `a`, found '.'"
    );
    assert_eq!(
        error("lock-manager = 1\n"),
        "t.conf:1:5: expected '=' after the key `lock`, found '-'"
    );
}

#[test]
fn the_equals_sign_must_be_on_the_key_line() {
    assert_eq!(
        error("a\n= 1\n"),
        "t.conf:1:2: expected '=' after the key `a`, found end of line"
    );
    assert_eq!(
        error("abc"),
        "t.conf:1:4: expected '=' after the key `abc`, found end of file"
    );
}

// ---- values ----

#[test]
fn the_value_must_be_on_the_line_of_its_equals_sign() {
    assert_eq!(
        error("a =\n1\n"),
        "t.conf:1:4: expected a quoted string, an integer or a [list] after '=' for `a`, found end \
         of line"
    );
    assert_eq!(
        error("socket_path = "),
        "t.conf:1:15: expected a quoted string, an integer or a [list] after '=' for \
         `socket_path`, found end of file"
    );
}

#[test]
fn bare_words_and_comments_are_not_values() {
    assert_eq!(
        error("a = yes\n"),
        "t.conf:1:5: expected a quoted string, an integer or a [list] after '=' for `a`, found \
         'y' (libvirt booleans are the integers 0 and 1)"
    );
    assert_eq!(
        error("dir = /var/lib/x # here\n"),
        "t.conf:1:7: expected a quoted string, an integer or a [list] after '=' for `dir`, found \
         '/' (strings must be quoted: \"...\")"
    );
    assert_eq!(
        error_kind("a = FALSE;"),
        ParseErrorKind::ExpectedValue {
            key: "a".into(),
            found: Found::Char('F'),
            hint: " (libvirt booleans are the integers 0 and 1)"
        }
    );
    assert_eq!(
        error_kind("a = # nothing\n"),
        ParseErrorKind::ExpectedValue {
            key: "a".into(),
            found: Found::Char('#'),
            hint: ""
        }
    );
}

// ---- duplicates ----

#[test]
fn duplicate_keys_are_kept_and_the_first_one_counts() {
    let conf = parse("a = 1\nb = 2\na = \"second\"\n", "t.conf").unwrap();
    assert_eq!(conf.entries().len(), 3);
    assert_eq!(
        conf.get("a").map(|entry| &entry.value),
        Some(&Value::Integer(1))
    );
    let all: Vec<_> = conf
        .get_all("a")
        .map(|entry| entry.key_position.line)
        .collect();
    assert_eq!(all, [1, 3]);
    assert!(conf.get("c").is_none());
}

// ---- messages ----

#[test]
fn found_names_characters_line_ends_and_the_end_of_the_file() {
    assert_eq!(Found::Char('x').to_string(), "'x'");
    assert_eq!(Found::Char('\'').to_string(), "'\\''");
    assert_eq!(Found::Char('\t').to_string(), "'\\t'");
    assert_eq!(Found::EndOfLine.to_string(), "end of line");
    assert_eq!(Found::EndOfFile.to_string(), "end of file");
}

#[test]
fn large_inputs_parse_in_linear_time() {
    // A 1 MB line of `a=1;` statements, then a 1 MB string.
    let mut text = "a=1;".repeat(250_000);
    text.push_str(&format!("\nb = \"{}\"\n", "x".repeat(1_000_000)));
    let conf = parse(&text, "t.conf").unwrap();
    assert_eq!(conf.entries().len(), 250_001);
    assert_eq!(
        conf.entries()[249_999].key_position,
        Position {
            line: 1,
            column: 999_997
        }
    );
}
