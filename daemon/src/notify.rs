//! Readiness for systemd (`Type=notify`): one `READY=1` datagram to `$NOTIFY_SOCKET`, sent once
//! lockmgrd answers on its socket, so that a unit ordered after `lockmgrd.service` (libvirtd,
//! virtqemud) starts only when the plugin can reach the daemon.
//!
//! The protocol is `sd_notify(3)`'s: a datagram of `KEY=VALUE` lines to the `AF_UNIX` socket named
//! by `NOTIFY_SOCKET`, either a path or, with a leading `@`, an abstract address. No libsystemd:
//! std's `UnixDatagram` does both.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// The variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (e.g. `"READY=1\nSTATUS=serving"`) to the socket named by `$NOTIFY_SOCKET`.
/// `Ok(false)` when the variable is unset or empty (not started by systemd, or not as
/// `Type=notify`): nothing to do.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` to the notification socket `socket` (a path, or `@name` for an abstract one).
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let bytes = socket.as_bytes();
    let datagram = UnixDatagram::unbound()?;
    let sent = match bytes.first() {
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(&bytes[1..])?;
            datagram.send_to_addr(state.as_bytes(), &address)?
        }
        Some(b'/') => datagram.send_to(state.as_bytes(), socket)?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{NOTIFY_SOCKET}={} is neither an absolute path nor an abstract address (@name)",
                    socket.to_string_lossy()
                ),
            ));
        }
    };
    if sent == state.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", state.len()),
        ))
    }
}

/// Tells systemd that lockmgrd serves (`READY=1`, with the `STATUS=` line `systemctl status`
/// shows). Logs when the notification cannot be sent; the daemon serves anyway (systemd then
/// fails the start after its timeout and says why).
pub fn ready(status: &str) {
    let state = format!("READY=1\nSTATUS={status}");
    if let Err(error) = notify(&state) {
        crate::log(&format!(
            "cannot tell systemd that lockmgrd is ready ({NOTIFY_SOCKET}): {error}"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;
    use std::time::Duration;

    fn receive(receiver: &UnixDatagram) -> String {
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buffer = [0u8; 4096];
        let length = receiver.recv(&mut buffer).unwrap();
        String::from_utf8(buffer[..length].to_vec()).unwrap()
    }

    #[test]
    fn sends_one_datagram_to_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1\nSTATUS=serving /run/x.sock").unwrap();
        assert_eq!(receive(&receiver), "READY=1\nSTATUS=serving /run/x.sock");
    }

    #[test]
    fn sends_to_an_abstract_socket_named_with_an_at_sign() {
        let name = format!("lockmgrd-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        assert_eq!(receive(&receiver), "READY=1");
    }

    #[test]
    fn refuses_a_relative_name_and_reports_a_missing_socket() {
        let error = notify_to(OsStr::new("notify"), "READY=1").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        let dir = tempfile::tempdir().unwrap();
        let error = notify_to(dir.path().join("absent").as_os_str(), "READY=1").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn ready_sends_ready_and_status_to_notify_socket() {
        // The only test here that reads the environment; it sets the variable for this process,
        // so it runs the check in a child to leave the test process's environment alone.
        if std::env::var_os("LOCKMGRD_NOTIFY_CHILD").is_some() {
            ready("serving /run/lockmgr/file.sock");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "notify::tests::ready_sends_ready_and_status_to_notify_socket",
                "--nocapture",
            ])
            .env("LOCKMGRD_NOTIFY_CHILD", "1")
            .env(NOTIFY_SOCKET, &path)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            receive(&receiver),
            "READY=1\nSTATUS=serving /run/lockmgr/file.sock"
        );
    }

    #[test]
    fn without_notify_socket_nothing_is_sent() {
        if std::env::var_os(NOTIFY_SOCKET).is_none() {
            assert!(!notify("READY=1").unwrap());
        }
    }
}
