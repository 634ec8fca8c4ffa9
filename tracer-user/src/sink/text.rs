//! `--format text`: one line per attempt for a person at a terminal.
//!
//! `13:45:02.123456 REFUSED   containerd[812] tcp 127.0.0.1:7897 0.1ms  <message>`
//! Failures are red (and proxy dials bold) when stdout is a terminal.

use crate::{
    decode::{Transport, Verdict},
    sink::ecs::EcsEvent,
};

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

pub fn render(ev: &EcsEvent<'_>, verdict: Verdict, color: bool) -> String {
    // "2026-11-27T13:45:02.123456789Z" -> "13:45:02.123456"
    let time = ev.timestamp.get(11..26).unwrap_or(&ev.timestamp);
    let word = ev.tracer.result.to_ascii_uppercase();
    let transport = match ev.network.transport {
        Some(Transport::Tcp) => "tcp",
        Some(Transport::Udp) => "udp",
        Some(Transport::Unix) => "unix",
        None => "?",
    };
    let duration = ev
        .event
        .duration
        .map(|ns| format!("{:.1}ms", ns as f64 / 1e6))
        .unwrap_or_else(|| "-".into());
    let via_proxy = ev.tracer.proxy.is_some_and(|p| p.via == Some(true));
    let (start, end) = if !color {
        ("", "")
    } else if verdict.is_failure() {
        (if via_proxy { "\x1b[1;31m" } else { RED }, RESET)
    } else if verdict == Verdict::Connected {
        (GREEN, RESET)
    } else {
        (YELLOW, RESET)
    };
    let proxy = if via_proxy {
        if color {
            format!(" {BOLD}[proxy]{RESET}")
        } else {
            " [proxy]".to_string()
        }
    } else {
        String::new()
    };
    format!(
        "{time} {start}{word:<11}{end} {}[{}] {transport} {} {duration}{proxy}  {}",
        ev.process.name, ev.process.pid, ev.destination.address, ev.message
    )
}
