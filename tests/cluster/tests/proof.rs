//! The proof that the libdlm bindings (`lockmgr-dlm` over `dlm-sys`) work on a real DLM cluster:
//! boots 2 QEMU nodes, runs `dlm-proof` (built from the bindings, shared read-only at /mnt/host)
//! in them, and checks cross-node exclusion, shared locks, holder death, orphans, adoption,
//! purge and node failure. Latency and failover figures are printed, never asserted.
//!
//! Needs root, /dev/net/tun, QEMU and about 2 minutes: run by `tests/cluster/run-proof.sh`.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockmgr_testbed::{Cluster, ClusterSpec, NodeImage, Output};

const LS: &str = "lockmgrproof";
const PROOF: &str = "/mnt/host/dlm-proof";
const EAGAIN: i32 = 11;
const ENOENT: i32 = 2;

/// One `key=value ...` line printed by dlm-proof.
type Fields = HashMap<String, String>;

fn parse_lines(text: &str) -> Vec<Fields> {
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
struct Run {
    code: Option<i32>,
    steps: Vec<Fields>,
    output: Output,
}

impl Run {
    fn step(&self, name: &str) -> Option<&Fields> {
        self.steps
            .iter()
            .find(|fields| fields.get("step").is_some_and(|step| step == name))
    }

    fn field(&self, step: &str, key: &str) -> String {
        self.step(step)
            .and_then(|fields| fields.get(key))
            .cloned()
            .unwrap_or_else(|| "-".to_owned())
    }

    /// "exit 11, lock=busy" style summary.
    fn summary(&self) -> String {
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
struct Holder {
    node: usize,
    pid: u32,
    lkid: String,
}

#[derive(Debug)]
struct Row {
    check: String,
    expected: String,
    observed: String,
    pass: bool,
}

struct Proof {
    cluster: Cluster,
    rows: Vec<Row>,
    figures: Vec<(String, String)>,
    next_log: usize,
}

type CheckResult = Result<(String, bool), String>;

impl Proof {
    fn run(&self, node: usize, args: &str) -> Result<Run, String> {
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
    fn hold(&mut self, node: usize, args: &str) -> Result<Holder, String> {
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

    fn spawn(&mut self, node: usize, args: &str) -> Result<(u32, String), String> {
        self.next_log += 1;
        let log = format!("/tmp/proof-{}.log", self.next_log);
        let pid = self
            .cluster
            .spawn(node, &format!("{PROOF} {args}"), &log)
            .map_err(|err| err.to_string())?;
        Ok((pid, log))
    }

    /// Waits (inside the node, one agent call) until `log` contains `pattern`; returns the log.
    fn wait_for(
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

    fn log_of(&self, node: usize, log: &str) -> Result<String, String> {
        self.cluster
            .exec_ok(node, &format!("cat {log}"))
            .map_err(|err| err.to_string())
    }

    /// SIGKILL of a process in a node, and wait until it is gone (reaped by the node's init).
    fn kill(&self, node: usize, pid: u32) -> Result<(), String> {
        let script = format!(
            "kill -9 {pid} || exit 1; i=0; while kill -0 {pid} 2>/dev/null; do i=$((i+1)); \
             [ $i -gt 200 ] && exit 2; sleep 0.05; done"
        );
        self.cluster
            .exec_ok(node, &script)
            .map(drop)
            .map_err(|err| format!("kill -9 {pid} in node{node}: {err}"))
    }

    fn release(&self, holder: &Holder) -> Result<(), String> {
        self.kill(holder.node, holder.pid)
    }

    fn check(&mut self, check: &str, expected: &str, body: impl FnOnce(&mut Self) -> CheckResult) {
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

    fn figure(&mut self, name: &str, value: String) {
        println!("[proof] figure {name}: {value}");
        self.figures.push((name.to_owned(), value));
    }
}

fn members_line(dlm_tool_ls: &str) -> Vec<String> {
    dlm_tool_ls
        .lines()
        .find_map(|line| line.trim().strip_prefix("members"))
        .map(|rest| rest.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or(0)
        .try_into()
        .unwrap_or(0)
}

#[test]
#[ignore = "boots a DLM cluster in QEMU VMs; run by tests/cluster/run-proof.sh"]
fn dlm_bindings_on_a_real_two_node_cluster() {
    let total = Instant::now();
    let image = NodeImage::ensure().unwrap_or_else(|err| panic!("{err}"));
    let proof_binary = Path::new(env!("CARGO_BIN_EXE_dlm-proof"));
    let share = proof_binary
        .parent()
        .expect("the binary lives in a directory");
    println!(
        "[proof] sharing {} (dlm-proof from the bindings) at /mnt/host",
        share.display()
    );
    let cluster = Cluster::start(&image, &ClusterSpec::with_nodes(2).share(share))
        .unwrap_or_else(|err| panic!("{err}"));
    let boot = cluster.boot_time();
    let checks_started = Instant::now();
    let mut proof = Proof {
        cluster,
        rows: Vec::new(),
        figures: Vec::new(),
        next_log: 0,
    };
    run_checks(&mut proof);
    let checks = checks_started.elapsed();

    let Proof {
        cluster,
        rows,
        figures,
        ..
    } = proof;
    let teardown_started = Instant::now();
    let stopped = cluster.stop();
    let teardown = teardown_started.elapsed();

    print_summary(&rows, &figures);
    println!("[proof] times:");
    println!(
        "    image          {:>6.1} s  ({})",
        image.elapsed.as_secs_f64(),
        if image.built {
            "built"
        } else {
            "cached, up to date"
        }
    );
    println!(
        "    boot to ready  {:>6.1} s  (2 nodes, QEMU start until quorate + DLM + guest agents)",
        boot.as_secs_f64()
    );
    println!("    checks         {:>6.1} s", checks.as_secs_f64());
    println!("    teardown       {:>6.1} s", teardown.as_secs_f64());
    println!(
        "    total          {:>6.1} s",
        total.elapsed().as_secs_f64()
    );

    stopped.unwrap_or_else(|err| panic!("teardown left something behind: {err}"));
    let failed: Vec<&str> = rows
        .iter()
        .filter(|row| !row.pass)
        .map(|row| row.check.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} proof checks failed: {failed:?}",
        failed.len(),
        rows.len()
    );
}

fn run_checks(proof: &mut Proof) {
    proof.check("node ids from configfs", "node1=1 node2=2", |proof| {
        let one = proof.run(1, "nodeid")?.field("nodeid", "nodeid");
        let two = proof.run(2, "nodeid")?.field("nodeid", "nodeid");
        Ok((format!("node1={one} node2={two}"), one == "1" && two == "2"))
    });

    proof.check(
        "both nodes join the lockspace",
        "dlm_tool ls: members 1 2",
        |proof| {
            for node in [1, 2] {
                let run = proof.run(node, &format!("join {LS}"))?;
                if run.code != Some(0) {
                    return Err(run.summary());
                }
            }
            let ls = proof
                .cluster
                .exec_ok(1, "dlm_tool ls")
                .map_err(|err| err.to_string())?;
            let members = members_line(&ls);
            Ok((
                format!("members {}", members.join(" ")),
                members == ["1", "2"],
            ))
        },
    );

    proof.check(
        "EX on node1 refuses EX|NOQUEUE on node2",
        "node2: EAGAIN (Busy)",
        |proof| {
            let holder = proof.hold(1, &format!("{LS} res-ex EX"))?;
            let run = proof.run(2, &format!("lock {LS} res-ex EX --noqueue"))?;
            let pass = run.code == Some(EAGAIN) && run.field("lock", "result") == "busy";
            proof.release(&holder)?;
            Ok((run.summary(), pass))
        },
    );

    proof.check(
        "an EX holder's value block is read from the other node, without waiting; an invalidating release clears it",
        "node2 reads vm1@node1 while node1 holds EX (and its EX stays refused); none after the release",
        |proof| {
            let holder = proof.hold(1, &format!("{LS} res-value EX --noqueue --publish vm1@node1"))?;
            let read = proof.run(2, &format!("read-value {LS} res-value"))?;
            let refused = proof.run(2, &format!("lock {LS} res-value EX --noqueue"))?;
            proof.release(&holder)?;
            let cleared = proof.run(
                1,
                &format!("lock {LS} res-value EX --noqueue --publish again --unlock-invalidating"),
            )?;
            let after = proof.run(2, &format!("read-value {LS} res-value"))?;
            let pass = read.field("read-value", "value") == "vm1@node1"
                && refused.code == Some(EAGAIN)
                && cleared.code == Some(0)
                && after.field("read-value", "result") == "none";
            Ok((
                format!(
                    "{} / {} / {}",
                    read.summary(),
                    refused.summary(),
                    after.summary()
                ),
                pass,
            ))
        },
    );

    proof.check(
        "SIGKILL of a non-persistent holder frees the lock",
        "node2's queued EX granted after the kill",
        |proof| {
            let holder = proof.hold(1, &format!("{LS} res-kill EX"))?;
            let (waiter, log) = proof.spawn(2, &format!("lock {LS} res-kill EX --hold"))?;
            // The waiter queues behind node1's EX: it must not be granted while the holder lives.
            let refused = proof.run(2, &format!("lock {LS} res-kill EX --noqueue"))?;
            let before = proof.log_of(2, &log)?;
            if before.contains("result=granted") || refused.code != Some(EAGAIN) {
                return Ok((
                    format!(
                        "granted while the holder lived: {before} / {}",
                        refused.summary()
                    ),
                    false,
                ));
            }
            proof.release(&holder)?;
            let after = proof.wait_for(2, &log, "result=holding", 60)?;
            let waited = parse_lines(&after)
                .into_iter()
                .find_map(|fields| fields.get("waited_ms").cloned())
                .unwrap_or_default();
            proof.kill(2, waiter)?;
            Ok((
                format!("queued waiter granted after {waited} ms in the queue"),
                after.contains("result=granted"),
            ))
        },
    );

    proof.check(
        "PR + PR coexist across nodes, EX then refused",
        "PR granted; convert to EX: EAGAIN",
        |proof| {
            let holder = proof.hold(1, &format!("{LS} res-pr PR"))?;
            let run = proof.run(2, &format!("lock {LS} res-pr PR --noqueue --convert EX"))?;
            let pass = run.field("lock", "result") == "granted"
                && run.field("convert", "result") == "busy"
                && run.code == Some(EAGAIN);
            let fresh = proof.run(2, &format!("lock {LS} res-pr EX --noqueue"))?;
            proof.release(&holder)?;
            Ok((
                format!(
                    "{}; new EX: {}",
                    run.summary(),
                    fresh.field("lock", "result")
                ),
                pass && fresh.code == Some(EAGAIN),
            ))
        },
    );

    let mut orphan_lkid = String::new();
    proof.check(
        "SIGKILL of a PERSISTENT holder leaves an orphan",
        "lockdebug lists it with the dead pid; node2 EX|NOQUEUE: EAGAIN",
        |proof| {
            let holder = proof.hold(1, &format!("{LS} res-orphan EX --persistent"))?;
            orphan_lkid = holder.lkid.clone();
            proof.release(&holder)?;
            let debug = proof
                .cluster
                .exec_ok(1, &format!("dlm_tool lockdebug -v {LS}"))
                .map_err(|err| err.to_string())?;
            let listed =
                debug.contains("\"res-orphan\"") && debug.contains(&format!("pid {}", holder.pid));
            let run = proof.run(2, &format!("lock {LS} res-orphan EX --noqueue"))?;
            Ok((
                format!(
                    "orphan of dead pid {} listed: {listed}; node2: {}",
                    holder.pid,
                    run.summary()
                ),
                listed && run.code == Some(EAGAIN),
            ))
        },
    );

    proof.check(
        "adopting the orphan in another mode",
        "PR|ORPHAN: EAGAIN (mode mismatch)",
        |proof| {
            let run = proof.run(1, &format!("adopt {LS} res-orphan PR"))?;
            Ok((
                run.summary(),
                run.code == Some(EAGAIN) && run.field("adopt", "result") == "mode-mismatch",
            ))
        },
    );

    proof.check(
        "a new process adopts the orphan (same mode) and releases it",
        "EX|ORPHAN|PERSISTENT: adopted with the original lkid, then unlocked",
        |proof| {
            let run = proof.run(
                1,
                &format!("adopt {LS} res-orphan EX --persistent --unlock"),
            )?;
            let lkid = run.field("adopt", "lkid");
            Ok((
                format!("{}, lkid {lkid} (original {orphan_lkid})", run.summary()),
                run.code == Some(0)
                    && lkid == orphan_lkid
                    && run.field("unlock", "result") == "unlocked",
            ))
        },
    );

    proof.check(
        "after the adopter unlocked, node2 gets the lock",
        "node2 EX|NOQUEUE granted",
        |proof| {
            let run = proof.run(2, &format!("lock {LS} res-orphan EX --noqueue"))?;
            Ok((
                run.summary(),
                run.code == Some(0) && run.field("lock", "result") == "granted",
            ))
        },
    );

    proof.check(
        "adopting when no orphan is left",
        "ENOENT (NoOrphan)",
        |proof| {
            let run = proof.run(1, &format!("adopt {LS} res-orphan EX"))?;
            Ok((
                run.summary(),
                run.code == Some(ENOENT) && run.field("adopt", "result") == "no-orphan",
            ))
        },
    );

    proof.check(
        "purge of node1's orphans frees them",
        "busy before purge, node2 granted after",
        |proof| {
            let holder = proof.hold(1, &format!("{LS} res-purge EX --persistent"))?;
            proof.release(&holder)?;
            let before = proof.run(2, &format!("lock {LS} res-purge EX --noqueue"))?;
            let purge = proof.run(1, &format!("purge {LS}"))?;
            // the purge's unlock reaches the master asynchronously: retry for a while
            let after = proof.run(
                2,
                &format!("lock {LS} res-purge EX --noqueue --retry-for 30"),
            )?;
            Ok((
                format!(
                    "before: {}; purge: {}; after: {} (attempts {})",
                    before.field("lock", "result"),
                    purge.field("purge", "result"),
                    after.field("lock", "result"),
                    after.field("lock", "attempts")
                ),
                before.code == Some(EAGAIN) && purge.code == Some(0) && after.code == Some(0),
            ))
        },
    );

    proof.check(
        "latency, resource mastered locally",
        "figures only",
        |proof| {
            let run = proof.run(1, &format!("bench {LS} bench-local --iterations 5000"))?;
            let figure = bench_figure(&run);
            proof.figure("EX lock+unlock, local master (node1)", figure.clone());
            Ok((figure, run.code == Some(0)))
        },
    );

    proof.check(
        "latency, resource mastered remotely",
        "figures only",
        |proof| {
            // node2 takes NL first, so node2 masters the resource while node1 measures.
            let holder = proof.hold(2, &format!("{LS} bench-remote NL"))?;
            let run = proof.run(1, &format!("bench {LS} bench-remote --iterations 1000"))?;
            let debug = proof
                .cluster
                .exec_ok(2, &format!("dlm_tool lockdebug {LS}"))
                .map_err(|err| err.to_string())?;
            proof.release(&holder)?;
            let figure = bench_figure(&run);
            proof.figure("EX lock+unlock, remote master (node2)", figure.clone());
            let mastered_on_node2 = debug
                .split("Resource")
                .find(|block| block.contains("\"bench-remote\""))
                .is_some_and(|block| block.lines().any(|line| line.trim() == "Master"));
            Ok((
                format!("{figure}; node2 lockdebug says Master: {mastered_on_node2}"),
                run.code == Some(0) && mastered_on_node2,
            ))
        },
    );

    proof.check(
        "node1 killed hard (QEMU SIGKILL) while holding a persistent EX",
        "node2's queued EX granted after recovery; node2 alone in the lockspace",
        |proof| {
            let holder = proof.hold(1, &format!("{LS} res-failover EX --persistent"))?;
            let (_waiter, log) = proof.spawn(2, &format!("lock {LS} res-failover EX --hold"))?;
            let refused = proof.run(2, &format!("lock {LS} res-failover EX --noqueue"))?;
            if refused.code != Some(EAGAIN) || proof.log_of(2, &log)?.contains("result=granted") {
                return Ok((
                    format!("not blocked before the crash: {}", refused.summary()),
                    false,
                ));
            }
            // node2's clock against ours, to time the grant that node2 records
            let before = now_ns();
            let guest: i128 = proof
                .cluster
                .exec_ok(2, "date +%s%N")
                .map_err(|err| err.to_string())?
                .trim()
                .parse()
                .map_err(|err| format!("date: {err}"))?;
            let after = now_ns();
            let offset = guest - (before + after) / 2;
            let uncertainty_ms = (after - before) / 2 / 1_000_000;
            let killed_at = now_ns();
            proof
                .cluster
                .kill_node(holder.node)
                .map_err(|err| err.to_string())?;
            let granted = proof.wait_for(2, &log, "result=holding", 120)?;
            let granted_ns: i128 = parse_lines(&granted)
                .into_iter()
                .find_map(|fields| fields.get("realtime_ns").and_then(|ns| ns.parse().ok()))
                .ok_or_else(|| format!("no realtime_ns in {granted}"))?;
            let failover =
                Duration::from_nanos(u64::try_from(granted_ns - offset - killed_at).unwrap_or(0));
            proof.figure(
                "node crash -> lock granted on the survivor",
                format!(
                    "{:.2} s (±{uncertainty_ms} ms clock sync)",
                    failover.as_secs_f64()
                ),
            );
            let ls = proof
                .cluster
                .exec_ok(2, "dlm_tool ls")
                .map_err(|err| err.to_string())?;
            let members = members_line(&ls);
            Ok((
                format!(
                    "granted {:.2} s after the kill; members now: {}",
                    failover.as_secs_f64(),
                    members.join(" ")
                ),
                granted.contains("result=granted") && members == ["2"],
            ))
        },
    );
}

fn bench_figure(run: &Run) -> String {
    format!(
        "{} iterations: mean {} µs, p50 {} µs, p99 {} µs, max {} µs",
        run.field("bench", "iterations"),
        run.field("bench", "mean_us"),
        run.field("bench", "p50_us"),
        run.field("bench", "p99_us"),
        run.field("bench", "max_us")
    )
}

fn print_summary(rows: &[Row], figures: &[(String, String)]) {
    let width = |column: &dyn Fn(&Row) -> usize, header: usize| {
        rows.iter().map(column).max().unwrap_or(0).max(header)
    };
    let check_width = width(&|row| row.check.chars().count(), 5);
    let expected_width = width(&|row| row.expected.chars().count(), 8);
    println!();
    println!(
        "[proof] summary ({} checks, 2 nodes, lockspace {LS}):",
        rows.len()
    );
    println!(
        "  {:<4}  {:<check_width$}  {:<expected_width$}  observed",
        "", "check", "expected"
    );
    for row in rows {
        println!(
            "  {:<4}  {:<check_width$}  {:<expected_width$}  {}",
            if row.pass { "PASS" } else { "FAIL" },
            row.check,
            row.expected,
            row.observed
        );
    }
    println!(
        "[proof] figures (TCG virtual machines on this build machine; for sizing timeouts only):"
    );
    for (name, value) in figures {
        println!("    {name}: {value}");
    }
    let passed = rows.iter().filter(|row| row.pass).count();
    println!("proof: {passed} passed, {} failed", rows.len() - passed);
}
