//! `__bench-worker`: one plugin (or the floor) set up once, then timed batches of libvirt's
//! resume/pause cycle on request.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockmgr::host::Plugin;
use lockmgr::{LockFailureAction, Resource, Uuid};
use serde::{Deserialize, Serialize};

use crate::bench::args::LockMode;
use crate::bench::floor::{self, FloorKind};
use crate::bench::libvirtd::{Owner, RegisterError, disk_image, register};
use crate::bench::run::SANLOCK_MAX_RESOURCES;
use crate::bench::scale::{ScaleResult, ScaleSubject};
use crate::bench::storm::{StormSample, StormSubject};
use crate::daemons::{self, Layout, PluginEnv, Profile};
use crate::harness_sys;
use crate::matrix::ToolArgs;
use crate::sequences;

/// Arguments of `__bench-worker`.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// `floor` or a plugin path.
    #[arg(long)]
    plugin: Option<PathBuf>,
    #[arg(long)]
    profile: Option<String>,
    #[arg(long)]
    floor: bool,
    #[arg(long, value_enum)]
    mode: Option<LockMode>,
    /// Pin to this CPU; absent = all CPUs.
    #[arg(long)]
    cpu: Option<usize>,
    #[arg(long, value_delimiter = ',')]
    disks: Vec<usize>,
    #[arg(long)]
    scratch: PathBuf,
    #[arg(long)]
    disk_dir: Option<PathBuf>,
    /// With --floor: which floor.
    #[arg(long, value_enum, default_value = "classic")]
    floor_kind: FloorKind,
    /// A boot-storm worker: register this many domains (`storm` runs one storm).
    #[arg(long)]
    pub(super) storm_domains: Option<usize>,
    #[arg(long, default_value_t = 4)]
    pub(super) storm_disks: usize,
    #[arg(long, default_value_t = 0)]
    pub(super) storm_threads: usize,
    /// A scale worker: `scale` fills the table up to this many locks.
    #[arg(long)]
    pub(super) scale_locks: Option<usize>,
    #[arg(long, default_value_t = 1000)]
    pub(super) scale_per_owner: usize,
    #[arg(long, default_value_t = 200)]
    pub(super) scale_probes: usize,
    #[command(flatten)]
    tools: ToolArgs,
}

/// What a worker writes back, one JSON line per command.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Reply {
    Ready { detail: String },
    Samples { ns: Vec<u64> },
    Storm(StormSample),
    Scale(ScaleResult),
    Error { message: String },
}

/// `__bench-worker`: sets up one plugin (or the floor), then runs batches on command.
pub fn worker_command(args: &WorkerArgs) -> u8 {
    let mut out = match crate::sys::take_stdout_for_events() {
        Ok(file) => file,
        Err(err) => {
            eprintln!("lockmgr-loader-test: cannot set up the reply stream: {err}");
            return crate::EXIT_FAIL;
        }
    };
    // One write per line: the pipe is unbuffered, and a batch's samples are thousands of tokens.
    let mut reply = |r: &Reply| {
        let mut line = serde_json::to_vec(r).unwrap_or_default();
        line.push(b'\n');
        let _ = out.write_all(&line);
        let _ = out.flush();
    };
    let cpus = match args.cpu {
        Some(cpu) => vec![cpu],
        None => harness_sys::online_cpus(),
    };
    if let Err(err) = harness_sys::set_affinity(&cpus) {
        reply(&Reply::Error {
            message: format!("pinning to CPUs {cpus:?}: {err}"),
        });
        return crate::EXIT_FAIL;
    }
    let mut subject = match Subject::set_up(args) {
        Ok(subject) => subject,
        Err(message) => {
            reply(&Reply::Error { message });
            return crate::EXIT_FAIL;
        }
    };
    // libvirtd always has libvirt.so.0 loaded. Without it, the host harness's lookup of
    // libvirt's error functions before every callback searches the library path (~50 µs a
    // call), which would be charged to plugins that do not link libvirt (file.so, nop.so) and
    // not to lockd.so, which does. (After set_up: the private /run is entered single-threaded.)
    let libvirt_loaded = !args.floor && harness_sys::preload(c"libvirt.so.0");
    reply(&Reply::Ready {
        detail: format!(
            "{}{}",
            subject.describe(&cpus),
            if libvirt_loaded {
                "; libvirt.so.0 loaded, as in libvirtd"
            } else {
                ""
            }
        ),
    });
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["run", n, count] => {
                let (Ok(n), Ok(count)) = (n.parse::<usize>(), count.parse::<usize>()) else {
                    reply(&Reply::Error {
                        message: format!("bad command '{line}'"),
                    });
                    continue;
                };
                match subject.run(n, count) {
                    Ok(ns) => reply(&Reply::Samples { ns }),
                    Err(message) => reply(&Reply::Error { message }),
                }
            }
            ["storm"] => match &mut subject {
                Subject::Storm(storm) => match storm.storm() {
                    Ok(sample) => reply(&Reply::Storm(sample)),
                    Err(message) => reply(&Reply::Error { message }),
                },
                _ => reply(&Reply::Error {
                    message: "not a storm worker".into(),
                }),
            },
            ["scale"] => match &mut subject {
                Subject::Scale(scale) => match scale.run() {
                    Ok(result) => reply(&Reply::Scale(result)),
                    Err(message) => reply(&Reply::Error { message }),
                },
                _ => reply(&Reply::Error {
                    message: "not a scale worker".into(),
                }),
            },
            ["quit"] => break,
            _ => reply(&Reply::Error {
                message: format!("bad command '{line}'"),
            }),
        }
    }
    match subject.finish() {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("{err}");
            crate::EXIT_FAIL
        }
    }
}

enum Subject {
    Plugin(Box<PluginSubject>),
    Floor(FloorSubject),
    Storm(Box<StormSubject>),
    Scale(Box<ScaleSubject>),
}

struct PluginSubject {
    plugin: Option<Plugin>,
    env: PluginEnv,
    /// Per disk count: the registered owner, its domain, its disks, its last state.
    owners: BTreeMap<usize, BenchOwner>,
    /// Disk counts the plugin refused to register (sanlock: more than 8), with its message:
    /// not timed.
    refused: BTreeMap<usize, String>,
    mode: Option<LockMode>,
}

struct BenchOwner {
    owner: Owner,
    /// What the last Release handed back, for the next Acquire.
    state: Option<String>,
}

struct FloorSubject {
    kind: FloorKind,
    /// The peer process (none for `ofd-raw`).
    server: Option<Child>,
    stream: Option<UnixStream>,
    /// `ofd-raw`'s open files.
    files: Vec<std::fs::File>,
}

/// A plugin loaded as libvirtd loads it, its daemon started: what storm and scale workers share
/// with the cycle's.
pub(super) struct Loaded {
    pub(super) plugin: Plugin,
    pub(super) env: PluginEnv,
    pub(super) profile: Profile,
    pub(super) disk_dir: PathBuf,
}

impl Loaded {
    /// `count` fresh disk images in the disk directory, the `k`-th named `name(k)`.
    pub(super) fn disks(
        &self,
        count: usize,
        name: impl Fn(usize) -> String,
    ) -> Result<Vec<Resource>, String> {
        (0..count)
            .map(|k| disk_image(&self.disk_dir, &name(k)))
            .collect()
    }
}

/// Sets up `args`' plugin in a fresh scratch layout: its daemon, drvInit.
pub(super) fn load_plugin(args: &WorkerArgs) -> Result<Loaded, String> {
    let layout = Layout::create(&args.scratch)
        .map_err(|e| format!("scratch {}: {e}", args.scratch.display()))?;
    let disk_dir = args
        .disk_dir
        .clone()
        .unwrap_or_else(|| layout.disks.clone());
    let path = args.plugin.clone().ok_or("--plugin or --floor")?;
    let profile = args
        .profile
        .as_deref()
        .and_then(Profile::from_name)
        .unwrap_or_else(|| Profile::discover(&path));
    let lockspace = args.mode == Some(LockMode::Lockspace);
    let tools = args.tools.tools();
    let env = daemons::prepare(profile, &path, &tools, &layout, lockspace)
        .map_err(|e| format!("setting up {profile}: {e}"))?;
    let mut plugin = Plugin::open(&path).map_err(|e| e.to_string())?;
    plugin
        .init(&env.config)
        .map_err(|e| format!("drvInit: {e}"))?;
    Ok(Loaded {
        plugin,
        env,
        profile,
        disk_dir,
    })
}

fn bench_uuid(n: usize) -> Uuid {
    let mut bytes = *b"lockmgr-bench-\0\0";
    bytes[14] = u8::try_from(n & 0xff).unwrap_or(0);
    bytes[15] = u8::try_from((n >> 8) & 0xff).unwrap_or(0);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid(bytes)
}

impl Subject {
    fn set_up(args: &WorkerArgs) -> Result<Subject, String> {
        if args.floor {
            let layout = Layout::create(&args.scratch)
                .map_err(|e| format!("scratch {}: {e}", args.scratch.display()))?;
            let max = args.disks.iter().copied().max().unwrap_or(1);
            return FloorSubject::start(args.floor_kind, &layout, max).map(Subject::Floor);
        }
        if args.storm_domains.is_some() {
            return StormSubject::set_up(args).map(|s| Subject::Storm(Box::new(s)));
        }
        if args.scale_locks.is_some() {
            return ScaleSubject::set_up(args).map(|s| Subject::Scale(Box::new(s)));
        }
        let loaded = load_plugin(args)?;
        let mut owners = BTreeMap::new();
        let mut refused = BTreeMap::new();
        for (i, &n) in args.disks.iter().enumerate() {
            let disks = loaded.disks(n, |d| format!("n{n}-{d:03}.img"))?;
            let owner = match register(
                &loaded.plugin,
                bench_uuid(n),
                i,
                format!("bench-{n}"),
                disks,
                &format!("the owner of {n} disks"),
            ) {
                Ok(owner) => owner,
                // sanlock.so takes at most 8 resources per domain: larger N are reported as
                // refused (with its message) and not timed.
                Err(RegisterError {
                    refused: Some(error),
                    ..
                }) if loaded.profile == Profile::Sanlock && n > SANLOCK_MAX_RESOURCES => {
                    refused.insert(n, error);
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            owners.insert(n, BenchOwner { owner, state: None });
        }
        Ok(Subject::Plugin(Box::new(PluginSubject {
            plugin: Some(loaded.plugin),
            env: loaded.env,
            owners,
            refused,
            mode: args.mode,
        })))
    }

    pub(super) fn describe(&self, cpus: &[usize]) -> String {
        let placement = format!("CPUs {cpus:?}");
        match self {
            Subject::Floor(floor) => match &floor.server {
                Some(server) => format!(
                    "{} peer pid {}; {placement}",
                    floor.kind.label(),
                    server.id()
                ),
                None => format!("{}, no peer; {placement}", floor.kind.label()),
            },
            Subject::Storm(storm) => format!("{}; {placement}", storm.describe()),
            Subject::Scale(scale) => format!("{}; {placement}", scale.describe()),
            Subject::Plugin(p) => format!(
                "{}; {}; owners {}; {placement}{}",
                p.env.describe(),
                p.mode.map_or("no lockspace option", LockMode::as_str),
                p.owners
                    .iter()
                    .map(|(n, o)| format!("{n} disks: pid {}", o.owner.process.pid()))
                    .collect::<Vec<_>>()
                    .join(", "),
                p.refused
                    .iter()
                    .map(|(n, why)| format!("; N={n} not timed: refused: {why}"))
                    .collect::<String>()
            ),
        }
    }

    pub(super) fn run(&mut self, n: usize, count: usize) -> Result<Vec<u64>, String> {
        let mut out = Vec::with_capacity(count);
        match self {
            Subject::Floor(floor) => floor.run(n, count, &mut out)?,
            Subject::Storm(_) | Subject::Scale(_) => {
                return Err("storm and scale workers run no cycles".into());
            }
            Subject::Plugin(p) if p.refused.contains_key(&n) => {}
            Subject::Plugin(p) => {
                let plugin = p.plugin.as_ref().ok_or("plugin not loaded")?;
                let BenchOwner { owner, state } = p
                    .owners
                    .get_mut(&n)
                    .ok_or_else(|| format!("no owner for {n} disks"))?;
                let resume = owner.domain.clone();
                let mut pause = resume.clone();
                pause.uri = None;
                for _ in 0..count {
                    let started = Instant::now();
                    sequences::resume_with_state(
                        plugin,
                        &resume,
                        &owner.disks,
                        state.as_deref(),
                        LockFailureAction::Default,
                    )
                    .map_err(|e| {
                        e.worded("resume ", |e| format!("resume Acquire ({n} disks): {e}"))
                    })?;
                    *state = sequences::pause(plugin, &pause, &owner.disks)
                        .map_err(|e| {
                            e.worded("pause ", |e| format!("pause Release ({n} disks): {e}"))
                        })?
                        .map(|s| s.text());
                    out.push(elapsed_ns(started));
                }
            }
        }
        Ok(out)
    }

    fn finish(self) -> Result<(), String> {
        match self {
            Subject::Floor(mut floor) => {
                drop(floor.stream.take());
                if let Some(mut server) = floor.server.take() {
                    let _ = server.kill();
                    let _ = server.wait();
                }
                Ok(())
            }
            Subject::Storm(storm) => storm.finish(),
            Subject::Scale(scale) => scale.finish(),
            Subject::Plugin(mut p) => {
                p.owners.clear();
                p.env.unload(p.plugin.take(), "")
            }
        }
    }
}

impl FloorSubject {
    fn start(kind: FloorKind, layout: &Layout, max: usize) -> Result<FloorSubject, String> {
        if kind == FloorKind::OfdRaw {
            return Ok(FloorSubject {
                kind,
                server: None,
                stream: None,
                files: floor::open_floor_files(&layout.disks, max)?,
            });
        }
        let socket = layout.run.join("floor.sock");
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut command = Command::new(exe);
        command
            .arg("__bench-floor")
            .arg("--socket")
            .arg(&socket)
            .arg("--dir")
            .arg(&layout.disks)
            .arg("--files")
            .arg(if kind == FloorKind::Rtt { 0 } else { max }.to_string());
        if kind != FloorKind::Classic {
            command.arg("--framed");
        }
        let mut server = command
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the floor's peer: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            if let Ok(stream) = UnixStream::connect(&socket) {
                break stream;
            }
            if Instant::now() > deadline || matches!(server.try_wait(), Ok(Some(_))) {
                let _ = server.kill();
                let _ = server.wait();
                return Err("the floor's peer did not come up".into());
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        Ok(FloorSubject {
            kind,
            server: Some(server),
            stream: Some(stream),
            files: Vec::new(),
        })
    }

    fn run(&mut self, n: usize, count: usize, out: &mut Vec<u64>) -> Result<(), String> {
        let n16 = u16::try_from(n).map_err(|_| "too many disks".to_owned())?;
        match (self.kind, self.stream.as_mut()) {
            (FloorKind::OfdRaw, _) => {
                let files = self.files.get(..n).ok_or("more disks than files")?;
                for _ in 0..count {
                    let started = Instant::now();
                    floor::ofd_raw_cycle(files)?;
                    out.push(elapsed_ns(started));
                }
            }
            (FloorKind::Classic, Some(stream)) => {
                let [lo, hi] = n16.to_le_bytes();
                let mut answer = [0u8; 1];
                for _ in 0..count {
                    let started = Instant::now();
                    for op in [b'L', b'U'] {
                        stream
                            .write_all(&[op, lo, hi])
                            .and_then(|()| stream.read_exact(&mut answer))
                            .map_err(|e| format!("floor round trip: {e}"))?;
                        if answer[0] != b'k' {
                            return Err("the floor's peer could not lock its files".into());
                        }
                    }
                    out.push(elapsed_ns(started));
                }
            }
            (FloorKind::Ipc | FloorKind::Rtt, Some(stream)) => {
                let n = if self.kind == FloorKind::Rtt {
                    0
                } else {
                    u32::from(n16)
                };
                for _ in 0..count {
                    let started = Instant::now();
                    floor::framed_round_trip(stream, true, n)?;
                    floor::framed_round_trip(stream, false, n)?;
                    out.push(elapsed_ns(started));
                }
            }
            (_, None) => return Err("the floor has no peer".into()),
        }
        Ok(())
    }
}

pub(super) fn elapsed_ns(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_uuids_are_plausible() {
        assert!(bench_uuid(1).is_plausible());
        assert_ne!(bench_uuid(1), bench_uuid(64));
    }
}
