//! The proof's helpers: [`Proof`] runs dlm-proof in the nodes ([`Run`], [`Holder`]) and records
//! each check's [`Row`] and the figures; [`parse_lines`] reads dlm-proof's step lines.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockmgr_testbed::{Cluster, Output};

use crate::PROOF;

/// One `key=value ...` line printed by dlm-proof.
pub(crate) type Fields = HashMap<String, String>;

pub(crate) fn parse_lines(text: &str) -> Vec<Fields> {
    text.lines()
        .filter(|line| line.starts_with("step="))
        .map(|line| {
            line.split_whitespace()
                .filter_map(|field| field.split_once('='))
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect()
        })
        .collect()
}

/// A dlm-proof run in a node: exit code and its step lines.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: Option<i32>,
    steps: Vec<Fields>,
    output: Output,
}

impl Run {
    fn step(&self, name: &str) -> Option<&Fields> {
        self.steps
            .iter()
            .find(|fields| fields.get("step").is_some_and(|step| step == name))
    }

    pub(crate) fn field(&self, step: &str, key: &str) -> String {
        self.step(step)
            .and_then(|fields| fields.get(key))
            .cloned()
            .unwrap_or_else(|| "-".to_owned())
    }

    /// "exit 11, lock=busy" style summary.
    pub(crate) fn summary(&self) -> String {
        let results: Vec<String> = self
            .steps
            .iter()
            .map(|fields| {
                format!(
                    "{}={}",
                    fields["step"],
                    fields.get("result").map_or("-", String::as_str)
                )
            })
            .collect();
        format!(
            "exit {}, {}",
            self.code
                .map_or("signal".to_owned(), |code| code.to_string()),
            results.join(" ")
        )
    }
}

/// A background `dlm-proof lock ... --hold` in a node.
#[derive(Debug)]
pub(crate) struct Holder {
    pub(crate) node: usize,
    pub(crate) pid: u32,
    pub(crate) lkid: String,
}

#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) check: String,
    pub(crate) expected: String,
    pub(crate) observed: String,
    pub(crate) pass: bool,
}

pub(crate) struct Proof {
    pub(crate) cluster: Cluster,
    pub(crate) rows: Vec<Row>,
    pub(crate) figures: Vec<(String, String)>,
    pub(crate) next_log: usize,
}

pub(crate) type CheckResult = Result<(String, bool), String>;

impl Proof {
    pub(crate) fn run(&self, node: usize, args: &str) -> Result<Run, String> {
        let output = self
            .cluster
            .exec(node, &format!("{PROOF} {args}"))
            .map_err(|err| err.to_string())?;
        let run = Run {
            code: output.code(),
            steps: parse_lines(&output.stdout_text()),
            output,
        };
        if run.code == Some(1) || run.steps.is_empty() {
            return Err(format!(
                "node{node}: dlm-proof {args}: {}",
                run.output.describe()
            ));
        }
        Ok(run)
    }

    /// Starts `dlm-proof lock ARGS --hold` in the background and waits for `result=holding`.
    pub(crate) fn hold(&mut self, node: usize, args: &str) -> Result<Holder, String> {
        let (pid, log) = self.spawn(node, &format!("lock {args} --hold"))?;
        let text = self.wait_for(node, &log, "result=holding", 60)?;
        let steps = parse_lines(&text);
        let lkid = steps
            .iter()
            .find(|fields| {
                fields
                    .get("result")
                    .is_some_and(|result| result == "granted")
            })
            .and_then(|fields| fields.get("lkid").cloned())
            .ok_or_else(|| format!("node{node}: holder `{args}` was not granted: {text}"))?;
        Ok(Holder { node, pid, lkid })
    }

    pub(crate) fn spawn(&mut self, node: usize, args: &str) -> Result<(u32, String), String> {
        self.next_log += 1;
        let log = format!("/tmp/proof-{}.log", self.next_log);
        let pid = self
            .cluster
            .spawn(node, &format!("{PROOF} {args}"), &log)
            .map_err(|err| err.to_string())?;
        Ok((pid, log))
    }

    /// Waits (inside the node, one agent call) until `log` contains `pattern`; returns the log.
    pub(crate) fn wait_for(
        &self,
        node: usize,
        log: &str,
        pattern: &str,
        seconds: u64,
    ) -> Result<String, String> {
        let tries = seconds * 10;
        let script = format!(
            "i=0; until grep -q '{pattern}' {log} 2>/dev/null; do i=$((i+1)); \
             if [ $i -gt {tries} ]; then echo 'TIMEOUT'; cat {log}; exit 1; fi; sleep 0.1; done; cat {log}"
        );
        let output = self
            .cluster
            .exec_timeout(node, &script, Duration::from_secs(seconds + 30))
            .map_err(|err| err.to_string())?;
        if output.success() {
            Ok(output.stdout_text())
        } else {
            Err(format!(
                "node{node}: no `{pattern}` in {log} after {seconds} s: {}",
                output.describe()
            ))
        }
    }

    pub(crate) fn log_of(&self, node: usize, log: &str) -> Result<String, String> {
        self.cluster
            .exec_ok(node, &format!("cat {log}"))
            .map_err(|err| err.to_string())
    }

    /// SIGKILL of a process in a node, and wait until it is gone (reaped by the node's init).
    pub(crate) fn kill(&self, node: usize, pid: u32) -> Result<(), String> {
        let script = format!(
            "kill -9 {pid} || exit 1; i=0; while kill -0 {pid} 2>/dev/null; do i=$((i+1)); \
             [ $i -gt 200 ] && exit 2; sleep 0.05; done"
        );
        self.cluster
            .exec_ok(node, &script)
            .map(drop)
            .map_err(|err| format!("kill -9 {pid} in node{node}: {err}"))
    }

    pub(crate) fn release(&self, holder: &Holder) -> Result<(), String> {
        self.kill(holder.node, holder.pid)
    }

    pub(crate) fn check(
        &mut self,
        check: &str,
        expected: &str,
        body: impl FnOnce(&mut Self) -> CheckResult,
    ) {
        // SIGINT/SIGTERM: the test bed is stopping the cluster and exiting; do not pile up failures.
        if let Err(err) = lockmgr_testbed::check_interrupted() {
            panic!("{err}");
        }
        let started = Instant::now();
        let (observed, pass) = match body(self) {
            Ok(result) => result,
            Err(err) => (format!("ERROR: {err}"), false),
        };
        println!(
            "[proof] {} {check}: {observed} ({:.1} s)",
            if pass { "PASS" } else { "FAIL" },
            started.elapsed().as_secs_f64()
        );
        self.rows.push(Row {
            check: check.to_owned(),
            expected: expected.to_owned(),
            observed,
            pass,
        });
    }

    pub(crate) fn figure(&mut self, name: &str, value: String) {
        println!("[proof] figure {name}: {value}");
        self.figures.push((name.to_owned(), value));
    }
}

pub(crate) fn members_line(dlm_tool_ls: &str) -> Vec<String> {
    dlm_tool_ls
        .lines()
        .find_map(|line| line.trim().strip_prefix("members"))
        .map(|rest| rest.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

pub(crate) fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or(0)
        .try_into()
        .unwrap_or(0)
}
