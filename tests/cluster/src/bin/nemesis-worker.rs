//! `nemesis-worker`: one libvirt domain's life on a node, contending for the nemesis's exclusive
//! disks through dlm.so and lockmgrd, and writing the shared disk only while it holds the lock.
//! Runs inside a node (from `/mnt/host`, like `lockmgr-loader-test`); the on-disk format and the
//! log are in [`lockmgr_testbed::nemesis`].
//!
//! It registers an owner the way libvirt's pre-exec child does ([`host::start_owner`]: the QEMU
//! stand-in, with `<on_lockfailure>poweroff`), then loops until `--stop` exists or `--seconds`
//! passed: pick a disk, Acquire it (hotplug-style: New + AddResource + Acquire); on a grant, claim
//! a generation in the disk's region, append records for a random hold time, stop writing, log it,
//! then Release as on pause. Before every write it checks that the owner still runs (lockmgrd
//! kills it when the lock is lost); when it died, the worker stops writing and registers a new
//! owner. Every grant, refusal, failure and release goes to its JSON Lines log.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use lockmgr::host::{self, ForkedOwner, HostError, Plugin, RegisterOutcome};
use lockmgr::{Access, AcquireFlags, Domain, LockFailureAction, NewFlags, Resource, Uuid};
use lockmgr_testbed::nemesis::{
    BLOCK, Event, Header, Random, Record, block_offset, log_name, region_capacity,
};
use sha2::{Digest, Sha256};

/// libvirt's VIR_ERR_RESOURCE_BUSY-like code dlm.so reports for "locked on another node".
const BUSY: i32 = 87;

#[derive(Parser, Debug)]
#[command(about = "A nemesis workload owner: lock, write the shared disk, release")]
struct Args {
    /// The plugin (dlm.so).
    #[arg(long)]
    plugin: String,
    /// drvInit's config file.
    #[arg(long)]
    config: PathBuf,
    /// This node's number.
    #[arg(long)]
    node: u64,
    /// This owner's index on the node.
    #[arg(long)]
    owner: u64,
    /// The node's boot count in this run.
    #[arg(long, default_value_t = 0)]
    incarnation: u64,
    /// The shared block device.
    #[arg(long, default_value = "/dev/vda")]
    device: PathBuf,
    /// How many exclusive disks (regions).
    #[arg(long, default_value_t = 3)]
    disks: u64,
    /// Bytes per region.
    #[arg(long)]
    region_bytes: u64,
    /// Where the log goes (the scratch share).
    #[arg(long)]
    log_dir: PathBuf,
    /// Stop once this file exists.
    #[arg(long)]
    stop: PathBuf,
    /// Stop after this many seconds at the latest.
    #[arg(long, default_value_t = 3600)]
    seconds: u64,
    /// Per mille of grants held long (`--long-hold-ms`), like a VM that runs for a while.
    #[arg(long, default_value_t = 200)]
    long_permille: u64,
    /// A short hold: a random time up to this (ms).
    #[arg(long, default_value_t = 600)]
    short_hold_ms: u64,
    /// A long hold: a random time up to this (ms), at least half of it.
    #[arg(long, default_value_t = 16000)]
    long_hold_ms: u64,
    /// Pause between two records of a grant (ms).
    #[arg(long, default_value_t = 40)]
    write_every_ms: u64,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// A 512-byte block in a buffer aligned for O_DIRECT.
struct Aligned {
    buffer: Vec<u8>,
    start: usize,
}

impl Aligned {
    fn new() -> Aligned {
        let buffer = vec![0u8; 2 * 4096];
        let start = (4096 - buffer.as_ptr().addr() % 4096) % 4096;
        Aligned { buffer, start }
    }
    fn bytes(&mut self) -> &mut [u8] {
        &mut self.buffer[self.start..self.start + BLOCK]
    }
}

/// The shared disk, opened O_DIRECT: every read and write goes to the device.
struct SharedDisk {
    file: File,
    region_bytes: u64,
    block: Aligned,
}

impl SharedDisk {
    fn open(path: &Path, region_bytes: u64) -> std::io::Result<SharedDisk> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)?;
        Ok(SharedDisk {
            file,
            region_bytes,
            block: Aligned::new(),
        })
    }

    fn read(&mut self, disk: u64, index: u64) -> std::io::Result<Vec<u8>> {
        let at = block_offset(self.region_bytes, disk, index);
        self.file.read_exact_at(self.block.bytes(), at)?;
        Ok(self.block.bytes().to_vec())
    }

    fn write(&mut self, disk: u64, index: u64, bytes: &[u8; BLOCK]) -> std::io::Result<()> {
        let at = block_offset(self.region_bytes, disk, index);
        self.block.bytes().copy_from_slice(bytes);
        self.file.write_all_at(
            &self.block.buffer[self.block.start..self.block.start + BLOCK],
            at,
        )
    }
}

/// Whether `pid` (our unreaped child) still runs: a dead one is a zombie until we reap it.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}

fn uuid_for(name: &str) -> Uuid {
    let digest = Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::version4(bytes)
}

fn disk_resource(disk: u64) -> Resource {
    Resource::Disk {
        path: PathBuf::from(format!("/vm/nemesis-{disk}.img")),
        access: Access::Exclusive,
    }
}

fn describe(err: &HostError) -> (Option<i32>, String) {
    match err {
        HostError::Callback {
            reported: Some(reported),
            ..
        } => (Some(reported.code), reported.rendered()),
        other => (None, other.to_string()),
    }
}

struct Worker {
    args: Args,
    plugin: Plugin,
    domain: Domain,
    owner: Option<ForkedOwner>,
    disk: SharedDisk,
    log: File,
    random: Random,
    grants: u64,
}

impl Worker {
    fn event(&mut self, event: &Event) {
        let line = serde_json::to_string(event).unwrap_or_default();
        // One write per line: a node powered off mid-write leaves at most one torn last line.
        let _ = self.log.write_all(format!("{line}\n").as_bytes());
    }

    fn owner_pid(&self) -> u32 {
        self.owner.as_ref().map_or(0, ForkedOwner::pid)
    }

    /// Registers a fresh owner (the previous one died): libvirt starting the domain again.
    fn register(&mut self) -> Result<(), String> {
        if let Some(mut old) = self.owner.take() {
            let _ = old.wait();
        }
        let owner = host::start_owner(&self.plugin, &self.domain, &[], LockFailureAction::Poweroff)
            .map_err(|err| err.to_string())?;
        if let RegisterOutcome::Failed { error, .. } = &owner.outcome {
            return Err(format!("register {}: {error}", self.domain.name));
        }
        self.domain.pid = owner.pid();
        let pid = owner.pid();
        self.owner = Some(owner);
        self.event(&Event::Register { t: now_ns(), pid });
        Ok(())
    }

    fn manager_call(
        &self,
        disk: u64,
        call: impl FnOnce(&mut host::Manager<'_>) -> Result<(), HostError>,
    ) -> Result<(), HostError> {
        let mut manager = self.plugin.new_manager(&self.domain, NewFlags::default())?;
        manager.add_resource(&disk_resource(disk))?;
        call(&mut manager)
    }

    fn stopping(&self, deadline: Instant) -> bool {
        Instant::now() >= deadline || self.args.stop.exists()
    }

    fn run(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(self.args.seconds);
        self.register()?;
        while !self.stopping(deadline) {
            if !running(self.owner_pid()) {
                let pid = self.owner_pid();
                self.event(&Event::OwnerDied { t: now_ns(), pid });
                self.register()?;
                continue;
            }
            let disk = self.random.below(self.args.disks);
            let mut domain = self.domain.clone();
            domain.uri = Some("qemu:///system".to_owned());
            let acquired = self
                .plugin
                .new_manager(&domain, NewFlags::default())
                .and_then(|mut manager| {
                    manager.add_resource(&disk_resource(disk))?;
                    manager
                        .acquire(
                            None,
                            AcquireFlags::default(),
                            LockFailureAction::Poweroff,
                            false,
                        )
                        .map(drop)
                });
            match acquired {
                Ok(()) => self.hold(disk, deadline)?,
                Err(err) => {
                    let (code, error) = describe(&err);
                    let t = now_ns();
                    if code == Some(BUSY) {
                        self.event(&Event::Refused { t, disk });
                        let pause = 20 + self.random.below(180);
                        sleep(Duration::from_millis(pause));
                    } else {
                        self.event(&Event::Error {
                            t,
                            disk,
                            op: "acquire".to_owned(),
                            error,
                        });
                        sleep(Duration::from_millis(500));
                    }
                }
            }
        }
        if let Some(mut owner) = self.owner.take() {
            let _ = owner.kill();
        }
        Ok(())
    }

    /// Holds `disk`: claim, write, stop, release.
    fn hold(&mut self, disk: u64, deadline: Instant) -> Result<(), String> {
        let grant = self.grants;
        self.grants += 1;
        let hold_ms = if self.random.below(1000) < self.args.long_permille {
            self.args.long_hold_ms / 2 + self.random.below(self.args.long_hold_ms / 2)
        } else {
            10 + self.random.below(self.args.short_hold_ms)
        };
        let until = Instant::now() + Duration::from_millis(hold_ms);
        let device = self.args.device.display().to_string();
        let io = |err: std::io::Error| format!("{device}: {err}");
        let mut header = Header::decode(&self.disk.read(disk, 0).map_err(io)?).unwrap_or_default();
        let mut written = 0u64;
        let mut owner_alive = running(self.owner_pid());
        if owner_alive {
            header.generation += 1;
            header.node = self.args.node;
            header.owner = self.args.owner;
            header.hold_until_ns = now_ns() + hold_ms * 1_000_000;
            self.disk.write(disk, 0, &header.encode()).map_err(io)?;
            self.event(&Event::Grant {
                t: now_ns(),
                disk,
                grant,
                generation: header.generation,
                start: header.next,
            });
            let capacity = region_capacity(self.args.region_bytes);
            let start = header.next;
            loop {
                owner_alive = running(self.owner_pid());
                if !owner_alive
                    || (written > 0 && (Instant::now() >= until || self.stopping(deadline)))
                {
                    break;
                }
                if header.next >= capacity {
                    self.event(&Event::Full { t: now_ns(), disk });
                    break;
                }
                let record = Record {
                    disk,
                    generation: header.generation,
                    node: self.args.node,
                    owner: self.args.owner,
                    incarnation: self.args.incarnation,
                    grant,
                    seq: written,
                    slot: start + written,
                    prev: header.last_hash,
                    time_ns: now_ns(),
                };
                self.disk
                    .write(disk, 1 + record.slot, &record.encode())
                    .map_err(io)?;
                header.next = record.slot + 1;
                header.last_hash = record.hash();
                self.disk.write(disk, 0, &header.encode()).map_err(io)?;
                written += 1;
                sleep(Duration::from_millis(self.args.write_every_ms));
            }
        }
        self.event(&Event::Done {
            t: now_ns(),
            disk,
            grant,
            records: written,
            owner_alive,
        });
        if !owner_alive {
            return Ok(()); // lockmgrd released it when the owner died
        }
        // Release as on pause; lockmgrd may be down (the nemesis kills it): retry, and as a last
        // resort kill the owner, which makes the daemon release its locks.
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            match self.manager_call(disk, |manager| manager.release(true).map(drop)) {
                Ok(()) => {
                    self.event(&Event::Release {
                        t: now_ns(),
                        disk,
                        grant,
                    });
                    return Ok(());
                }
                Err(err) => {
                    let error = describe(&err).1;
                    self.event(&Event::Error {
                        t: now_ns(),
                        disk,
                        op: "release".to_owned(),
                        error,
                    });
                    if !running(self.owner_pid()) || Instant::now() >= give_up {
                        if let Some(owner) = self.owner.as_mut() {
                            let _ = owner.kill();
                        }
                        return Ok(());
                    }
                    sleep(Duration::from_millis(500));
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = (|| {
        let mut plugin =
            Plugin::open(&host::locate(&args.plugin)).map_err(|err| err.to_string())?;
        plugin.init(&args.config).map_err(|err| err.to_string())?;
        let name = format!("nemesis-n{}-o{}", args.node, args.owner);
        let domain = Domain {
            uuid: uuid_for(&name),
            name,
            id: 1,
            pid: 0,
            uri: None,
        };
        let disk = SharedDisk::open(&args.device, args.region_bytes)
            .map_err(|err| format!("{}: {err}", args.device.display()))?;
        std::fs::create_dir_all(&args.log_dir).map_err(|err| err.to_string())?;
        let log_path = args
            .log_dir
            .join(log_name(args.node, args.owner, args.incarnation));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|err| format!("{}: {err}", log_path.display()))?;
        let seed =
            now_ns() ^ (args.node << 48) ^ (args.owner << 40) ^ u64::from(std::process::id());
        let mut worker = Worker {
            plugin,
            domain,
            owner: None,
            disk,
            log,
            random: Random::new(seed),
            grants: 0,
            args,
        };
        worker.run()
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("nemesis-worker: {message}");
            ExitCode::FAILURE
        }
    }
}
