//! Freezing only a VM's vCPU threads, so that its guest hangs while QEMU's main loop (its timers,
//! the emulated watchdog among them, as real watchdog hardware runs outside the CPU) goes on.
//!
//! SIGSTOP would stop QEMU's whole thread group. Instead each vCPU thread (`CPU 0/TCG` in
//! `/proc/PID/task/*/comm`) is `PTRACE_SEIZE`d and `PTRACE_INTERRUPT`ed, and `PTRACE_DETACH`ed to
//! thaw. ptrace requests must come from the thread that attached, so one dedicated tracer thread
//! per process does all of them; the others send it requests over a channel. It also reaps the
//! traced threads that exit while frozen (their QEMU exited, e.g. powered off by its watchdog),
//! which lets that QEMU be reaped in turn.

use std::collections::HashMap;
use std::ffi::c_void;
use std::fs;
use std::io;
use std::ptr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, WaitOptions, waitpid};

/// How long a vCPU thread may take to reach its ptrace stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// `__WALL`: wait for threads (clone children) too, not just processes.
const WALL: WaitOptions = WaitOptions::from_bits_retain(libc::__WALL as u32);

/// `ptrace(request, tid, NULL, data)` for the requests made here, none of which takes an address
/// or returns a value: `PTRACE_SEIZE` (data: options), `PTRACE_INTERRUPT` (none) and
/// `PTRACE_DETACH` (data: the signal to deliver). rustix has no ptrace.
#[allow(unsafe_code)]
fn ptrace(request: libc::c_uint, tid: i32, data: usize) -> io::Result<()> {
    // SAFETY: the kernel dereferences neither argument for these requests: addr is NULL and data
    // is an integer (passed, as ptrace(2) takes it, in the pointer-sized `data` slot).
    let ret = unsafe {
        libc::ptrace(
            request,
            tid,
            ptr::null_mut::<c_void>(),
            ptr::without_provenance_mut::<c_void>(data),
        )
    };
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

enum Request {
    Freeze(Vec<i32>, Sender<Result<(), String>>),
    Thaw(Vec<i32>, Sender<Vec<String>>),
}

static TRACER: OnceLock<Mutex<Sender<Request>>> = OnceLock::new();

fn tracer() -> Sender<Request> {
    let sender = TRACER.get_or_init(|| {
        let (sender, receiver) = mpsc::channel();
        thread::Builder::new()
            .name("vcpu-tracer".to_owned())
            .spawn(move || serve(&receiver))
            .expect("spawn the vCPU tracer thread");
        Mutex::new(sender)
    });
    sender
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// The vCPU threads of QEMU `pid`: their comm is `CPU <n>/<accel>` (`CPU 0/TCG`, `CPU 0/KVM`).
pub(crate) fn vcpu_threads(pid: u32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut tids: Vec<i32> = tasks
        .flatten()
        .filter_map(|task| {
            let tid: i32 = task.file_name().to_str()?.parse().ok()?;
            let comm = fs::read_to_string(task.path().join("comm")).ok()?;
            (comm.starts_with("CPU ") && comm.contains('/')).then_some(tid)
        })
        .collect();
    tids.sort_unstable();
    tids
}

/// Stops threads `tids` (each in its ptrace stop when this returns `Ok`). On failure none of
/// them stays stopped.
pub(crate) fn freeze(tids: &[i32]) -> Result<(), String> {
    let (reply, answer) = mpsc::channel();
    tracer()
        .send(Request::Freeze(tids.to_vec(), reply))
        .map_err(|_| "the vCPU tracer thread is gone".to_owned())?;
    answer
        .recv()
        .map_err(|_| "the vCPU tracer thread did not answer".to_owned())?
}

/// Lets threads `tids` run again; a thread that exited meanwhile is reaped. Returns what went
/// wrong (nothing that the caller could fix: the threads are no longer traced either way).
pub(crate) fn thaw(tids: &[i32]) -> Vec<String> {
    let (reply, answer) = mpsc::channel();
    if tracer().send(Request::Thaw(tids.to_vec(), reply)).is_err() {
        return vec!["the vCPU tracer thread is gone".to_owned()];
    }
    answer
        .recv()
        .unwrap_or_else(|_| vec!["the vCPU tracer thread did not answer".to_owned()])
}

/// The tracer thread: every ptrace request of this process. `traced` maps each traced thread to
/// the signal its stop withheld (re-delivered at detach).
fn serve(requests: &Receiver<Request>) {
    let mut traced: HashMap<i32, Option<i32>> = HashMap::new();
    loop {
        match requests.recv_timeout(Duration::from_millis(200)) {
            Ok(Request::Freeze(tids, reply)) => {
                let result = seize_all(&tids, &mut traced);
                if result.is_err() {
                    detach_all(&tids, &mut traced);
                }
                let _ = reply.send(result);
            }
            Ok(Request::Thaw(tids, reply)) => {
                let _ = reply.send(detach_all(&tids, &mut traced));
            }
            Err(RecvTimeoutError::Timeout) => {
                // Threads that exited while frozen (their QEMU is gone): reap them.
                traced.retain(|tid, pending| poll(*tid, pending) != Poll::Exited);
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Poll {
    Stopped,
    Running,
    Exited,
}

/// Polls traced thread `tid` (`waitpid(tid, WNOHANG | __WALL)`), noting the signal a
/// signal-delivery stop withheld in `pending`.
fn poll(tid: i32, pending: &mut Option<i32>) -> Poll {
    let Some(pid) = Pid::from_raw(tid) else {
        return Poll::Exited;
    };
    match waitpid(Some(pid), WaitOptions::NOHANG | WALL) {
        Ok(None) => Poll::Running,
        Ok(Some((_, status))) => match status.stopping_signal() {
            Some(signal) => {
                // A signal-delivery stop (no ptrace event in the high bits, not a syscall stop):
                // the signal is held back and delivered at detach.
                let event = status.as_raw() >> 16;
                if event == 0
                    && signal != (libc::SIGTRAP | 0x80)
                    && signal != libc::SIGTRAP
                    && signal != libc::SIGSTOP
                {
                    *pending = Some(signal);
                }
                Poll::Stopped
            }
            // Only an exit or a death by signal: WCONTINUED is not asked for.
            None => Poll::Exited,
        },
        Err(_) => Poll::Exited,
    }
}

fn seize_all(tids: &[i32], traced: &mut HashMap<i32, Option<i32>>) -> Result<(), String> {
    for &tid in tids {
        if traced.contains_key(&tid) {
            continue;
        }
        ptrace(libc::PTRACE_SEIZE, tid, 0)
            .map_err(|err| format!("PTRACE_SEIZE of thread {tid}: {err}"))?;
        traced.insert(tid, None);
        ptrace(libc::PTRACE_INTERRUPT, tid, 0)
            .map_err(|err| format!("PTRACE_INTERRUPT of thread {tid}: {err}"))?;
    }
    for &tid in tids {
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let pending = traced.entry(tid).or_insert(None);
            match poll(tid, pending) {
                Poll::Stopped => break,
                Poll::Exited => {
                    traced.remove(&tid);
                    return Err(format!("thread {tid} exited while being frozen"));
                }
                Poll::Running if Instant::now() >= deadline => {
                    return Err(format!(
                        "thread {tid} did not stop within {} s of PTRACE_INTERRUPT",
                        STOP_TIMEOUT.as_secs()
                    ));
                }
                Poll::Running => thread::sleep(Duration::from_millis(2)),
            }
        }
    }
    Ok(())
}

fn detach_all(tids: &[i32], traced: &mut HashMap<i32, Option<i32>>) -> Vec<String> {
    let mut problems = Vec::new();
    for &tid in tids {
        let Some(mut pending) = traced.remove(&tid) else {
            continue;
        };
        let signal = pending.and_then(|signal| usize::try_from(signal).ok());
        match ptrace(libc::PTRACE_DETACH, tid, signal.unwrap_or(0)) {
            Ok(()) => {}
            // Not in a ptrace stop any more: it was SIGKILLed (its QEMU exited) and must be
            // reaped, or it is gone already.
            Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {
                let deadline = Instant::now() + Duration::from_secs(2);
                while poll(tid, &mut pending) != Poll::Exited && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(10));
                }
            }
            Err(err) => problems.push(format!("PTRACE_DETACH of thread {tid}: {err}")),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_without_vcpu_threads_has_none() {
        assert!(vcpu_threads(std::process::id()).is_empty());
        assert!(vcpu_threads(u32::MAX).is_empty());
        assert!(thaw(&[]).is_empty());
    }
}
