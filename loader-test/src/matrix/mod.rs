//! `matrix`: every conformance scenario against every plugin, one table.
//!
//! Each scenario × plugin cell runs in a subprocess of its own (`__matrix-cell`), in a process
//! group of its own: the cell sets up the plugin's daemon (a private `/run` for virtlockd),
//! replays the scenario's steps with libvirt's call shapes, and streams one JSON event per step.
//! A plugin that crashes or hangs is a ✗ with the step it happened in; whatever the cell left
//! behind (the QEMU stand-ins, its daemon) is killed by process group, and its scratch directory
//! is removed.
//!
//! With `--remote-node`, the cells of cluster-wide plugins (dlm) put every second owner (b, d, …)
//! on another machine: their calls are made there by `lockmgr-loader-test agent`, with a daemon
//! of that machine, while a, c, … stay here (see [`crate::agent`]).

mod args;
mod cell;
mod render;
mod report;
mod run;
mod sanlock;

pub use args::{AFTER_HELP, CellCliArgs, LONG_ABOUT, MatrixArgs, ToolArgs, cell_command, command};
pub use sanlock::{SanlockJoinArgs, sanlock_join_command};
