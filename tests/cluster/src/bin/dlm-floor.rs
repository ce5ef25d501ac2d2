//! `dlm-floor`: the raw libdlm floor of dlm.so's benchmark, run inside the test-bed nodes.
//!
//! `lockmgr-loader-test bench --plugin dlm=… --disk-dir DIR --floor-command "dlm-floor worker"`
//! times libvirt's resume/pause cycle through dlm.so and `lockmgrd --backend dlm`, which per cycle
//! takes an EX lock (NOQUEUE | PERSISTENT) on each of the N disks' DLM resources and then drops
//! them. The floor does just that DLM work, from one process, on the very same resource names
//! (the 64-hex sha256 of each disk path, as lockmgrd names them) in the same lockspace: no
//! plugin, no socket, no lock table, no state file.
//!
//! - `worker`: the bench worker protocol on stdin / stdout (a `{"ready":…}` line, then per
//!   `run N COUNT` line one `{"samples":{"ns":[…]}}` line with one duration per cycle; `quit`).
//! - `parallel`: the asynchronous floor: per cycle all N locks in flight at once from one thread
//!   and one lockspace handle (`Lockspace::lock_all`: every request written, then the
//!   completions read as they come), then all N unlocks the same way; prints one JSON line per
//!   N with the median and p99. What lockmgrd could reach at best with every request of an
//!   Acquire in flight together.
//! - `ipc`: the IPC-inclusive floor: per cycle this process asks a second one (`ipc-holder`,
//!   its child, over a Unix socket pair) to lock the N names, waits for the answer, asks it to
//!   unlock them and waits again: the DLM work plus two socket round trips between two
//!   processes, what a plugin and lockmgrd cost at the very least. One JSON line per N.
//! - `hold-nl`: takes an NL lock on every name and holds them until killed, which makes this
//!   node the resources' master (the DLM makes the first node to use a resource its master); run
//!   on another node, it makes every cycle of node 1 pay round trips to that master.
//! - `names`: prints `PATH NAME` per disk, for checks with `dlm_tool lockdebug`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use lockmgr_dlm::{LockFlags, LockId, LockRequest, Lockspace, Mode, Unlock};
use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Parser)]
#[command(
    name = "dlm-floor",
    about = "The raw libdlm floor of dlm.so's benchmark (lock + unlock of the same DLM resources)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The resources: the disks a bench run with `--disk-dir DIR --disks LIST` gives dlm.so.
#[derive(Debug, Args)]
struct Disks {
    /// The lockspace lockmgrd uses (its config's `lockspace_name`).
    #[arg(long, default_value = "libvirt")]
    lockspace: String,
    /// Disk counts, as bench's --disks.
    #[arg(long, value_delimiter = ',', required = true)]
    disks: Vec<usize>,
    /// bench's --disk-dir: the disks are `DIR/n<N>-<i>.img`.
    #[arg(long, value_name = "DIR")]
    disk_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve bench's worker protocol: per cycle, lock the N names EX, then unlock them.
    Worker {
        #[command(flatten)]
        disks: Disks,
        /// Pin to this CPU (bench's pinned placement).
        #[arg(long)]
        cpu: Option<usize>,
    },
    /// Time cycles with all N locks in flight at once, then all N unlocks (one JSON line per N).
    Parallel {
        #[command(flatten)]
        disks: Disks,
        /// Cycles to time per N (after 3 untimed ones).
        #[arg(long, default_value_t = 100)]
        iterations: usize,
    },
    /// Time cycles of lock + unlock done by a second process, asked over a Unix socket pair
    /// (one JSON line per N).
    Ipc {
        #[command(flatten)]
        disks: Disks,
        /// Cycles to time per N (after 3 untimed ones).
        #[arg(long, default_value_t = 100)]
        iterations: usize,
    },
    /// `ipc`'s second process: on its stdin (a Unix socket), `lock N` locks the N names,
    /// `unlock` drops them; each is answered `ok` or `error: …`.
    #[command(hide = true)]
    IpcHolder {
        #[command(flatten)]
        disks: Disks,
    },
    /// Hold an NL lock on every name until killed (makes this node their master).
    HoldNl {
        #[command(flatten)]
        disks: Disks,
    },
    /// Print `PATH NAME` for every disk.
    Names {
        #[command(flatten)]
        disks: Disks,
    },
}

/// What a bench worker answers, one JSON line each (bench's `Reply`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Reply {
    Ready { detail: String },
    Samples { ns: Vec<u64> },
    Error { message: String },
}

/// Disk paths and their DLM resource names.
type Names = Vec<(PathBuf, String)>;

/// lockmgrd's name for a disk: the 64-hex-digit sha256 of its path (`DLM_RESNAME_MAXLEN`).
fn resource_name(path: &Path) -> String {
    Sha256::digest(path.display().to_string().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// bench's disk `d` of the owner of `n` disks.
fn disk_path(dir: &Path, n: usize, d: usize) -> PathBuf {
    dir.join(format!("n{n}-{d:03}.img"))
}

impl Disks {
    fn dir(&self) -> Result<&Path, String> {
        self.disk_dir.as_deref().ok_or_else(|| {
            "no --disk-dir: run bench with --disk-dir DIR, so that the floor locks the names \
             dlm.so locks"
                .to_owned()
        })
    }

    /// Every count's names, by count.
    fn names(&self) -> Result<Vec<(usize, Names)>, String> {
        let dir = self.dir()?;
        Ok(self
            .disks
            .iter()
            .map(|&n| {
                let names = (0..n)
                    .map(|d| {
                        let path = disk_path(dir, n, d);
                        let name = resource_name(&path);
                        (path, name)
                    })
                    .collect();
                (n, names)
            })
            .collect())
    }
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dlm-floor: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Names { disks } => {
            for (_, names) in disks.names()? {
                for (path, name) in names {
                    println!("{} {name}", path.display());
                }
            }
            Ok(())
        }
        Command::HoldNl { disks } => hold_nl(&disks),
        Command::Parallel { disks, iterations } => parallel(&disks, iterations),
        Command::Ipc { disks, iterations } => ipc(&disks, iterations),
        Command::IpcHolder { disks } => ipc_holder(&disks),
        Command::Worker { disks, cpu } => worker(&disks, cpu),
    }
}

fn hold_nl(disks: &Disks) -> Result<(), String> {
    let ls = Lockspace::create_or_open(&disks.lockspace, 0o600).map_err(|e| e.to_string())?;
    let mut count = 0;
    let mut held = Vec::new();
    for (_, names) in disks.names()? {
        for (_, name) in names {
            held.push(
                ls.lock(name.as_bytes(), Mode::Nl, LockFlags::NONE)
                    .map_err(|e| e.to_string())?,
            );
            count += 1;
        }
    }
    println!(
        "step=hold-nl lockspace={} count={count} result=holding pid={}",
        disks.lockspace,
        std::process::id()
    );
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Per N: `iterations` cycles of N threads (one lockspace handle each) that lock their name
/// together, wait for each other, and unlock together; a cycle is timed from the start to the
/// last unlock.
fn parallel(disks: &Disks, iterations: usize) -> Result<(), String> {
    let ls = Lockspace::create_or_open(&disks.lockspace, 0o600).map_err(|e| e.to_string())?;
    let flags = LockFlags::NOQUEUE | LockFlags::PERSISTENT;
    for (n, names) in disks.names()? {
        let requests: Vec<LockRequest<'_>> = names
            .iter()
            .map(|(_, name)| LockRequest {
                resource: name.as_bytes(),
                mode: Mode::Ex,
                flags,
            })
            .collect();
        let mut ns = Vec::with_capacity(iterations);
        for cycle in 0..iterations + 3 {
            let started = Instant::now();
            let locks = ls
                .lock_all(&requests)
                .into_iter()
                .collect::<Result<Vec<LockId>, _>>()
                .map_err(|e| e.to_string())?;
            let unlocks: Vec<Unlock> = locks
                .into_iter()
                .map(|lkid| Unlock {
                    lkid,
                    invalidate_value: false,
                })
                .collect();
            for unlocked in ls.unlock_all(&unlocks) {
                unlocked.map_err(|e| e.to_string())?;
            }
            if cycle >= 3 {
                ns.push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
            }
        }
        print_figures(n, ns);
    }
    Ok(())
}

/// One JSON line: N, the number of cycles, their median and p99.
fn print_figures(n: usize, mut ns: Vec<u64>) {
    ns.sort_unstable();
    // Nearest rank: the sample below which `percent` % of the others lie.
    let at = |percent: usize| ns[(ns.len() - 1) * percent / 100];
    println!(
        "{}",
        serde_json::json!({"disks": n, "cycles": ns.len(), "median_ns": at(50), "p99_ns": at(99)})
    );
}

/// Per N: `iterations` cycles of `lock N` + `unlock` asked of [`ipc_holder`] (a child process)
/// over a Unix socket pair, each timed from the first request to the second answer.
fn ipc(disks: &Disks, iterations: usize) -> Result<(), String> {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    use std::process::{Command as Process, Stdio};

    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let counts: Vec<String> = disks.disks.iter().map(ToString::to_string).collect();
    let mut holder = Process::new(exe)
        .arg("ipc-holder")
        .args([
            "--lockspace",
            &disks.lockspace,
            "--disks",
            &counts.join(","),
        ])
        .arg("--disk-dir")
        .arg(disks.dir()?)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("start the holder process: {e}"))?;
    let result = ask_holder(disks, iterations, ours);
    // The holder unlocks what it still holds and exits when its socket closes.
    let _ = holder.wait();
    result
}

fn ask_holder(
    disks: &Disks,
    iterations: usize,
    socket: std::os::unix::net::UnixStream,
) -> Result<(), String> {
    use std::io::BufReader;
    let mut answers = BufReader::new(socket.try_clone().map_err(|e| e.to_string())?);
    let mut requests = socket;
    let mut ask = |request: &str| -> Result<(), String> {
        writeln!(requests, "{request}").map_err(|e| format!("to the holder: {e}"))?;
        let mut answer = String::new();
        answers
            .read_line(&mut answer)
            .map_err(|e| format!("from the holder: {e}"))?;
        match answer.trim() {
            "ok" => Ok(()),
            "" => Err("the holder process exited".to_owned()),
            other => Err(other.to_owned()),
        }
    };
    for &n in &disks.disks {
        let mut ns = Vec::with_capacity(iterations);
        for cycle in 0..iterations + 3 {
            let started = Instant::now();
            ask(&format!("lock {n}"))?;
            ask("unlock")?;
            if cycle >= 3 {
                ns.push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
            }
        }
        print_figures(n, ns);
    }
    Ok(())
}

/// [`ipc`]'s second process: serves `lock N` / `unlock` on its stdin, a Unix socket.
fn ipc_holder(disks: &Disks) -> Result<(), String> {
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    let ls = Lockspace::create_or_open(&disks.lockspace, 0o600).map_err(|e| e.to_string())?;
    let names = disks.names()?;
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| e.to_string())?;
    let socket = UnixStream::from(stdin);
    let mut answers = socket.try_clone().map_err(|e| e.to_string())?;
    let mut taken = Vec::new();
    // Until the asker goes (end of input, or an error reading or answering).
    for line in std::io::BufReader::new(socket).lines() {
        let Ok(line) = line else { break };
        let answer = match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["lock", n] => match names.iter().find(|(count, _)| n == count.to_string()) {
                Some((_, names)) => names
                    .iter()
                    .try_for_each(|(path, name)| {
                        ls.lock(
                            name.as_bytes(),
                            Mode::Ex,
                            LockFlags::NOQUEUE | LockFlags::PERSISTENT,
                        )
                        .map(|id| taken.push(id))
                        .map_err(|e| format!("{} ({name}): {e}", path.display()))
                    })
                    .map_or_else(|e| format!("error: {e}"), |()| "ok".to_owned()),
                None => format!("error: no disk count {n}"),
            },
            ["unlock"] => {
                let failed: Vec<String> = taken
                    .drain(..)
                    .filter_map(|id| ls.unlock(id).err().map(|e| e.to_string()))
                    .collect();
                if failed.is_empty() {
                    "ok".to_owned()
                } else {
                    format!("error: {}", failed.join("; "))
                }
            }
            _ => format!("error: bad request '{line}'"),
        };
        if writeln!(answers, "{answer}").is_err() {
            break;
        }
    }
    // The asker is gone: leave no lock behind (they are persistent: they would stay as orphans).
    for id in taken {
        let _ = ls.unlock(id);
    }
    Ok(())
}

fn pin(cpu: usize) -> Result<(), String> {
    use rustix::thread::{CpuSet, sched_setaffinity};
    if cpu >= CpuSet::MAX_CPU {
        return Err(format!(
            "CPU {cpu}: a CPU set holds CPUs 0 to {}",
            CpuSet::MAX_CPU - 1
        ));
    }
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(None, &set).map_err(|e| format!("pinning to CPU {cpu}: {e}"))
}

/// One cycle: EX | NOQUEUE | PERSISTENT on every name (as lockmgrd takes them), then unlock.
/// On a refusal the locks taken so far are dropped and the error names the resource.
fn cycle(
    ls: &Lockspace,
    names: &[(PathBuf, String)],
    taken: &mut Vec<LockId>,
) -> Result<(), String> {
    let flags = LockFlags::NOQUEUE | LockFlags::PERSISTENT;
    let mut failure = None;
    for (path, name) in names {
        match ls.lock(name.as_bytes(), Mode::Ex, flags) {
            Ok(id) => taken.push(id),
            Err(err) => {
                failure = Some(format!("{} ({}): {err}", path.display(), name));
                break;
            }
        }
    }
    for id in taken.drain(..) {
        if let Err(err) = ls.unlock(id) {
            failure.get_or_insert_with(|| err.to_string());
        }
    }
    failure.map_or(Ok(()), Err)
}

fn worker(disks: &Disks, cpu: Option<usize>) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let mut reply = |r: &Reply| {
        let _ = serde_json::to_writer(&mut out, r);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    };
    let setup = (|| {
        if let Some(cpu) = cpu {
            pin(cpu)?;
        }
        let names = disks.names()?;
        let ls = Lockspace::create_or_open(&disks.lockspace, 0o600).map_err(|e| e.to_string())?;
        Ok::<_, String>((names, ls))
    })();
    let (names, ls) = match setup {
        Ok(ready) => ready,
        Err(message) => {
            reply(&Reply::Error {
                message: message.clone(),
            });
            return Err(message);
        }
    };
    let node = lockmgr_dlm::local_node_id().map_or_else(|_| "?".to_owned(), |id| id.to_string());
    reply(&Reply::Ready {
        detail: format!(
            "DLM floor pid {} on node {node}: per cycle, EX|NOQUEUE|PERSISTENT on the N names \
             sha256({}/n<N>-<i>.img) in lockspace {}, then unlock, from one process (libdlm_lt)",
            std::process::id(),
            disks.dir()?.display(),
            disks.lockspace
        ),
    });
    let mut taken = Vec::new();
    for line in std::io::stdin().lock().lines() {
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
                let Some((_, these)) = names.iter().find(|(count, _)| *count == n) else {
                    reply(&Reply::Error {
                        message: format!("no names for {n} disks (started with {:?})", disks.disks),
                    });
                    continue;
                };
                let mut ns = Vec::with_capacity(count);
                let mut failed = None;
                for _ in 0..count {
                    let started = Instant::now();
                    if let Err(err) = cycle(&ls, these, &mut taken) {
                        failed = Some(err);
                        break;
                    }
                    ns.push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
                }
                match failed {
                    Some(message) => reply(&Reply::Error { message }),
                    None => reply(&Reply::Samples { ns }),
                }
            }
            ["quit"] => break,
            _ => reply(&Reply::Error {
                message: format!("bad command '{line}'"),
            }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lockmgrd_s_sha256_of_the_bench_paths() {
        let path = disk_path(Path::new("/tmp/bench-local"), 16, 7);
        assert_eq!(path, Path::new("/tmp/bench-local/n16-007.img"));
        let name = resource_name(&path);
        assert_eq!(name.len(), 64, "DLM_RESNAME_MAXLEN");
        // sha256("/tmp/bench-local/n16-007.img"), as `printf %s PATH | sha256sum` prints it
        assert_eq!(
            name,
            "ffc7679532f4244843bcdfa515fcb0a6c31fd7c95ebdf951d2a85d975f4a7cd7"
        );
    }
}
