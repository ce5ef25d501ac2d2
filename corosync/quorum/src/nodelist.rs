//! The node names of corosync.conf's `nodelist`, for messages that name a node by its id.

use std::collections::BTreeMap;

/// Where corosync reads its configuration.
pub const COROSYNC_CONF: &str = "/etc/corosync/corosync.conf";

/// The `name` of every `node { … }` of the `nodelist` section that has a `nodeid`, by node id.
/// Lenient: anything it does not understand is skipped (the names are information only).
pub fn node_names(corosync_conf: &str) -> BTreeMap<u32, String> {
    let mut names = BTreeMap::new();
    let mut depth = 0usize;
    let mut in_nodelist = false;
    let (mut id, mut name): (Option<u32>, Option<String>) = (None, None);
    for raw in corosync_conf.lines() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if let Some(section) = line.strip_suffix('{') {
            depth += 1;
            match (depth, section.trim()) {
                (1, "nodelist") => in_nodelist = true,
                (2, "node") if in_nodelist => (id, name) = (None, None),
                _ => {}
            }
            continue;
        }
        if line == "}" {
            if depth == 2 && in_nodelist {
                if let (Some(id), Some(name)) = (id.take(), name.take()) {
                    names.insert(id, name);
                }
            }
            if depth == 1 {
                in_nodelist = false;
            }
            depth = depth.saturating_sub(1);
            continue;
        }
        if depth != 2 || !in_nodelist {
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            match key.trim() {
                "nodeid" => id = value.trim().parse().ok(),
                "name" => name = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    names
}

/// The name of node `id` in [`COROSYNC_CONF`], if it has one.
pub fn node_name(id: u32) -> Option<String> {
    let text = std::fs::read_to_string(COROSYNC_CONF).ok()?;
    node_names(&text).remove(&id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_by_node_id() {
        let conf = "totem {\n    version: 2\n    cluster_name: c\n}\nquorum {\n    provider: corosync_votequorum\n}\n\
                    nodelist {\n    node {\n        name: node1\n        nodeid: 1 # first\n        ring0_addr: 10.0.0.1\n    }\n\
                    node {\n        ring0_addr: 10.0.0.2\n        nodeid: 2\n        name: node2\n    }\n\
                    node {\n        ring0_addr: 10.0.0.3\n    }\n}\n";
        let names = node_names(conf);
        assert_eq!(names.len(), 2);
        assert_eq!(names[&1], "node1");
        assert_eq!(names[&2], "node2");
    }

    #[test]
    fn a_name_outside_the_nodelist_is_not_a_node() {
        let conf = "totem {\n    interface {\n        name: eth0\n        nodeid: 9\n    }\n}\n";
        assert!(node_names(conf).is_empty());
    }
}
