//! qemu-file.conf(5) and qemu-dlm.conf(5), from the shipped files themselves.
//!
//! A shipped file is libvirt's style (qemu-lockd.conf): a header of `#` lines, then one block
//! per key, blocks separated by blank lines, each a few `# prose` lines ending in the commented-out
//! setting `#key = value`. The header is the page's DESCRIPTION, each block one entry of SETTINGS.

use std::io::Write;

use crate::roff;

/// One shipped configuration file.
#[derive(Debug)]
pub struct ConfFile {
    /// Its name in `dist/` and in `/etc/libvirt`.
    pub file_name: &'static str,
    /// The page's one-line summary.
    pub summary: &'static str,
    /// The other pages it names.
    pub see_also: &'static [(&'static str, u8)],
}

pub const CONF_FILES: &[ConfFile] = &[
    ConfFile {
        file_name: "qemu-file.conf",
        summary: "settings of lockmgr's file lock plugin for libvirt (file.so) and its daemon",
        see_also: &[
            ("lockmgrd", 8),
            ("lockmgr", 8),
            ("qemu-dlm.conf", 5),
            ("libvirtd", 8),
            ("lslocks", 8),
        ],
    },
    ConfFile {
        file_name: "qemu-dlm.conf",
        summary: "settings of lockmgr's DLM lock plugin for libvirt (dlm.so) and its daemon",
        see_also: &[
            ("lockmgrd", 8),
            ("lockmgr", 8),
            ("qemu-file.conf", 5),
            ("libvirtd", 8),
            ("dlm_controld", 8),
            ("dlm.conf", 5),
            ("corosync", 8),
        ],
    },
];

/// One documented key of a shipped file.
#[derive(Debug, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    /// The value on the commented-out line, as written (`1`, `"/run/lockmgr/file.sock"`).
    pub value: String,
    /// The prose above it, paragraphs separated by blank lines.
    pub text: String,
}

/// The shipped file's header (prose) and its settings, in order.
pub fn parse(text: &str) -> Result<(String, Vec<Setting>), String> {
    let mut header = None;
    let mut settings = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut prose = Vec::new();
        let mut setting = None;
        for line in block.lines() {
            if let Some((key, value)) = example(line) {
                if setting.is_some() {
                    return Err(format!("two settings in one block: {block:?}"));
                }
                setting = Some((key, value));
            } else if let Some(rest) = line.strip_prefix('#') {
                if setting.is_some() {
                    return Err(format!("prose after the setting in {block:?}"));
                }
                prose.push(rest.strip_prefix(' ').unwrap_or(rest).trim_end());
            } else {
                return Err(format!(
                    "a line that is neither a comment nor a commented-out setting: {line:?}"
                ));
            }
        }
        let text = prose.join("\n").trim().to_owned();
        match setting {
            Some((key, value)) => settings.push(Setting { key, value, text }),
            None if header.is_none() && settings.is_empty() => header = Some(text),
            None => return Err(format!("a block without a setting: {block:?}")),
        }
    }
    Ok((header.unwrap_or_default(), settings))
}

/// `#key = value` (no blank after `#`: that is prose) as (key, value).
fn example(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?;
    if !rest.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let (key, value) = rest.split_once('=')?;
    let key = key.trim();
    if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Some((key.to_owned(), value.trim().to_owned()))
    } else {
        None
    }
}

/// The page of `conf`, whose shipped text is `text`.
pub fn render(conf: &ConfFile, text: &str) -> Result<String, String> {
    let (header, settings) = parse(text)?;
    let io = |error: std::io::Error| error.to_string();
    let mut out = Vec::new();
    let title = conf.file_name.to_uppercase();
    writeln!(
        out,
        ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n.TH {title} 5 \"\" \"{}\" \"{}\"",
        crate::SOURCE,
        crate::MANUAL
    )
    .map_err(io)?;
    writeln!(out, ".SH NAME").map_err(io)?;
    writeln!(
        out,
        "{} \\- {}",
        roff::escape(conf.file_name),
        roff::escape(conf.summary)
    )
    .map_err(io)?;
    writeln!(out, ".SH SYNOPSIS\n.I /etc/libvirt/{}", conf.file_name).map_err(io)?;
    writeln!(out, ".SH DESCRIPTION").map_err(io)?;
    roff::paragraphs(&mut out, &header).map_err(io)?;
    writeln!(out, ".SH SETTINGS").map_err(io)?;
    for setting in &settings {
        writeln!(
            out,
            ".TP\n\\fB{}\\fR = {}",
            roff::escape(&setting.key),
            roff::escape(&setting.value)
        )
        .map_err(io)?;
        roff::indented_paragraphs(&mut out, &setting.text).map_err(io)?;
    }
    writeln!(
        out,
        ".SH FILES\n.TP\n.I /etc/libvirt/{0}\nThis file, shipped with every setting commented out.\n.TP\n.I /usr/share/augeas/lenses/lockmgr_{1}.aug\nThe Augeas lens for it.",
        conf.file_name,
        conf.file_name.trim_start_matches("qemu-").trim_end_matches(".conf"),
    )
    .map_err(io)?;
    roff::see_also(&mut out, conf.see_also).map_err(io)?;
    String::from_utf8(out).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockmgr_conf::{DlmPluginSettings, FilePluginSettings, parse as parse_conf};

    fn shipped(name: &str) -> String {
        std::fs::read_to_string(crate::dist_dir().join(name)).unwrap()
    }

    /// The shipped text with every `#key = value` line made live.
    fn uncommented(text: &str) -> String {
        text.lines()
            .map(|line| match example(line) {
                Some(_) => format!("{}\n", &line[1..]),
                None => format!("{line}\n"),
            })
            .collect()
    }

    #[test]
    fn each_shipped_file_documents_exactly_the_keys_its_plugin_reads_in_order() {
        for (name, keys) in [
            ("qemu-file.conf", FilePluginSettings::KEYS),
            ("qemu-dlm.conf", DlmPluginSettings::KEYS),
        ] {
            let (header, settings) = parse(&shipped(name)).unwrap();
            assert!(header.contains(name.trim_start_matches("qemu-").trim_end_matches(".conf")));
            let documented: Vec<&str> = settings.iter().map(|s| s.key.as_str()).collect();
            assert_eq!(documented, keys, "{name}");
            for setting in &settings {
                assert!(
                    setting.text.contains("Default:"),
                    "{name}: {} does not say its default",
                    setting.key
                );
            }
        }
    }

    #[test]
    fn the_shipped_files_as_installed_mean_every_default_without_a_warning() {
        let file = parse_conf(&shipped("qemu-file.conf"), "qemu-file.conf").unwrap();
        let (settings, warnings) = FilePluginSettings::from_conf(&file).unwrap();
        assert_eq!(settings, FilePluginSettings::default());
        assert!(warnings.is_empty(), "{warnings:?}");
        let dlm = parse_conf(&shipped("qemu-dlm.conf"), "qemu-dlm.conf").unwrap();
        let (settings, warnings) = DlmPluginSettings::from_conf(&dlm).unwrap();
        assert_eq!(settings, DlmPluginSettings::default());
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    /// The commented-out values are the defaults (file_lockspace_dir, which has none, shows
    /// libvirt's example directory), and each parses without a warning.
    #[test]
    fn the_commented_out_values_are_the_defaults() {
        let text = uncommented(&shipped("qemu-file.conf"));
        let file = parse_conf(&text, "qemu-file.conf (uncommented)").unwrap();
        let (settings, warnings) = FilePluginSettings::from_conf(&file).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let expected = FilePluginSettings {
            file_lockspace_dir: Some("/var/lib/libvirt/lockd/files".into()),
            ..FilePluginSettings::default()
        };
        assert_eq!(settings, expected);

        let text = uncommented(&shipped("qemu-dlm.conf"));
        let dlm = parse_conf(&text, "qemu-dlm.conf (uncommented)").unwrap();
        let (settings, warnings) = DlmPluginSettings::from_conf(&dlm).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(settings, DlmPluginSettings::default());
    }

    #[test]
    fn the_page_has_every_setting_and_its_prose() {
        let text = shipped("qemu-dlm.conf");
        let page = render(&CONF_FILES[1], &text).unwrap();
        for key in DlmPluginSettings::KEYS {
            assert!(page.contains(&format!("\\fB{}\\fR = ", key)), "{key}");
        }
        assert!(page.contains("1 to 64"));
        assert!(page.contains(".SH DESCRIPTION"));
    }

    #[test]
    fn a_block_of_prose_after_the_settings_is_refused() {
        assert!(parse("# header\n\n# a\n#a = 1\n\n# stray prose\n").is_err());
        assert!(parse("# header\n\na = 1\n").is_err());
    }
}
