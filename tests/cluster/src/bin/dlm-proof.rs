//! `dlm-proof`: one DLM action per run, built from the `lockmgr-dlm` bindings and run inside the
//! test-bed nodes (from the read-only host share) by the proof test.
//!
//! Every step prints one line of `key=value` fields, e.g.
//! `step=lock resource=disk1 mode=EX flags=NOQUEUE result=busy pid=312`, and the exit code says how
//! it ended: 0 done, 11 busy / orphan in another mode (EAGAIN), 2 no orphan (ENOENT), 1 any
//! other error (message on stderr).

use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use lockmgr_dlm::{Error, LockFlags, LockRequest, Lockspace, Mode, Unlock};

#[derive(Debug, Parser)]
#[command(
    name = "dlm-proof",
    about = "One DLM action per run, for the lockmgr cluster proof"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print this node's DLM node id (from configfs).
    Nodeid,
    /// Create (or open) a lockspace and exit; the node stays joined.
    Join {
        /// Lockspace name.
        lockspace: String,
        /// Device permissions when created (octal).
        #[arg(long, default_value = "600")]
        mode: String,
    },
    /// Request a lock; optionally convert it, hold it until killed, or retry while busy.
    Lock {
        /// Lockspace name (created if this node does not have it).
        lockspace: String,
        /// Resource name.
        resource: String,
        /// NL, CR, CW, PR, PW or EX.
        mode: Mode,
        #[command(flatten)]
        flags: RequestFlags,
        /// Then convert the granted lock to this mode (with NOQUEUE when --noqueue).
        #[arg(long)]
        convert: Option<Mode>,
        /// Then write this text into the resource's value block (an EX or PW holder).
        #[arg(long)]
        publish: Option<String>,
        /// Then release, marking the value block not valid (LKF_IVVALBLK).
        #[arg(long)]
        unlock_invalidating: bool,
        /// Keep holding until killed (prints `result=holding` first).
        #[arg(long)]
        hold: bool,
        /// With --noqueue: retry every 50 ms while busy, for up to this many seconds.
        #[arg(long)]
        retry_for: Option<u64>,
    },
    /// Request locks on several resources at once (all in flight together), print which were
    /// granted and which refused, then release the granted ones at once (or hold them until
    /// killed).
    LockAll {
        /// Lockspace name (created if this node does not have it).
        lockspace: String,
        /// Resource names, comma-separated.
        #[arg(value_delimiter = ',', num_args = 1, required = true)]
        resources: Vec<String>,
        /// NL, CR, CW, PR, PW or EX.
        mode: Mode,
        #[command(flatten)]
        flags: RequestFlags,
        /// Keep holding the granted locks until killed (prints `result=holding`).
        #[arg(long)]
        hold: bool,
    },
    /// Adopt this node's orphan lock on a resource; optionally unlock it right away.
    Adopt {
        /// Lockspace name.
        lockspace: String,
        /// Resource name.
        resource: String,
        /// Must be the orphan's mode.
        mode: Mode,
        /// Keep the adopted lock PERSISTENT.
        #[arg(long)]
        persistent: bool,
        /// Unlock it after adopting.
        #[arg(long)]
        unlock: bool,
    },
    /// Read a resource's value block (with a NL lock, dropped at once).
    ReadValue {
        /// Lockspace name.
        lockspace: String,
        /// Resource name.
        resource: String,
    },
    /// Purge this node's orphan locks in a lockspace.
    Purge {
        /// Lockspace name.
        lockspace: String,
        /// Only the orphans this pid left (0: all).
        #[arg(long, default_value_t = 0)]
        pid: u32,
    },
    /// Measure EX lock + unlock latency on a resource (this process holds NL on it meanwhile).
    Bench {
        /// Lockspace name.
        lockspace: String,
        /// Resource name.
        resource: String,
        /// Lock + unlock pairs to time.
        #[arg(long, default_value_t = 1000)]
        iterations: usize,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("dlm-proof: {err}");
            ExitCode::from(exit_code(&err))
        }
    }
}

fn exit_code(err: &Error) -> u8 {
    match err {
        Error::Busy { .. } | Error::OrphanModeMismatch { .. } => 11,
        Error::NoOrphan { .. } => 2,
        _ => 1,
    }
}

/// The flags of a lock request.
#[derive(Debug, Args)]
struct RequestFlags {
    /// Refuse at once instead of queueing.
    #[arg(long)]
    noqueue: bool,
    /// Leave an orphan when this process goes away (so only a release frees it).
    #[arg(long)]
    persistent: bool,
}

impl RequestFlags {
    fn bits(&self) -> LockFlags {
        let mut flags = LockFlags::NONE;
        if self.noqueue {
            flags = flags | LockFlags::NOQUEUE;
        }
        if self.persistent {
            flags = flags | LockFlags::PERSISTENT;
        }
        flags
    }
}

/// A comma-separated list for a step line, `-` when empty.
fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join(",")
    }
}

fn realtime_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or(0)
}

fn open(lockspace: &str) -> Result<Lockspace, Error> {
    Lockspace::create_or_open(lockspace, 0o600)
}

fn run(command: Command) -> Result<u8, Error> {
    let pid = std::process::id();
    match command {
        Command::Nodeid => {
            println!(
                "step=nodeid nodeid={} cluster={}",
                lockmgr_dlm::local_node_id()?,
                lockmgr_dlm::cluster_name()?
            );
            Ok(0)
        }
        Command::Join { lockspace, mode } => {
            let mode = u32::from_str_radix(&mode, 8).map_err(|_| Error::InvalidLockspaceName {
                name: lockspace.clone(),
                reason: "--mode is not an octal permission",
            })?;
            let ls = Lockspace::create_or_open(&lockspace, mode)?;
            println!(
                "step=join lockspace={lockspace} created={} pid={pid}",
                ls.created()
            );
            Ok(0)
        }
        Command::Lock {
            lockspace,
            resource,
            mode,
            flags,
            convert,
            publish,
            unlock_invalidating,
            hold,
            retry_for,
        } => {
            let ls = open(&lockspace)?;
            let flags = flags.bits();
            let started = Instant::now();
            let deadline = retry_for.map(|secs| started + Duration::from_secs(secs));
            let mut attempts = 0u32;
            let lkid = loop {
                attempts += 1;
                match ls.lock(resource.as_bytes(), mode, flags) {
                    Ok(lkid) => break lkid,
                    Err(Error::Busy { .. })
                        if deadline.is_some_and(|deadline| Instant::now() < deadline) =>
                    {
                        thread::sleep(Duration::from_millis(50));
                    }
                    Err(err @ Error::Busy { .. }) => {
                        println!(
                            "step=lock resource={resource} mode={mode} flags={flags} result=busy attempts={attempts} pid={pid}"
                        );
                        eprintln!("dlm-proof: {err}");
                        return Ok(11);
                    }
                    Err(err) => return Err(err),
                }
            };
            println!(
                "step=lock resource={resource} mode={mode} flags={flags} result=granted lkid={lkid} attempts={attempts} \
                 waited_ms={} realtime_ns={} pid={pid}",
                started.elapsed().as_millis(),
                realtime_ns()
            );
            let mut code = 0;
            if let Some(target) = convert {
                // the same flags: NOQUEUE when asked, and PERSISTENT kept (flags are replaced)
                match ls.convert(lkid, target, flags) {
                    Ok(()) => println!(
                        "step=convert resource={resource} mode={target} result=granted lkid={lkid}"
                    ),
                    Err(err @ Error::Busy { .. }) => {
                        println!(
                            "step=convert resource={resource} mode={target} result=busy lkid={lkid}"
                        );
                        eprintln!("dlm-proof: {err}");
                        code = 11;
                    }
                    Err(err) => return Err(err),
                }
            }
            if let Some(text) = publish {
                let mut value = [0u8; lockmgr_dlm::VALUE_LEN];
                let len = text.len().min(value.len());
                value[..len].copy_from_slice(&text.as_bytes()[..len]);
                ls.publish_value(lkid, &value)?;
                println!("step=publish resource={resource} result=written value={text}");
            }
            if unlock_invalidating {
                ls.unlock_invalidating_value(lkid)?;
                println!(
                    "step=unlock resource={resource} result=unlocked-invalidating lkid={lkid}"
                );
            }
            if hold {
                println!("step=hold resource={resource} result=holding pid={pid}");
                loop {
                    thread::sleep(Duration::from_secs(3600));
                }
            }
            Ok(code)
        }
        Command::LockAll {
            lockspace,
            resources,
            mode,
            flags,
            hold,
        } => {
            let ls = open(&lockspace)?;
            let flags = flags.bits();
            let requests: Vec<LockRequest<'_>> = resources
                .iter()
                .map(|resource| LockRequest {
                    resource: resource.as_bytes(),
                    mode,
                    flags,
                })
                .collect();
            let (mut granted, mut busy, mut locks) = (Vec::new(), Vec::new(), Vec::new());
            for (resource, answer) in resources.iter().zip(ls.lock_all(&requests)) {
                match answer {
                    Ok(lkid) => {
                        granted.push(resource.as_str());
                        locks.push((resource.as_str(), lkid));
                    }
                    Err(Error::Busy { .. }) => busy.push(resource.as_str()),
                    Err(err) => return Err(err),
                }
            }
            println!(
                "step=lock-all mode={mode} flags={flags} granted={} busy={} result=answered pid={pid}",
                list(&granted),
                list(&busy)
            );
            if hold {
                println!("step=hold-all result=holding pid={pid}");
                loop {
                    thread::sleep(Duration::from_secs(3600));
                }
            }
            let unlocks: Vec<Unlock> = locks
                .iter()
                .map(|(_, lkid)| Unlock {
                    lkid: *lkid,
                    invalidate_value: false,
                })
                .collect();
            let mut unlocked = Vec::new();
            for ((resource, _), answer) in locks.iter().zip(ls.unlock_all(&unlocks)) {
                answer?;
                unlocked.push(*resource);
            }
            println!(
                "step=unlock-all unlocked={} result=unlocked",
                list(&unlocked)
            );
            Ok(0)
        }
        Command::Adopt {
            lockspace,
            resource,
            mode,
            persistent,
            unlock,
        } => {
            let ls = open(&lockspace)?;
            let result = ls.adopt_orphan(resource.as_bytes(), mode, persistent);
            let lkid = match result {
                Ok(lkid) => lkid,
                Err(err) => {
                    let outcome = match &err {
                        Error::NoOrphan { .. } => "no-orphan",
                        Error::OrphanModeMismatch { .. } => "mode-mismatch",
                        _ => return Err(err),
                    };
                    println!(
                        "step=adopt resource={resource} mode={mode} result={outcome} pid={pid}"
                    );
                    eprintln!("dlm-proof: {err}");
                    return Ok(exit_code(&err));
                }
            };
            println!(
                "step=adopt resource={resource} mode={mode} result=adopted lkid={lkid} pid={pid}"
            );
            if unlock {
                ls.unlock(lkid)?;
                println!("step=unlock resource={resource} result=unlocked lkid={lkid}");
            }
            Ok(0)
        }
        Command::ReadValue {
            lockspace,
            resource,
        } => {
            let ls = open(&lockspace)?;
            match ls.read_value(resource.as_bytes())? {
                Some(value) => {
                    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
                    println!(
                        "step=read-value resource={resource} result=valid value={}",
                        String::from_utf8_lossy(&value[..end])
                    );
                }
                None => println!("step=read-value resource={resource} result=none"),
            }
            Ok(0)
        }
        Command::Purge {
            lockspace,
            pid: owner,
        } => {
            let ls = open(&lockspace)?;
            let nodeid = lockmgr_dlm::local_node_id()?;
            ls.purge(nodeid, owner)?;
            println!("step=purge lockspace={lockspace} nodeid={nodeid} pid={owner} result=purged");
            Ok(0)
        }
        Command::Bench {
            lockspace,
            resource,
            iterations,
        } => {
            let ls = open(&lockspace)?;
            // The NL lock keeps the resource (and its master) in place between iterations.
            let nl = ls.lock(resource.as_bytes(), Mode::Nl, LockFlags::NONE)?;
            let mut samples = Vec::with_capacity(iterations);
            let total = Instant::now();
            for _ in 0..iterations {
                let start = Instant::now();
                let lkid = ls.lock(resource.as_bytes(), Mode::Ex, LockFlags::NOQUEUE)?;
                ls.unlock(lkid)?;
                samples.push(start.elapsed());
            }
            let total = total.elapsed();
            ls.unlock(nl)?;
            samples.sort();
            let micros = |duration: Duration| duration.as_secs_f64() * 1e6;
            let at = |fraction: f64| {
                let last = samples.len().saturating_sub(1);
                // index of a percentile: rounding a small non-negative float is exact enough here
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss
                )]
                let index = ((last as f64) * fraction).round() as usize;
                samples.get(index).copied().map(micros).unwrap_or(0.0)
            };
            #[allow(clippy::cast_precision_loss)]
            let mean = if iterations == 0 {
                0.0
            } else {
                micros(total) / iterations as f64
            };
            println!(
                "step=bench resource={resource} iterations={iterations} mean_us={mean:.1} min_us={:.1} p50_us={:.1} \
                 p99_us={:.1} max_us={:.1}",
                at(0.0),
                at(0.5),
                at(0.99),
                at(1.0)
            );
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn lock_all_takes_a_comma_separated_list() {
        let cli = Cli::try_parse_from(["dlm-proof", "lock-all", "ls", "a,b", "EX", "--noqueue"])
            .expect("parses");
        let Command::LockAll { resources, .. } = cli.command else {
            panic!("not lock-all: {:?}", cli.command);
        };
        assert_eq!(resources, ["a", "b"]);
    }
}
