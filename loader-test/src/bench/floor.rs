//! The reference floor: `__bench-floor`, a peer that takes and drops N raw OFD locks per round
//! trip, the least any daemon-based plugin can do for one cycle.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use lockmgr_proto::{
    FailureAction, OwnerInfo, PROTOCOL_VERSION, Reply, ReplyFrame, Request, RequestFrame,
};
use serde::{Deserialize, Serialize};

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
    /// Speak lockmgrd's framing (4-byte length + JSON request / reply) instead of 3 bytes out,
    /// one back.
    #[arg(long)]
    framed: bool,
}

/// Which floor a floor worker measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FloorKind {
    /// Today's floor (`floor`): 2 round trips of 3 bytes out, 1 back; the peer takes N OFD
    /// locks, then drops them.
    Classic,
    /// The IPC-inclusive floor (`ipc-floor`): 2 round trips of framed messages shaped like the
    /// plugin's Acquire / Release to lockmgrd and its Ok reply (4-byte length + JSON, encoded and
    /// decoded with lockmgr-proto on both sides); the peer takes N OFD locks in the first, drops
    /// them in the second.
    Ipc,
    /// Its first part (`ofd-raw`): N OFD lock + N unlock on open files in one process, no IPC.
    OfdRaw,
    /// Its second part (`2rtt`): the same 2 framed round trips, the peer locking nothing.
    Rtt,
}

impl FloorKind {
    /// The series label.
    pub fn label(self) -> &'static str {
        match self {
            FloorKind::Classic => "floor",
            FloorKind::Ipc => "ipc-floor",
            FloorKind::OfdRaw => "ofd-raw",
            FloorKind::Rtt => "2rtt",
        }
    }

    /// What it measures, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            FloorKind::Classic => BUILTIN_FLOOR,
            FloorKind::Ipc => IPC_FLOOR,
            FloorKind::OfdRaw => {
                "N OFD write locks (F_OFD_SETLK) then N unlocks on open files, one process, no IPC"
            }
            FloorKind::Rtt => {
                "2 framed unix-socket round trips (Acquire / Release shape, Ok reply), the peer locking nothing"
            }
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            FloorKind::Classic => "classic",
            FloorKind::Ipc => "ipc",
            FloorKind::OfdRaw => "ofd-raw",
            FloorKind::Rtt => "rtt",
        }
    }
}

/// What the IPC-inclusive floor does per cycle.
pub(super) const IPC_FLOOR: &str = "2 framed unix-socket round trips to a peer process (lockmgrd's framing: 4-byte length + \
     JSON Acquire / Release request, JSON Ok reply), the peer taking N OFD locks in the first, \
     dropping them in the second";

/// The request of a framed round trip: Acquire (lock) or Release (unlock) of an owner whose
/// `id` carries N (the peer's files are already open; the message stays small, as the
/// issue's floor wants: its size does not grow with N).
fn framed_request(lock: bool, n: u32) -> Request {
    let owner = OwnerInfo {
        uuid: "6c6f636b-6d67-4072-8265-6e6368000001".into(),
        name: "bench-ipc-floor".into(),
        id: n,
        pid: std::process::id(),
        uri: Some("qemu:///system".into()),
    };
    if lock {
        Request::Acquire {
            owner,
            resources: Vec::new(),
            action: FailureAction::Default,
            state: None,
        }
    } else {
        Request::Release {
            owner,
            resources: Vec::new(),
        }
    }
}

fn read_frame(stream: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > lockmgr_proto::MAX_FRAME {
        return Err(std::io::Error::other(format!("frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok(body)
}

/// One framed round trip of the IPC-inclusive floor, client side: encode, send, read, decode.
pub(super) fn framed_round_trip(stream: &mut UnixStream, lock: bool, n: u32) -> Result<(), String> {
    let frame = lockmgr_proto::encode(&RequestFrame {
        version: PROTOCOL_VERSION,
        request: framed_request(lock, n),
    })
    .map_err(|e| e.to_string())?;
    stream
        .write_all(&frame)
        .map_err(|e| format!("floor request: {e}"))?;
    let body = read_frame(stream).map_err(|e| format!("floor reply: {e}"))?;
    let reply: ReplyFrame = lockmgr_proto::decode(&body).map_err(|e| e.to_string())?;
    match reply.reply {
        Reply::Ok { .. } => Ok(()),
        other => Err(format!("the floor's peer answered {other:?}")),
    }
}

/// `ofd-raw`: N OFD write locks then N unlocks on already open files, in this process.
pub(super) fn ofd_raw_cycle(files: &[std::fs::File]) -> Result<(), String> {
    for file in files {
        if !harness_sys::ofd_lock(file.as_fd(), true).map_err(|e| format!("OFD lock: {e}"))? {
            return Err("OFD lock refused".into());
        }
    }
    for file in files {
        harness_sys::ofd_unlock(file.as_fd()).map_err(|e| format!("OFD unlock: {e}"))?;
    }
    Ok(())
}

/// Opens (creating) `floor-000.img`… in `dir`.
pub(super) fn open_floor_files(
    dir: &std::path::Path,
    n: usize,
) -> Result<Vec<std::fs::File>, String> {
    (0..n)
        .map(|i| {
            let path = dir.join(format!("floor-{i:03}.img"));
            std::fs::File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))
        })
        .collect()
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
    let files = open_floor_files(&args.dir, args.files)?;
    let _ = std::fs::remove_file(&args.socket);
    let listener =
        UnixListener::bind(&args.socket).map_err(|e| format!("{}: {e}", args.socket.display()))?;
    let (mut stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    if args.framed {
        return serve_framed(&mut stream, &files);
    }
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

/// The framed peer: decodes each request as lockmgrd does (strictly, into a `RequestFrame`),
/// takes or drops the first `owner.id` OFD locks, answers an encoded `Ok` reply.
fn serve_framed(stream: &mut UnixStream, files: &[std::fs::File]) -> Result<(), String> {
    loop {
        let Ok(body) = read_frame(stream) else {
            return Ok(());
        };
        let frame: RequestFrame = lockmgr_proto::decode(&body).map_err(|e| e.to_string())?;
        let (lock, n) = match &frame.request {
            Request::Acquire { owner, .. } => (true, owner.id),
            Request::Release { owner, .. } => (false, owner.id),
            other => return Err(format!("unexpected request {other:?}")),
        };
        let n = usize::try_from(n).unwrap_or(usize::MAX).min(files.len());
        let mut ok = true;
        for file in &files[..n] {
            let done = if lock {
                harness_sys::ofd_lock(file.as_fd(), true)
            } else {
                harness_sys::ofd_unlock(file.as_fd()).map(|()| true)
            };
            ok &= done.unwrap_or(false);
        }
        let reply = if ok {
            Reply::Ok { state: None }
        } else {
            Reply::Error {
                kind: lockmgr_proto::ErrorKind::Internal,
                message: "OFD lock failed".into(),
            }
        };
        let out = lockmgr_proto::encode(&ReplyFrame {
            version: PROTOCOL_VERSION,
            reply,
        })
        .map_err(|e| e.to_string())?;
        stream.write_all(&out).map_err(|e| format!("reply: {e}"))?;
    }
}
