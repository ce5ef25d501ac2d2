//! Differential test against libvirt's own parser: the same texts go through [`parse`] and through
//! `virConfReadFile` in the installed `libvirt.so.0` (`oracle/virconf_oracle.c`, built here with
//! the system C compiler). Both must accept the same texts with the same entries, and reject the
//! same texts on the same line.
//!
//! Documented differences, and nothing else, are allowed:
//! - lockmgr rejects a NUL inside a string (libvirt cuts the string there), and lists nested
//!   deeper than `MAX_LIST_DEPTH`; the generators below produce neither;
//! - an unclosed list or `"""` string is reported at its opening bracket or quotes, where
//!   libvirt names the last line of the file.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use common::{shipped_conf_files, uncomment_examples};
use lockmgr_conf::{ParseErrorKind, Value, parse, render};
use proptest::prelude::*;

/// What libvirt made of a text.
#[derive(Debug, PartialEq)]
enum Verdict {
    Accepted(Vec<(String, Value)>),
    Rejected { line: usize, message: String },
}

/// libvirt's parser in a child process, fed one file at a time.
struct Oracle {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    scratch: tempfile::TempDir,
}

impl Oracle {
    fn start() -> Oracle {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/virconf_oracle.c");
        let binary = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("virconf_oracle");
        let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
        let build = Command::new(&compiler)
            .arg("-o")
            .arg(&binary)
            .arg(&source)
            .arg("-l:libvirt.so.0")
            .output()
            .unwrap_or_else(|error| {
                panic!("cannot run the C compiler `{compiler}` (install gcc or clang): {error}")
            });
        assert!(
            build.status.success(),
            "building {} failed; it needs a C compiler and libvirt.so.0 (Debian: gcc, libvirt0):\n{}",
            source.display(),
            String::from_utf8_lossy(&build.stderr)
        );
        let mut child = Command::new(&binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("{}: {error}", binary.display()));
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        let mut oracle = Oracle {
            child,
            input,
            output,
            scratch: tempfile::tempdir().unwrap(),
        };
        oracle.check_layout();
        oracle
    }

    /// The oracle reads libvirt's private `virConfValue` struct: make sure it reads it right.
    fn check_layout(&mut self) {
        let expected = Verdict::Accepted(vec![
            ("a".to_owned(), Value::Integer(-5)),
            ("b".to_owned(), Value::String("xy".to_owned())),
            (
                "c".to_owned(),
                Value::List(vec![
                    Value::Integer(1),
                    Value::List(vec![Value::String("z".into())]),
                ]),
            ),
        ]);
        assert_eq!(
            self.judge("a = -5\nb = \"xy\"\nc = [ 1, [ 'z' ] ]\n"),
            expected,
            "virconf_oracle.c misreads this libvirt's virConfValue: update its struct to \
             libvirt's src/util/virconf.h"
        );
    }

    fn judge(&mut self, text: &str) -> Verdict {
        let path = self.scratch.path().join("case.conf");
        std::fs::write(&path, text).unwrap();
        writeln!(self.input, "{}", path.display()).unwrap();
        self.input.flush().unwrap();
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let read = self.output.read_line(&mut line).unwrap();
            assert!(read > 0, "the oracle died on {text:?}");
            let line = line.trim_end_matches('\n').to_owned();
            if line == "END" {
                break;
            }
            lines.push(line);
        }
        let mut lines = lines.into_iter();
        let head = lines.next().unwrap_or_default();
        if let Some(error) = head.strip_prefix("ERR ") {
            let (line, message) = error.split_once('\t').unwrap_or((error, ""));
            return Verdict::Rejected {
                line: line.parse().unwrap(),
                message: message.to_owned(),
            };
        }
        assert_eq!(head, "OK");
        let entries = lines
            .map(|line| {
                let (key, value) = line.split_once('\t').unwrap();
                let (value, rest) = decode(value);
                assert_eq!(rest, "", "{line}");
                (key.to_owned(), value)
            })
            .collect();
        Verdict::Accepted(entries)
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One value of the oracle's output format, and what follows it.
fn decode(text: &str) -> (Value, &str) {
    if let Some(mut rest) = text.strip_prefix('[') {
        let mut elements = Vec::new();
        if let Some(after) = rest.strip_prefix(']') {
            return (Value::List(elements), after);
        }
        loop {
            let (element, after) = decode(rest);
            elements.push(element);
            if let Some(after) = after.strip_prefix(',') {
                rest = after;
            } else {
                return (Value::List(elements), after.strip_prefix(']').unwrap());
            }
        }
    }
    let end = text.find([',', ']']).unwrap_or(text.len());
    let (token, rest) = text.split_at(end);
    let value = match token.split_at(1) {
        ("i", digits) => Value::Integer(digits.parse().unwrap()),
        ("s", hex) => {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            Value::String(String::from_utf8(bytes).unwrap())
        }
        _ => panic!("bad oracle value {token:?}"),
    };
    (value, rest)
}

fn oracle() -> &'static Mutex<Oracle> {
    static ORACLE: OnceLock<Mutex<Oracle>> = OnceLock::new();
    ORACLE.get_or_init(|| Mutex::new(Oracle::start()))
}

/// What libvirt says where this parser reports `kind`: the mapping the documentation of
/// `ParseErrorKind` promises.
fn libvirt_messages(kind: &ParseErrorKind) -> &'static [&'static str] {
    match kind {
        ParseErrorKind::OnlyBlanks | ParseErrorKind::ExpectedKey { .. } => &["expecting a name"],
        ParseErrorKind::ExpectedEquals { .. } => &["expecting an assignment"],
        ParseErrorKind::ExpectedValue { .. } | ParseErrorKind::ExpectedListElement { .. } => {
            &["expecting a value"]
        }
        ParseErrorKind::ExpectedListSeparator { .. } => &["expecting a separator in list"],
        ParseErrorKind::CommentInList { .. } => {
            &["expecting a value", "expecting a separator in list"]
        }
        ParseErrorKind::UnclosedList { .. } => &["list is not closed with ]", "expecting a value"],
        ParseErrorKind::UnterminatedString { .. }
        | ParseErrorKind::UnterminatedTripleQuotedString { .. } => &["unterminated string"],
        ParseErrorKind::ExpectedDigit { .. } => &["unterminated number"],
        ParseErrorKind::IntegerOutOfRange { .. } => &["numeric overflow in conf value"],
        ParseErrorKind::ExpectedSeparator { .. } => &["expecting a separator"],
        // Stricter than libvirt: never produced by the generators, so never compared.
        _ => &[],
    }
}

/// Parses `text` both ways; panics (with both answers) unless they agree.
fn assert_agrees(text: &str) {
    let libvirt = oracle()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .judge(text);
    let ours = parse(text, "case.conf");
    match (&ours, &libvirt) {
        (Ok(conf), Verdict::Accepted(entries)) => {
            let ours: Vec<_> = conf
                .entries()
                .iter()
                .map(|entry| (entry.key.clone(), entry.value.clone()))
                .collect();
            assert_eq!(&ours, entries, "same text, different entries: {text:?}");
        }
        (Err(error), Verdict::Rejected { line, message }) => {
            let libvirt_says = libvirt_messages(&error.kind);
            assert!(
                libvirt_says.iter().any(|says| message.ends_with(says)),
                "{text:?}: ours is {error}, so libvirt should say one of {libvirt_says:?}, but it \
                 says {message:?}"
            );
            let reported_at_the_opener = matches!(
                error.kind,
                ParseErrorKind::UnclosedList { .. }
                    | ParseErrorKind::UnterminatedTripleQuotedString { .. }
            );
            if !reported_at_the_opener {
                assert_eq!(
                    error.location.position.line, *line,
                    "different lines for {text:?}: ours {error}, libvirt's {libvirt:?}"
                );
            }
        }
        _ => panic!("disagreement on {text:?}:\n  ours:     {ours:?}\n  libvirt's: {libvirt:?}"),
    }
}

/// 512 cases per property, unless `PROPTEST_CASES` says otherwise.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 512;
    }
    config
}

/// The cases worked out by hand while writing the parser, and the unit tests' edge cases.
const CASES: &[&str] = &[
    "",
    "\n",
    "   ",
    "  \t",
    "\n\n  a = 1",
    "#",
    "# c\n\n  \n",
    "a = 1\na = 2\n",
    "a = 1; b = 2 ;\nc = 3;",
    "a = 1;;\n",
    "a = 1;\n;\n",
    "a = 1\r\nb = 2\r\n",
    "a = 1\rb = 2\nc = 3",
    "\ta\t=\t1\t\n",
    "a = 1\u{b}\n",
    "a = 1 # one\nb = \"x\"# two\nc = [ 1 ]#three",
    "a = 1 b = 2\n",
    "AbC9_x_ = 2\n",
    "_a = 1\n",
    "9a = 1\n",
    "= 1\n",
    "é = 1\n",
    "a.b = 1\n",
    "lock-manager = 1\n",
    "a\n= 1\n",
    "abc",
    "a =\n1\n",
    "a = ",
    "a = yes\n",
    "a = # nothing\n",
    "a = \"x y\"\nb = 'it \"is\"'\nc = \"\"\nd = ''\n",
    "a = \"#x\" # y\n",
    "a = \"C:\\dir\\n\\\"",
    "a = \"x\\\"y\"\n",
    "a = [ \"x\\\"y\" ]\n",
    "a = 1\nb = \"x\nc = 2\n",
    "a = 'x",
    "a = \"x\ry\"\n",
    "a = \"x\" \"y\"\n",
    "a = 'it''s'\n",
    "a = \"\"\"one\n'two' \"three\"\n\"\"\"\nb = 1\n",
    "a = \"\"\"x\"\"y\"\"\"\n",
    "a = \"\"\"\"\"\"\n",
    "a = \"\"\"\"\"\"",
    "a = \"\"\"ab\"\"\"",
    "a = \"\"\"a\"\"\"",
    "a = \"\"\"x\"\"",
    "a = \"\"\"one\ntwo\"\"\n",
    "a = \"é€😀\" b\n",
    "a = 0\nb = -5\nc = +7\nd = 010\ne = 4294967296\n",
    "a = 9223372036854775807\nb = -9223372036854775807\n",
    "a = 1\nbig = 9223372036854775808\n",
    "a = -9223372036854775808",
    "a = -\n",
    "a = +x",
    "a = 0x10\n",
    "a = 1.5\n",
    "a = 1e3\n",
    "a = []\nb = [ ]\nc = [\n\n]\n",
    "acl = [\n    \"/dev/null\", \"/dev/full\",\n\n    \"/dev/kvm\" ,\n]\nb = 1\n",
    "a = [ [ \"x\" ], 1, -2, [] ]\n",
    "a = [ \"x\" \"y\" ]\n",
    "a = [\n  \"x\"\n  \"y\"\n]\n",
    "a = [ , ]\n",
    "a = [ \"x\",, ]\n",
    "a = [ yes ]\n",
    "a = [\n  # first\n  \"x\"\n]\n",
    "a = [ \"x\", # note\n \"y\" ]\n",
    "a = [ \"x\" # note\n]\n",
    "x = 1\na = [ \"x\"",
    "a = [\n\"x\",\n",
    "a = [",
    "a = [ [ 1 ]",
];

#[test]
fn libvirt_agrees_on_the_hand_written_cases() {
    for text in CASES {
        assert_agrees(text);
    }
}

#[test]
fn libvirt_agrees_on_the_shipped_files_and_their_uncommented_examples() {
    for path in shipped_conf_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        assert_agrees(&text);
        assert_agrees(&uncomment_examples(&text).text);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn libvirt_agrees_on_token_soups(text in common::token_soup()) {
        assert_agrees(&text);
    }

    #[test]
    fn libvirt_agrees_on_statement_soups(text in common::statement_soup()) {
        assert_agrees(&text);
    }

    #[test]
    fn libvirt_reads_rendered_files_back_to_the_same_entries(entries in common::entries()) {
        let text = render(entries.iter().map(|(key, value)| (key.as_str(), value))).unwrap();
        let libvirt = oracle().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).judge(&text);
        prop_assert_eq!(libvirt, Verdict::Accepted(entries), "{:?}", text);
    }
}
