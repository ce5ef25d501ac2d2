//! Integers (range, signs) and lists (commas, comments, nesting).

use super::*;

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
