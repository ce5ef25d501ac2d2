//! Watching the cluster side of a backend: a probe thread does a small round trip through the
//! lock manager at a fixed interval; the server calls the backend failed when no round trip
//! succeeded for longer than the lock failure timeout.
//!
//! A thread, because a DLM request on a stopped lockspace (quorum lost) blocks: the probe may
//! hang, the server must not.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the probe last saw.
#[derive(Debug)]
pub struct Health {
    last_ok: Mutex<Instant>,
    last_error: Mutex<Option<String>>,
    stop: AtomicBool,
}

impl Health {
    /// How long ago the last successful round trip finished.
    pub fn since_last_ok(&self) -> Duration {
        self.last_ok
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or(Duration::MAX)
    }

    /// The last probe error, if the last probe failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Asks the probe thread to end after its current round trip.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts a thread that runs `probe` every `interval`.
pub fn spawn_probe(
    name: &str,
    interval: Duration,
    mut probe: impl FnMut() -> Result<(), String> + Send + 'static,
) -> std::io::Result<Arc<Health>> {
    let health = Arc::new(Health {
        last_ok: Mutex::new(Instant::now()),
        last_error: Mutex::new(None),
        stop: AtomicBool::new(false),
    });
    let shared = Arc::clone(&health);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while !shared.stop.load(Ordering::Relaxed) {
                let result = probe();
                if let Ok(mut error) = shared.last_error.lock() {
                    *error = result.as_ref().err().cloned();
                }
                if result.is_ok() {
                    if let Ok(mut last) = shared.last_ok.lock() {
                        *last = Instant::now();
                    }
                }
                std::thread::sleep(interval);
            }
        })?;
    Ok(health)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_probe_goes_stale_and_reports_why() {
        let healthy = spawn_probe("ok", Duration::from_millis(5), || Ok(())).unwrap();
        let failing = spawn_probe("bad", Duration::from_millis(5), || {
            Err("lockspace stopped".into())
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(healthy.since_last_ok() < failing.since_last_ok());
        assert_eq!(failing.last_error().as_deref(), Some("lockspace stopped"));
        assert_eq!(healthy.last_error(), None);
        healthy.stop();
        failing.stop();
    }
}
