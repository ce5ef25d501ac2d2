//! The checks, in the order they run on the cluster: node ids, the lockspace, exclusion, value
//! blocks, holder death, shared locks, orphans and their adoption, purge, latency and a node
//! crash.

use std::time::Duration;

use crate::bed::{Proof, Run, members_line, now_ns, parse_lines};
use crate::{EAGAIN, ENOENT, LS};

pub(crate) fn run_checks(proof: &mut Proof) {
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
        "requests in flight together (lock_all) are answered one by one, and really held",
        "node2 holds res-b2: node1 gets res-b1 res-b3, res-b2 busy; node2 refused res-b1 while \
         node1 holds; after node1's unlock_all of PERSISTENT locks node2 gets res-b1 and res-b3",
        |proof| {
            let resources = "res-b1,res-b2,res-b3";
            let other = proof.hold(2, &format!("{LS} res-b2 EX"))?;
            let (batch, log) = proof.spawn(1, &format!("lock-all {LS} {resources} EX --noqueue --hold"))?;
            let held = parse_lines(&proof.wait_for(1, &log, "result=holding", 60)?);
            let answered = |steps: &[crate::bed::Fields], key: &str| {
                steps
                    .iter()
                    .find(|fields| fields.get("step").is_some_and(|s| s == "lock-all"))
                    .and_then(|fields| fields.get(key).cloned())
                    .unwrap_or_default()
            };
            let refused = proof.run(2, &format!("lock {LS} res-b1 EX --noqueue"))?;
            proof.kill(1, batch)?;
            // PERSISTENT: were the release not done, orphans would stay and refuse node2 below.
            let again = proof.run(
                1,
                &format!("lock-all {LS} {resources} EX --noqueue --persistent"),
            )?;
            proof.release(&other)?;
            let b1 = proof.run(2, &format!("lock {LS} res-b1 EX --noqueue"))?;
            let b3 = proof.run(2, &format!("lock {LS} res-b3 EX --noqueue"))?;
            let pass = answered(&held, "granted") == "res-b1,res-b3"
                && answered(&held, "busy") == "res-b2"
                && refused.code == Some(EAGAIN)
                && again.field("lock-all", "granted") == "res-b1,res-b3"
                && again.field("lock-all", "busy") == "res-b2"
                && again.field("unlock-all", "unlocked") == "res-b1,res-b3"
                && b1.code == Some(0)
                && b3.code == Some(0);
            Ok((
                format!(
                    "holding: granted={} busy={} / node2 res-b1 while held: {} / again: {} / after: {} {}",
                    answered(&held, "granted"),
                    answered(&held, "busy"),
                    refused.summary(),
                    again.summary(),
                    b1.summary(),
                    b3.summary()
                ),
                pass,
            ))
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

pub(crate) fn bench_figure(run: &Run) -> String {
    format!(
        "{} iterations: mean {} µs, p50 {} µs, p99 {} µs, max {} µs",
        run.field("bench", "iterations"),
        run.field("bench", "mean_us"),
        run.field("bench", "p50_us"),
        run.field("bench", "p99_us"),
        run.field("bench", "max_us")
    )
}
