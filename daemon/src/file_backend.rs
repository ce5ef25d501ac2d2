//! The file backend: an OFD lock on byte 0 of a lock file, or of the disk itself.
//!
//! Lock files are `<file_lockspace_dir>/<sha256 hex of the disk path>`, the names virtlockd
//! uses, so hosts running libvirt's lockd and hosts running lockmgr exclude each other on one
//! shared lockspace (OFD and POSIX record locks conflict). QEMU's own image locks use bytes
//! 100+ and 200+; byte 0 is libvirt's.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use lockmgr_proto::{Mode, ResourceKind, ResourceSpec};

use crate::backend::{Backend, BackendError, Target, UnlockFailed};
use crate::sys::{self, LockKind};

/// How many unlocked lock files stay open for reuse, at most (see [`FileBackend::idle_limit`]).
pub const MAX_IDLE_FILES: usize = 1024;

/// The file backend.
#[derive(Debug)]
pub struct FileBackend {
    lockspace_dir: Option<PathBuf>,
    /// Lock files of the lockspace kept open while unlocked: reopening one on every Acquire
    /// was most of a request's cost. Disks locked directly are never kept (an open fd would
    /// pin a deleted image's blocks).
    idle: HashMap<String, File>,
    /// The cache's bound: well below the process's file-descriptor limit, which held locks,
    /// clients and owners' pidfds share.
    max_idle: usize,
}

/// An open, locked file.
#[derive(Debug)]
pub struct FileLock {
    file: File,
}

impl FileBackend {
    /// A backend locking in `lockspace_dir`, or the disks themselves when `None`.
    pub fn new(lockspace_dir: Option<PathBuf>) -> Result<Self, BackendError> {
        if let Some(dir) = &lockspace_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                BackendError::Io(format!(
                    "cannot create file_lockspace_dir {}: {e}",
                    dir.display()
                ))
            })?;
        }
        Ok(FileBackend {
            lockspace_dir,
            idle: HashMap::new(),
            max_idle: MAX_IDLE_FILES,
        })
    }

    /// Bounds the cache of idle lock files to a quarter of `fd_limit` (the process's
    /// `RLIMIT_NOFILE`), and to [`MAX_IDLE_FILES`].
    pub fn idle_limit(mut self, fd_limit: u64) -> Self {
        self.max_idle = usize::try_from(fd_limit / 4)
            .unwrap_or(usize::MAX)
            .min(MAX_IDLE_FILES);
        self
    }

    /// How many idle lock files are open now.
    pub fn idle_files(&self) -> usize {
        self.idle.len()
    }

    /// `<file_lockspace_dir>/<the resource's hashed name>`.
    fn in_lockspace(&self, spec: &ResourceSpec) -> Result<PathBuf, BackendError> {
        let dir = self.lockspace_dir.as_ref().ok_or_else(|| {
            BackendError::Config(format!(
                "{} has no target path and no file_lockspace_dir is set",
                spec.describe()
            ))
        })?;
        Ok(dir.join(spec.hashed_name()))
    }

    /// Whether the target is a lock file we may create (as opposed to a disk or lease file
    /// that must already exist).
    fn created_by_us(&self, path: &Path) -> bool {
        self.lockspace_dir
            .as_deref()
            .is_some_and(|dir| path.parent() == Some(dir))
    }

    fn open(&mut self, path: &Path) -> Result<File, BackendError> {
        match self.open_once(path) {
            // Out of descriptors: the idle cache is the one thing here that can give some back.
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                    && !self.idle.is_empty() =>
            {
                crate::log(&format!(
                    "out of file descriptors opening {}: closing {} idle lock file(s)",
                    path.display(),
                    self.idle.len()
                ));
                self.idle.clear();
                self.open_once(path)
            }
            other => other,
        }
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                BackendError::Config(format!("cannot lock {}: it does not exist", path.display()))
            } else {
                BackendError::Io(format!("cannot open {} for locking: {e}", path.display()))
            }
        })
    }

    fn open_once(&self, path: &Path) -> std::io::Result<File> {
        let mut options = OpenOptions::new();
        // F_WRLCK needs a writable open; lock files are created private and never followed.
        options
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY);
        if self.created_by_us(path) {
            options
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NOFOLLOW);
        }
        options.open(path)
    }
}

/// Whether `path` still names the file open as `file` (same device and inode, not unlinked).
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => {
            open.dev() == named.dev() && open.ino() == named.ino() && open.nlink() > 0
        }
        _ => false,
    }
}

impl FileBackend {
    /// Whether the locked `file` is still the one `path` names. A lockspace file is never
    /// hard-linked, so an unlink or a rename over it leaves ours with no link: one fstat, no
    /// path walk. A disk locked directly gets the full device + inode comparison.
    fn still_named(&self, file: &File, path: &Path) -> bool {
        if self.created_by_us(path) {
            return file.metadata().is_ok_and(|m| m.nlink() > 0);
        }
        same_file(file, path)
    }

    fn keep_idle(&mut self, path: &Path, id: &str, file: File) {
        if self.created_by_us(path) && self.idle.len() < self.max_idle {
            self.idle.insert(id.to_owned(), file);
        }
    }
}

fn holder_description(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let comm = comm.trim();
            if comm.is_empty() {
                format!("process {pid} (on this host)")
            } else {
                format!("{comm} (pid {pid}, on this host)")
            }
        }
        None => {
            "another lock manager (an OFD lock: another lockmgrd, or a host sharing this lockspace)"
                .into()
        }
    }
}

impl Backend for FileBackend {
    type Handle = FileLock;

    fn name(&self) -> &'static str {
        "file"
    }

    fn resolve(&self, spec: &ResourceSpec) -> Result<Target, BackendError> {
        let path = match &spec.kind {
            ResourceKind::Disk => match &self.lockspace_dir {
                Some(_) => self.in_lockspace(spec)?,
                None => PathBuf::from(&spec.name),
            },
            ResourceKind::Lease {
                lockspace,
                path,
                offset,
            } => {
                if offset.is_some_and(|o| o != 0) {
                    return Err(BackendError::Config(format!(
                        "{}: offset must be zero for the file lock manager",
                        spec.describe()
                    )));
                }
                match path {
                    // As lockd: the lease file <path>/<lockspace>/<key> must exist.
                    Some(dir) => {
                        let mut file = PathBuf::from(dir);
                        if let Some(lockspace) = lockspace {
                            file.push(lockspace);
                        }
                        file.push(&spec.name);
                        file
                    }
                    None => self.in_lockspace(spec)?,
                }
            }
        };
        if !path.is_absolute() {
            return Err(BackendError::Config(format!(
                "{}: {} is not an absolute path",
                spec.describe(),
                path.display()
            )));
        }
        Ok(Target {
            id: path.to_string_lossy().into_owned(),
        })
    }

    fn lock(
        &mut self,
        target: &Target,
        spec: &ResourceSpec,
        mode: Mode,
    ) -> Result<FileLock, BackendError> {
        let path = Path::new(&target.id);
        let kind = match mode {
            Mode::Exclusive => LockKind::Write,
            Mode::Shared => LockKind::Read,
        };
        // At most two tries: the second after the path turned out to name another file.
        for _ in 0..2 {
            let file = match self.idle.remove(&target.id) {
                Some(file) => file,
                None => self.open(path)?,
            };
            let locked = sys::ofd_try_lock(file.as_fd(), kind)
                .map_err(|e| BackendError::Io(format!("cannot lock {}: {e}", path.display())))?;
            if !locked {
                let holder = sys::ofd_conflicting_holder(file.as_fd(), kind)
                    .ok()
                    .flatten();
                self.keep_idle(path, &target.id, file);
                let by = holder.map_or_else(|| "someone else".into(), holder_description);
                let via = if target.id == spec.name {
                    String::new()
                } else {
                    format!(" (lock file {})", path.display())
                };
                return Err(BackendError::Busy(format!(
                    "{} is locked by {by}{via}",
                    spec.describe()
                )));
            }
            // Lock first, then check that the path still names the locked file: virtlockd
            // unlinks lock files it created, and an image may be replaced under its path.
            if self.still_named(&file, path) {
                return Ok(FileLock { file });
            }
            let _ = sys::ofd_unlock(file.as_fd());
        }
        Err(BackendError::Io(format!(
            "{} keeps being replaced while it is locked",
            path.display()
        )))
    }

    fn unlock(
        &mut self,
        target: &Target,
        _spec: &ResourceSpec,
        _mode: Mode,
        handle: FileLock,
    ) -> Result<(), UnlockFailed<FileLock>> {
        // Closing the only fd of the open file description would drop the lock too; unlocking
        // first makes a failure visible.
        if let Err(e) = sys::ofd_unlock(handle.file.as_fd()) {
            return Err(UnlockFailed {
                error: BackendError::Io(format!("cannot unlock {}: {e}", target.id)),
                handle,
            });
        }
        self.keep_idle(Path::new(&target.id), &target.id, handle.file);
        Ok(())
    }

    fn durable_state(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(path: &str, mode: Mode) -> ResourceSpec {
        ResourceSpec {
            kind: ResourceKind::Disk,
            name: path.into(),
            mode,
        }
    }

    #[test]
    fn lock_files_use_virtlockds_names() {
        let dir = tempfile::tempdir().unwrap();
        let backend = FileBackend::new(Some(dir.path().to_owned())).unwrap();
        let target = backend
            .resolve(&disk("/var/lib/libvirt/images/demo.img", Mode::Exclusive))
            .unwrap();
        let expected = dir.path().join(lockmgr_proto::sha256_hex(
            "/var/lib/libvirt/images/demo.img",
        ));
        assert_eq!(target.id, expected.to_string_lossy());
        assert_eq!(
            lockmgr_proto::sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn exclusive_excludes_and_shared_shares_across_open_file_descriptions() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = FileBackend::new(Some(dir.path().to_owned())).unwrap();
        let mut b = FileBackend::new(Some(dir.path().to_owned())).unwrap();
        let spec = disk("/images/x.img", Mode::Exclusive);
        let target = a.resolve(&spec).unwrap();
        let held = a.lock(&target, &spec, Mode::Exclusive).unwrap();
        let refused = b.lock(&target, &spec, Mode::Exclusive).unwrap_err();
        assert!(
            matches!(&refused, BackendError::Busy(m) if m.contains("disk /images/x.img is locked by")),
            "{refused:?}"
        );
        assert!(matches!(
            b.lock(&target, &spec, Mode::Shared),
            Err(BackendError::Busy(_))
        ));
        a.unlock(&target, &spec, Mode::Exclusive, held).unwrap();
        let shared_a = a.lock(&target, &spec, Mode::Shared).unwrap();
        let shared_b = b.lock(&target, &spec, Mode::Shared).unwrap();
        assert!(matches!(
            b.lock(&target, &spec, Mode::Exclusive),
            Err(BackendError::Busy(_))
        ));
        drop((shared_a, shared_b));
        let mode = std::fs::metadata(&target.id).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
    }

    #[test]
    fn a_lock_file_replaced_while_idle_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = FileBackend::new(Some(dir.path().to_owned())).unwrap();
        let mut b = FileBackend::new(Some(dir.path().to_owned())).unwrap();
        let spec = disk("/images/z.img", Mode::Exclusive);
        let target = a.resolve(&spec).unwrap();
        let held = a.lock(&target, &spec, Mode::Exclusive).unwrap();
        a.unlock(&target, &spec, Mode::Exclusive, held).unwrap();
        // virtlockd unlinks lock files it created; someone makes a new one and locks it.
        std::fs::remove_file(&target.id).unwrap();
        let other = b.lock(&target, &spec, Mode::Exclusive).unwrap();
        let refused = a.lock(&target, &spec, Mode::Exclusive);
        assert!(
            matches!(refused, Err(BackendError::Busy(_))),
            "the idle fd of the unlinked file must not be trusted: {refused:?}"
        );
        b.unlock(&target, &spec, Mode::Exclusive, other).unwrap();
        a.lock(&target, &spec, Mode::Exclusive).unwrap();
    }

    #[test]
    fn leases_follow_lockd_and_offsets_must_be_zero() {
        let dir = tempfile::tempdir().unwrap();
        let backend = FileBackend::new(None).unwrap();
        let lease = |path: Option<&str>, offset| ResourceSpec {
            kind: ResourceKind::Lease {
                lockspace: Some("ls".into()),
                path: path.map(Into::into),
                offset,
            },
            name: "key".into(),
            mode: Mode::Exclusive,
        };
        let root = dir.path().to_str().unwrap();
        assert_eq!(
            backend.resolve(&lease(Some(root), Some(0))).unwrap().id,
            format!("{root}/ls/key")
        );
        let offset = backend.resolve(&lease(Some(root), Some(512))).unwrap_err();
        assert!(offset.to_string().contains("offset must be zero"));
        let nowhere = backend.resolve(&lease(None, None)).unwrap_err();
        assert!(nowhere.to_string().contains("no file_lockspace_dir is set"));
        let mut backend = backend;
        let target = backend.resolve(&lease(Some(root), None)).unwrap();
        let missing = backend
            .lock(&target, &lease(Some(root), None), Mode::Exclusive)
            .unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
    }

    #[test]
    fn a_posix_lock_of_virtlockd_blocks_us() {
        let dir = tempfile::tempdir().unwrap();
        let mut backend = FileBackend::new(Some(dir.path().to_owned())).unwrap();
        let spec = disk("/images/y.img", Mode::Exclusive);
        let target = backend.resolve(&spec).unwrap();
        // A classic POSIX lock held by another process, as virtlockd takes them.
        let script = format!(
            "import fcntl,time,sys; f=open('{}','a+'); fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB, 1, 0); print('locked', flush=True); time.sleep(30)",
            target.id
        );
        let mut holder = std::process::Command::new("python3")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "locked");
        let refused = backend.lock(&target, &spec, Mode::Exclusive).unwrap_err();
        let _ = holder.kill();
        let _ = holder.wait();
        let message = refused.to_string();
        assert!(
            message.contains("python3 (pid"),
            "names the POSIX lock holder: {message}"
        );
    }
}
