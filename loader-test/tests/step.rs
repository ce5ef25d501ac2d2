//! `step`: one libvirt operation per invocation, each loading the plugin afresh, against file.so
//! and a lockmgrd of the test's own; the stand-ins a `register` forks outlive it. nop.so is the
//! control: the same steps show no exclusion, so the exclusion checks here can fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{build_plugin, file_plugin, loader_test};

/// `VIR_ERR_RESOURCE_BUSY`
const BUSY: i64 = 87;

/// A lockmgrd serving file.so's config in `dir`, stopped (and its stand-ins killed) on drop.
struct Bed {
    dir: PathBuf,
    plugin: PathBuf,
    config: PathBuf,
    daemon: Option<Child>,
    stand_ins: Vec<u32>,
}

impl Bed {
    fn file(dir: &Path) -> Bed {
        let (plugin, lockmgrd) = file_plugin(dir);
        let socket = dir.join("file.sock");
        let config = dir.join("qemu-file.conf");
        std::fs::write(
            &config,
            format!(
                "socket_path = \"{}\"\nstate_dir = \"{}\"\n",
                socket.display(),
                dir.join("state").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("lockmgrd.log")).unwrap();
        let daemon = Command::new(lockmgrd)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "lockmgrd never served {}: {}",
                socket.display(),
                std::fs::read_to_string(dir.join("lockmgrd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Bed {
            dir: dir.to_owned(),
            plugin,
            config,
            daemon: Some(daemon),
            stand_ins: Vec::new(),
        }
    }

    fn nop(dir: &Path) -> Bed {
        let config = dir.join("qemu-nop.conf");
        std::fs::write(&config, "").unwrap();
        Bed {
            dir: dir.to_owned(),
            plugin: build_plugin("lockmgr-plugin-nop", "nop", dir),
            config,
            daemon: None,
            stand_ins: Vec::new(),
        }
    }

    /// `step OP --domain DOMAIN --pid PID ARGS…`: its exit code and JSON line.
    fn step(&self, op: &str, domain: &str, pid: u32, args: &[&str]) -> (i32, serde_json::Value) {
        let output = Command::new(loader_test())
            .args(["step", op, "--plugin"])
            .arg(&self.plugin)
            .arg("--config")
            .arg(&self.config)
            .args(["--domain", domain, "--pid", &pid.to_string()])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
            panic!(
                "step {op} {domain} printed no JSON line: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code().unwrap_or(-1), json)
    }

    /// Registers `domain` with `disk`: its stand-in's pid (killed when the bed is dropped).
    fn register(&mut self, domain: &str, disk: &str) -> u32 {
        let (code, json) = self.step("register", domain, 0, &["--disk", disk]);
        assert_eq!((code, &json["ok"]), (0, &true.into()), "{json}");
        assert_eq!(json["uuid"].as_str().map(str::len), Some(36), "{json}");
        let pid = u32::try_from(json["pid"].as_u64().unwrap()).unwrap();
        self.stand_ins.push(pid);
        pid
    }

    fn disk(&self, name: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, b"").unwrap();
        path.display().to_string()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for pid in &self.stand_ins {
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }
}

/// Whether `pid` still runs (not a zombie: a detached stand-in is reparented and reaped).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn steps_register_acquire_pause_resume_inquire_and_release_through_file_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut bed = Bed::file(dir.path());
    let disk = bed.disk("shared-lun.img");

    let a = bed.register("vm-a", &disk);
    assert!(
        running(a),
        "vm-a's stand-in outlives the step that forked it"
    );
    let (code, json) = bed.step("acquire", "vm-a", a, &["--disk", &disk]);
    assert_eq!((code, &json["ok"]), (0, &true.into()), "{json}");

    // The same disk for another domain: refused, as libvirt would report it.
    let b = bed.register("vm-b", &disk);
    let (code, json) = bed.step("acquire", "vm-b", b, &["--disk", &disk]);
    assert_eq!((code, &json["ok"]), (1, &false.into()), "{json}");
    assert_eq!(json["code"], BUSY, "{json}");
    assert!(json["error"].as_str().unwrap().contains("vm-a"), "{json}");

    // Pause frees it and hands back a state string; vm-b takes it meanwhile.
    let (code, json) = bed.step("pause", "vm-a", a, &["--disk", &disk]);
    assert_eq!((code, &json["ok"]), (0, &true.into()), "{json}");
    let state = json["state"]
        .as_str()
        .expect("pause prints a state")
        .to_owned();
    let (_, json) = bed.step("acquire", "vm-b", b, &["--disk", &disk]);
    assert_eq!(json["ok"], true, "vm-a paused: {json}");
    let (_, json) = bed.step("acquire", "vm-a", a, &["--disk", &disk, "--state", &state]);
    assert_eq!(
        (&json["ok"], &json["code"]),
        (&false.into(), &BUSY.into()),
        "{json}"
    );

    // vm-b lets go; vm-a resumes with its state and holds the disk again.
    let (code, json) = bed.step("release", "vm-b", b, &["--disk", &disk]);
    assert_eq!((code, &json["ok"]), (0, &true.into()), "{json}");
    let (code, json) = bed.step("acquire", "vm-a", a, &["--disk", &disk, "--state", &state]);
    assert_eq!((code, &json["ok"]), (0, &true.into()), "{json}");
    let (code, json) = bed.step("inquire", "vm-a", a, &["--disk", &disk]);
    assert_eq!((code, &json["ok"]), (0, &true.into()), "{json}");
    assert!(
        json["state"].as_str().is_some_and(|s| !s.is_empty()),
        "{json}"
    );

    // Bad arguments: exit 2 and a message naming them, nothing printed on stdout.
    let output = Command::new(loader_test())
        .args(["step", "acquire", "--plugin"])
        .arg(&bed.plugin)
        .args(["--domain", "vm-a", "--disk", "x.img,sideways"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--disk x.img,sideways: unknown mode 'sideways'"),
        "{stderr}"
    );
}

#[test]
fn control_nop_so_lets_both_domains_take_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut bed = Bed::nop(dir.path());
    let disk = bed.disk("shared-lun.img");
    let a = bed.register("vm-a", &disk);
    let b = bed.register("vm-b", &disk);
    let (_, json) = bed.step("acquire", "vm-a", a, &["--disk", &disk]);
    assert_eq!(json["ok"], true, "{json}");
    let (_, json) = bed.step("acquire", "vm-b", b, &["--disk", &disk]);
    assert_eq!(json["ok"], true, "nop.so excludes nothing: {json}");
}

#[test]
fn a_race_through_file_so_grants_and_records_every_turn() {
    let dir = tempfile::tempdir().unwrap();
    let bed = Bed::file(dir.path());
    let disks = format!("{},{}", bed.disk("d1.img"), bed.disk("d2.img"));
    let ledger = dir.path().join("ledger");
    let output = Command::new(loader_test())
        .args(["step", "race", "--plugin"])
        .arg(&bed.plugin)
        .arg("--config")
        .arg(&bed.config)
        .args(["--node", "n1", "--owners", "3", "--resources", &disks])
        .args(["--seconds", "2", "--ledger"])
        .arg(&ledger)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().next().unwrap_or("")).unwrap();
    let grants = summary["grants"].as_u64().unwrap();
    assert!(grants > 0, "{summary}");
    // Every grant and every release is in the ledger, in turn: G n, R n+1 per resource.
    let log = std::fs::read_to_string(ledger.join("n1.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len() as u64, 2 * grants, "{log}");
    for pair in lines.chunks(2) {
        let (grant, release): (Vec<&str>, Vec<&str>) =
            (pair[0].split(' ').collect(), pair[1].split(' ').collect());
        assert_eq!((grant[0], release[0]), ("G", "R"), "{pair:?}");
        assert_eq!(grant[1..4], release[1..4], "{pair:?}");
        let (g, r): (u64, u64) = (grant[4].parse().unwrap(), release[4].parse().unwrap());
        assert_eq!(r, g + 1, "{pair:?}");
    }
}
