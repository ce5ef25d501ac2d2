//! The lock table on disk: `<state_dir>/locks.json`, the whole table, replaced atomically
//! (write, rename), and `<state_dir>/locks.journal`, one line per change since: a request appends a
//! few hundred bytes however large the table (10,000 locks are ~2 MB), and the whole table is
//! written again only when the journal has grown as large.
//!
//! A record is written before anything that depends on it (the reply, the DLM request) and is
//! never synced: what the table records lives no longer than this boot of the host. A daemon
//! crash leaves the page cache, so the next daemon reads every record written; a host crash
//! takes the domains (their QEMUs) and the DLM locks (a rebooted node's locks are purged by the
//! other nodes' recovery) with it, so a table written before the host's last boot describes
//! nothing that still exists. The daemon keeps the boot it writes for in `<state_dir>/boot_id`
//! (synced, once per start) and sets aside a table from an earlier boot, whatever a power cut
//! left of it. No request ever waits for the disk to sync, so a stalled disk cannot delay one.
//!
//! The journal's first line names the snapshot it continues (`{"journal":N}`, the snapshot's
//! `journal` field): the whole table is written with the next number before a new journal is
//! started, so a crash in between leaves an older journal, which is ignored (the snapshot has
//! all of it). A last line cut short by a crash is ignored too: its request was never answered
//! and no DLM call followed it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use lockmgr_proto::Recorded;

use crate::sys;
use crate::table::{JournalRecord, SNAPSHOT_FORMAT, Snapshot, SnapshotView};

/// The journal may grow to this size, or to the size of the whole table if larger, before the
/// table is written whole again.
const JOURNAL_MIN_LIMIT: u64 = 256 * 1024;

/// The boot of the host the table in the directory was written for.
const BOOT_ID_FILE: &str = "boot_id";

/// This boot of the host (a random UUID the kernel draws at boot).
fn current_boot_id() -> Result<String, StateError> {
    let path = "/proc/sys/kernel/random/boot_id";
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .map_err(|source| StateError::Io {
            path: path.into(),
            source,
        })
}

/// Where the table lives.
#[derive(Debug)]
pub struct StateFile {
    dir: PathBuf,
    path: PathBuf,
    journal_path: PathBuf,
    /// The number of the current journal (that of the last whole table written).
    journal_number: u64,
    /// The journal being appended to; `None` until the whole table is written.
    journal: Option<File>,
    journal_bytes: u64,
    table_bytes: u64,
    /// What was written since the daemon started.
    counts: Recorded,
}

/// A journal's first line.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalHeader {
    journal: u64,
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
        "{path} is not a usable lockmgrd state file: {why}. Nothing was changed; move locks.json \
         and locks.journal aside (after checking that no domain relies on their locks) to start \
         with an empty table"
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
    pub fn in_claimed_dir(dir: &Path) -> Self {
        StateFile {
            dir: dir.to_owned(),
            path: dir.join("locks.json"),
            journal_path: dir.join("locks.journal"),
            journal_number: 0,
            journal: None,
            journal_bytes: 0,
            table_bytes: 0,
            counts: Recorded::default(),
        }
    }

    /// What was written since the daemon started.
    pub fn counts(&self) -> Recorded {
        self.counts
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the table a previous daemon left, if any; refuses anything it cannot trust. A table
    /// written before the host's last boot is set aside first (see the module's documentation).
    pub fn load(&mut self, backend: &str) -> Result<Option<Snapshot>, StateError> {
        self.claim_boot(&current_boot_id()?)?;
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
        let mut snapshot = snapshot;
        self.replay_journal(&mut snapshot)?;
        // The next whole table gets a higher number than any journal on disk.
        self.journal_number = snapshot.journal;
        snapshot.check().map_err(|why| StateError::Corrupt {
            path: shown,
            why: format!("inconsistent lock table: {why}"),
        })?;
        Ok(Some(snapshot))
    }

    /// Sets aside the table of an earlier boot of this host (renamed `*.earlier-boot`), then
    /// records `boot` as the boot this table is written for. A state directory without a
    /// `boot_id` (an older lockmgrd's) is trusted: it was written in this boot or holds only
    /// domains that are gone.
    fn claim_boot(&self, boot: &str) -> Result<(), StateError> {
        let path = self.dir.join(BOOT_ID_FILE);
        let io = |source| StateError::Io {
            path: path.display().to_string(),
            source,
        };
        let recorded = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => return Err(io(err)),
        };
        if recorded.as_deref() == Some(boot) {
            return Ok(());
        }
        if let Some(earlier) = &recorded {
            for file in [&self.path, &self.journal_path] {
                let aside = file.with_extension(format!(
                    "{}.earlier-boot",
                    file.extension()
                        .and_then(|e| e.to_str())
                        .unwrap_or_default()
                ));
                match std::fs::rename(file, &aside) {
                    Ok(()) => crate::log(&format!(
                        "{} was written before this host's last boot (boot {earlier}, now {boot}): \
                         its domains and DLM locks ended with that boot; moved to {}",
                        file.display(),
                        aside.display()
                    )),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(StateError::Io {
                            path: file.display().to_string(),
                            source,
                        });
                    }
                }
            }
        }
        // Synced before any record of this boot: a power cut must not leave a table of this
        // boot with the boot id of an earlier one.
        let tmp = self.dir.join(format!("{BOOT_ID_FILE}.tmp"));
        let mut file = File::create(&tmp).map_err(io)?;
        file.write_all(format!("{boot}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        sys::fsync_dir(&self.dir).map_err(io)
    }

    /// Applies the journal that continues `snapshot`, if there is one.
    fn replay_journal(&self, snapshot: &mut Snapshot) -> Result<(), StateError> {
        let shown = self.journal_path.display().to_string();
        let text = match std::fs::read(&self.journal_path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(StateError::Io {
                    path: shown,
                    source,
                });
            }
        };
        let corrupt = |line: usize, why: String| StateError::Corrupt {
            path: shown.clone(),
            why: format!("line {line}: {why}"),
        };
        let complete = text.ends_with(b"\n");
        let lines: Vec<&[u8]> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let Some(first) = lines.first() else {
            return Ok(());
        };
        let header: JournalHeader = match serde_json::from_slice(first) {
            Ok(header) => header,
            // A header cut short: the journal had just been started, with nothing in it.
            Err(_) if lines.len() == 1 && !complete => return Ok(()),
            Err(e) => return Err(corrupt(1, e.to_string())),
        };
        if header.journal != snapshot.journal {
            // An older journal: the snapshot was written after it and holds all of it.
            return Ok(());
        }
        let mut owners: BTreeMap<String, _> = std::mem::take(&mut snapshot.owners)
            .into_iter()
            .map(|o| (o.info.uuid.clone(), o))
            .collect();
        let mut locks = BTreeMap::new();
        for lock in std::mem::take(&mut snapshot.locks) {
            let target = lock.target.clone().ok_or_else(|| StateError::Corrupt {
                path: self.path.display().to_string(),
                why: format!(
                    "{} has no target, yet a journal continues the table",
                    lock.spec.describe()
                ),
            })?;
            locks.insert(target, lock);
        }
        for (index, line) in lines.iter().enumerate().skip(1) {
            let record: JournalRecord = match serde_json::from_slice(line) {
                Ok(record) => record,
                // The last line cut short by a crash: never answered, no DLM call followed it.
                Err(_) if index == lines.len() - 1 && !complete => break,
                Err(e) => return Err(corrupt(index + 1, e.to_string())),
            };
            for (uuid, owner) in record.owners {
                match owner {
                    Some(owner) => owners.insert(uuid, owner),
                    None => owners.remove(&uuid),
                };
            }
            for (target, lock) in record.locks {
                match lock {
                    Some(lock) => locks.insert(target, lock),
                    None => locks.remove(&target),
                };
            }
            snapshot.unsettled = record.unsettled;
        }
        snapshot.owners = owners.into_values().collect();
        snapshot.locks = locks.into_values().collect();
        Ok(())
    }

    /// Whether the next save must write the whole table: at start, after a failed write, and
    /// when the journal has grown as large as the table.
    pub fn wants_whole_table(&self) -> bool {
        self.journal.is_none() || self.journal_bytes > self.table_bytes.max(JOURNAL_MIN_LIMIT)
    }

    /// Appends `record` to the journal. On failure the journal is abandoned: the next save
    /// writes the whole table.
    pub fn append(&mut self, record: &JournalRecord) -> Result<(), StateError> {
        let shown = self.journal_path.display().to_string();
        let io = |source| StateError::Io {
            path: shown.clone(),
            source,
        };
        let Some(journal) = self.journal.as_mut() else {
            return Err(io(std::io::Error::other("no journal open")));
        };
        let mut line = serde_json::to_vec(record).map_err(|e| io(std::io::Error::other(e)))?;
        line.push(b'\n');
        if let Err(err) = journal.write_all(&line) {
            self.journal = None;
            return Err(io(err));
        }
        self.journal_bytes += line.len() as u64;
        self.counts.records += 1;
        Ok(())
    }

    /// The whole table as the next [`StateFile::save`] writes it: `snapshot`, continued by the
    /// next journal.
    pub fn encode(&self, mut snapshot: SnapshotView<'_>) -> Result<Vec<u8>, StateError> {
        snapshot.journal = self.journal_number + 1;
        serde_json::to_vec(&snapshot).map_err(|e| StateError::Io {
            path: self.path.display().to_string(),
            source: std::io::Error::other(e),
        })
    }

    /// Replaces the file with `body` (from [`StateFile::encode`]), then starts a new journal
    /// after it.
    pub fn save(&mut self, body: &[u8]) -> Result<(), StateError> {
        self.journal = None;
        let number = self.journal_number + 1;
        let tmp = self.dir.join("locks.json.tmp");
        let io = |source| StateError::Io {
            path: tmp.display().to_string(),
            source,
        };
        std::fs::write(&tmp, body).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(|source| StateError::Io {
            path: self.path.display().to_string(),
            source,
        })?;
        self.journal_number = number;
        self.table_bytes = body.len() as u64;
        self.counts.whole_tables += 1;
        self.start_journal()
    }

    /// A new, empty journal continuing the table just written (number `journal_number`).
    fn start_journal(&mut self) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.journal_path.display().to_string(),
            source,
        };
        let mut header = serde_json::to_vec(&JournalHeader {
            journal: self.journal_number,
        })
        .map_err(|e| io(std::io::Error::other(e)))?;
        header.push(b'\n');
        let mut journal = File::create(&self.journal_path).map_err(io)?;
        journal.write_all(&header).map_err(io)?;
        self.journal_bytes = header.len() as u64;
        self.journal = Some(journal);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use lockmgr_proto::{FailureAction, Mode, OwnerInfo, ResourceKind, ResourceSpec};

    use super::*;
    use crate::table::{SnapshotLock, SnapshotOwner, SnapshotUnsettled};

    fn owner(n: u8) -> SnapshotOwner {
        SnapshotOwner {
            info: OwnerInfo {
                uuid: format!("00000000-0000-4000-8000-0000000000{n:02x}"),
                name: format!("vm{n}"),
                id: u32::from(n),
                pid: 1000 + u32::from(n),
                uri: None,
            },
            start_time: 7,
            action: FailureAction::Poweroff,
        }
    }

    fn lock(name: &str, holder: u8) -> (String, Option<SnapshotLock>) {
        let spec = ResourceSpec {
            kind: ResourceKind::Disk,
            name: name.into(),
            mode: Mode::Exclusive,
        };
        let lock = SnapshotLock {
            target: Some(format!("t:{name}")),
            spec,
            mode: Mode::Exclusive,
            holders: vec![owner(holder).info.uuid],
            reclaim_order: None,
        };
        (format!("t:{name}"), Some(lock))
    }

    fn record(owners: &[u8], locks: Vec<(String, Option<SnapshotLock>)>) -> String {
        let record = JournalRecord {
            owners: owners
                .iter()
                .map(|n| (owner(*n).info.uuid, Some(owner(*n))))
                .collect(),
            locks,
            unsettled: Vec::<SnapshotUnsettled>::new(),
        };
        serde_json::to_string(&record).unwrap()
    }

    /// A state dir with a whole table (owner 1 holding /a) continued by journal `number`.
    fn state(number: u64, journal: &str) -> (tempfile::TempDir, StateFile) {
        let dir = tempfile::tempdir().unwrap();
        let (_, a) = lock("/a", 1);
        let snapshot = Snapshot {
            format: SNAPSHOT_FORMAT,
            backend: "file".into(),
            owners: vec![owner(1)],
            locks: vec![a.unwrap()],
            unsettled: Vec::new(),
            journal: 1,
        };
        std::fs::write(
            dir.path().join("locks.json"),
            serde_json::to_vec(&snapshot).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("locks.journal"),
            format!("{{\"journal\":{number}}}\n{journal}"),
        )
        .unwrap();
        let store = StateFile::in_claimed_dir(dir.path());
        (dir, store)
    }

    fn held(snapshot: &Snapshot) -> Vec<String> {
        snapshot.locks.iter().map(|l| l.spec.name.clone()).collect()
    }

    #[test]
    fn the_journal_is_replayed_in_order_onto_the_table() {
        let journal = format!(
            "{}\n{}\n",
            record(&[2], vec![lock("/b", 2)]),
            record(&[], vec![("t:/a".into(), None)]),
        );
        let (_dir, mut store) = state(1, &journal);
        let snapshot = store.load("file").unwrap().unwrap();
        assert_eq!(held(&snapshot), ["/b"]);
        assert_eq!(snapshot.owners.len(), 2);
    }

    #[test]
    fn a_last_line_cut_short_is_ignored_and_any_other_bad_line_refused() {
        let cut = record(&[2], vec![lock("/b", 2)]);
        let torn = format!("{}\n{}", record(&[], vec![]), &cut[..cut.len() / 2]);
        let (_dir, mut store) = state(1, &torn);
        assert_eq!(held(&store.load("file").unwrap().unwrap()), ["/a"]);

        let bad = format!("{{oops\n{}\n", record(&[], vec![]));
        let (_dir, mut store) = state(1, &bad);
        let err = store.load("file").unwrap_err().to_string();
        assert!(
            err.contains("locks.journal") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn an_older_journal_is_already_in_the_table() {
        let journal = format!("{}\n", record(&[], vec![("t:/a".into(), None)]));
        let (_dir, mut store) = state(0, &journal);
        assert_eq!(held(&store.load("file").unwrap().unwrap()), ["/a"]);
    }

    #[test]
    fn a_table_of_an_earlier_boot_is_set_aside_whatever_is_left_of_it() {
        // A power cut mid-write: torn files, from a boot that has ended.
        let (dir, mut store) = state(1, "{\"owners\":{\"00");
        std::fs::write(dir.path().join("locks.json"), b"{\"format\":2,\"ba\0\0\0").unwrap();
        std::fs::write(
            dir.path().join(BOOT_ID_FILE),
            "00000000-0000-4000-8000-000000000000\n",
        )
        .unwrap();
        assert!(store.load("file").unwrap().is_none());
        let now = current_boot_id().unwrap();
        let recorded = std::fs::read_to_string(dir.path().join(BOOT_ID_FILE)).unwrap();
        assert_eq!(recorded.trim(), now);
        for aside in ["locks.json.earlier-boot", "locks.journal.earlier-boot"] {
            assert!(dir.path().join(aside).exists(), "{aside}");
        }
        assert!(!dir.path().join("locks.json").exists());

        // The same files in this boot are refused, naming the file.
        std::fs::rename(
            dir.path().join("locks.json.earlier-boot"),
            dir.path().join("locks.json"),
        )
        .unwrap();
        let err = store.load("file").unwrap_err().to_string();
        assert!(err.contains("locks.json"), "{err}");
    }

    #[test]
    fn a_table_of_this_boot_or_of_an_older_daemon_is_read() {
        let journal = format!("{}\n", record(&[2], vec![lock("/b", 2)]));
        let (_dir, mut store) = state(1, &journal);
        // No boot_id: an older lockmgrd's directory.
        assert_eq!(held(&store.load("file").unwrap().unwrap()), ["/a", "/b"]);
        // Now recorded as this boot's.
        assert_eq!(held(&store.load("file").unwrap().unwrap()), ["/a", "/b"]);
    }

    #[test]
    fn a_journal_that_breaks_the_table_is_refused() {
        // A lock held by a domain the journal never added.
        let journal = format!("{}\n", record(&[], vec![lock("/b", 9)]));
        let (_dir, mut store) = state(1, &journal);
        let err = store.load("file").unwrap_err().to_string();
        assert!(err.contains("not in the owner list"), "{err}");
    }
}
