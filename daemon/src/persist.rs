//! The lock table on disk: `<state_dir>/locks.json`, replaced atomically (write + rename), and
//! synced when the backend's locks outlive the daemon.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::sys;
use crate::table::{SNAPSHOT_FORMAT, Snapshot, SnapshotView};

/// Where the table lives.
#[derive(Debug)]
pub struct StateFile {
    dir: PathBuf,
    path: PathBuf,
    durable: bool,
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An I/O failure, naming the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Content that is not a lock table this daemon wrote.
    #[error(
        "{path} is not a usable lockmgrd state file: {why}. Nothing was changed; move the file \
         aside (after checking that no domain relies on its locks) to start with an empty table"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
}

impl StateFile {
    /// The state file in `dir`, which [`crate::instance::Instance::claim`] has created (0700)
    /// and locked: the one place that makes the state directory.
    pub fn in_claimed_dir(dir: &Path, durable: bool) -> Self {
        StateFile {
            dir: dir.to_owned(),
            path: dir.join("locks.json"),
            durable,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the table a previous daemon left, if any; refuses anything it cannot trust.
    pub fn load(&self, backend: &str) -> Result<Option<Snapshot>, StateError> {
        let shown = self.path.display().to_string();
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path: shown,
                    source,
                });
            }
        };
        let snapshot: Snapshot =
            serde_json::from_slice(&text).map_err(|e| StateError::Corrupt {
                path: shown.clone(),
                why: e.to_string(),
            })?;
        if !(1..=SNAPSHOT_FORMAT).contains(&snapshot.format) {
            return Err(StateError::Corrupt {
                path: shown,
                why: format!(
                    "format {} (this daemon reads 1 to {SNAPSHOT_FORMAT})",
                    snapshot.format
                ),
            });
        }
        if snapshot.backend != backend {
            return Err(StateError::Corrupt {
                path: shown,
                why: format!(
                    "written by the '{}' backend, this daemon runs '{backend}'",
                    snapshot.backend
                ),
            });
        }
        snapshot.check().map_err(|why| StateError::Corrupt {
            path: shown,
            why: format!("inconsistent lock table: {why}"),
        })?;
        Ok(Some(snapshot))
    }

    /// Replaces the file with `snapshot`.
    pub fn save(&self, snapshot: &SnapshotView<'_>) -> Result<(), StateError> {
        let tmp = self.dir.join("locks.json.tmp");
        let io = |source| StateError::Io {
            path: tmp.display().to_string(),
            source,
        };
        let body = serde_json::to_vec(snapshot).map_err(|e| io(std::io::Error::other(e)))?;
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&body).map_err(io)?;
        if self.durable {
            file.sync_all().map_err(io)?;
        }
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(|source| StateError::Io {
            path: self.path.display().to_string(),
            source,
        })?;
        if self.durable {
            sys::fsync_dir(&self.dir).map_err(|source| StateError::Io {
                path: self.dir.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }
}
