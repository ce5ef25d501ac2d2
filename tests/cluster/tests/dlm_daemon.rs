//! `lockmgrd --backend dlm` under crashes and abuse on a real 2-node DLM cluster (fencing on):
//!
//! - **crash points**: the daemon on node1 aborts at a step of acquire, release, owner death or
//!   restore (`LOCKMGRD_FAILPOINT`, a build with the `failpoints` feature); after its restart
//!   node1's table and the real DLM agree: a disk the table holds for a running domain is refused
//!   to node2 (nothing lost), any other is granted to node2 (nothing leaked: no orphan left);
//! - **a second daemon** on the same configuration touches nothing;
//! - **another pid** cannot release a domain's lock;
//! - **a zombie owner** (exited, not reaped) loses its locks;
//! - **inputs beyond the limits** are refused;
//! - **a full state disk**: a refused Acquire leaves no DLM lock behind;
//! - **an inconsistent lock table** stops the daemon;
//! - **a hung DLM request** (its master node cut off) is refused at its deadline, another
//!   domain is served meanwhile, and the late grant is dropped;
//! - **an unfenced cluster** is refused at start (the control cluster of `dlm.rs` boots without
//!   fencing; here the daemon is pointed at a stand-in `dlm_tool` that says so);
//! - **unsafe self-fencing** is refused at start (watchdog agent without `--watchdog`, a short
//!   `wait=`, watchdog fencing on this two_node cluster, a missing watchdog device).
//!
//! Needs root, /dev/net/tun and QEMU: run by `tests/cluster/run-dlm.sh`.

mod common;

use std::time::{Duration, Instant};

use lockmgr_testbed::{Cluster, ClusterSpec, ExitStatus, NodeImage};

const SHARE: &str = "/mnt/host";
const CONFIG: &str = "/etc/libvirt/qemu-dlm.conf";
const PID_FILE: &str = "/run/lockmgr/dlm.pid";
const LOG: &str = "/run/lockmgr/lockmgrd.log";

struct Bed<'c> {
    cluster: &'c Cluster,
}

impl Bed<'_> {
    /// Runs `cmd` on `node`: (exit code, stdout + stderr).
    fn sh(&self, node: usize, cmd: &str) -> (i64, String) {
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
    fn step(
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
    fn step_with(
        &self,
        node: usize,
        config: &str,
        op: &str,
        domain: &str,
        pid: u32,
        extra: &str,
    ) -> serde_json::Value {
        let cmd = format!(
            "{SHARE}/lockmgr-loader-test step {op} --plugin {SHARE}/libdlm_plugin.so --config {config} \
             --domain {domain} --pid {pid} {extra}"
        );
        let (_, out) = self.sh(node, &cmd);
        let line = out.lines().rev().find(|l| l.starts_with('{')).unwrap_or("");
        serde_json::from_str(line)
            .unwrap_or_else(|_| panic!("node{node}: `{cmd}` printed no JSON:\n{out}"))
    }

    /// Registers a domain (a QEMU stand-in on `node`); its pid.
    fn register(&self, node: usize, domain: &str) -> u32 {
        let step = self.step(node, "register", domain, 0, "");
        assert_eq!(step["ok"], true, "register {domain} on node{node}: {step}");
        step["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or_else(|| panic!("no pid: {step}"))
    }

    fn kill_pid(&self, node: usize, pid: u32) {
        self.sh(node, &format!("kill -9 {pid} 2>/dev/null; true"));
    }

    /// Starts lockmgrd on `node` with `env` (`NAME=value …`) and waits until it serves, or
    /// returns its log when it exits first.
    fn start_daemon(&self, node: usize, env: &str) -> Result<(), String> {
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

    fn log(&self, node: usize) -> String {
        self.sh(node, &format!("tail -n 30 {LOG}.current")).1
    }

    /// Waits until no lockmgrd runs on `node` (it aborted at its crash point).
    fn wait_gone(&self, node: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.sh(node, "pgrep -x lockmgrd").0 == 0 {
            if Instant::now() > deadline {
                return Err(format!("lockmgrd still runs:\n{}", self.log(node)));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    fn stop_daemon(&self, node: usize) {
        self.sh(
            node,
            "pkill -x lockmgrd; for i in $(seq 50); do pgrep -x lockmgrd >/dev/null || break; sleep 0.1; done",
        );
    }

    /// How many locks node1's daemon holds for `domain` (the entries of its Inquire state).
    fn held_count(&self, domain: &str, pid: u32) -> usize {
        let inquire = self.step(1, "inquire", domain, pid, "");
        let state = inquire["state"].as_str().unwrap_or_default().to_owned();
        let entries = state.split(':').nth(1).unwrap_or_default();
        entries.split(',').filter(|e| !e.is_empty()).count()
    }

    /// node2 tries `disk`: Ok(true) granted (then released), Ok(false) refused as busy.
    fn node2_gets(&self, disk: &str, tag: &str) -> Result<bool, String> {
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

/// Crashes node1's daemon at `point` during the operation of its stage, restarts it, and checks
/// that node1's table and the DLM agree for every disk involved.
fn crash_point(bed: &Bed, point: &str, n: usize) -> Result<String, String> {
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

fn second_daemon_touches_nothing(bed: &Bed) -> Result<String, String> {
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

fn another_pid_cannot_release(bed: &Bed) -> Result<String, String> {
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

fn a_zombie_owner_loses_its_locks(bed: &Bed) -> Result<String, String> {
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

fn inputs_are_bounded(bed: &Bed) -> Result<String, String> {
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
fn a_full_state_disk_leaves_no_lock(bed: &Bed) -> Result<String, String> {
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
fn a_hung_dlm_request_is_refused_at_its_deadline(bed: &Bed) -> Result<String, String> {
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

fn inconsistent_table_refused(bed: &Bed) -> Result<String, String> {
    let script = r#"mkdir -p /run/lockmgr/bad-state && printf '%s\n' 'socket_path = "/run/lockmgr/bad.sock"' 'state_dir = "/run/lockmgr/bad-state"' > /run/lockmgr/bad.conf
printf '%s' '{"format":2,"backend":"dlm","owners":[],"locks":[{"spec":{"kind":"disk","name":"/vm/x.img","mode":"exclusive"},"mode":"exclusive","holders":["00000000-0000-4000-8000-000000000001"]}],"unsettled":[]}' > /run/lockmgr/bad-state/locks.json"#;
    bed.sh(1, script);
    let (code, out) = bed.sh(
        1,
        &format!("timeout 20 {SHARE}/lockmgrd --backend dlm --config /run/lockmgr/bad.conf 2>&1"),
    );
    if code == 0 || !out.contains("which is not in the owner list") {
        return Err(format!("exit {code}:\n{out}"));
    }
    Ok("refused to start".into())
}

fn unfenced_cluster_refused(bed: &Bed) -> Result<String, String> {
    // A stand-in dlm_tool reporting what `dlm_controld --enable_fencing 0` reports.
    let script = r#"mkdir -p /run/lockmgr/unfenced-bin && printf '%s\n' '#!/bin/sh' 'echo enable_fencing=0' > /run/lockmgr/unfenced-bin/dlm_tool && chmod +x /run/lockmgr/unfenced-bin/dlm_tool
printf '%s\n' 'socket_path = "/run/lockmgr/unfenced.sock"' 'state_dir = "/run/lockmgr/unfenced-state"' > /run/lockmgr/unfenced.conf"#;
    bed.sh(1, script);
    let (code, out) = bed.sh(
        1,
        &format!(
            "PATH=/run/lockmgr/unfenced-bin:$PATH timeout 20 {SHARE}/lockmgrd --backend dlm --config /run/lockmgr/unfenced.conf 2>&1"
        ),
    );
    if code == 0 || !out.contains("dlm_controld runs with enable_fencing=0") {
        return Err(format!("exit {code}:\n{out}"));
    }
    Ok("refused to start".into())
}

/// Self-fencing that cannot be safe is refused at start, by the real corosync of this two_node
/// cluster: survivors that trust fence_lockmgr_watchdog while the daemon arms no watchdog, a
/// wait= shorter than the timeouts, watchdog fencing with two_node and no quorum device, and a
/// missing watchdog device. The serving daemon is untouched.
fn unsafe_self_fencing_refused(bed: &Bed) -> Result<String, String> {
    let setup = r#"mkdir -p /run/lockmgr && printf '%s\n' 'socket_path = "/run/lockmgr/wd.sock"' 'state_dir = "/run/lockmgr/wd-state"' > /run/lockmgr/wd.conf
printf '%s\n' 'enable_fencing=1' 'fence_all /usr/sbin/fence_lockmgr_watchdog wait=20' > /run/lockmgr/dlm-wd.conf
printf '%s\n' 'enable_fencing=1' 'fence_all /usr/sbin/fence_lockmgr_watchdog wait=15' > /run/lockmgr/dlm-short.conf"#;
    bed.sh(1, setup);
    let daemon = format!(
        "timeout 20 {SHARE}/lockmgrd --backend dlm --config /run/lockmgr/wd.conf --lock-failure-timeout 8"
    );
    let cases = [
        (
            "--dlm-conf /run/lockmgr/dlm-wd.conf",
            "runs without --watchdog",
        ),
        (
            "--dlm-conf /run/lockmgr/dlm-short.conf --watchdog /dev/watchdog --watchdog-timeout 10",
            "wait=15 is shorter than",
        ),
        (
            "--dlm-conf /run/lockmgr/dlm-wd.conf --watchdog /dev/watchdog --watchdog-timeout 10",
            "two_node: 1 and no quorum device",
        ),
        // Power fencing (the bed's dlm.conf) plus a watchdog this node does not have.
        (
            "--watchdog /dev/nowatchdog --watchdog-timeout 10",
            "cannot open the watchdog /dev/nowatchdog",
        ),
    ];
    let mut seen = Vec::new();
    for (args, expected) in cases {
        let (code, out) = bed.sh(1, &format!("{daemon} {args} 2>&1"));
        if code == 0 || !out.contains(expected) {
            return Err(format!(
                "lockmgrd {args}: exit {code}, expected '{expected}':\n{out}"
            ));
        }
        seen.push(expected);
    }
    if bed.sh(1, &format!("kill -0 $(cat {PID_FILE})")).0 != 0 {
        return Err("the serving lockmgrd on node1 is gone".into());
    }
    Ok(format!("refused: {}", seen.join("; ")))
}

#[test]
#[ignore = "boots a DLM cluster in QEMU VMs; run by tests/cluster/run-dlm.sh"]
fn lockmgrd_dlm_under_crashes_and_abuse() {
    let share = common::build_node_binaries();
    let image = NodeImage::ensure().expect("node image");
    let cluster = Cluster::start(&image, &ClusterSpec::with_nodes(2).share(&share))
        .expect("a 2-node cluster");
    let bed = Bed { cluster: &cluster };
    for node in 1..=2 {
        bed.sh(node, &common::write_dlm_config(CONFIG));
        if let Err(log) = bed.start_daemon(node, "") {
            panic!("lockmgrd on node{node}:\n{log}");
        }
    }
    type Case = fn(&Bed) -> Result<String, String>;
    let cases: [(&str, Case); 9] = [
        ("second daemon", second_daemon_touches_nothing),
        ("release by another pid", another_pid_cannot_release),
        ("inconsistent locks.json", inconsistent_table_refused),
        ("zombie owner", a_zombie_owner_loses_its_locks),
        ("inputs beyond the limits", inputs_are_bounded),
        ("full state disk", a_full_state_disk_leaves_no_lock),
        ("unfenced cluster", unfenced_cluster_refused),
        ("unsafe self-fencing", unsafe_self_fencing_refused),
        // Last: it cuts node2 off for good.
        (
            "hung DLM request (node2 cut off)",
            a_hung_dlm_request_is_refused_at_its_deadline,
        ),
    ];
    // DLM_DAEMON_CASES=word,word runs only the cases whose name contains one of the words (by
    // hand, e.g. a control run of one case against a changed daemon); the suite runs them all.
    let only = std::env::var("DLM_DAEMON_CASES").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|words| words.split(',').any(|w| name.contains(w)))
    };
    let mut results: Vec<(String, Result<String, String>)> = Vec::new();
    for (n, point) in lockmgrd::failpoint::POINTS.iter().enumerate() {
        let name = format!("crash at {point}");
        if !wanted(&name) {
            continue;
        }
        let result = crash_point(&bed, point, n);
        if result.is_err() {
            // Leave a serving daemon for the next case.
            bed.stop_daemon(1);
            let _ = bed.start_daemon(1, "");
        }
        results.push((name, result));
    }
    for (name, case) in cases {
        if wanted(name) {
            results.push((name.to_owned(), case(&bed)));
        }
    }
    assert!(
        !results.is_empty(),
        "DLM_DAEMON_CASES={only:?} names no case"
    );

    println!("\nlockmgrd --backend dlm under crashes and abuse (2 nodes, fencing on)");
    for (name, result) in &results {
        match result {
            Ok(what) => println!("  ✓ {name:<36} {what}"),
            Err(why) => println!("  ✗ {name:<36} {}", why.lines().next().unwrap_or_default()),
        }
    }
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(name, r)| r.as_ref().err().map(|why| format!("{name}: {why}")))
        .collect();
    println!(
        "dlm daemon: {} passed, {} failed",
        results.len() - failed.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
