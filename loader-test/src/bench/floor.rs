//! The reference floor: `__bench-floor`, a peer that takes and drops N raw OFD locks per round
//! trip, the least any daemon-based plugin can do for one cycle.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use crate::harness_sys;

/// Arguments of `__bench-floor`.
#[derive(clap::Args, Debug)]
pub struct FloorArgs {
    #[arg(long)]
    socket: PathBuf,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    files: usize,
}

/// What the built-in floor does per cycle.
pub(super) const BUILTIN_FLOOR: &str =
    "2 unix-socket round trips to a peer that takes N OFD locks, then drops them";

/// `__bench-floor`: accepts one connection; `L n` locks the first n files (OFD write lock on
/// byte 0), `U n` unlocks them; each answered with one byte.
pub fn floor_command(args: &FloorArgs) -> u8 {
    match floor_serve(args) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("lockmgr-loader-test __bench-floor: {err}");
            crate::EXIT_FAIL
        }
    }
}

fn floor_serve(args: &FloorArgs) -> Result<(), String> {
    let mut files = Vec::with_capacity(args.files);
    for i in 0..args.files {
        let path = args.dir.join(format!("floor-{i:03}.img"));
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        files.push(file);
    }
    let _ = std::fs::remove_file(&args.socket);
    let listener =
        UnixListener::bind(&args.socket).map_err(|e| format!("{}: {e}", args.socket.display()))?;
    let (mut stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    let mut request = [0u8; 3];
    loop {
        if stream.read_exact(&mut request).is_err() {
            return Ok(());
        }
        let n = usize::from(u16::from_le_bytes([request[1], request[2]])).min(files.len());
        let mut ok = true;
        for file in &files[..n] {
            let done = if request[0] == b'L' {
                harness_sys::ofd_lock(file.as_fd(), true)
            } else {
                harness_sys::ofd_unlock(file.as_fd()).map(|()| true)
            };
            ok &= done.unwrap_or(false);
        }
        stream
            .write_all(if ok { b"k" } else { b"e" })
            .map_err(|e| format!("reply: {e}"))?;
    }
}
