//! The `dns-query` record (`tracer trace --dns`): a lookup that failed or
//! got no answer. This is its one description; the fields are documented
//! in schema/event.schema.json (`$defs/dns_query`). The process, container
//! and unit parts are the connect record's own fragments (ndjson.rs), so a
//! process reads the same in both.
//!
//! Rare by nature (failed lookups), so it is written plainly, not tuned
//! like the connect record.

use std::{fmt::Write as _, net::IpAddr, sync::Arc};

use crate::{
    decode::Transport,
    enrich::{
        dns::{
            message::{qtype_name, rcode_name},
            Lookup, QUERY_TIMEOUT_NS,
        },
        proc::ProcInfo,
    },
    sink::{
        ndjson::{push_int, push_ip, push_str, AttemptWriter},
        words::{rfc3339, ECS_VERSION, SCHEMA_VERSION},
    },
};

/// `tracer.result` of a failed lookup.
pub fn result_of(l: &Lookup) -> &'static str {
    match l.rcode {
        None => "no_answer",
        Some(3) => "nxdomain",
        Some(2) => "servfail",
        Some(5) => "refused",
        Some(_) => "error",
    }
}

/// When the lookup ended: its answer, or the end of the wait.
pub fn end_of(l: &Lookup) -> u64 {
    l.end_ns
        .unwrap_or_else(|| l.start_ns.saturating_add(QUERY_TIMEOUT_NS))
}

/// `ip:port` or `[v6]:port` of the DNS server.
fn server_text(l: &Lookup) -> String {
    match l.server.0 {
        IpAddr::V4(ip) => format!("{ip}:{}", l.server.1),
        IpAddr::V6(ip) => format!("[{ip}]:{}", l.server.1),
    }
}

/// One sentence an operator can act on (ECS `message`).
pub fn message(l: &Lookup, proc: &ProcInfo) -> String {
    let mut out = String::new();
    super::words::write_who(&mut out, &l.comm, l.pid, proc);
    // Writing into a String cannot fail.
    match &l.question {
        Some((name, qtype)) => {
            let _ = write!(out, " looked up {name} ({})", qtype_name(*qtype));
        }
        None => {
            let _ = write!(out, " sent DNS query {}", l.id);
        }
    }
    let _ = write!(out, " at {}: ", server_text(l));
    match l.rcode {
        None => {
            let _ = write!(
                out,
                "no answer within {} s (the DNS server is unreachable, drops the query, or is too slow)",
                QUERY_TIMEOUT_NS / 1_000_000_000
            );
        }
        Some(3) => out.push_str("the name does not exist (NXDOMAIN)"),
        Some(2) => out.push_str("the DNS server could not answer (SERVFAIL)"),
        Some(5) => out.push_str("the DNS server refused to answer (REFUSED)"),
        Some(code) => {
            let _ = write!(out, "the DNS server answered {}", rcode_name(code));
        }
    }
    out
}

/// Append the lookup as one JSON line (without the newline).
pub fn write(
    out: &mut Vec<u8>,
    writer: &mut AttemptWriter,
    l: &Lookup,
    proc: &Arc<ProcInfo>,
    wall_offset_ns: i128,
) {
    let wall = |mono: u64| rfc3339((i128::from(mono) + wall_offset_ns).max(0) as u64);
    let end = end_of(l);
    out.extend_from_slice(br#"{"@timestamp":"#);
    push_str(out, &wall(end));
    out.extend_from_slice(br#","ecs":{"version":"#);
    push_str(out, ECS_VERSION);
    out.extend_from_slice(
        br#"},"event":{"kind":"event","category":["network"],"type":["protocol"],"action":"dns-query","outcome":"failure""#,
    );
    if let Some(end_ns) = l.end_ns {
        out.extend_from_slice(br#","duration":"#);
        push_int(out, end_ns.saturating_sub(l.start_ns));
    }
    out.extend_from_slice(br#","start":"#);
    push_str(out, &wall(l.start_ns));
    out.extend_from_slice(br#","end":"#);
    push_str(out, &wall(end));
    out.extend_from_slice(br#"},"message":"#);
    push_str(out, &message(l, proc));

    let frags = writer.fragments_of(l.pid, proc);
    out.extend_from_slice(br#","process":{"pid":"#);
    push_int(out, l.pid);
    out.extend_from_slice(br#","name":"#);
    push_str(out, &l.comm);
    out.extend_from_slice(br#","thread":{"id":"#);
    push_int(out, l.tid);
    out.push(b'}');
    out.extend_from_slice(&frags.process_tail);
    out.extend_from_slice(br#"},"user":{"id":""#);
    push_int(out, l.uid);
    out.extend_from_slice(br#""},"group":{"id":""#);
    push_int(out, l.gid);
    out.extend_from_slice(br#""}"#);

    out.extend_from_slice(br#","destination":{"ip":"#);
    push_ip(out, l.server.0);
    out.extend_from_slice(br#","port":"#);
    push_int(out, l.server.1);
    out.extend_from_slice(br#","address":"#);
    push_str(out, &server_text(l));
    out.extend_from_slice(br#"},"network":{"transport":"#);
    push_str(
        out,
        match l.transport {
            Transport::Tcp => "tcp",
            _ => "udp",
        },
    );
    out.extend_from_slice(if l.server.0.is_ipv4() {
        br#","type":"ipv4","protocol":"dns"}"#
    } else {
        br#","type":"ipv6","protocol":"dns"}"#
    });
    out.extend_from_slice(&frags.container);

    // ECS keeps dns.id as a string.
    out.extend_from_slice(br#","dns":{"id":""#);
    push_int(out, l.id);
    out.extend_from_slice(if l.rcode.is_some() {
        br#"","type":"answer""#
    } else {
        br#"","type":"query""#
    });
    if let Some((name, qtype)) = &l.question {
        out.extend_from_slice(br#","question":{"name":"#);
        push_str(out, name);
        out.extend_from_slice(br#","type":"#);
        push_str(out, &qtype_name(*qtype));
        out.push(b'}');
    }
    if let Some(code) = l.rcode {
        out.extend_from_slice(br#","response_code":"#);
        push_str(out, rcode_name(code));
    }
    if !l.resolved.is_empty() {
        out.extend_from_slice(br#","resolved_ip":["#);
        for (i, ip) in l.resolved.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_ip(out, *ip);
        }
        out.push(b']');
    }
    out.push(b'}');

    out.extend_from_slice(br#","tracer":{"schema_version":"#);
    push_int(out, SCHEMA_VERSION);
    out.extend_from_slice(br#","result":"#);
    push_str(out, result_of(l));
    out.extend_from_slice(br#","cgroup":{"id":"#);
    push_int(out, l.cgroup_id);
    out.extend_from_slice(&frags.cgroup_path);
    out.push(b'}');
    out.extend_from_slice(&frags.tracer_tail);
    out.extend_from_slice(b"}}");
}

/// `--format text`: one line, like an attempt's.
pub fn render_text(l: &Lookup, proc: &ProcInfo, wall_offset_ns: i128, color: bool) -> String {
    let stamp = rfc3339((i128::from(end_of(l)) + wall_offset_ns).max(0) as u64);
    let time = stamp.get(11..26).unwrap_or(&stamp);
    let word = match l.rcode {
        Some(code) => rcode_name(code),
        None => "NO-ANSWER",
    };
    let (start, end) = if color {
        ("\x1b[31m", "\x1b[0m")
    } else {
        ("", "")
    };
    format!(
        "{time} {start}{:<11}{end} {}[{}] dns {}  {}",
        format!("DNS-{word}"),
        crate::redact::printable(&l.comm),
        l.pid,
        server_text(l),
        crate::redact::printable(&message(l, proc))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        decode::comm_of,
        enrich::{cgroup::parse_proc_cgroup, proc::ProcInfo},
    };

    pub(crate) fn lookup(rcode: Option<u8>) -> Lookup {
        Lookup {
            start_ns: 1_000_000_000,
            end_ns: rcode.map(|_| 1_000_450_000),
            pid: 4711,
            tid: 4712,
            uid: 0,
            gid: 0,
            cgroup_id: 99,
            comm: comm_of(b"containerd"),
            server: ("198.51.100.2".parse().expect("ip"), 53),
            transport: Transport::Udp,
            id: 4242,
            question: Some(("quay.io".into(), 1)),
            rcode,
            resolved: Vec::new(),
        }
    }

    #[test]
    fn messages_say_what_failed() {
        let proc = ProcInfo {
            cgroup: Some(parse_proc_cgroup("0::/system.slice/containerd.service\n")),
            ..ProcInfo::default()
        };
        assert_eq!(
            message(&lookup(Some(3)), &proc),
            "containerd (pid 4711, containerd.service) looked up quay.io (A) at 198.51.100.2:53: the name does not exist (NXDOMAIN)"
        );
        assert!(message(&lookup(None), &proc).ends_with(
            "no answer within 5 s (the DNS server is unreachable, drops the query, or is too slow)"
        ));
        assert!(message(&lookup(Some(2)), &proc).contains("(SERVFAIL)"));
        assert_eq!(result_of(&lookup(None)), "no_answer");
        assert_eq!(end_of(&lookup(None)), 6_000_000_000);
    }
}
