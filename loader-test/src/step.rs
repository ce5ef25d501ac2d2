//! `step`: one libvirt operation per invocation, for driving plugins from scripts and from other
//! machines (the DLM cluster tests run it inside each node). Every invocation loads the plugin
//! afresh, as libvirtd does after a restart, makes its call on the owner engine the agent's
//! sessions use ([`LocalNode`]: the one place owners are registered and their calls made), and
//! prints one JSON line. A registered domain's QEMU stand-in outlives the invocation.
//!
//! `step race` is the exception: a loop of acquire / release by several domains of this node on
//! a few resources, with every grant and release recorded in a shared ledger (see
//! [`race`]) so that a checker can prove no two exclusive holders ever overlapped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use lockmgr::host;
use lockmgr::{Access, Domain, Lease, LockFailureAction, Resource, Uuid};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::daemons::PluginEnv;
use crate::node::{Failure, LocalNode, OwnerNode};
use crate::sequences::{self, Call, SequenceError};

/// `step` arguments shared by every operation.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The plugin (path or name, as for `validate`).
    #[arg(long)]
    plugin: String,
    /// drvInit's config file (default: the plugin's /etc/libvirt/qemu-NAME.conf).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The domain's name; its UUID is derived from it unless --uuid is given.
    #[arg(long)]
    domain: String,
    /// The domain's UUID.
    #[arg(long)]
    uuid: Option<String>,
    /// The owner's (QEMU stand-in's) pid, as printed by `step register`.
    #[arg(long, default_value_t = 0)]
    pid: u32,
    /// A disk: PATH, PATH,shared or PATH,readonly. Repeatable, in libvirt's order.
    #[arg(long = "disk", value_name = "PATH[,shared|,readonly]")]
    disks: Vec<String>,
    /// A lease: KEY[,lockspace=LS][,path=DIR][,offset=N]. Repeatable.
    #[arg(
        long = "lease",
        value_name = "KEY[,lockspace=LS][,path=DIR][,offset=N]"
    )]
    leases: Vec<String>,
    /// <on_lockfailure>: default, poweroff, restart, pause or ignore.
    #[arg(long, default_value = "default")]
    action: String,
}

/// The operations.
#[derive(Subcommand, Debug)]
pub enum StepCommand {
    /// The pre-exec child: fork, New + AddResource + Acquire(REGISTER_ONLY|RESTRICT, &fd), exec a
    /// QEMU stand-in that keeps running; prints its pid.
    Register(Target),
    /// libvirtd's Acquire(state or NULL, 0) at CPU start, resume or hotplug.
    Acquire {
        #[command(flatten)]
        target: Target,
        /// The state string from an earlier pause.
        #[arg(long)]
        state: Option<String>,
    },
    /// Release(&state), as on pause; prints the state string.
    Pause(Target),
    /// Release(NULL), as on detach.
    Release(Target),
    /// Inquire(&state); prints the state string.
    Inquire(Target),
    /// Several domains of this node race for a few resources; see `race`.
    Race(RaceArgs),
}

/// `step race`.
#[derive(Args, Debug)]
pub struct RaceArgs {
    /// The plugin.
    #[arg(long)]
    plugin: String,
    /// drvInit's config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's name, recorded in the ledger.
    #[arg(long)]
    node: String,
    /// How many domains race on this node.
    #[arg(long, default_value_t = 2)]
    owners: usize,
    /// The contended disk paths (comma-separated).
    #[arg(long, value_delimiter = ',')]
    resources: Vec<String>,
    /// How long to race.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// A directory shared by every racing node: per-resource sequence counters and the logs.
    #[arg(long)]
    ledger: PathBuf,
}

#[derive(Debug, Serialize, Default)]
struct StepOutput {
    step: &'static str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    /// The domain's uuid (register), as the lock manager knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    micros: u128,
}

/// A stable UUID for a domain name, so separate invocations agree.
fn uuid_for(name: &str) -> Uuid {
    let digest = Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::version4(bytes)
}

fn parse_disk(text: &str) -> Result<Resource, String> {
    let (path, access) = match text.rsplit_once(',') {
        Some((path, "shared")) => (path, Access::Shared),
        Some((path, "readonly")) => (path, Access::ReadOnly),
        Some((_, other)) => {
            return Err(format!(
                "--disk {text}: unknown mode '{other}' (shared or readonly)"
            ));
        }
        None => (text, Access::Exclusive),
    };
    Ok(Resource::Disk {
        path: PathBuf::from(path),
        access,
    })
}

fn parse_lease(text: &str) -> Result<Resource, String> {
    let mut parts = text.split(',');
    let key = parts
        .next()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| format!("--lease {text}: no key"))?;
    let mut lease = Lease {
        key: key.into(),
        lockspace: None,
        path: None,
        offset: None,
    };
    for part in parts {
        match part.split_once('=') {
            Some(("lockspace", v)) => lease.lockspace = Some(v.into()),
            Some(("path", v)) => lease.path = Some(PathBuf::from(v)),
            Some(("offset", v)) => {
                lease.offset = Some(
                    v.parse()
                        .map_err(|_| format!("--lease {text}: bad offset '{v}'"))?,
                );
            }
            _ => return Err(format!("--lease {text}: unknown part '{part}'")),
        }
    }
    Ok(Resource::Lease {
        lease,
        access: Access::Exclusive,
    })
}

fn parse_action(text: &str) -> Result<LockFailureAction, String> {
    Ok(match text {
        "default" => LockFailureAction::Default,
        "poweroff" => LockFailureAction::Poweroff,
        "restart" => LockFailureAction::Restart,
        "pause" => LockFailureAction::Pause,
        "ignore" => LockFailureAction::Ignore,
        other => {
            return Err(format!(
                "--action {other}: one of default, poweroff, restart, pause, ignore"
            ));
        }
    })
}

/// What one step acts for: the plugin loaded as libvirtd loads it (on the owner engine the
/// agent's sessions use, [`LocalNode`]), the domain and the context's resources.
struct Prepared {
    node: LocalNode,
    domain: Domain,
    resources: Vec<Resource>,
}

fn prepare(target: &Target) -> Result<Prepared, String> {
    let uuid = match &target.uuid {
        Some(text) => Uuid::parse(text).map_err(|e| e.to_string())?,
        None => uuid_for(&target.domain),
    };
    let mut resources = target
        .leases
        .iter()
        .map(|l| parse_lease(l))
        .collect::<Result<Vec<_>, _>>()?;
    for disk in &target.disks {
        resources.push(parse_disk(disk)?);
    }
    let action = parse_action(&target.action)?;
    let path = host::locate(&target.plugin);
    let config = target.config.clone().unwrap_or_else(|| {
        let stem = path
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        let name = stem.strip_prefix("lib").unwrap_or(&stem).to_owned();
        PathBuf::from(format!("/etc/libvirt/qemu-{name}.conf"))
    });
    let node = LocalNode::new(&path, PluginEnv::installed(config))?.with_action(action);
    Ok(Prepared {
        node,
        domain: Domain {
            uuid,
            name: target.domain.clone(),
            id: 1,
            pid: target.pid,
            uri: None,
        },
        resources,
    })
}

fn run_one(command: &StepCommand) -> Result<StepOutput, String> {
    let started = Instant::now();
    let target = match command {
        StepCommand::Register(target)
        | StepCommand::Acquire { target, .. }
        | StepCommand::Pause(target)
        | StepCommand::Release(target)
        | StepCommand::Inquire(target) => target,
        StepCommand::Race(args) => {
            race(args)?;
            return Ok(StepOutput {
                step: "race",
                ok: true,
                micros: started.elapsed().as_micros(),
                ..Default::default()
            });
        }
    };
    let Prepared {
        mut node,
        domain,
        resources,
    } = prepare(target)?;
    // The owner is the domain; registered here, or (every other step) by an earlier one.
    let owner = domain.name.as_str();
    if !matches!(command, StepCommand::Register(_)) {
        node.attach(owner, &domain);
    }
    let (step, result) = match command {
        StepCommand::Register(_) => (
            "register",
            node.register(owner, &domain, &resources)
                .map(|(pid, _)| (None, Some(pid))),
        ),
        StepCommand::Acquire { state, .. } => (
            "acquire",
            node.acquire(owner, &resources, state.as_deref())
                .map(|()| (None, None)),
        ),
        StepCommand::Pause(_) => (
            "pause",
            node.release(owner, &resources, true)
                .map(|state| (state, None)),
        ),
        StepCommand::Release(_) => (
            "release",
            node.release(owner, &resources, false).map(|_| (None, None)),
        ),
        StepCommand::Inquire(_) => (
            "inquire",
            node.inquire(owner, &resources).map(|state| (state, None)),
        ),
        StepCommand::Race(_) => unreachable!("a race returned above"),
    };
    // A registered domain's QEMU stand-in keeps running: later steps act for it.
    node.leave_running();
    let micros = started.elapsed().as_micros();
    Ok(match result {
        Ok((state, pid)) => StepOutput {
            step,
            ok: true,
            pid,
            uuid: pid.map(|_| domain.uuid.to_string()),
            state,
            micros,
            ..Default::default()
        },
        Err(Failure { message, reported }) => StepOutput {
            step,
            code: reported.as_ref().map(|r| r.code),
            error: Some(reported.map_or(message, |r| r.rendered())),
            micros,
            ..Default::default()
        },
    })
}

/// Runs `step …`; returns the exit status (0 done, 1 refused or failed, 2 bad arguments).
pub fn command(command: &StepCommand) -> u8 {
    match run_one(command) {
        Ok(output) => {
            let ok = output.ok;
            println!("{}", serde_json::to_string(&output).unwrap_or_default());
            u8::from(!ok)
        }
        Err(message) => {
            eprintln!("lockmgr-loader-test step: {message}");
            2
        }
    }
}

/// A small xorshift generator: the race only needs varied choices, not good randomness.
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % (n.max(1) as u64)).unwrap_or(0)
    }
}

/// Reads, increments and writes back `<ledger>/<resource>.seq`. Only the lock's holder may do
/// this; two holders at once would read the same value, and the checker sees the duplicate.
fn next_sequence(ledger: &Path, resource_id: &str) -> std::io::Result<u64> {
    let path = ledger.join(format!("{resource_id}.seq"));
    let current: u64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let next = current + 1;
    let mut file = std::fs::File::create(&path)?;
    file.write_all(next.to_string().as_bytes())?;
    file.sync_all()?;
    Ok(next)
}

/// The race: `owners` domains of this node, each registered once, take turns at random to
/// acquire one of `resources` exclusively. Every grant is recorded under the lock as
/// `G <resource> <node> <owner> <seq>` and every release, still under the lock, as
/// `R <resource> <node> <owner> <seq>`, with `seq` from the shared per-resource counter. A
/// correct lock manager yields, per resource, G n / R n+1 pairs by one holder, in order.
fn race(args: &RaceArgs) -> Result<(), String> {
    std::fs::create_dir_all(&args.ledger).map_err(|e| format!("{}: {e}", args.ledger.display()))?;
    let target = |domain: String, disk: &str| Target {
        plugin: args.plugin.clone(),
        config: args.config.clone(),
        domain,
        uuid: None,
        pid: 0,
        disks: vec![disk.to_owned()],
        leases: Vec::new(),
        action: "default".into(),
    };
    let Prepared {
        mut node, domain, ..
    } = prepare(&target(format!("{}-race-0", args.node), &args.resources[0]))?;
    let mut owners = Vec::new();
    for index in 0..args.owners {
        let mut domain = domain.clone();
        domain.name = format!("{}-race-{index}", args.node);
        domain.uuid = uuid_for(&domain.name);
        let (pid, _) = node
            .register(&domain.name, &domain, &[])
            .map_err(|failure| format!("registering {}: {}", domain.name, failure.message))?;
        domain.pid = pid;
        owners.push(domain);
    }
    let plugin = node.plugin().map_err(|failure| failure.message)?;
    let log_path = args.ledger.join(format!("{}.log", args.node));
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let seed = u64::from(std::process::id())
        ^ u64::try_from(Instant::now().elapsed().as_nanos()).unwrap_or(1)
        ^ 0x9e37_79b9_7f4a_7c15;
    let mut random = Xorshift(seed | 1);
    let (mut attempts, mut grants, mut refusals) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    while Instant::now() < deadline {
        let domain = &owners[random.below(owners.len())];
        let disk = &args.resources[random.below(args.resources.len())];
        let resource_id = format!("{:x}", Sha256::digest(disk.as_bytes()))[..16].to_owned();
        let resource = Resource::Disk {
            path: PathBuf::from(disk),
            access: Access::Exclusive,
        };
        attempts += 1;
        match sequences::hotplug(plugin, domain, &resource, LockFailureAction::Default) {
            Ok(()) => grants += 1,
            Err(SequenceError {
                call: Call::Operation,
                ..
            }) => {
                refusals += 1;
                continue;
            }
            Err(err) => return Err(err.to_string()),
        }
        let seq = next_sequence(&args.ledger, &resource_id).map_err(|e| e.to_string())?;
        writeln!(log, "G {resource_id} {} {} {seq}", args.node, domain.name)
            .map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_micros(
            u64::try_from(random.below(3000)).unwrap_or(0),
        ));
        let seq = next_sequence(&args.ledger, &resource_id).map_err(|e| e.to_string())?;
        writeln!(log, "R {resource_id} {} {} {seq}", args.node, domain.name)
            .map_err(|e| e.to_string())?;
        log.sync_all().map_err(|e| e.to_string())?;
        sequences::unplug(plugin, domain, &resource).map_err(|err| match err.call {
            Call::Operation => format!("release of {disk} by {}: {err}", domain.name),
            _ => err.to_string(),
        })?;
    }
    eprintln!(
        "race on {}: {attempts} attempts, {grants} grants, {refusals} refusals",
        args.node
    );
    println!(
        "{}",
        serde_json::json!({"node": args.node, "attempts": attempts, "grants": grants, "refusals": refusals})
    );
    Ok(())
}
