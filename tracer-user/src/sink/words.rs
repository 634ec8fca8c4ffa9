//! The words of the connect-event record: what a timestamp, a failure, a
//! destination and the message say. The record itself (which fields, in
//! which order) is written in one place, `sink::ndjson::AttemptWriter`;
//! `--format text` says the same things in a line of its own, from these.

use std::{borrow::Cow, net::IpAddr};

use crate::{
    decode::{errno_message, Attempt, Peer, Transport, Verdict},
    enrich::{
        cgroup::UnitManager,
        dns::DomainHint,
        pod::PodNames,
        proc::{EnvState, ProcInfo},
    },
    exchange::ProxyExchange,
    probe::Mode,
    verdict::{scheme_label, ProxyVerdict},
};

/// Bumped whenever a field changes meaning or disappears.
pub const SCHEMA_VERSION: u32 = 1;
pub const ECS_VERSION: &str = "8.11.0";

/// `error.message` of a socket-mode failure that happened before any SYN.
pub const EARLY_FAILURE_MESSAGE: &str =
    "connect() failed before a SYN was sent; the errno is only visible in --mode syscall";

/// Nanoseconds since the epoch -> RFC 3339 UTC with nanoseconds.
pub fn rfc3339(epoch_ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(epoch_ns);
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Everything needed to write one attempt.
pub struct Facts<'a> {
    pub attempt: &'a Attempt,
    pub proc: &'a ProcInfo,
    pub verdict: Option<&'a ProxyVerdict>,
    /// The exchange with the proxy, for attempts to one (exchange.rs).
    pub exchange: Option<&'a ProxyExchange>,
    pub mode: Mode,
    /// Add to a kernel monotonic time to get epoch nanoseconds.
    pub wall_offset_ns: i128,
    /// `--dns`: the name the destination address was an answer for.
    pub domain: Option<DomainHint<'a>>,
}

impl Facts<'_> {
    pub fn wall(&self, mono_ns: u64) -> u64 {
        (i128::from(mono_ns) + self.wall_offset_ns).max(0) as u64
    }
}

/// When the attempt ended, if it did (a pending attempt has no end).
pub fn end_of(a: &Attempt) -> Option<u64> {
    (a.verdict != Verdict::Pending && a.end_ns != 0).then_some(a.end_ns)
}

/// The kernel time the event is stamped with (`@timestamp`): when the
/// attempt ended, or when it started if it has not ended.
pub fn stamp_of(a: &Attempt) -> u64 {
    end_of(a).unwrap_or(a.start_ns).max(a.start_ns)
}

/// Nanoseconds from connect() to the outcome (`event.duration`).
pub fn duration_of(a: &Attempt) -> Option<u64> {
    end_of(a).map(|end| end.saturating_sub(a.start_ns))
}

/// What the `error` object reports.
pub enum Failure {
    /// The kernel named the errno.
    Errno(i32),
    /// Failed before a SYN; socket mode cannot see the errno.
    BeforeSyn,
}

/// The failure behind an attempt, or None when it is not a failure with
/// an `error` object (connected, aborted by its owner, still pending).
pub fn failure_of(a: &Attempt) -> Option<Failure> {
    match (a.verdict, a.errno) {
        (Verdict::Connected | Verdict::Aborted | Verdict::Pending, _) => None,
        (_, Some(errno)) => Some(Failure::Errno(errno)),
        (_, None) => Some(Failure::BeforeSyn),
    }
}

/// The destination as a person writes it: "10.0.0.1:7897", "[::1]:80",
/// or the AF_UNIX path.
pub fn destination_text(a: &Attempt) -> String {
    let mut out = String::new();
    write_destination(&mut out, a);
    out
}

/// `destination_text` into a reused buffer (the JSON hot path).
pub fn write_destination(out: &mut String, a: &Attempt) {
    match &a.destination {
        Peer::Ip {
            ip: IpAddr::V6(ip),
            port,
        } => {
            use std::fmt::Write;
            // Writing into a String cannot fail.
            let _ = write!(out, "[{ip}]:{port}");
        }
        Peer::Ip {
            ip: IpAddr::V4(ip),
            port,
        } => {
            // The common case, without the formatting machinery.
            ipv4_text(*ip, |part| out.push_str(part));
            out.push(':');
            out.push_str(itoa::Buffer::new().format(*port));
        }
        Peer::Unix(path) => out.push_str(path),
    }
}

/// Dotted-quad text of an IPv4 address, as `Ipv4Addr`'s Display writes it,
/// handed to `push` piece by piece.
pub fn ipv4_text(ip: std::net::Ipv4Addr, mut push: impl FnMut(&str)) {
    let mut digits = itoa::Buffer::new();
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            push(".");
        }
        push(digits.format(octet));
    }
}

/// What happened, in words.
fn result_text(a: &Attempt) -> Cow<'static, str> {
    match (a.verdict, a.errno) {
        (Verdict::Connected, _) => "connected".into(),
        (Verdict::Aborted, _) => "gave up before any answer (socket closed while SYN_SENT)".into(),
        (Verdict::Pending, _) => "still in flight when the tracer stopped".into(),
        (_, Some(errno)) => errno_message(errno),
        (_, None) => "failed before a SYN was sent".into(),
    }
}

/// `namespace/pod (container NAME)`, as the message and the text format
/// name a pod's container.
pub fn write_pod(out: &mut String, pod: &PodNames) {
    out.push_str(&pod.namespace);
    out.push('/');
    out.push_str(&pod.pod);
    if let Some(container) = &pod.container {
        out.push_str(" (container ");
        out.push_str(container);
        out.push(')');
    }
}

/// Who did it, as a message opens: `comm (pid N, unit)`, or for a pod's
/// container `comm (pid N, namespace/pod (container NAME))`.
pub fn write_who(out: &mut String, comm: &str, pid: u32, proc: &ProcInfo) {
    // Plain pushes rather than write!: this runs for every event.
    out.push_str(comm);
    out.push_str(" (pid ");
    out.push_str(itoa::Buffer::new().format(pid));
    if let Some(pod) = &proc.pod {
        // Operators think in pods: the pod says more than its container's
        // scope unit.
        out.push_str(", ");
        write_pod(out, pod);
    } else {
        push_unit(out, proc);
    }
    out.push(')');
}

/// One sentence an operator can act on (ECS `message`).
pub fn message(f: &Facts<'_>, dest_text: &str) -> String {
    let mut out = String::new();
    write_message(&mut out, f, dest_text);
    out
}

/// `message` into a reused buffer (the JSON hot path).
/// `, <unit>` and, for a unit that is not the host system manager's, whose
/// it is: a user's `containerd.service` must not read like the host's.
pub fn push_unit(out: &mut String, proc: &ProcInfo) {
    let Some(c) = proc.cgroup.as_ref() else {
        return;
    };
    let Some(unit) = c.unit.as_deref() else {
        return;
    };
    out.push_str(", ");
    out.push_str(unit);
    match c.manager {
        Some(UnitManager::User { uid }) => {
            out.push_str(" of the user manager of uid ");
            out.push_str(itoa::Buffer::new().format(uid));
        }
        Some(UnitManager::Container) => out.push_str(" of a container's service manager"),
        Some(UnitManager::System) | None => {}
    }
}

pub fn write_message(out: &mut String, f: &Facts<'_>, dest_text: &str) {
    // Writing into a String cannot fail.
    let _ = message_into(out, f, dest_text);
}

fn message_into(out: &mut String, f: &Facts<'_>, dest_text: &str) -> std::fmt::Result {
    use std::fmt::Write;
    let a = f.attempt;
    let unit = f.proc.cgroup.as_ref().and_then(|c| c.unit.as_deref());
    write_who(out, &a.comm, a.pid, f.proc);
    if let Some(x) = f.exchange.filter(|_| a.verdict == Verdict::Connected) {
        // A connected proxy dial: the exchange tells the rest of the story.
        let who = std::mem::take(out);
        return super::exchange::message(out, &who, f.verdict, x, dest_text);
    }
    let result = result_text(a);
    match f.verdict {
        Some(v) if v.via == Some(true) => {
            let label = scheme_label(v.scheme);
            let space = if label.is_empty() { "" } else { " " };
            match a.verdict {
                Verdict::Connected => {
                    write!(out, " connected to its {label}{space}proxy {}", v.endpoint)?
                }
                Verdict::Pending => write!(
                    out,
                    " is dialling its {label}{space}proxy {}: {result}",
                    v.endpoint
                )?,
                _ => write!(
                    out,
                    " could not reach its {label}{space}proxy {}: {result}",
                    v.endpoint
                )?,
            }
        }
        _ if f.exchange.is_some_and(|x| x.listed) => match a.verdict {
            Verdict::Pending => write!(
                out,
                " is dialling the proxy {dest_text} (listed with --proxy): {result}"
            )?,
            _ => write!(
                out,
                " could not reach the proxy {dest_text} (listed with --proxy): {result}"
            )?,
        },
        _ => {
            let transport = match a.transport {
                Some(Transport::Udp) => "udp ",
                Some(Transport::Unix) => "unix ",
                _ => "",
            };
            out.push(' ');
            out.push_str(transport);
            out.push_str("connect to ");
            out.push_str(dest_text);
            out.push_str(": ");
            out.push_str(&result);
        }
    }
    if let Some(v) = f.verdict {
        if v.via == Some(true) {
            write!(out, "; {} is ", v.variable)?;
        } else if let Some(why) = &v.unresolved {
            write!(
                out,
                "; whether this is its proxy {}={} is unknown ({why}), ",
                v.variable, v.url
            )?;
        } else {
            write!(out, "; the process has {}={} ", v.variable, v.url)?;
        }
        match &v.source {
            Some(src) => write!(out, "set in {}", src.location())?,
            None => out.push_str("in its environment, not set by any unit file"),
        }
        if let Some(d) = &v.drift {
            match &d.configured {
                Some(c) => write!(
                    out,
                    "; the unit's files now say {c} but the running process still has {} (restart it to apply)",
                    d.live
                )?,
                None if v.source.is_none() && unit.is_some() => out.push_str(
                    " (stale: no file configures it any more; restart the unit to drop it)",
                ),
                None => {}
            }
        }
    } else if let Some(EnvState::Unavailable(why)) = &f.proc.env {
        write!(out, " (proxy environment unknown: {why})")?;
    }
    Ok(())
}
