//! The test bed's helpers: [`Bed`] runs shell commands and `step`s (libvirt's calls through
//! dlm.so) on the cluster's nodes, starts and stops their lockmgrd, and probes a disk from node2.

use std::time::{Duration, Instant};

use lockmgr_testbed::owners::{Step, step_command};
use lockmgr_testbed::{Cluster, ExitStatus};

use crate::{CONFIG, LOG, PID_FILE, SHARE};

pub(crate) struct Bed<'c> {
    pub(crate) cluster: &'c Cluster,
}

impl Bed<'_> {
    /// Runs `cmd` on `node`: (exit code, stdout + stderr).
    pub(crate) fn sh(&self, node: usize, cmd: &str) -> (i64, String) {
        let out = self
            .cluster
            .exec(node, cmd)
            .unwrap_or_else(|e| panic!("node{node}: {cmd}: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let code = match out.status {
            ExitStatus::Code(code) => i64::from(code),
            ExitStatus::Signal(signal) => 128 + i64::from(signal),
        };
        (code, text)
    }

    /// One `lockmgr-loader-test step` through dlm.so; its JSON line.
    pub(crate) fn step(
        &self,
        node: usize,
        op: &str,
        domain: &str,
        pid: u32,
        extra: &str,
    ) -> serde_json::Value {
        self.step_with(node, CONFIG, op, domain, pid, extra)
    }

    /// [`Bed::step`] with dlm.so reading `config` (another daemon's socket).
    pub(crate) fn step_with(
        &self,
        node: usize,
        config: &str,
        op: &str,
        domain: &str,
        pid: u32,
        extra: &str,
    ) -> serde_json::Value {
        let cmd = step_command(op, config, domain, pid, extra);
        let (_, out) = self.sh(node, &cmd);
        Step::parse(&out)
            .unwrap_or_else(|| panic!("node{node}: `{cmd}` printed no JSON:\n{out}"))
            .json
    }

    /// Registers a domain (a QEMU stand-in on `node`); its pid.
    pub(crate) fn register(&self, node: usize, domain: &str) -> u32 {
        let step = self.step(node, "register", domain, 0, "");
        assert_eq!(step["ok"], true, "register {domain} on node{node}: {step}");
        step["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or_else(|| panic!("no pid: {step}"))
    }

    pub(crate) fn kill_pid(&self, node: usize, pid: u32) {
        self.sh(node, &format!("kill -9 {pid} 2>/dev/null; true"));
    }

    /// Starts lockmgrd on `node` with `env` (`NAME=value …`) and waits until it serves, or
    /// returns its log when it exits first.
    pub(crate) fn start_daemon(&self, node: usize, env: &str) -> Result<(), String> {
        self.sh(
            node,
            &format!("rm -f {PID_FILE}; echo '--- start {env}' >> {LOG}"),
        );
        self.cluster
            .spawn(
                node,
                &format!(
                    "env {env} {SHARE}/lockmgrd --backend dlm --config {CONFIG} --pid-file {PID_FILE}"
                ),
                &format!("{LOG}.current"),
            )
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, state) = self.sh(
                node,
                &format!(
                    "cat {LOG}.current >> {LOG}.all 2>/dev/null; test -s {PID_FILE} && echo up; \
                     pgrep -x lockmgrd >/dev/null || echo gone"
                ),
            );
            if state.contains("up") {
                return Ok(());
            }
            if state.contains("gone") {
                return Err(self.log(node));
            }
            if Instant::now() > deadline {
                return Err(format!("not serving after 30 s:\n{}", self.log(node)));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(crate) fn log(&self, node: usize) -> String {
        self.sh(node, &format!("tail -n 30 {LOG}.current")).1
    }

    /// Waits until no lockmgrd runs on `node` (it aborted at its crash point).
    pub(crate) fn wait_gone(&self, node: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.sh(node, "pgrep -x lockmgrd").0 == 0 {
            if Instant::now() > deadline {
                return Err(format!("lockmgrd still runs:\n{}", self.log(node)));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    pub(crate) fn stop_daemon(&self, node: usize) {
        self.sh(
            node,
            "pkill -x lockmgrd; for i in $(seq 50); do pgrep -x lockmgrd >/dev/null || break; sleep 0.1; done",
        );
    }

    /// How many locks node1's daemon holds for `domain` (the entries of its Inquire state).
    pub(crate) fn held_count(&self, domain: &str, pid: u32) -> usize {
        let inquire = self.step(1, "inquire", domain, pid, "");
        let state = inquire["state"].as_str().unwrap_or_default().to_owned();
        let entries = state.split(':').nth(1).unwrap_or_default();
        entries.split(',').filter(|e| !e.is_empty()).count()
    }

    /// node2 tries `disk`: Ok(true) granted (then released), Ok(false) refused as busy.
    pub(crate) fn node2_gets(&self, disk: &str, tag: &str) -> Result<bool, String> {
        let domain = format!("probe-{tag}");
        let pid = self.register(2, &domain);
        let step = self.step(2, "acquire", &domain, pid, &format!("--disk {disk}"));
        self.kill_pid(2, pid);
        if step["ok"] == true {
            return Ok(true);
        }
        let error = step["error"].as_str().unwrap_or_default();
        if error.contains("is locked on another node") {
            Ok(false)
        } else {
            Err(format!(
                "node2's acquire of {disk} failed otherwise: {step}"
            ))
        }
    }
}
