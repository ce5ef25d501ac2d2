//! Crash points for tests: with the `failpoints` feature, `LOCKMGRD_FAILPOINT=NAME[,NAME…]`
//! makes the daemon abort at those points, as a crash would stop it, so tests can prove that a
//! restart neither leaks nor loses a lock whatever step the crash interrupted. In-process tests
//! arm a point on their thread instead and get a panic. Without the feature every point is a
//! no-op.

/// Every point, in the order a request meets them.
pub const POINTS: &[&str] = &[
    "acquire:intent-recorded",
    "acquire:locked-some",
    "acquire:locked",
    "acquire:committed",
    "release:recorded",
    "release:unlocked-some",
    "release:unlocked",
    "owner-death:unlocked-some",
    "owner-death:unlocked",
    "restore:reclaimed-some",
    "restore:reclaimed",
];

#[cfg(feature = "failpoints")]
mod armed {
    use std::cell::RefCell;

    thread_local! {
        static PANIC_AT: RefCell<Option<&'static str>> = const { RefCell::new(None) };
    }

    /// Makes `hit(name)` panic on this thread (until [`disarm`]).
    pub fn panic_at(name: &'static str) {
        assert!(super::POINTS.contains(&name), "unknown failpoint {name}");
        PANIC_AT.with(|p| *p.borrow_mut() = Some(name));
    }

    /// Disarms this thread's point.
    pub fn disarm() {
        PANIC_AT.with(|p| *p.borrow_mut() = None);
    }

    /// A crash point.
    pub fn hit(name: &'static str) {
        if PANIC_AT.with(|p| *p.borrow() == Some(name)) {
            disarm();
            panic!("failpoint {name}");
        }
        if std::env::var("LOCKMGRD_FAILPOINT").is_ok_and(|v| v.split(',').any(|f| f == name)) {
            crate::log(&format!("failpoint {name}: aborting"));
            std::process::abort();
        }
    }
}

#[cfg(feature = "failpoints")]
pub use armed::{disarm, hit, panic_at};

/// A crash point (a no-op without the `failpoints` feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &'static str) {}
