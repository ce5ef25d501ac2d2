//! Small roff writers for what clap_mangen does not render: a subcommand with its options, and
//! prose from the shipped configuration files.

use std::io::{self, Write};

/// `text` as roff text: backslashes escaped, `-` as `\-` (so that options copy as ASCII), and a
/// line that would start with a control character (`.` or `'`) protected.
pub fn escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// The SEE ALSO section: each page as `.BR name (section)`, `name` already roff; none without
/// pages.
pub fn see_also(out: &mut impl Write, pages: &[(&str, u8)]) -> io::Result<()> {
    if pages.is_empty() {
        return Ok(());
    }
    writeln!(out, ".SH SEE ALSO")?;
    let lines: Vec<String> = pages
        .iter()
        .map(|(name, section)| format!(".BR {name} ({section})"))
        .collect();
    writeln!(out, "{}", lines.join(",\n"))
}

/// Paragraphs (separated by blank lines) as roff: `.PP` between them, lines escaped.
pub fn paragraphs(out: &mut impl Write, text: &str) -> io::Result<()> {
    paragraphs_with(out, text, ".PP")
}

/// Paragraphs of a `.TP` entry: `.IP` between them keeps the indent.
pub fn indented_paragraphs(out: &mut impl Write, text: &str) -> io::Result<()> {
    paragraphs_with(out, text, ".IP")
}

fn paragraphs_with(out: &mut impl Write, text: &str, separator: &str) -> io::Result<()> {
    let mut first = true;
    for paragraph in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
        if !first {
            writeln!(out, "{separator}")?;
        }
        first = false;
        for line in paragraph.lines() {
            writeln!(out, "{}", escape(line.trim_end()))?;
        }
    }
    Ok(())
}

/// `.SS "PARENT NAME [OPTIONS]"`, its long help, and its options as a `.TP` list.
pub fn subcommand(out: &mut impl Write, parent: &str, command: &clap::Command) -> io::Result<()> {
    let options: Vec<&clap::Arg> = command
        .get_arguments()
        .filter(|arg| !arg.is_hide_set() && !arg.is_global_set() && arg.get_id() != "help")
        .collect();
    let usage = if options.is_empty() {
        String::new()
    } else {
        " [OPTIONS]".to_owned()
    };
    writeln!(
        out,
        ".SS \"{} {}{}\"",
        escape(parent),
        escape(command.get_name()),
        usage
    )?;
    if let Some(about) = command.get_long_about().or(command.get_about()) {
        paragraphs(out, &about.to_string())?;
    }
    for arg in options {
        writeln!(out, ".TP")?;
        let mut names = Vec::new();
        if let Some(short) = arg.get_short() {
            names.push(format!("\\fB\\-{short}\\fR"));
        }
        if let Some(long) = arg.get_long() {
            names.push(format!("\\fB\\-\\-{}\\fR", escape(long)));
        }
        let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
        let value = match arg.get_value_names() {
            Some(values) if takes_value => values
                .iter()
                .map(|v| format!(" \\fI{}\\fR", escape(v)))
                .collect::<String>(),
            _ => String::new(),
        };
        writeln!(out, "{}{value}", names.join(", "))?;
        if let Some(help) = arg.get_long_help().or(arg.get_help()) {
            let mut help = help.to_string();
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            if !defaults.is_empty() && takes_value {
                help.push_str(&format!(" [default: {}]", defaults.join(", ")));
            }
            indented_paragraphs(out, &help)?;
        }
    }
    Ok(())
}

/// The `after_help` of a command (`Examples:` and indented command lines, `# comments`) as an
/// EXAMPLES section, lines kept as they are.
pub fn examples(out: &mut impl Write, after_help: &str) -> io::Result<()> {
    let body = after_help
        .strip_prefix("Examples:")
        .unwrap_or(after_help)
        .trim_matches('\n');
    writeln!(out, ".SH EXAMPLES\n.nf")?;
    for line in body.lines() {
        writeln!(out, "{}", escape(line.trim_end()))?;
    }
    writeln!(out, ".fi")
}
