//! Rendering entries back into libvirt's syntax, and its errors.

use super::*;

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
