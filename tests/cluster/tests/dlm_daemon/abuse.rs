//! The checks on a serving daemon: a second daemon, a release by another pid, a zombie owner,
//! inputs beyond the limits, a full state disk and a hung DLM request.

use std::time::{Duration, Instant};

use crate::bed::Bed;
use crate::{CONFIG, SHARE};

pub(crate) fn second_daemon_touches_nothing(bed: &Bed) -> Result<String, String> {
    let pid = bed.register(1, "dup");
    let step = bed.step(1, "acquire", "dup", pid, "--disk /vm/dup.img");
    if step["ok"] != true {
        return Err(format!("acquire: {step}"));
    }
    let (_, table) = bed.sh(1, "cat /run/lockmgr/dlm-state/locks.json");
    let (code, out) = bed.sh(
        1,
        &format!("timeout 20 {SHARE}/lockmgrd --backend dlm --config {CONFIG} 2>&1"),
    );
    if code == 0 || !out.contains("already uses state_dir") {
        return Err(format!("the second daemon exited {code}:\n{out}"));
    }
    let (_, after) = bed.sh(1, "cat /run/lockmgr/dlm-state/locks.json");
    if after != table {
        return Err("the second daemon rewrote locks.json".into());
    }
    if bed.sh(1, &format!("kill -0 {pid}")).0 != 0 {
        return Err("the domain holding the lock was killed".into());
    }
    if bed.node2_gets("/vm/dup.img", "dup")? {
        return Err("node2 was granted the disk the first daemon still holds".into());
    }
    bed.kill_pid(1, pid);
    Ok(out
        .lines()
        .last()
        .unwrap_or_default()
        .chars()
        .skip(30)
        .take(70)
        .collect())
}

pub(crate) fn another_pid_cannot_release(bed: &Bed) -> Result<String, String> {
    let pid = bed.register(1, "victim");
    let step = bed.step(1, "acquire", "victim", pid, "--disk /vm/victim.img");
    if step["ok"] != true {
        return Err(format!("acquire: {step}"));
    }
    let other = bed.register(1, "other");
    let release = bed.step(1, "release", "victim", other, "--disk /vm/victim.img");
    let error = release["error"].as_str().unwrap_or_default().to_owned();
    if release["ok"] == true || !error.contains(&format!("runs as pid {pid}")) {
        return Err(format!("a release for pid {other}: {release}"));
    }
    if bed.node2_gets("/vm/victim.img", "victim")? {
        return Err("the lock went with the forged release".into());
    }
    bed.kill_pid(1, pid);
    bed.kill_pid(1, other);
    Ok("refused".into())
}

pub(crate) fn a_zombie_owner_loses_its_locks(bed: &Bed) -> Result<String, String> {
    // perl forks a child that exits after 6 s and is never reaped: a zombie while perl sleeps.
    let parent = bed
        .cluster
        .spawn(
            1,
            "perl -e '$p = fork(); if (!$p) { sleep 6; exit 0 } open(F, \">/run/lockmgr/zombie.pid\"); print F $p; close F; sleep 120'",
            "/run/lockmgr/zombie.log",
        )
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let child: u32 = loop {
        let (_, text) = bed.sh(1, "cat /run/lockmgr/zombie.pid 2>/dev/null");
        if let Ok(pid) = text.trim().parse() {
            break pid;
        }
        if Instant::now() > deadline {
            return Err("the zombie-to-be never started".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let step = bed.step(1, "acquire", "zombie", child, "--disk /vm/zombie.img");
    if step["ok"] != true {
        return Err(format!("acquire for pid {child}: {step}"));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tries = 0;
    loop {
        tries += 1;
        if bed.node2_gets("/vm/zombie.img", &format!("zombie{tries}"))? {
            break;
        }
        if Instant::now() > deadline {
            return Err("node2 still refused 30 s after the owner became a zombie".into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, state) = bed.sh(1, &format!("cut -d' ' -f3 /proc/{child}/stat"));
    bed.kill_pid(1, parent);
    if state.trim() != "Z" {
        return Err(format!("the owner was not a zombie but in state {state:?}"));
    }
    Ok(format!("freed; node2 granted after {tries} tries"))
}

pub(crate) fn inputs_are_bounded(bed: &Bed) -> Result<String, String> {
    let pid = bed.register(1, "long");
    let long = format!("/vm/{}", "x".repeat(5000));
    let step = bed.step(1, "acquire", "long", pid, &format!("--disk {long}"));
    bed.kill_pid(1, pid);
    let error = step["error"].as_str().unwrap_or_default();
    if step["ok"] == true || !error.contains("at most 4095 are accepted") {
        return Err(format!("a 5004-byte disk path: {step}"));
    }
    Ok(error.chars().skip_while(|c| *c != '\'').skip(70).collect())
}

/// A second daemon instance on node2 whose state dir is a full 64 KiB tmpfs: its refusals leave
/// no DLM lock behind.
pub(crate) fn a_full_state_disk_leaves_no_lock(bed: &Bed) -> Result<String, String> {
    const FULL: &str = "/run/lockmgr/full.conf";
    let setup = format!(
        "mkdir -p /run/lockmgr/full-state && mount -t tmpfs -o size=64k,mode=0700 full /run/lockmgr/full-state \
         && printf '%s\\n' 'socket_path = \"/run/lockmgr/full.sock\"' 'state_dir = \"/run/lockmgr/full-state\"' > {FULL}"
    );
    let (code, out) = bed.sh(2, &setup);
    if code != 0 {
        return Err(format!("setup: {out}"));
    }
    let daemon = bed
        .cluster
        .spawn(
            2,
            &format!("{SHARE}/lockmgrd --backend dlm --config {FULL}"),
            "/run/lockmgr/full.log",
        )
        .map_err(|e| e.to_string())?;
    let result = (|| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while bed.sh(2, "test -S /run/lockmgr/full.sock").0 != 0 {
            if Instant::now() > deadline {
                return Err(format!(
                    "not serving: {}",
                    bed.sh(2, "cat /run/lockmgr/full.log").1
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bed.sh(
            2,
            "cat /dev/zero > /run/lockmgr/full-state/fill 2>/dev/null; true",
        );
        let pid = bed.register(2, "full");
        let step = bed.step_with(2, FULL, "acquire", "full", pid, "--disk /vm/full.img");
        let error = step["error"].as_str().unwrap_or_default().to_owned();
        if step["ok"] == true || !error.contains("cannot record the lock table") {
            return Err(format!("acquire on a full state disk: {step}"));
        }
        // The DLM holds nothing for the refused request: node1 gets the disk at once.
        let probe = bed.register(1, "full-probe");
        let granted = bed.step(1, "acquire", "full-probe", probe, "--disk /vm/full.img");
        bed.kill_pid(1, probe);
        if granted["ok"] != true {
            return Err(format!(
                "the refused acquire left its DLM lock: node1 got {granted}"
            ));
        }
        bed.sh(2, "rm /run/lockmgr/full-state/fill");
        let again = bed.step_with(2, FULL, "acquire", "full", pid, "--disk /vm/full.img");
        bed.kill_pid(2, pid);
        if again["ok"] != true {
            return Err(format!("acquire once the disk has room: {again}"));
        }
        Ok("refused, nothing held; served again".to_owned())
    })();
    bed.kill_pid(2, daemon);
    bed.sh(2, "sleep 0.5; umount /run/lockmgr/full-state");
    result
}

/// node2 masters a disk's DLM resource (an NL lock) and is cut off: node1's Acquire of that disk
/// hangs in the DLM until node2 is fenced and the lockspace recovered. The daemon refuses it
/// after its deadline instead of waiting, answers another domain before it (no head-of-line
/// blocking), and drops the lock the DLM grants too late. Cuts node2 for good: the last check on
/// this cluster.
pub(crate) fn a_hung_dlm_request_is_refused_at_its_deadline(bed: &Bed) -> Result<String, String> {
    bed.cluster
        .spawn(
            2,
            &format!("{SHARE}/dlm-floor hold-nl --disks 1 --disk-dir /vm/hol"),
            "/run/lockmgr/hold-nl.log",
        )
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !bed
        .sh(2, "cat /run/lockmgr/hold-nl.log")
        .1
        .contains("result=holding")
    {
        if Instant::now() > deadline {
            return Err("node2 never took its NL lock".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let hung = bed.register(1, "hung");
    let other = bed.register(1, "bystander");
    let step = |domain: &str, pid: u32, disk: &str| {
        format!(
            "{SHARE}/lockmgr-loader-test step acquire --plugin {SHARE}/libdlm_plugin.so --config {CONFIG} \
             --domain {domain} --pid {pid} --disk {disk}"
        )
    };
    // Two clients at once: the request whose master is gone, and another domain's; each notes
    // when it was answered.
    let script = format!(
        "t0=$(date +%s%N); ( {} > /run/lockmgr/hung.json 2>&1; date +%s%N > /run/lockmgr/hung.t ) & \
         sleep 0.3; {} > /run/lockmgr/other.json 2>&1; \
         t1=$(date +%s%N); wait; t2=$(cat /run/lockmgr/hung.t); echo $t0 $t1 $t2; tail -n1 /run/lockmgr/hung.json; \
         tail -n1 /run/lockmgr/other.json",
        step("hung", hung, "/vm/hol/n1-000.img"),
        step("bystander", other, "/vm/hol-other.img")
    );
    bed.cluster.cut_node(2).map_err(|e| e.to_string())?;
    let (_, out) = bed.sh(1, &script);
    let mut lines = out.lines();
    let times: Vec<i128> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    let parse = |line: Option<&str>| -> serde_json::Value {
        serde_json::from_str(line.unwrap_or_default()).unwrap_or_default()
    };
    let (hung_step, other_step) = (parse(lines.next()), parse(lines.next()));
    let [t0, t1, t2] = times[..] else {
        return Err(format!("no times: {out}"));
    };
    let ms = |t: i128| (t - t0) / 1_000_000;
    let error = hung_step["error"].as_str().unwrap_or_default();
    if hung_step["ok"] == true || !error.contains("did not answer within") {
        return Err(format!(
            "the Acquire whose master was cut off: {hung_step} after {} ms (other: {other_step})",
            ms(t2)
        ));
    }
    if other_step["ok"] != true {
        return Err(format!("the bystander's Acquire: {other_step}"));
    }
    // No head-of-line blocking: the bystander is answered while the hung request still waits
    // (an order, not a time: a daemon that waited for the DLM would answer it after).
    if t1 >= t2 {
        return Err(format!(
            "the bystander was answered after the hung request ({} ms, {} ms after the start): \
             the daemon waited for the DLM",
            ms(t1),
            ms(t2)
        ));
    }
    bed.kill_pid(1, other);
    // After node2 is fenced and the lockspace recovered, the disk is free again: the grant the
    // DLM made after the deadline was dropped, not kept for nobody.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let retry = bed.step(1, "acquire", "hung", hung, "--disk /vm/hol/n1-000.img");
        if retry["ok"] == true {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the disk is still refused 60 s after the cut: {retry}"
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bed.kill_pid(1, hung);
    Ok(format!(
        "refused after {} ms; bystander served after {} ms; free after recovery",
        ms(t2),
        ms(t1)
    ))
}
