//! One daemon per state directory and socket, established before anything is touched.
//!
//! A second `lockmgrd` on the same configuration (an operator, a unit restart race) must not
//! restore the table, take locks or apply lock-failure actions: it would find every lock held
//! by the first daemon and kill the domains holding them. So the very first thing a daemon does
//! is lock `<state_dir>/lockmgrd.lock`; then it binds its socket, refusing one another process
//! answers on.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::sys::{self, LockKind};

/// This daemon's claim on its state directory; held for the daemon's life.
#[derive(Debug)]
pub struct Instance {
    _lock: File,
    lock_path: PathBuf,
}

impl Instance {
    /// Creates `state_dir` (0700) and locks it; fails, naming the other daemon's pid, when
    /// another daemon holds it.
    pub fn claim(state_dir: &Path) -> Result<Instance, String> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| format!("cannot create state_dir {}: {e}", state_dir.display()))?;
        std::fs::set_permissions(
            state_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .map_err(|e| format!("cannot make {} private: {e}", state_dir.display()))?;
        let lock_path = state_dir.join("lockmgrd.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        let locked = sys::ofd_try_lock(file.as_fd(), LockKind::Write)
            .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
        if !locked {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let who = if pid.is_empty() {
                "another lockmgrd".to_owned()
            } else {
                format!("another lockmgrd (pid {pid})")
            };
            return Err(format!(
                "{who} already uses state_dir {}; nothing was touched",
                state_dir.display()
            ));
        }
        let record = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        record.map_err(|e| format!("cannot write {}: {e}", lock_path.display()))?;
        Ok(Instance {
            _lock: file,
            lock_path,
        })
    }

    /// The lock file.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }
}

/// Binds `path` (0600), refusing when another daemon already answers there.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "another lockmgrd is already serving {}; nothing was touched",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
    }
    // Created private from the start: no window in which others could connect.
    let old = sys::set_umask(0o177);
    let bound = UnixListener::bind(path);
    sys::set_umask(old);
    let listener = bound.map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_on_one_state_dir_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = Instance::claim(&state).unwrap();
        let refused = Instance::claim(&state).unwrap_err();
        assert!(
            refused.contains(&format!("another lockmgrd (pid {})", std::process::id()))
                && refused.contains("nothing was touched"),
            "{refused}"
        );
        drop(first);
        Instance::claim(&state).unwrap();
    }
}
