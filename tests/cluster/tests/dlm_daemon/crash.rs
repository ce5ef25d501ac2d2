//! The crash points: node1's lockmgrd aborted at a step of acquire, release, owner death or
//! restore, restarted, and its table checked against the real DLM from node2.

use crate::bed::Bed;

/// Crashes node1's daemon at `point` during the operation of its stage, restarts it, and checks
/// that node1's table and the DLM agree for every disk involved.
pub(crate) fn crash_point(bed: &Bed, point: &str, n: usize) -> Result<String, String> {
    let domain = format!("cp{n}");
    let disks = [format!("/vm/cp{n}-a.img"), format!("/vm/cp{n}-b.img")];
    let both = format!("--disk {} --disk {}", disks[0], disks[1]);
    let env = format!("LOCKMGRD_FAILPOINT={point}");
    let stage = point.split(':').next().unwrap_or_default();
    let pid = bed.register(1, &domain);
    match stage {
        "acquire" => {
            bed.stop_daemon(1);
            bed.start_daemon(1, &env)?;
            let step = bed.step(1, "acquire", &domain, pid, &both);
            if step["ok"] == true {
                return Err(format!(
                    "the acquire was answered although {point} aborts: {step}"
                ));
            }
        }
        "release" => {
            let step = bed.step(1, "acquire", &domain, pid, &both);
            if step["ok"] != true {
                return Err(format!("acquire before the release: {step}"));
            }
            bed.stop_daemon(1);
            bed.start_daemon(1, &env)?;
            bed.step(1, "release", &domain, pid, &both);
        }
        "owner-death" => {
            let step = bed.step(1, "acquire", &domain, pid, &both);
            if step["ok"] != true {
                return Err(format!("acquire before the owner's death: {step}"));
            }
            bed.stop_daemon(1);
            bed.start_daemon(1, &env)?;
            bed.kill_pid(1, pid);
        }
        "restore" => {
            let step = bed.step(1, "acquire", &domain, pid, &both);
            if step["ok"] != true {
                return Err(format!("acquire before the restart: {step}"));
            }
            bed.stop_daemon(1);
            // The crash is in this start: it aborts while it adopts the orphans.
            if bed.start_daemon(1, &env).is_ok() {
                bed.wait_gone(1)?;
            }
        }
        other => return Err(format!("no scenario for {other}")),
    }
    bed.wait_gone(1)?;
    if !bed.log(1).contains(&format!("failpoint {point}: aborting")) {
        return Err(format!("{point} was never reached:\n{}", bed.log(1)));
    }
    bed.start_daemon(1, "")?;
    // Both disks or neither: an Acquire and a Release are all or none.
    let count = if stage == "owner-death" {
        0
    } else {
        bed.held_count(&domain, pid)
    };
    let held = match count {
        0 => false,
        2 => true,
        n => {
            return Err(format!(
                "all or none broken after {point}: node1 holds {n} of 2"
            ));
        }
    };
    let mut seen = Vec::new();
    for (i, disk) in disks.iter().enumerate() {
        let granted = bed.node2_gets(disk, &format!("{n}-{i}"))?;
        if granted == held {
            return Err(format!(
                "{disk}: node1's table {} it, yet node2 was {} (after {point})",
                if held { "holds" } else { "does not hold" },
                if granted {
                    "granted it: two holders"
                } else {
                    "refused: a leaked lock"
                }
            ));
        }
        seen.push(if held { "kept" } else { "free" });
    }
    bed.kill_pid(1, pid);
    Ok(format!("restarted; disks {}", seen.join("/")))
}
