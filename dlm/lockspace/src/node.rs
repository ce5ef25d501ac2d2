//! Facts about the local cluster node that dlm_controld writes into configfs.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where dlm_controld configures dlm.ko.
pub const CONFIGFS_CLUSTER: &str = "/sys/kernel/config/dlm/cluster";

/// This node's DLM node id: the `comms/<nodeid>` entry under [`CONFIGFS_CLUSTER`] whose `local`
/// file reads 1 (what lvmlockd does). Needed for [`Lockspace::purge`](crate::Lockspace::purge).
pub fn local_node_id() -> Result<u32> {
    local_node_id_in(Path::new(CONFIGFS_CLUSTER))
}

/// [`local_node_id`] under another configfs cluster directory (tests, chroots).
pub fn local_node_id_in(cluster_dir: &Path) -> Result<u32> {
    let comms = cluster_dir.join("comms");
    let entries = fs::read_dir(&comms).map_err(|err| Error::NodeId {
        path: comms.clone(),
        reason: format!("{err} (is dlm_controld running and the cluster configured?)"),
    })?;
    let mut local = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| Error::NodeId {
            path: comms.clone(),
            reason: err.to_string(),
        })?;
        let local_file = entry.path().join("local");
        let flag = match fs::read_to_string(&local_file) {
            Ok(text) => text,
            Err(err) => {
                return Err(Error::NodeId {
                    path: local_file,
                    reason: err.to_string(),
                });
            }
        };
        if flag.trim() == "1" {
            local.push(entry.path());
        }
    }
    match local.as_slice() {
        [dir] => node_id_of(dir),
        [] => Err(Error::NodeId {
            path: comms,
            reason: "no comms entry is marked local".to_owned(),
        }),
        many => Err(Error::NodeId {
            path: comms,
            reason: format!("{} comms entries are marked local: {:?}", many.len(), many),
        }),
    }
}

/// The node id of a `comms/<nodeid>` entry: its `nodeid` file, else the directory name.
fn node_id_of(dir: &Path) -> Result<u32> {
    let nodeid_file = dir.join("nodeid");
    let (text, path): (String, PathBuf) = match fs::read_to_string(&nodeid_file) {
        Ok(text) => (text, nodeid_file),
        Err(_) => (
            dir.file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
            dir.to_owned(),
        ),
    };
    text.trim().parse().map_err(|_| Error::NodeId {
        path,
        reason: format!("{:?} is not a node id", text.trim()),
    })
}

/// The cluster name dlm_controld configured (`cluster_name` under [`CONFIGFS_CLUSTER`]); its
/// presence means the cluster is ready for lockspaces.
pub fn cluster_name() -> Result<String> {
    let path = Path::new(CONFIGFS_CLUSTER).join("cluster_name");
    fs::read_to_string(&path)
        .map(|name| name.trim().to_owned())
        .map_err(|err| Error::NodeId {
            path,
            reason: err.to_string(),
        })
}
