//! Domains on the nodes, as the cluster suites place them: every libvirt call of a domain is one
//! `lockmgr-loader-test step` run in its node through the guest agent (so it works while the
//! cluster's network is cut), loading dlm.so afresh as libvirtd does after a restart. `step`
//! makes the call on the owner engine the matrix's agent serves its cells with; this module is
//! the suites' one way to ask for it and to read its answer.

use serde_json::Value;

use crate::SHARE_MOUNT as SHARE;

/// dlm.so's configuration in a node, as the node image installs it.
pub const DLM_CONFIG: &str = "/etc/libvirt/qemu-dlm.conf";
/// libvirt's `VIR_ERR_RESOURCE_BUSY`: the code of a refusal.
pub const BUSY: i64 = 87;

/// The command that makes one call of `domain` (QEMU stand-in `pid`; 0 before it registered)
/// through dlm.so reading `config`: `op` is `register`, `acquire`, `pause`, `release` or
/// `inquire`, `extra` more of `step`'s arguments (`--disk PATH`, `--state S`…).
pub fn step_command(op: &str, config: &str, domain: &str, pid: u32, extra: &str) -> String {
    format!(
        "{SHARE}/lockmgr-loader-test step {op} --plugin {SHARE}/libdlm_plugin.so --config {config} \
         --domain {domain} --pid {pid} {extra}"
    )
}

/// What a `step` printed: its JSON line, and everything it printed.
#[derive(Debug, Clone)]
pub struct Step {
    /// The JSON line (`{"step": …, "ok": …, "pid"…, "uuid"…, "state"…, "code"…, "error"…}`).
    pub json: Value,
    /// All of its output.
    pub raw: String,
}

impl Step {
    /// The last JSON line of `output`; `None` when it printed none (bad arguments, a crash).
    pub fn parse(output: &str) -> Option<Step> {
        let line = output.lines().rev().find(|l| l.starts_with('{'))?;
        Some(Step {
            json: serde_json::from_str(line).ok()?,
            raw: output.to_owned(),
        })
    }

    /// Whether the call succeeded.
    pub fn ok(&self) -> bool {
        self.json["ok"] == true
    }

    /// The libvirt error code the plugin reported (0: none).
    pub fn code(&self) -> i64 {
        self.json["code"].as_i64().unwrap_or(0)
    }

    /// The error, as libvirt would print it (or all the output, when there is none).
    pub fn error(&self) -> String {
        self.json["error"].as_str().unwrap_or(&self.raw).to_owned()
    }

    /// A registered domain's QEMU stand-in (0: none).
    pub fn pid(&self) -> u32 {
        self.json["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0)
    }

    /// A registered domain's uuid.
    pub fn uuid(&self) -> String {
        self.json["uuid"].as_str().unwrap_or_default().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_read_from_its_last_json_line() {
        let step = Step::parse(
            "warning: something\n{\"step\":\"register\",\"ok\":true,\"pid\":42,\"uuid\":\"u\"}\n",
        )
        .unwrap();
        assert!(step.ok());
        assert_eq!((step.pid(), step.uuid(), step.code()), (42, "u".into(), 0));
        let refused = Step::parse(
            "{\"step\":\"acquire\",\"ok\":false,\"code\":87,\"error\":\"resource busy\"}",
        )
        .unwrap();
        assert!(!refused.ok());
        assert_eq!(
            (refused.code(), refused.error()),
            (BUSY, "resource busy".into())
        );
        assert!(Step::parse("lockmgr-loader-test step: --disk x: unknown mode").is_none());
    }

    #[test]
    fn the_command_names_the_plugin_config_domain_and_pid() {
        assert_eq!(
            step_command("acquire", DLM_CONFIG, "vm1", 7, "--disk /vm/a.img"),
            "/mnt/host/lockmgr-loader-test step acquire --plugin /mnt/host/libdlm_plugin.so \
             --config /etc/libvirt/qemu-dlm.conf --domain vm1 --pid 7 --disk /vm/a.img"
        );
    }
}
