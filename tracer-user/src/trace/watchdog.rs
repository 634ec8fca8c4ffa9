//! "The drain is alive", told to whoever watches: systemd's watchdog
//! and the metrics endpoint's `/livez` ([`Alive`]). The run loop calls
//! [`Alive::turned`] each time it comes back to wait for work, which it
//! cannot do while stuck in a drain or a write: a tracer whose drain hangs
//! (a reader that never reads, a hung file system) stops telling either,
//! and is restarted (systemd by `WatchdogSec=`, the kubelet by the
//! DaemonSet's `livenessProbe` on `/livez`). A failing disk does not stop
//! it: the drain goes on, counting what it cannot write, and a restart
//! would not free any space.
//!
//! systemd's watchdog (`WatchdogSec=` in the unit): systemd sets
//! `WATCHDOG_USEC` (and `WATCHDOG_PID`) and restarts the service when no
//! `WATCHDOG=1` arrives within that time. An idle loop turns on its
//! one-second tick, so WatchdogSec must be at least 3 s (the unit uses
//! 30 s).

use std::{
    ffi::OsString,
    time::{Duration, Instant},
};

use super::ready::notify_at;
use crate::metrics::server::Heartbeat;

/// Everyone told that the run loop turned.
pub(super) struct Alive {
    watchdog: Watchdog,
    heartbeat: Option<Heartbeat>,
}

impl Alive {
    pub(super) fn new(heartbeat: Option<Heartbeat>) -> Self {
        Self {
            watchdog: Watchdog::from_env(),
            heartbeat,
        }
    }

    /// The loop turned: beat for `/livez`, ping systemd if it is time.
    pub(super) fn turned(&mut self) {
        if let Some(h) = &self.heartbeat {
            h.beat();
        }
        self.watchdog.ping();
    }
}

pub(super) struct Watchdog {
    socket: Option<OsString>,
    every: Duration,
    last: Option<Instant>,
}

impl Watchdog {
    /// Enabled when systemd asked for it (for this very process).
    pub(super) fn from_env() -> Self {
        let usec = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&u| u > 0);
        // WATCHDOG_PID, when set, names the process meant; a child that
        // inherited the variables must not ping for its parent.
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let socket = std::env::var_os("NOTIFY_SOCKET");
        Self::new(socket.filter(|_| for_us), usec)
    }

    fn new(socket: Option<OsString>, usec: Option<u64>) -> Self {
        match (socket, usec) {
            // Ping at half the timeout, as sd_watchdog_enabled(3) advises,
            // but not more often than the tick that calls us.
            (Some(socket), Some(usec)) => Self {
                socket: Some(socket),
                every: Duration::from_micros(usec / 2).max(Duration::from_millis(500)),
                last: None,
            },
            _ => Self {
                socket: None,
                every: Duration::MAX,
                last: None,
            },
        }
    }

    #[cfg(test)]
    fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Send `WATCHDOG=1` if half the timeout has passed since the last one.
    pub(super) fn ping(&mut self) {
        let Some(socket) = &self.socket else {
            return;
        };
        if self.last.is_some_and(|t| t.elapsed() < self.every) {
            return;
        }
        self.last = Some(Instant::now());
        if let Err(e) = notify_at(socket, b"WATCHDOG=1") {
            log::warn!("cannot ping systemd's watchdog at NOTIFY_SOCKET: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn pings_at_most_every_half_timeout() {
        let dir = std::env::temp_dir().join(format!("tracer-watchdog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        // 60 s timeout: the first ping goes out, the next 30 s later.
        let mut dog = Watchdog::new(Some(path.clone().into_os_string()), Some(60_000_000));
        assert!(dog.enabled());
        dog.ping();
        dog.ping();
        let mut buf = [0u8; 32];
        let n = listener.recv(&mut buf).expect("first ping");
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        assert!(listener.recv(&mut buf).is_err(), "only one ping");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn disabled_without_a_socket_or_a_timeout() {
        assert!(!Watchdog::new(None, Some(1_000_000)).enabled());
        assert!(!Watchdog::new(Some("/x".into()), None).enabled());
        Watchdog::new(None, None).ping();
    }
}
