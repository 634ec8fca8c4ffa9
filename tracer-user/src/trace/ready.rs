//! Telling the world the tracer is up: a "ready" line on stderr once every
//! probe is attached, and `READY=1` to systemd (Type=notify) through
//! NOTIFY_SOCKET when it is set.

use std::{
    ffi::OsStr,
    os::{
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixDatagram},
    },
};

use crate::cli::TraceArgs;

/// Print the ready line and notify systemd.
pub(super) fn announce(args: &TraceArgs) {
    eprintln!(
        "tracer: ready: all probes attached (mode {}, output {})",
        args.mode.as_str(),
        args.output
            .as_ref()
            .map_or_else(|| "stdout".to_string(), |p| p.display().to_string())
    );
    notify_ready();
}

/// Tell systemd (Type=notify) that we are ready.
fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = notify_at(&path, b"READY=1") {
        log::warn!("cannot notify systemd at NOTIFY_SOCKET: {e}");
    }
}

/// Send `message` (`READY=1`, `WATCHDOG=1`) to the datagram socket
/// NOTIFY_SOCKET names: a path, or an abstract name written with a leading
/// '@'.
pub(super) fn notify_at(path: &OsStr, message: &[u8]) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    match path.as_encoded_bytes().strip_prefix(b"@") {
        Some(name) => {
            SocketAddr::from_abstract_name(name).and_then(|addr| sock.send_to_addr(message, &addr))
        }
        None => sock.send_to(message, path),
    }
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(sock: &UnixDatagram) -> Vec<u8> {
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).expect("recv");
        buf[..n].to_vec()
    }

    #[test]
    fn ready_reaches_a_socket_path() {
        let dir = std::env::temp_dir().join(format!("tracer-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).expect("bind");
        notify_at(path.as_os_str(), b"READY=1").expect("notify");
        assert_eq!(received(&listener), b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ready_reaches_an_abstract_socket() {
        let name = format!("tracer-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let listener = UnixDatagram::bind_addr(&addr).expect("bind");
        notify_at(OsStr::new(&format!("@{name}")), b"READY=1").expect("notify");
        assert_eq!(received(&listener), b"READY=1");
    }

    #[test]
    fn no_listener_is_an_error_not_a_panic() {
        assert!(notify_at(OsStr::new("/nonexistent-dir/notify.sock"), b"READY=1").is_err());
    }
}
