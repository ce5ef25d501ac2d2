//! fence_lockmgr_watchdog(8), from the comment at the top of the agent itself.

use std::io::Write;

use crate::roff;

/// The agent's file in the workspace.
pub const AGENT: &str = "daemon/fence_lockmgr_watchdog";

/// The page: the agent's leading comment (after `#!`) is its DESCRIPTION; lines indented by four
/// blanks are shown as they are (configuration and command examples).
pub fn render(script: &str) -> Result<String, String> {
    let comment: Vec<&str> = script
        .lines()
        .skip_while(|line| line.starts_with("#!"))
        .take_while(|line| line.starts_with('#'))
        .map(|line| {
            let text = line.trim_start_matches('#');
            text.strip_prefix(' ').unwrap_or(text)
        })
        .collect();
    let first = comment.first().ok_or("the agent has no leading comment")?;
    let name = "fence_lockmgr_watchdog";
    if !first.starts_with(&format!("{name}: ")) {
        return Err(format!("the agent's comment must start with '{name}: '"));
    }
    let io = |error: std::io::Error| error.to_string();
    let mut out = Vec::new();
    writeln!(
        out,
        ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n.TH {name} 8 \"\" \"{}\" \"{}\"\n.SH NAME\n{} \\- \
         DLM fence agent for nodes that fence themselves with a watchdog (lockmgrd \\-\\-watchdog)\n\
         .SH SYNOPSIS\n.B fence_all {} wait=\\fISECONDS\\fR\n(in /etc/dlm/dlm.conf)\n.SH DESCRIPTION",
        crate::SOURCE,
        crate::MANUAL,
        roff::escape(name),
        roff::escape(&format!("/usr/sbin/{name}")),
    )
    .map_err(io)?;
    let mut in_example = false;
    let mut first_line = true;
    for line in &comment {
        let capitalized;
        let line = if first_line {
            first_line = false;
            let rest = line.trim_start_matches(&format!("{name}: "));
            let mut chars = rest.chars();
            capitalized = chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default();
            capitalized.as_str()
        } else {
            line
        };
        let example = line.starts_with("    ");
        if example && !in_example {
            writeln!(out, ".PP\n.nf").map_err(io)?;
        } else if !example && in_example {
            writeln!(out, ".fi").map_err(io)?;
        }
        in_example = example;
        if line.trim().is_empty() {
            if !example {
                writeln!(out, ".PP").map_err(io)?;
            }
        } else {
            writeln!(out, "{}", roff::escape(line.trim_end())).map_err(io)?;
        }
    }
    if in_example {
        writeln!(out, ".fi").map_err(io)?;
    }
    writeln!(
        out,
        ".SH FILES\n.TP\n.I /var/log/fence_lockmgr_watchdog.log\nWhat the agent did."
    )
    .map_err(io)?;
    roff::see_also(
        &mut out,
        &[("lockmgrd", 8), ("dlm_controld", 8), ("dlm.conf", 5)],
    )
    .map_err(io)?;
    String::from_utf8(out).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_comment_is_its_page() {
        let script = std::fs::read_to_string(crate::workspace_dir().join(AGENT)).unwrap();
        let page = render(&script).unwrap();
        assert!(page.contains(".SH DESCRIPTION\nThe fence agent of a DLM cluster"));
        assert!(page.contains("fence_all /usr/sbin/fence_lockmgr_watchdog wait=SECONDS"));
        assert!(page.contains(".nf\n    enable_fencing=1"), "{page}");
    }
}
