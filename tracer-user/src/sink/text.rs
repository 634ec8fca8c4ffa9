//! `--format text`: one line per attempt for a person at a terminal.
//!
//! `13:45:02.123456 REFUSED   containerd[812] tcp 127.0.0.1:7897 0.1ms  <message>`
//! Failures are red (and proxy dials bold) when stdout is a terminal.
//! Rendered from the same facts and words as the JSON record
//! (`sink::words`), not from the record itself.

use crate::{
    decode::Verdict,
    sink::words::{self, Facts},
};

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

pub fn render(f: &Facts<'_>, color: bool) -> String {
    let a = f.attempt;
    let verdict = a.verdict;
    let timestamp = words::rfc3339(f.wall(words::stamp_of(a)));
    // "2026-11-27T13:45:02.123456789Z" -> "13:45:02.123456"
    let time = timestamp.get(11..26).unwrap_or(&timestamp);
    let word = verdict.as_str().to_ascii_uppercase();
    let transport = a.transport.map_or("?", |t| t.as_str());
    let duration = words::duration_of(a)
        .map(|ns| format!("{:.1}ms", ns as f64 / 1e6))
        .unwrap_or_else(|| "-".into());
    let via_proxy =
        f.verdict.is_some_and(|p| p.via == Some(true)) || f.exchange.is_some_and(|x| x.listed);
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
    let destination = words::destination_text(a);
    let message = words::message(f, &destination);
    // --dns: the name the address was an answer for.
    let named = match &f.domain {
        Some(d) => format!(" ({})", d.name),
        None => String::new(),
    };
    format!(
        "{time} {start}{word:<11}{end} {}[{}] {transport} {destination}{named} {duration}{proxy}  {message}",
        &*a.comm, a.pid
    )
}
