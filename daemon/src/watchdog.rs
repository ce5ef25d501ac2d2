//! Self-fencing with a watchdog, for clusters without fence hardware (what sanlock does with
//! wdmd, and pacemaker with sbd's watchdog-only mode).
//!
//! The survivors of a failure cannot power this node off; they run `fence_lockmgr_watchdog`,
//! which waits `wait=` seconds and then reports this node fenced. That is only true if, within
//! that time, every domain of this node that may still write under a lock it has lost is gone:
//!
//! - a **keeper** thread pets `/dev/watchdog` every [`PET_INTERVAL`], but only while
//!   - this node is a member of the cluster: in the quorate partition, confirmed by corosync
//!     within [`QUORUM_FRESH`], with its dlm_controld running, **or**
//!   - no domain that holds a lock still runs (the server publishes them, [`SelfFence::publish`]);
//! - a **membership watcher** thread follows votequorum (notifications on its fd, and a fresh
//!   `votequorum_getinfo` every half second) and checks that dlm_controld runs (the others fence
//!   a node whose dlm_controld has gone, while its corosync may stay quorate). Its calls may block
//!   when corosync is frozen, so they never run on the keeper's thread;
//! - when membership is lost the server applies every lock-holding domain's `<on_lockfailure>` at
//!   once ([`SelfFence::cluster_problem`]); once they have all exited the keeper pets again. A
//!   domain that keeps running (`ignore`, `pause`) leaves the watchdog to reset the node.
//!
//! A DLM that stops answering while this node stays a member is *not* a lost lock: the lockspace
//! is recovering, typically waiting for another node's fence (with this agent, for its `wait=`),
//! and no other node can be granted this node's locks meanwhile. So the DLM's silence makes the
//! server refuse new requests, but neither stops the petting nor costs the domains their disks:
//! otherwise every failure of one node would stop the domains of all the others.
//!
//! A frozen node pets nothing, and its watchdog (hardware, outside the CPU) resets it. When
//! lockmgrd stops with locks held, the watchdog stays armed: start lockmgrd again within the
//! timeout, or the node resets (its domains would run unprotected otherwise).

// Without the dlm backend the server still knows the type, but nothing starts a keeper.
#![cfg_attr(not(feature = "dlm"), allow(dead_code))]

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[cfg(feature = "dlm")]
use lockmgr_quorum::Votequorum;

#[cfg(feature = "dlm")]
use crate::process;
use crate::{log, sys};

/// How often the keeper pets the watchdog.
pub const PET_INTERVAL: Duration = Duration::from_secs(1);
/// A quorate answer from corosync older than this no longer counts.
pub const QUORUM_FRESH: Duration = Duration::from_secs(2);
/// The shortest watchdog timeout accepted: several pets fit in it.
pub const MIN_TIMEOUT_SECS: u32 = 5;
/// What `fence_lockmgr_watchdog`'s `wait=` must add to the watchdog and lock-failure timeouts:
/// the pet interval, and how much later than the survivors this node may learn of the split.
pub const FENCE_MARGIN_SECS: u64 = 2;
/// The daemon that keeps this node in the DLM's lockspaces.
const DLM_CONTROLD: &str = "dlm_controld";
/// How often the membership watcher asks corosync when no notification comes.
const QUORUM_POLL_MS: i32 = 500;

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An armed watchdog device.
#[derive(Debug)]
pub struct WatchdogDevice {
    file: File,
    path: PathBuf,
    timeout_secs: u32,
}

impl WatchdogDevice {
    /// Opens (and so arms) the device and sets its timeout.
    pub fn open(path: &Path, timeout_secs: u32) -> Result<WatchdogDevice, String> {
        if timeout_secs < MIN_TIMEOUT_SECS {
            return Err(format!(
                "--watchdog-timeout {timeout_secs} is too short: at least {MIN_TIMEOUT_SECS} s"
            ));
        }
        let file = File::options().write(true).open(path).map_err(|e| {
            format!(
                "cannot open the watchdog {}: {e} (load a watchdog driver: the board's, or \
                 `modprobe softdog`; another process may hold it open: wdmd, sbd, watchdog)",
                path.display()
            )
        })?;
        let taken = sys::watchdog_set_timeout(file.as_fd(), timeout_secs).map_err(|e| {
            format!(
                "the watchdog {} refuses a timeout of {timeout_secs} s: {e}",
                path.display()
            )
        })?;
        if taken > timeout_secs {
            return Err(format!(
                "the watchdog {} took a timeout of {taken} s when asked for {timeout_secs} s: \
                 the fence agent's wait would be too short",
                path.display()
            ));
        }
        let device = WatchdogDevice {
            file,
            path: path.to_owned(),
            timeout_secs: taken,
        };
        device
            .pet()
            .map_err(|e| format!("cannot pet {}: {e}", path.display()))?;
        Ok(device)
    }

    /// The timeout the driver took.
    pub fn timeout_secs(&self) -> u32 {
        self.timeout_secs
    }

    fn pet(&self) -> std::io::Result<()> {
        sys::watchdog_keepalive(self.file.as_fd())
    }

    /// Stops the watchdog: the magic close ('V', then close).
    fn disarm(mut self) -> std::io::Result<()> {
        self.file.write_all(b"V")
    }
}

/// What the membership watcher last learnt.
#[derive(Debug, Default)]
struct QuorumSeen {
    confirmed_at: Option<Instant>,
    problem: Option<String>,
}

/// The domains at risk, as the server last published them.
#[derive(Debug)]
struct Exposure {
    /// Domains with a lock whose process runs (or "domains hold locks" in normal operation).
    holders: Vec<String>,
    published_at: Instant,
}

/// The state the keeper decides from, shared with the server and the quorum watcher.
#[derive(Debug)]
pub struct SelfFence {
    quorum: Mutex<QuorumSeen>,
    exposure: Mutex<Exposure>,
    watchdog_timeout: Duration,
    stop: AtomicBool,
}

impl SelfFence {
    fn new(watchdog_timeout: Duration) -> SelfFence {
        SelfFence {
            quorum: Mutex::new(QuorumSeen::default()),
            exposure: Mutex::new(Exposure {
                holders: vec!["(the lock table is being restored)".into()],
                published_at: Instant::now(),
            }),
            watchdog_timeout,
            stop: AtomicBool::new(false),
        }
    }

    /// The server's view: the domains that may write under a lock this node holds (empty when
    /// none). Published after every change and at every turn of its loop.
    pub fn publish(&self, holders: Vec<String>) {
        let mut exposure = locked(&self.exposure);
        exposure.holders = holders;
        exposure.published_at = Instant::now();
    }

    /// Why this node cannot count on being a member of the quorate cluster, if it cannot.
    pub fn cluster_problem(&self) -> Option<String> {
        let seen = locked(&self.quorum);
        match seen.confirmed_at {
            Some(at) if at.elapsed() <= QUORUM_FRESH => None,
            _ => Some(seen.problem.clone().unwrap_or_else(|| {
                format!(
                    "corosync has not confirmed quorum for over {} s",
                    QUORUM_FRESH.as_secs()
                )
            })),
        }
    }

    fn confirm_membership(&self) {
        let mut seen = locked(&self.quorum);
        seen.confirmed_at = Some(Instant::now());
        seen.problem = None;
    }

    fn lose_membership(&self, why: String) {
        locked(&self.quorum).problem = Some(why);
        // No confirmation from now on: `confirmed_at` ages out within QUORUM_FRESH.
        locked(&self.quorum).confirmed_at = None;
    }

    /// Whether the keeper may pet now; if not, why.
    fn may_pet(&self) -> Result<(), String> {
        let holders = {
            let exposure = locked(&self.exposure);
            if exposure.published_at.elapsed() > 3 * PET_INTERVAL {
                vec!["(lockmgrd's server has not said which domains run for over 3 s)".into()]
            } else {
                exposure.holders.clone()
            }
        };
        if holders.is_empty() {
            return Ok(());
        }
        match self.cluster_problem() {
            None => Ok(()),
            Some(problem) => Err(format!(
                "{problem}, and domain(s) {} still run with locks this node may have lost",
                holders.join(", ")
            )),
        }
    }

    /// Whether the last published state had domains with locks.
    fn exposed(&self) -> bool {
        !locked(&self.exposure).holders.is_empty()
    }
}

/// The running self-fence: keeper and quorum watcher threads.
#[derive(Debug)]
pub struct SelfFencing {
    shared: Arc<SelfFence>,
    keeper: Option<JoinHandle<()>>,
}

impl SelfFencing {
    /// Starts watching quorum and petting `device`; `quorate_now` is what corosync said at
    /// start (it counts as a confirmation).
    #[cfg(feature = "dlm")]
    pub fn start(device: WatchdogDevice, quorate_now: bool) -> Result<SelfFencing, String> {
        let watchdog_timeout = Duration::from_secs(u64::from(device.timeout_secs()));
        let shared = Arc::new(SelfFence::new(watchdog_timeout));
        if quorate_now {
            shared.confirm_membership();
        }
        let watcher = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("membership".into())
            .spawn(move || watch_membership(&watcher))
            .map_err(|e| format!("cannot start the membership watcher: {e}"))?;
        let keeper_state = Arc::clone(&shared);
        let keeper = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || keep(device, &keeper_state))
            .map_err(|e| format!("cannot start the watchdog keeper: {e}"))?;
        Ok(SelfFencing {
            shared,
            keeper: Some(keeper),
        })
    }

    /// The state the server publishes to.
    pub fn shared(&self) -> Arc<SelfFence> {
        Arc::clone(&self.shared)
    }
}

/// Dropping it stops petting after one last pet, and disarms the watchdog only when the server
/// last said that no domain holds a lock (a refusal during the restore leaves it armed).
impl Drop for SelfFencing {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

fn keep(device: WatchdogDevice, shared: &SelfFence) {
    let timeout = shared.watchdog_timeout.as_secs();
    let mut petting = true;
    while !shared.stop.load(Ordering::Relaxed) {
        match shared.may_pet() {
            Ok(()) => {
                if let Err(err) = device.pet() {
                    log(&format!(
                        "WATCHDOG: cannot pet {}: {err}",
                        device.path.display()
                    ));
                } else if !petting {
                    log("WATCHDOG: petting again: no domain runs with a lock at risk");
                    petting = true;
                }
            }
            Err(why) if petting => {
                log(&format!(
                    "WATCHDOG: not petting {}: {why}; this node resets within {timeout} s unless they stop",
                    device.path.display()
                ));
                petting = false;
            }
            Err(_) => {}
        }
        std::thread::sleep(PET_INTERVAL);
    }
    if shared.exposed() {
        let _ = device.pet();
        log(&format!(
            "WATCHDOG: {} stays armed (domains hold locks): start lockmgrd again within {timeout} s or this node resets",
            device.path.display()
        ));
    } else {
        let path = device.path.clone();
        match device.disarm() {
            Ok(()) => log(&format!("watchdog {} disarmed", path.display())),
            Err(err) => log(&format!(
                "WATCHDOG: cannot disarm {}: {err}",
                path.display()
            )),
        }
    }
}

#[cfg(feature = "dlm")]
fn watch_membership(shared: &SelfFence) {
    let mut last_problem: Option<String> = None;
    let mut report = |problem: Option<String>| {
        if problem != last_problem {
            match &problem {
                Some(why) => log(&format!("MEMBERSHIP: {why}")),
                None => log("membership: this node is in the quorate partition, dlm_controld runs"),
            }
            last_problem = problem;
        }
    };
    while !shared.stop.load(Ordering::Relaxed) {
        let mut quorum = match Votequorum::connect().and_then(|mut q| {
            q.track_changes()?;
            Ok(q)
        }) {
            Ok(quorum) => quorum,
            Err(err) => {
                let why = format!("cannot ask corosync about quorum: {err}");
                shared.lose_membership(why.clone());
                report(Some(why));
                std::thread::sleep(PET_INTERVAL);
                continue;
            }
        };
        while !shared.stop.load(Ordering::Relaxed) {
            let answer = quorum.fd().and_then(|fd| {
                if sys::poll_readable(&[fd], QUORUM_POLL_MS).is_ok_and(|ready| !ready.is_empty()) {
                    quorum.dispatch()?;
                }
                quorum.info()
            });
            match answer {
                Ok(info) if info.quorate && process::running_named(DLM_CONTROLD) => {
                    shared.confirm_membership();
                    report(None);
                }
                Ok(info) if info.quorate => {
                    let why = format!(
                        "{DLM_CONTROLD} is not running: the other nodes remove this node from \
                         the lockspace and fence it"
                    );
                    shared.lose_membership(why.clone());
                    report(Some(why));
                }
                Ok(info) => {
                    let why = format!(
                        "this node lost quorum ({} of {} votes, {} needed)",
                        info.total_votes, info.expected_votes, info.quorum
                    );
                    shared.lose_membership(why.clone());
                    report(Some(why));
                }
                Err(err) => {
                    let why = format!("corosync stopped answering: {err}");
                    shared.lose_membership(why.clone());
                    report(Some(why));
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence() -> SelfFence {
        SelfFence::new(Duration::from_secs(10))
    }

    #[test]
    fn without_domains_at_risk_it_always_pets() {
        let fence = fence();
        fence.publish(Vec::new());
        fence.lose_membership("this node lost quorum".into());
        assert_eq!(fence.may_pet(), Ok(()));
    }

    #[test]
    fn a_running_holder_without_membership_stops_the_petting() {
        let fence = fence();
        fence.publish(vec!["'vm1' (pid 42)".into()]);
        assert!(
            fence
                .may_pet()
                .unwrap_err()
                .contains("has not confirmed quorum")
        );
        fence.confirm_membership();
        assert_eq!(fence.may_pet(), Ok(()));
        fence.lose_membership("this node lost quorum (1 of 3 votes, 2 needed)".into());
        let why = fence.may_pet().unwrap_err();
        assert!(
            why.contains("lost quorum") && why.contains("'vm1' (pid 42)"),
            "{why}"
        );
        assert!(fence.cluster_problem().is_some());
        // Once the domain is gone, petting resumes even without quorum.
        fence.publish(Vec::new());
        assert_eq!(fence.may_pet(), Ok(()));
    }

    #[test]
    fn a_confirmation_ages_out() {
        let fence = fence();
        fence.publish(vec!["'vm1' (pid 42)".into()]);
        fence.confirm_membership();
        locked(&fence.quorum).confirmed_at = Some(Instant::now() - 2 * QUORUM_FRESH);
        let why = fence.may_pet().unwrap_err();
        assert!(
            why.contains("has not confirmed quorum for over 2 s"),
            "{why}"
        );
    }

    #[test]
    fn a_silent_server_counts_as_domains_at_risk() {
        let fence = fence();
        fence.publish(Vec::new());
        locked(&fence.exposure).published_at = Instant::now() - 4 * PET_INTERVAL;
        let why = fence.may_pet().unwrap_err();
        assert!(why.contains("server has not said"), "{why}");
    }

    #[test]
    fn a_missing_device_is_a_clear_error() {
        let err = WatchdogDevice::open(Path::new("/nonexistent/watchdog"), 10).unwrap_err();
        assert!(
            err.contains("/nonexistent/watchdog") && err.contains("softdog"),
            "{err}"
        );
        let err = WatchdogDevice::open(Path::new("/dev/null"), 2).unwrap_err();
        assert!(err.contains("too short"), "{err}");
        let err = WatchdogDevice::open(Path::new("/dev/null"), 10).unwrap_err();
        assert!(err.contains("refuses a timeout"), "{err}");
    }
}
