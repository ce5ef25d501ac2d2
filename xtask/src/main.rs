//! `lockmgr-xtask`: the generated part of lockmgr's distribution files.
//!
//! ```text
//! cargo run -p lockmgr-xtask -- man OUTDIR
//!     # lockmgrd.8 lockmgr.8 fence_lockmgr_watchdog.8 qemu-file.conf.5 qemu-dlm.conf.5
//! lockmgr-xtask hold SOCKET DISK
//!     # for tests/package/run.sh: a stand-in domain holding a lock (see hold.rs)
//! ```
//!
//! One source for each page: the `struct Cli` of `lockmgrd` and of `lockmgr` (compiled here from
//! the binaries' own source files, see build.rs), the leading comment of the fence agent, and the
//! shipped configuration files in `dist/`,
//! whose comments are the pages of qemu-file.conf(5) and qemu-dlm.conf(5). The tests check that
//! those files name every key the plugins read, with the defaults the plugins use.

mod agent_page;
mod conf_page;
mod hold;
mod roff;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `lockmgrd`'s `main.rs`, compiled here for its `Cli`.
#[allow(dead_code, unused_imports, clippy::all)]
mod lockmgrd_main {
    include!(concat!(env!("OUT_DIR"), "/lockmgrd_main.rs"));

    pub(crate) fn command() -> clap::Command {
        <Cli as clap::CommandFactory>::command()
    }
}

/// `lockmgr`'s `bin/lockmgr.rs`, compiled here for its `Cli`.
#[allow(dead_code, unused_imports, clippy::all)]
mod lockmgr_main {
    include!(concat!(env!("OUT_DIR"), "/lockmgr_main.rs"));

    pub(crate) fn command() -> clap::Command {
        <Cli as clap::CommandFactory>::command()
    }
}

/// The workspace's directory.
fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The workspace's `dist/` directory, which holds the shipped configuration files.
fn dist_dir() -> PathBuf {
    workspace_dir().join("dist")
}

/// What the pages' footers say.
const SOURCE: &str = concat!("lockmgr ", env!("CARGO_PKG_VERSION"));
const MANUAL: &str = "lockmgr";

/// Every page: its file name and its text.
fn pages() -> Result<Vec<(String, String)>, String> {
    let mut pages = vec![
        (
            "lockmgrd.8".to_owned(),
            command_page(lockmgrd_main::command(), LOCKMGRD_EXTRA, LOCKMGRD_SEE_ALSO)?,
        ),
        (
            "lockmgr.8".to_owned(),
            command_page(lockmgr_main::command(), LOCKMGR_EXTRA, LOCKMGR_SEE_ALSO)?,
        ),
    ];
    let agent = workspace_dir().join(agent_page::AGENT);
    let script = std::fs::read_to_string(&agent)
        .map_err(|error| format!("cannot read {}: {error}", agent.display()))?;
    pages.push((
        "fence_lockmgr_watchdog.8".to_owned(),
        agent_page::render(&script)?,
    ));
    for conf in conf_page::CONF_FILES {
        let path = dist_dir().join(conf.file_name);
        let text = std::fs::read_to_string(&path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        pages.push((
            format!("{}.5", conf.file_name),
            conf_page::render(conf, &text)?,
        ));
    }
    Ok(pages)
}

/// A command's page: clap_mangen's sections, each subcommand's options, then `extra` (raw roff:
/// FILES, ...) and `see_also`.
fn command_page(
    command: clap::Command,
    extra: &str,
    see_also: &[(&str, u8)],
) -> Result<String, String> {
    let mut command = command.version(env!("CARGO_PKG_VERSION"));
    // Propagates the global options to the subcommands and settles every argument's arity.
    command.build();
    let man = clap_mangen::Man::new(command.clone())
        .section("8")
        .source(SOURCE)
        .manual(MANUAL);
    let mut out = Vec::new();
    let io = |error: std::io::Error| error.to_string();
    man.render_title(&mut out).map_err(io)?;
    man.render_name_section(&mut out).map_err(io)?;
    man.render_synopsis_section(&mut out).map_err(io)?;
    man.render_description_section(&mut out).map_err(io)?;
    if command.get_arguments().any(|arg| !arg.is_hide_set()) {
        man.render_options_section(&mut out).map_err(io)?;
    }
    let subcommands: Vec<&clap::Command> = command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
        .collect();
    if !subcommands.is_empty() {
        writeln!(out, ".SH COMMANDS").map_err(io)?;
        for sub in subcommands {
            roff::subcommand(&mut out, command.get_name(), sub).map_err(io)?;
        }
    }
    if let Some(after) = command.get_after_long_help().or(command.get_after_help()) {
        roff::examples(&mut out, &after.to_string()).map_err(io)?;
    }
    out.extend_from_slice(extra.as_bytes());
    roff::see_also(&mut out, see_also).map_err(io)?;
    man.render_version_section(&mut out).map_err(io)?;
    String::from_utf8(out).map_err(|error| error.to_string())
}

const LOCKMGRD_EXTRA: &str = r#".SH SIGNALS
SIGTERM and SIGINT stop the daemon. It leaves the locks of running domains to the next start:
file locks are taken again (a domain whose lock someone else took meanwhile gets its
<on_lockfailure> applied), DLM locks stay in the kernel as orphans that keep protecting the disks
and are adopted again.
.SH ENVIRONMENT
.TP
.B NOTIFY_SOCKET
Set by systemd for a
.B Type=notify
service: once the daemon answers on its socket it sends
.B READY=1
there, so units ordered after it (libvirtd, virtqemud) start only then.
.SH FILES
.TP
.I /etc/libvirt/qemu-file.conf
The configuration of file.so and of the file backend, see
.BR qemu-file.conf (5).
.TP
.I /etc/libvirt/qemu-dlm.conf
The configuration of dlm.so and of the dlm backend, see
.BR qemu-dlm.conf (5).
.TP
.I /run/lockmgr/
The daemons' sockets and state directories (their lock tables, locks.json) by default.
.TP
.I /etc/default/lockmgrd\fR, \fI/etc/default/lockmgrd-dlm
Extra arguments for lockmgrd.service and lockmgrd-dlm.service (LOCKMGRD_ARGS).
.TP
.I /etc/dlm/dlm.conf
Read with
.B \-\-backend dlm
for its fence agents.
"#;

const LOCKMGRD_SEE_ALSO: &[(&str, u8)] = &[
    ("lockmgr", 8),
    ("qemu-file.conf", 5),
    ("qemu-dlm.conf", 5),
    ("libvirtd", 8),
    ("dlm_controld", 8),
    ("dlm.conf", 5),
    ("corosync", 8),
];

const LOCKMGR_EXTRA: &str = r#".SH EXIT STATUS
.B status
and
.BR events :
0 when a daemon answered, 1 when none runs (or the one asked for does not).
.BR doctor :
0 when no finding blocks dlm.so, 1 when one does.
All: 2 on a bad configuration or a refused request.
.SH FILES
.TP
.I /etc/libvirt/qemu-dlm.conf\fR, \fI/etc/libvirt/qemu-file.conf
Where the daemons' sockets are named (socket_path), see
.BR qemu-dlm.conf (5)
and
.BR qemu-file.conf (5).
"#;

const LOCKMGR_SEE_ALSO: &[(&str, u8)] = &[
    ("lockmgrd", 8),
    ("qemu-file.conf", 5),
    ("qemu-dlm.conf", 5),
    ("lslocks", 8),
    ("dlm_tool", 8),
    ("corosync\\-quorumtool", 8),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match hold::child() {
        Some(result) => result,
        None => match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["man", out_dir] => write_pages(Path::new(out_dir)),
            ["hold", socket, disk] => hold::hold(Path::new(socket), disk),
            _ => Err("usage: lockmgr-xtask man OUTDIR | lockmgr-xtask hold SOCKET DISK".to_owned()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("lockmgr-xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn write_pages(out_dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out_dir)
        .map_err(|error| format!("cannot create {}: {error}", out_dir.display()))?;
    for (name, text) in pages()? {
        let path = out_dir.join(&name);
        std::fs::write(&path, text)
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_renders() {
        let pages = pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "lockmgrd.8",
                "lockmgr.8",
                "fence_lockmgr_watchdog.8",
                "qemu-file.conf.5",
                "qemu-dlm.conf.5"
            ]
        );
        for (name, text) in &pages {
            assert!(text.starts_with(".ie"), "{name}: {}", &text[..40]);
            assert!(text.contains(".SH NAME"), "{name}");
        }
    }

    /// Every long option `--help` shows is on the page (roff writes `-` as `\-`).
    #[test]
    fn the_command_pages_name_every_option_of_help() {
        for (command, page) in [
            (lockmgrd_main::command(), "lockmgrd.8"),
            (lockmgr_main::command(), "lockmgr.8"),
        ] {
            let text = command_page(command.clone(), "", &[]).unwrap();
            let mut commands = vec![command.clone()];
            commands.extend(command.get_subcommands().cloned());
            for command in commands {
                for arg in command.get_arguments().filter(|arg| !arg.is_hide_set()) {
                    if let Some(long) = arg.get_long() {
                        let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
                        assert!(text.contains(&roff), "{page} lacks --{long}");
                    }
                }
            }
            let _ = page;
        }
    }

    #[test]
    fn the_lockmgr_page_documents_each_command() {
        let text = command_page(lockmgr_main::command(), "", &[]).unwrap();
        assert!(text.contains("lockmgr status"), "{text}");
        assert!(text.contains("lockmgr events"), "{text}");
        assert!(text.contains("\\-\\-follow"), "{text}");
    }
}
