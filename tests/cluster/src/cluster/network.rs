//! The cluster's private network: a namespace with one bridge and a tap per node.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::error::Result;
use crate::host;

/// `10.99.0.N`.
pub fn node_address(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 0, u8::try_from(index).unwrap_or(u8::MAX))
}
/// Namespace, bridge and one tap per node; no uplink, no host address, no route.
pub(super) fn create_network(namespace: &str, nodes: usize) -> Result<()> {
    host::run(Command::new("ip").args(["netns", "add", namespace]))?;
    host::run(Command::new("ip").args(["-n", namespace, "link", "set", "lo", "up"]))?;
    host::run(Command::new("ip").args([
        "-n",
        namespace,
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "stp_state",
        "0",
        "forward_delay",
        "0",
    ]))?;
    host::run(Command::new("ip").args(["-n", namespace, "link", "set", "br0", "up"]))?;
    for index in 1..=nodes {
        let tap = format!("tap{index}");
        host::run(
            Command::new("ip").args(["-n", namespace, "tuntap", "add", "dev", &tap, "mode", "tap"]),
        )?;
        host::run(
            Command::new("ip").args(["-n", namespace, "link", "set", &tap, "master", "br0", "up"]),
        )?;
    }
    Ok(())
}
