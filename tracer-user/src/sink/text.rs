//! `--format text`: one line per attempt for a person at a terminal.
//!
//! `13:45:02.123456 REFUSED   containerd[812] tcp 127.0.0.1:7897 0.1ms  <message>`
//! Failures are red (and proxy dials bold) when stdout is a terminal.
//! Rendered from the same facts and words as the JSON record
//! (`sink::words`), not from the record itself.

use crate::{
    decode::Verdict,
    redact::printable,
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
        Some(d) => format!(" ({})", printable(d.name)),
        None => String::new(),
    };
    // comm, AF_UNIX paths, names and everything the message quotes are
    // the node's choice: never raw control bytes on a terminal.
    format!(
        "{time} {start}{word:<11}{end} {}[{}] {transport} {}{named} {duration}{proxy}  {}",
        printable(&a.comm),
        a.pid,
        printable(&destination),
        printable(&message),
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{attempt, proc_info};
    use super::*;
    use crate::{
        decode::{comm_of, Peer},
        enrich::dns::{DomainHint, DomainSource},
        probe::Mode,
    };

    /// A comm, an AF_UNIX path and a DNS name chosen by the node cannot
    /// put a control byte on the reader's terminal.
    #[test]
    fn node_text_is_escaped() {
        let mut a = attempt();
        a.comm = comm_of(b"\x1b]0;pwn\x07\x1b[2J");
        a.destination = Peer::Unix("/run/\u{9b}31m.sock".into());
        let proc = proc_info();
        let facts = Facts {
            attempt: &a,
            proc: &proc,
            verdict: None,
            exchange: None,
            mode: Mode::Socket,
            wall_offset_ns: 0,
            domain: Some(DomainHint {
                name: "evil\x1b[8m.test",
                source: DomainSource::Process,
            }),
        };
        for color in [false, true] {
            let line = render(&facts, color);
            // Only our own colour sequences may remain.
            let ours = [RED, GREEN, YELLOW, BOLD, RESET, "\x1b[1;31m"];
            let rest = ours.iter().fold(line.clone(), |l, c| l.replace(c, ""));
            assert!(!rest.chars().any(char::is_control), "{line:?}");
            assert!(line.contains(r"\x1b]0;pwn\x07\x1b[2J"), "{line:?}");
            assert!(line.contains(r"/run/\u{9b}31m.sock"), "{line:?}");
            assert!(line.contains(r"(evil\x1b[8m.test)"), "{line:?}");
        }
    }
}
