//! The checks on a healthy cluster that only a cluster has: the holder named across nodes (and
//! shared holders not), the daemon's owner kill, crash and orphan adoption, and the race with its
//! ledger. The scenario-shaped checks run as the cluster matrix (dlm_matrix.rs).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::bed::{Bed, Dom, daemon_events, daemon_status, granted, refused_across_nodes};
use crate::{CONFIG, Check, SHARE};

pub(crate) fn exclusive_across_nodes(bed: &Bed) -> Check {
    let disk = "--disk /vm/excl.img";
    let a = bed.register(1, "excl-a", disk);
    let b = bed.register(2, "excl-b", disk);
    granted(&bed.acquire(&a, disk), "A on node1")?;
    let refusal = refusal_naming(bed, &b, disk, "excl-a", 1)?;
    granted(&bed.detach(&a, disk), "A detaches")?;
    granted(&bed.acquire(&b, disk), "B after A detached")?;
    // The new holder, not the one that released: a stale name is never shown.
    refusal_naming(bed, &a, disk, "excl-b", 2)?;
    bed.kill(&a);
    bed.kill(&b);
    Ok(format!("virsh would say: {refusal}"))
}

/// A refusal across nodes that names the exclusive holder (domain and node, from the DLM value
/// block its node writes just after the grant): a refusal in the moment between may not name it
/// yet, so it asks a few times; a refusal naming anyone else fails at once.
fn refusal_naming(bed: &Bed, dom: &Dom, disk: &str, holder: &str, node: usize) -> Check {
    let expected = format!("exclusively by domain '{holder}' (uuid ");
    let on_node = format!(") on node 'node{node}' (id {node})");
    let mut last = String::new();
    for _ in 0..10 {
        last = refused_across_nodes(&bed.acquire(dom, disk), "the other node's request")?;
        if last.contains(&expected) && last.contains(&on_node) {
            return Ok(last);
        }
        if last.contains("by domain") {
            return Err(format!(
                "the refusal names another holder than '{holder}' on node{node}: {last}"
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(format!(
        "the refusal never named '{holder}' on node{node}: {last}"
    ))
}

pub(crate) fn shared_across_nodes(bed: &Bed) -> Check {
    let shared = "--disk /vm/shared.img,shared";
    let exclusive = "--disk /vm/shared.img";
    let a = bed.register(1, "shr-a", shared);
    let c = bed.register(2, "shr-c", exclusive);
    let b = bed.register(2, "shr-b", shared);
    granted(&bed.acquire(&a, shared), "A shared on node1")?;
    let refusal = refused_across_nodes(
        &bed.acquire(&c, exclusive),
        "C exclusive on node2 while A shares",
    )?;
    // Shared holders are not named (only an exclusive holder writes its name).
    if refusal.contains("by domain") {
        return Err(format!(
            "a refusal by shared holders names a domain: {refusal}"
        ));
    }
    granted(&bed.acquire(&b, shared), "B shared on node2 beside A")?;
    for dom in [&a, &b, &c] {
        bed.kill(dom);
    }
    Ok("PR + PR granted on both nodes; EX refused".into())
}

/// How long `node`'s lockmgrd took to free the locks of `dom` once its QEMU exited, and how many
/// it freed, from its events.
pub(crate) fn freed_micros(bed: &Bed, dom: &Dom) -> Result<(u64, u64), String> {
    let events = daemon_events(bed, dom.node);
    events
        .iter()
        .find_map(|event| {
            let exited = &event["what"]["owner_exited"];
            (exited["uuid"] == dom.uuid.as_str())
                .then(|| Some((exited["micros"].as_u64()?, exited["freed"].as_u64()?)))?
        })
        .ok_or_else(|| {
            format!(
                "node{}'s lockmgrd has no exit event for {} ({}): {events:?}",
                dom.node, dom.name, dom.uuid
            )
        })
}

pub(crate) fn owner_kill_frees(bed: &Bed) -> Check {
    let disk = "--disk /vm/kill.img";
    let a = bed.register(1, "kill-a", disk);
    let b = bed.register(2, "kill-b", disk);
    granted(&bed.acquire(&a, disk), "A")?;
    refused_across_nodes(&bed.acquire(&b, disk), "B before the kill")?;
    let killed = Instant::now();
    bed.kill(&a);
    bed.acquire_until_granted(&b, disk, Duration::from_secs(30))?;
    let end_to_end = killed.elapsed();
    let (freed, count) = freed_micros(bed, &a)?;
    if count != 1 {
        return Err(format!(
            "node1's lockmgrd freed {count} lock(s) of A, expected 1"
        ));
    }
    bed.kill(&b);
    Ok(format!(
        "node1's daemon released the DLM lock {:.2} ms after seeing QEMU die; node2 granted {:.2} s after the kill \
         (including guest-agent round trips of ~0.3-0.5 s each)",
        freed as f64 / 1000.0,
        end_to_end.as_secs_f64()
    ))
}

pub(crate) fn daemon_crash_and_adoption(bed: &Bed) -> Check {
    let (disk, gone) = ("--disk /vm/adopt.img", "--disk /vm/adopt-gone.img");
    let a = bed.register(1, "adopt-a", disk);
    let d = bed.register(1, "adopt-d", gone);
    let b = bed.register(2, "adopt-b", &format!("{disk} {gone}"));
    granted(&bed.acquire(&a, disk), "A")?;
    granted(&bed.acquire(&d, gone), "D")?;
    let mut sequence = vec!["A (node1) holds adopt.img, D (node1) holds adopt-gone.img".to_owned()];

    bed.crash_daemon(1);
    sequence.push("lockmgrd on node1 SIGKILLed".into());
    let lockdebug = bed.sh(
        1,
        "dlm_tool lockdebug -v libvirt 2>&1 | grep -c ' EX ' || true",
    );
    sequence.push(format!(
        "node1 dlm_tool lockdebug: {} EX lock(s) still granted as orphans",
        lockdebug.trim()
    ));
    refused_across_nodes(&bed.acquire(&b, disk), "B while node1's daemon is down")?;
    sequence.push("B (node2) refused adopt.img: the orphan still protects it".into());
    bed.kill(&d);
    sequence.push("D's QEMU killed while the daemon is down".into());

    bed.start_daemon(1);
    let status = daemon_status(bed, 1);
    let locks = status["locks"].as_array().cloned().unwrap_or_default();
    let adopted_for_a = locks.len() == 1 && locks[0]["owners"] == serde_json::json!(["adopt-a"]);
    if !adopted_for_a {
        return Err(format!(
            "the restarted daemon did not adopt as expected (one lock, A's): {status}\n{}",
            bed.daemon_log(1)
        ));
    }
    sequence.push(format!(
        "lockmgrd restarted: holds {} for adopt-a only",
        locks[0]["resource"].as_str().unwrap_or_default()
    ));
    refused_across_nodes(&bed.acquire(&b, disk), "B after the restart")?;
    sequence.push("B still refused adopt.img (adopted by the new daemon)".into());
    granted(
        &bed.acquire(&b, gone),
        "B takes adopt-gone.img (D's orphan was adopted and released)",
    )?;
    sequence.push("B granted adopt-gone.img: D's orphan was dropped at restart".into());
    bed.detach(&b, gone);

    bed.kill(&a);
    let waited = bed.acquire_until_granted(&b, disk, Duration::from_secs(30))?;
    sequence.push(format!(
        "A's QEMU killed → B granted adopt.img {:.2} s later",
        waited.as_secs_f64()
    ));
    bed.kill(&b);
    Ok(sequence.join("; "))
}

/// The race: two processes per node, two domains each, three contended disks, with a shared
/// ledger. Returns the counts and the checker's verdict.
pub(crate) fn race(bed: &Bed, scratch: &Path, seconds: u64) -> Check {
    let ledger = "/mnt/scratch/race";
    bed.sh(1, &format!("rm -rf {ledger}; mkdir -p {ledger}"));
    let resources = "/vm/race-1.img,/vm/race-2.img,/vm/race-3.img";
    let mut logs = Vec::new();
    for node in 1..=2 {
        for process in 0..2 {
            let name = format!("n{node}p{process}");
            let log = format!("/run/race-{name}.out");
            bed.cluster
                .spawn(
                    node,
                    &format!(
                        "{SHARE}/lockmgr-loader-test step race --plugin {SHARE}/libdlm_plugin.so --config {CONFIG} \
                         --node {name} --owners 2 --resources {resources} --seconds {seconds} --ledger {ledger}"
                    ),
                    &log,
                )
                .unwrap();
            logs.push((node, log));
        }
    }
    std::thread::sleep(Duration::from_secs(seconds + 5));
    let (mut attempts, mut grants, mut refusals) = (0, 0, 0);
    for (node, log) in &logs {
        let deadline = Instant::now() + Duration::from_secs(60);
        let summary = loop {
            let text = bed.sh(*node, &format!("cat {log}"));
            if let Some(line) = text.lines().find(|l| l.contains("\"attempts\"")) {
                break serde_json::from_str::<serde_json::Value>(line)
                    .map_err(|e| e.to_string())?;
            }
            if Instant::now() > deadline {
                return Err(format!("race on node{node} did not finish: {text}"));
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        attempts += summary["attempts"].as_u64().unwrap_or(0);
        grants += summary["grants"].as_u64().unwrap_or(0);
        refusals += summary["refusals"].as_u64().unwrap_or(0);
    }
    let violations = check_ledger(&scratch.join("race"))?;
    if grants == 0 {
        return Err("no grant at all: the race proves nothing".into());
    }
    if !violations.is_empty() {
        return Err(format!(
            "{} violation(s): {}",
            violations.len(),
            violations.join("; ")
        ));
    }
    Ok(format!(
        "{attempts} attempts, {grants} grants, {refusals} refusals, 0 violations (4 processes × 2 domains on 2 nodes, 3 disks, {seconds} s)"
    ))
}

/// Per resource, events sorted by sequence must be G n, R n+1 by the same holder, n = 1, 3, 5…
pub(crate) fn check_ledger(dir: &Path) -> Result<Vec<String>, String> {
    let mut events: BTreeMap<String, Vec<(u64, char, String)>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        for line in std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())?
            .lines()
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [kind, resource, node, owner, seq] = fields[..] else {
                return Err(format!(
                    "{}: malformed ledger line '{line}'",
                    path.display()
                ));
            };
            let seq: u64 = seq
                .parse()
                .map_err(|_| format!("bad sequence in '{line}'"))?;
            let kind = kind.chars().next().unwrap_or('?');
            events
                .entry(resource.into())
                .or_default()
                .push((seq, kind, format!("{node}/{owner}")));
        }
    }
    let mut violations = Vec::new();
    for (resource, mut list) in events {
        list.sort();
        for (index, pair) in list.chunks(2).enumerate() {
            let expected = 2 * index as u64 + 1;
            match pair {
                [(g, 'G', holder), (r, 'R', releaser)]
                    if *g == expected && *r == expected + 1 && holder == releaser => {}
                other => violations.push(format!("{resource} at seq {expected}: {other:?}")),
            }
        }
    }
    Ok(violations)
}
