//! `agent`: runs the owners of matrix cells on another machine.
//!
//! `lockmgr-loader-test agent --listen ADDR:PORT --plugin dlm=PATH` listens for matrix cells
//! (`matrix --remote-node ADDR:PORT`). Each connection is one cell: the agent starts a session
//! process of its own (`__agent-session`, in a process group of its own, with a scratch directory
//! of its own) that sets up the plugin's profile on this machine (for dlm: a `lockmgrd --backend
//! dlm` of this node), loads the plugin as libvirtd does, and then makes the calls of the cell's
//! remote owners as they come: register (a real fork of libvirt's pre-exec child, whose QEMU
//! stand-in keeps running here), acquire / release / inquire in fresh contexts, kill of a
//! stand-in, libvirtd and daemon restarts. One JSON object per line each way
//! ([`Request`](wire::Request), [`Reply`](wire::Reply)), over TCP with Nagle off.
//!
//! When the cell ends — `finish`, the connection closing, the cell being killed — the session
//! kills its stand-ins, deinits the plugin and stops its daemon; the agent then SIGKILLs whatever
//! is left in the session's process group and removes its scratch directory. The agent loads only
//! the plugins named on its command line, and starts only its own daemons: a client chooses
//! among them, it never names a program. It is a test tool: listen on a private network only.
//!
//! The parts: the command-line arguments here; the wire protocol in `wire`; the listener that
//! starts a session process per connection in `server`; the session that serves one cell in
//! `session`; the cell's side of the connection, [`RemoteNode`], in `remote`.

mod remote;
mod server;
mod session;
mod wire;

use std::path::PathBuf;

use crate::matrix::ToolArgs;

pub use remote::RemoteNode;
pub use server::command;
pub use session::session_command;
pub use wire::Setup;

/// Arguments of `agent`.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Where to listen for matrix cells (an address of a private test network).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: String,
    /// A plugin cells may ask for, PROFILE=PATH (the same path the cells use); repeatable.
    #[arg(long = "plugin", value_name = "PLUGIN", required = true)]
    pub plugins: Vec<String>,
    #[command(flatten)]
    pub tools: ToolArgs,
}

/// Arguments of `__agent-session`.
#[derive(clap::Args, Debug)]
pub struct SessionArgs {
    #[arg(long)]
    scratch: PathBuf,
    #[arg(long = "plugin")]
    plugins: Vec<String>,
    #[command(flatten)]
    tools: ToolArgs,
}
