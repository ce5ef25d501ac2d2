//! The parent's side: runs `__validate-one` in a child process, collects its step events and
//! output, and turns a crash into a report naming the step it happened in.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use super::{Event, PluginReport, Status};
use crate::sys;

/// Validates `plugin` in a child process running `exe __validate-one`.
pub fn validate_in_subprocess(exe: &Path, plugin: &Path, config: &Path) -> PluginReport {
    let mut report = PluginReport {
        plugin: plugin.to_owned(),
        config: config.to_owned(),
        config_exists: config.exists(),
        steps: Vec::new(),
        crashed: None,
        plugin_output: String::new(),
        verdict: Status::Skipped,
    };
    let child = Command::new(exe)
        .arg("__validate-one")
        .arg(plugin)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => {
            report.crashed = Some(format!("cannot start {}: {err}", exe.display()));
            return report.finish();
        }
    };
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut running: Option<String> = None;
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<Event>(&line) {
            Ok(Event::Start { step }) => running = Some(step),
            Ok(Event::Done(result)) => {
                running = None;
                report.steps.push(result);
            }
            Err(_) => report.plugin_output.push_str(&format!("{line}\n")),
        }
    }
    let status = child.wait();
    report
        .plugin_output
        .push_str(&stderr_reader.join().unwrap_or_default());
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            let how = match status.signal() {
                Some(signal) => format!("killed by signal {signal} ({})", sys::signal_name(signal)),
                None => format!("exited with status {}", status.code().unwrap_or(-1)),
            };
            let place = running.map_or_else(String::new, |step| format!(" during step '{step}'"));
            report.crashed = Some(format!("the plugin's host process {how}{place}"));
        }
        Err(err) => report.crashed = Some(format!("waiting for the validator: {err}")),
    }
    report.finish()
}
