//! One test per grammar rule and per error, with exact positions. The libvirt behaviour each one
//! pins down was observed with libvirt 11.3's `virConfReadFile` (see `tests/libvirt_oracle.rs`).

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
        "t.conf:1:6: expected the end of the line, ';' or a '#' comment after the value of `a`, \
         found '\\u{b}'"
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
    assert_eq!(
        error("a = 1 b = 2\n"),
        "t.conf:1:7: expected the end of the line, ';' or a '#' comment after the value of `a`, \
         found 'b'"
    );
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
        "t.conf:1:9: expected the end of the line, ';' or a '#' comment after the value of `a`, \
         found 'y' (libvirt strings have no escape sequences: the backslash is an ordinary \
         character and the quote after it closed the string; use '...' or \"\"\"...\"\"\" to hold \
         a '\"')"
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
        "t.conf:1:9: expected the end of the line, ';' or a '#' comment after the value of `a`, \
         found '\"'"
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
        "t.conf:1:7: expected the end of the line, ';' or a '#' comment after the value of `a`, \
         found '\"'"
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
        "t.conf:1:11: expected the end of the line, ';' or a '#' comment after the value of `a`, \
         found 'b'"
    );
}

// ---- integers ----

#[test]
fn integers_are_signed_decimal() {
    assert_eq!(
        entries("a = 0\nb = -5\nc = +7\nd = 010\ne = 4294967296\n"),
        [
            pair("a", Value::Integer(0)),
            pair("b", Value::Integer(-5)),
            pair("c", Value::Integer(7)),
            pair("d", Value::Integer(10)),
            pair("e", Value::Integer(4_294_967_296)),
        ]
    );
}

#[test]
fn integers_span_minus_to_plus_i64_max() {
    assert_eq!(
        entries("a = 9223372036854775807\nb = -9223372036854775807\n"),
        [
            pair("a", Value::Integer(i64::MAX)),
            pair("b", Value::Integer(-i64::MAX))
        ]
    );
}

#[test]
fn integers_beyond_i64_max_are_out_of_range() {
    assert_eq!(
        error("a = 1\nbig = 9223372036854775808\n"),
        "t.conf:2:7: the integer of `big` is out of range: libvirt accepts -9223372036854775807 to \
         9223372036854775807"
    );
    // libvirt accumulates the magnitude first, so even -2^63 overflows.
    assert_eq!(
        error_kind("a = -9223372036854775808"),
        ParseErrorKind::IntegerOutOfRange { key: "a".into() }
    );
    assert_eq!(
        error_kind(&format!("a = {}", "9".repeat(10_000))),
        ParseErrorKind::IntegerOutOfRange { key: "a".into() }
    );
}

#[test]
fn a_sign_needs_a_digit() {
    assert_eq!(
        error("a = -\n"),
        "t.conf:1:6: expected a digit after '-' in the value of `a`, found end of line"
    );
    assert_eq!(
        error_kind("a = +x"),
        ParseErrorKind::ExpectedDigit {
            key: "a".into(),
            sign: '+',
            found: Found::Char('x')
        }
    );
}

#[test]
fn no_hex_floats_or_exponents() {
    for text in ["a = 0x10\n", "a = 1.5\n", "a = 1e3\n", "a = 1_000\n"] {
        assert!(
            matches!(error_kind(text), ParseErrorKind::ExpectedSeparator { .. }),
            "{text:?}"
        );
    }
}

// ---- lists ----

#[test]
fn lists_may_be_empty() {
    assert_eq!(
        entries("a = []\nb = [ ]\nc = [\n\n]\n"),
        [
            pair("a", list(vec![])),
            pair("b", list(vec![])),
            pair("c", list(vec![]))
        ]
    );
}

#[test]
fn lists_span_lines_with_a_trailing_comma() {
    let text = "cgroup_device_acl = [\n    \"/dev/null\", \"/dev/full\",\n\n    \"/dev/kvm\" ,\n]\nb = 1\n";
    assert_eq!(
        entries(text),
        [
            pair(
                "cgroup_device_acl",
                list(vec![
                    string("/dev/null"),
                    string("/dev/full"),
                    string("/dev/kvm")
                ])
            ),
            pair("b", Value::Integer(1))
        ]
    );
}

#[test]
fn lists_hold_integers_and_nested_lists() {
    assert_eq!(
        entries("a = [ [ \"x\" ], 1, -2, [] ]\n"),
        [pair(
            "a",
            list(vec![
                list(vec![string("x")]),
                Value::Integer(1),
                Value::Integer(-2),
                list(vec![])
            ])
        )]
    );
}

#[test]
fn list_elements_need_commas() {
    assert_eq!(
        error("a = [ \"x\" \"y\" ]\n"),
        "t.conf:1:11: expected ',' or ']' after an element of the list of `a`, found '\"'"
    );
    assert_eq!(
        error("a = [\n  \"x\"\n  \"y\"\n]\n"),
        "t.conf:3:3: expected ',' or ']' after an element of the list of `a`, found '\"'"
    );
}

#[test]
fn empty_list_elements_are_errors() {
    assert_eq!(
        error("a = [ , ]\n"),
        "t.conf:1:7: expected a quoted string, an integer or a [list] as the next element of the \
         list of `a`, found ','"
    );
    assert_eq!(
        error_kind("a = [ \"x\",, ]\n"),
        ParseErrorKind::ExpectedListElement {
            key: "a".into(),
            found: Found::Char(',')
        }
    );
    assert_eq!(
        error_kind("a = [ yes ]\n"),
        ParseErrorKind::ExpectedListElement {
            key: "a".into(),
            found: Found::Char('y')
        }
    );
}

#[test]
fn comments_inside_lists_are_rejected_like_libvirt_does() {
    let message = "comments are not allowed inside a list (libvirt rejects them): move the comment \
                   above `a`";
    assert_eq!(
        error("a = [\n  # first\n  \"x\"\n]\n"),
        format!("t.conf:2:3: {message}")
    );
    assert_eq!(
        error("a = [ \"x\", # note\n \"y\" ]\n"),
        format!("t.conf:1:12: {message}")
    );
    assert_eq!(
        error("a = [ \"x\" # note\n]\n"),
        format!("t.conf:1:11: {message}")
    );
}

#[test]
fn an_unclosed_list_points_at_its_bracket() {
    let message = "the list of `a` that opens here is never closed: the file ends before its ']'";
    assert_eq!(
        error("x = 1\na = [ \"x\""),
        format!("t.conf:2:5: {message}")
    );
    assert_eq!(error("a = [\n\"x\",\n"), format!("t.conf:1:5: {message}"));
    assert_eq!(error("a = ["), format!("t.conf:1:5: {message}"));
    assert_eq!(
        error_kind("a = [ [ 1 ]"),
        ParseErrorKind::UnclosedList { key: "a".into() }
    );
}

#[test]
fn lists_nest_at_most_max_list_depth_levels() {
    let nested = |depth: usize| format!("a = {}{}\n", "[".repeat(depth), "]".repeat(depth));
    assert!(parse(&nested(MAX_LIST_DEPTH), "t.conf").is_ok());
    assert_eq!(
        error(&nested(MAX_LIST_DEPTH + 1)),
        format!("t.conf:1:69: the value of `a` nests lists deeper than {MAX_LIST_DEPTH} levels")
    );
    // Deep enough to overflow the stack without the limit.
    assert_eq!(
        error_kind(&format!("a = {}", "[".repeat(1_000_000))),
        ParseErrorKind::ListTooDeep { key: "a".into() }
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

// ---- rendering ----

#[test]
fn render_quotes_with_the_simplest_quotes_that_hold_the_string() {
    let value = |text: &str| string(text).to_text().unwrap();
    assert_eq!(value("plain"), "\"plain\"");
    assert_eq!(value("say \"hi\""), "'say \"hi\"'");
    assert_eq!(value("it's \"x\" too"), "\"\"\"it's \"x\" too\"\"\"");
    assert_eq!(value("two\nlines"), "\"\"\"two\nlines\"\"\"");
    assert_eq!(value(r"back\slash"), "\"back\\slash\"");
}

#[test]
fn render_writes_integers_and_lists() {
    assert_eq!(
        Value::Integer(-i64::MAX).to_text().unwrap(),
        "-9223372036854775807"
    );
    assert_eq!(
        list(vec![string("a"), Value::Integer(1), list(vec![])])
            .to_text()
            .unwrap(),
        "[ \"a\", 1, [ ] ]"
    );
}

#[test]
fn render_refuses_what_cannot_be_read_back() {
    assert_eq!(
        Value::Integer(i64::MIN).to_text(),
        Err(RenderError::IntegerOutOfRange(i64::MIN))
    );
    for text in [
        "nul\0",
        "'\"\"\"\n",
        "ends with quote\n\"",
        "both ' and \"\"",
    ] {
        assert_eq!(
            string(text).to_text(),
            Err(RenderError::UnrepresentableString(text.to_owned())),
            "{text:?}"
        );
    }
    let value = Value::Integer(1);
    for key in ["", "_a", "1a", "a-b", "a b"] {
        assert_eq!(
            render([(key, &value)]),
            Err(RenderError::InvalidKey(key.to_owned()))
        );
    }
    let mut deep = list(vec![]);
    for _ in 0..MAX_LIST_DEPTH {
        deep = list(vec![deep]);
    }
    assert_eq!(deep.to_text(), Err(RenderError::ListTooDeep));
}

#[test]
fn rendered_files_parse_back_to_the_same_entries() {
    let text = "a = \"x\"\nb = [ 1, 'q\"' ]\nc = \"\"\"l1\nl2\"\"\"\nd = -3\n";
    let conf = parse(text, "t.conf").unwrap();
    let rendered = conf.to_text().unwrap();
    assert_eq!(
        rendered,
        "a = \"x\"\nb = [ 1, 'q\"' ]\nc = \"\"\"l1\nl2\"\"\"\nd = -3\n"
    );
    assert_eq!(entries(&rendered), entries(text));
}

#[test]
fn render_errors_explain_themselves() {
    assert_eq!(
        RenderError::InvalidKey("_a".into()).to_string(),
        "`_a` is not a valid key: it must be an ASCII letter, then letters, digits or '_'"
    );
    assert_eq!(
        RenderError::UnrepresentableString("a\"\"\"\n".into()).to_string(),
        "the string \"a\\\"\\\"\\\"\\n\" cannot be written in libvirt's syntax, which has no \
         escape sequences"
    );
    assert_eq!(
        RenderError::IntegerOutOfRange(i64::MIN).to_string(),
        "-9223372036854775808 is outside libvirt's integer range (-9223372036854775807 to \
         9223372036854775807)"
    );
    assert_eq!(
        RenderError::ListTooDeep.to_string(),
        "lists nested deeper than 64 levels cannot be read back"
    );
}
