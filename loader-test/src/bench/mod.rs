//! `bench`: libvirt's resume/pause cycle, timed per plugin, against a floor.
//!
//! One cycle is what libvirtd does on `virsh resume` then `virsh suspend`: New(0, uri) +
//! N×AddResource + Acquire(saved state, 0) + Free, then New(0, NULL) + N×AddResource +
//! Release(&state) + Free. The owner was registered first by libvirt's pre-exec child (a real
//! fork, as in `matrix`).
//!
//! The **floor** is the least any daemon-based plugin can do for that cycle: one unix-socket
//! round trip to a peer process that takes N raw OFD locks, and one round trip in which it drops
//! them (its files already open).
//!
//! Every (plugin, mode, pinning) runs in a worker process of its own, with its own daemon; the
//! coordinator drives all workers in interleaved rounds (a batch of cycles each, in rotating
//! order), so that load from elsewhere on the machine falls on every plugin alike. Pinned
//! workers and their daemons run on one CPU (as `taskset -c 0`); unpinned ones on all.
//!
//! `--suite` adds the figures against the real limits (issue 11): the IPC-inclusive floor and its
//! parts as more floor workers in the same rounds (`floor`), a boot storm of many domains
//! acquiring at once per plugin (`storm`), and file.so or dlm.so + lockmgrd holding many locks (`scale`).

mod args;
mod floor;
mod libvirtd;
mod pool;
mod render;
mod report;
mod run;
mod scale;
mod storm;
mod worker;

pub use args::{AFTER_HELP, BenchArgs, LONG_ABOUT};
pub use floor::{FloorArgs, floor_command};
pub use run::command;
pub use worker::{WorkerArgs, worker_command};
