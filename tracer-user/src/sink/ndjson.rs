//! The connect-event record: one attempt becomes one NDJSON line, written
//! straight into the sink's batch buffer.
//!
//! This writer is the one description of the record: nothing else writes
//! its fields. A new field goes here, in `AttemptWriter::write`, and into
//! schema/event.schema.json, which documents every field (the golden lines
//! in sink/golden.ndjson pin the bytes). The words it writes (timestamps,
//! failures, the destination, the message) come from `sink::words`.
//! The other lines of the stream are summaries, not attempts, each
//! described once as serde structs: lost events (`trace/pipeline.rs`) and
//! `--rate-limit` drops (`trace/ratelimit.rs`, `event.action:
//! "rate-limited"`).
//!
//! It is hand-written because in a connect storm the tracer spends its
//! time here (a serde description of the same record measured ~3x slower):
//! - what depends only on the process (executable, arguments, cgroup path,
//!   unit, container, proxy_env) is escaped once per process snapshot and
//!   copied afterwards;
//! - timestamps reuse the formatted date and time of the current second and
//!   only print the nanoseconds;
//! - numbers go through `itoa`, IPv4 addresses are printed by hand, and the
//!   message and destination text are built in reused buffers.
//!
//! Nothing here allocates per event once the buffers have grown, except for
//! the rare parts (a proxy verdict, an AF_UNIX path, an unknown errno).

use std::{net::IpAddr, sync::Arc};

use crate::{
    decode::{errno_message, errno_name, Peer},
    enrich::{
        pod::PodNames,
        proc::{EnvState, PidMap, ProcInfo},
    },
    sink::words::{self, Facts, Failure, ECS_VERSION, SCHEMA_VERSION},
};

/// Process snapshots whose fragments are kept; the same bound as the
/// process cache, so at most one stale snapshot per pid is held.
const MAX_PROCESSES: usize = 16384;

/// The per-process parts of a line, escaped once. The `dns-query` record
/// (sink/dns.rs) uses them too, so a process is described once.
#[derive(Default)]
pub(super) struct Fragments {
    /// `,"executable":…,"args":[…],"parent":{…}` inside `process`.
    pub(super) process_tail: Vec<u8>,
    /// `,"container":{…}` (and `,"orchestrator":{…}` for a pod's
    /// container) or nothing.
    pub(super) container: Vec<u8>,
    /// `,"path":…` inside `tracer.cgroup`.
    pub(super) cgroup_path: Vec<u8>,
    /// `,"unit":…,"pod_uid":…,"proxy_env":…` inside `tracer`.
    pub(super) tracer_tail: Vec<u8>,
}

impl Fragments {
    fn of(proc: &ProcInfo) -> Self {
        let mut f = Self::default();
        if let Some(exe) = &proc.exe {
            f.process_tail.extend_from_slice(br#","executable":"#);
            push_str(&mut f.process_tail, exe);
        }
        if let Some(args) = &proc.args {
            f.process_tail.extend_from_slice(br#","args":["#);
            for (i, arg) in args.iter().enumerate() {
                if i > 0 {
                    f.process_tail.push(b',');
                }
                push_str(&mut f.process_tail, arg);
            }
            f.process_tail.push(b']');
        }
        if let Some(ppid) = proc.ppid {
            f.process_tail.extend_from_slice(br#","parent":{"pid":"#);
            push_int(&mut f.process_tail, ppid);
            f.process_tail.push(b'}');
        }
        let cgroup = proc.cgroup.as_ref();
        if let Some(c) = cgroup {
            if let Some(id) = &c.container_id {
                f.container.extend_from_slice(br#","container":{"id":"#);
                push_str(&mut f.container, id);
                if let Some(runtime) = &c.runtime {
                    f.container.extend_from_slice(br#","runtime":"#);
                    push_str(&mut f.container, runtime);
                }
                if let Some(pod) = &proc.pod {
                    push_pod_container(&mut f.container, pod);
                }
                f.container.push(b'}');
                if let Some(pod) = &proc.pod {
                    f.container
                        .extend_from_slice(br#","orchestrator":{"type":"kubernetes","namespace":"#);
                    push_str(&mut f.container, &pod.namespace);
                    f.container
                        .extend_from_slice(br#","resource":{"type":"pod","name":"#);
                    push_str(&mut f.container, &pod.pod);
                    f.container.extend_from_slice(b"}}");
                }
            }
            f.cgroup_path.extend_from_slice(br#","path":"#);
            push_str(&mut f.cgroup_path, &c.path);
            if let Some(unit) = &c.unit {
                f.tracer_tail.extend_from_slice(br#","unit":"#);
                push_str(&mut f.tracer_tail, unit);
            }
            if let Some(manager) = c.manager {
                f.tracer_tail.extend_from_slice(br#","unit_manager":"#);
                push_str(&mut f.tracer_tail, manager.as_str());
                if let Some(uid) = manager.uid() {
                    f.tracer_tail.extend_from_slice(br#","unit_manager_uid":"#);
                    push_int(&mut f.tracer_tail, uid);
                }
            }
            if let Some(pod) = &c.pod_uid {
                f.tracer_tail.extend_from_slice(br#","pod_uid":"#);
                push_str(&mut f.tracer_tail, pod);
            }
        }
        f.tracer_tail.extend_from_slice(br#","proxy_env":"#);
        match &proc.env {
            Some(EnvState::Read(_)) => push_str(&mut f.tracer_tail, "read"),
            Some(EnvState::Unavailable(why)) => {
                push_str(&mut f.tracer_tail, &format!("unavailable: {why}"))
            }
            None => push_str(&mut f.tracer_tail, "unavailable"),
        }
        f
    }
}

/// `,"name":…,"image":{…}` inside `container`: the pod's container name
/// and image (ECS `container.image.name`, `.tag`, `.hash.all`).
fn push_pod_container(out: &mut Vec<u8>, pod: &PodNames) {
    if let Some(name) = &pod.container {
        out.extend_from_slice(br#","name":"#);
        push_str(out, name);
    }
    if let Some(image) = &pod.image {
        out.extend_from_slice(br#","image":{"name":"#);
        push_str(out, &image.name);
        if let Some(tag) = &image.tag {
            out.extend_from_slice(br#","tag":"#);
            push_str(out, tag);
        }
        if let Some(digest) = &image.digest {
            out.extend_from_slice(br#","hash":{"all":["#);
            push_str(out, digest);
            out.extend_from_slice(b"]}");
        }
        out.push(b'}');
    }
}

/// `YYYY-MM-DDTHH:MM:SS.` of one second, so that the timestamps of a burst
/// format only their nanoseconds.
struct SecondPrefix {
    second: Option<u64>,
    text: Vec<u8>,
}

impl SecondPrefix {
    fn push(&mut self, out: &mut Vec<u8>, epoch_ns: u64) {
        let second = epoch_ns / 1_000_000_000;
        if self.second != Some(second) {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(second);
            // "2026-11-27T13:45:02Z": keep everything before the Z.
            let whole = humantime::format_rfc3339_seconds(t).to_string();
            self.text.clear();
            self.text
                .extend_from_slice(whole.trim_end_matches('Z').as_bytes());
            self.text.push(b'.');
            self.second = Some(second);
        }
        out.push(b'"');
        out.extend_from_slice(&self.text);
        let mut nanos = epoch_ns % 1_000_000_000;
        let mut digits = [b'0'; 9];
        for d in digits.iter_mut().rev() {
            *d = b'0' + (nanos % 10) as u8;
            nanos /= 10;
        }
        out.extend_from_slice(&digits);
        out.extend_from_slice(b"Z\"");
    }
}

/// Writes attempts as JSON lines; owns the reused buffers and the
/// per-process fragments.
pub struct AttemptWriter {
    clock: SecondPrefix,
    fragments: PidMap<(Arc<ProcInfo>, Fragments)>,
    dest: String,
    message: String,
}

impl Default for AttemptWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl AttemptWriter {
    pub fn new() -> Self {
        Self {
            clock: SecondPrefix {
                second: None,
                text: Vec::with_capacity(32),
            },
            fragments: PidMap::default(),
            dest: String::with_capacity(64),
            message: String::with_capacity(256),
        }
    }

    /// Append one attempt as JSON (without the newline).
    pub fn write(&mut self, out: &mut Vec<u8>, f: &Facts<'_>, proc: &Arc<ProcInfo>) {
        let a = f.attempt;
        self.dest.clear();
        words::write_destination(&mut self.dest, a);
        self.message.clear();
        words::write_message(&mut self.message, f, &self.dest);

        let end_ns = words::end_of(a);

        // A line is about 1 KB: grow once, not field by field.
        out.reserve(1024 + self.message.len());
        out.extend_from_slice(br#"{"@timestamp":"#);
        self.clock.push(out, f.wall(words::stamp_of(a)));
        out.extend_from_slice(br#","ecs":{"version":""#);
        out.extend_from_slice(ECS_VERSION.as_bytes());
        out.extend_from_slice(
            br#""},"event":{"kind":"event","category":["network"],"type":["connection"],"action":"connect","outcome":""#,
        );
        out.extend_from_slice(a.verdict.ecs_outcome().as_bytes());
        out.push(b'"');
        if let Some(duration) = words::duration_of(a) {
            out.extend_from_slice(br#","duration":"#);
            push_int(out, duration);
        }
        out.extend_from_slice(br#","start":"#);
        self.clock.push(out, f.wall(a.start_ns));
        if let Some(end) = end_ns {
            out.extend_from_slice(br#","end":"#);
            self.clock.push(out, f.wall(end));
        }
        out.push(b'}');

        match words::failure_of(a) {
            None => {}
            Some(Failure::Errno(errno)) => {
                out.extend_from_slice(br#","error":{"code":"#);
                match errno_name(errno) {
                    Some(name) => push_str(out, name),
                    None => {
                        out.extend_from_slice(b"\"E");
                        push_int(out, errno);
                        out.push(b'"');
                    }
                }
                out.extend_from_slice(br#","message":"#);
                push_str(out, &errno_message(errno));
                out.push(b'}');
            }
            Some(Failure::BeforeSyn) => {
                out.extend_from_slice(br#","error":{"message":"#);
                push_str(out, words::EARLY_FAILURE_MESSAGE);
                out.push(b'}');
            }
        }

        out.extend_from_slice(br#","message":"#);
        push_str(out, &self.message);

        out.extend_from_slice(br#","process":{"pid":"#);
        push_int(out, a.pid);
        out.extend_from_slice(br#","name":"#);
        push_str(out, &a.comm);
        out.extend_from_slice(br#","thread":{"id":"#);
        push_int(out, a.tid);
        out.push(b'}');
        let frags = fragments_for(&mut self.fragments, a.pid, proc);
        out.extend_from_slice(&frags.process_tail);
        out.extend_from_slice(br#"},"user":{"id":""#);
        push_int(out, a.uid);
        out.extend_from_slice(br#""},"group":{"id":""#);
        push_int(out, a.gid);
        out.extend_from_slice(br#""}"#);

        if let Some((ip, port)) = a.source {
            out.extend_from_slice(br#","source":{"ip":"#);
            push_ip(out, ip);
            out.extend_from_slice(br#","port":"#);
            push_int(out, port);
            out.push(b'}');
        }
        out.extend_from_slice(br#","destination":{"#);
        if let Peer::Ip { ip, port } = &a.destination {
            out.extend_from_slice(br#""ip":"#);
            push_ip(out, *ip);
            out.extend_from_slice(br#","port":"#);
            push_int(out, *port);
            out.push(b',');
        }
        out.extend_from_slice(br#""address":"#);
        push_str(out, &self.dest);
        if let Some(d) = &f.domain {
            out.extend_from_slice(br#","domain":"#);
            push_str(out, d.name);
        }
        out.extend_from_slice(br#"},"network":{"#);
        let mut comma = false;
        if let Some(t) = a.transport {
            out.extend_from_slice(br#""transport":"#);
            push_str(out, t.as_str());
            comma = true;
        }
        if let Peer::Ip { ip, .. } = &a.destination {
            if comma {
                out.push(b',');
            }
            out.extend_from_slice(if ip.is_ipv4() {
                br#""type":"ipv4""#
            } else {
                br#""type":"ipv6""#
            });
        }
        out.push(b'}');
        out.extend_from_slice(&frags.container);

        out.extend_from_slice(br#","tracer":{"schema_version":"#);
        push_int(out, SCHEMA_VERSION);
        out.extend_from_slice(br#","mode":"#);
        push_str(out, f.mode.as_str());
        out.extend_from_slice(br#","result":"#);
        push_str(out, a.verdict.as_str());
        if let Some(is_async) = a.is_async {
            out.extend_from_slice(if is_async {
                br#","async":true"#
            } else {
                br#","async":false"#
            });
        }
        if let Some(errno) = a.errno {
            out.extend_from_slice(br#","errno":"#);
            push_int(out, errno);
        }
        out.extend_from_slice(br#","cgroup":{"id":"#);
        push_int(out, a.cgroup_id);
        out.extend_from_slice(&frags.cgroup_path);
        out.push(b'}');
        out.extend_from_slice(&frags.tracer_tail);
        if let Some(d) = &f.domain {
            out.extend_from_slice(br#","domain_from":"#);
            push_str(out, d.source.as_str());
        }
        if let Some(v) = f.verdict {
            out.extend_from_slice(br#","proxy":"#);
            // Rare (only processes with a proxy) and nested: serde does it.
            // Serialising plain data into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, v);
            if let Some(x) = f.exchange {
                // Inside the same object: drop its closing brace.
                out.pop();
                super::exchange::write_fields(out, x, false);
                out.push(b'}');
            }
        } else if let Some(x) = f.exchange {
            // A --proxy destination of a process without proxy variables.
            out.extend_from_slice(br#","proxy":{"#);
            super::exchange::write_fields(out, x, true);
            out.push(b'}');
        }
        out.push(b'}');
        if let Some(x) = f.exchange {
            super::exchange::write_tls(out, x);
        }
        out.push(b'}');
    }
}

impl AttemptWriter {
    /// Forget `pid`'s fragments if they are of this (evicted) snapshot.
    pub fn forget(&mut self, pid: u32, proc: &Arc<ProcInfo>) {
        if self
            .fragments
            .get(&pid)
            .is_some_and(|(seen, _)| Arc::ptr_eq(seen, proc))
        {
            self.fragments.remove(&pid);
        }
    }

    /// Process snapshots with escaped fragments.
    pub fn cached(&self) -> usize {
        self.fragments.len()
    }

    /// The escaped per-process parts of `pid`'s snapshot `proc`.
    pub(super) fn fragments_of(&mut self, pid: u32, proc: &Arc<ProcInfo>) -> &Fragments {
        fragments_for(&mut self.fragments, pid, proc)
    }
}

/// The fragments of this process snapshot, escaped on first use. A new
/// snapshot (after exec or pid reuse) is a new `Arc`, so pointer
/// identity tells when to redo them.
fn fragments_for<'a>(
    cache: &'a mut PidMap<(Arc<ProcInfo>, Fragments)>,
    pid: u32,
    proc: &Arc<ProcInfo>,
) -> &'a Fragments {
    use std::collections::hash_map::Entry;
    if cache.len() >= MAX_PROCESSES && !cache.contains_key(&pid) {
        cache.clear();
    }
    let fresh = || (Arc::clone(proc), Fragments::of(proc));
    match cache.entry(pid) {
        Entry::Occupied(mut e) => {
            if !Arc::ptr_eq(&e.get().0, proc) {
                e.insert(fresh());
            }
            &e.into_mut().1
        }
        Entry::Vacant(v) => &v.insert(fresh()).1,
    }
}

pub(super) fn push_int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A JSON string. Almost everything written is plain text that needs no
/// escaping; the rest goes through serde_json's escaper, which `escape`
/// extends to DEL and C1.
pub(super) fn push_str(out: &mut Vec<u8>, s: &str) {
    // A fold without early exit, so the compiler can vectorise the scan.
    let plain = !s
        .bytes()
        .fold(false, |odd, b| odd | super::escape::needs_escape(b));
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Escaping a str into a Vec cannot fail.
        let _ = super::escape::to_writer(out, s);
    }
}

pub(super) fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            out.push(b'"');
            words::ipv4_text(v4, |part| out.extend_from_slice(part.as_bytes()));
            out.push(b'"');
        }
        // IPv6 text has rules (zero compression, embedded IPv4); leave
        // them to std.
        IpAddr::V6(v6) => {
            use std::io::Write;
            // Writing into a Vec cannot fail.
            let _ = write!(out, "\"{v6}\"");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{attempt, proc_info};
    use super::*;
    use crate::{
        decode::{comm_of, Attempt, Transport, Verdict},
        enrich::cgroup::parse_proc_cgroup,
        probe::Mode,
    };

    /// The line for these facts, written twice: the second time from the
    /// cached fragments and the cached second, which must not change it.
    fn line(a: &Attempt, proc: ProcInfo, mode: Mode) -> String {
        let proc = Arc::new(proc);
        let facts = Facts {
            attempt: a,
            proc: &proc,
            verdict: None,
            exchange: None,
            mode,
            wall_offset_ns: 1_764_250_000_000_000_000,
            domain: None,
        };
        let mut out = Vec::new();
        let mut w = AttemptWriter::new();
        w.write(&mut out, &facts, &proc);
        let mut again = Vec::new();
        w.write(&mut again, &facts, &proc);
        assert_eq!(out, again, "cached fragments change the line");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn every_kind_of_attempt_is_one_valid_line() {
        let mut cases: Vec<(Attempt, ProcInfo)> = Vec::new();
        let base = attempt();
        cases.push((base.clone(), proc_info()));
        for (verdict, errno) in [
            (Verdict::Connected, None),
            (Verdict::Aborted, None),
            (Verdict::Pending, None),
            (Verdict::Failed, None),
            (Verdict::TimedOut, Some(libc::ETIMEDOUT)),
            (Verdict::Unreachable, Some(libc::EHOSTUNREACH)),
            (Verdict::Failed, Some(9999)),
            (Verdict::Failed, Some(libc::ENOSPC)),
        ] {
            let mut a = base.clone();
            a.verdict = verdict;
            a.errno = errno;
            cases.push((a, proc_info()));
        }
        let mut v6 = base.clone();
        v6.destination = Peer::Ip {
            ip: "2001:db8::1".parse().expect("ip"),
            port: 443,
        };
        v6.source = Some(("::1".parse().expect("ip"), 1));
        cases.push((v6, ProcInfo::default()));
        let mut unix = base.clone();
        unix.transport = Some(Transport::Unix);
        unix.destination = Peer::Unix("/run/\"odd\"\\path\n.sock".into());
        unix.source = None;
        unix.is_async = None;
        unix.end_ns = 0;
        cases.push((unix, ProcInfo::default()));
        let mut udp = base.clone();
        udp.transport = None;
        udp.comm = comm_of(b"we\"ird\xff\\n");
        udp.start_ns = 999_999_999;
        cases.push((
            udp,
            ProcInfo {
                env: Some(EnvState::Unavailable("process exited".into())),
                cgroup: Some(parse_proc_cgroup("0::/system.slice/containerd.service\n")),
                ..ProcInfo::default()
            },
        ));
        let mut lines = Vec::new();
        for (a, p) in cases {
            for mode in [Mode::Socket, Mode::Syscall] {
                let line = line(&a, p.clone(), mode);
                serde_json::from_str::<serde_json::Value>(&line).expect("valid JSON");
                assert!(!line.contains('\n'), "one line: {line}");
                lines.push(line);
            }
        }
        // The cases reach every optional part of the line.
        for part in [
            r#""container":{"id":"0123456789abcdef"#,
            r#""pod_uid":"12345678-1234"#,
            r#""unit":"containerd.service""#,
            r#""error":{"code":"E9999""#,
            r#""address":"/run/\"odd\"\\path\n.sock""#,
            r#""ip":"2001:db8::1""#,
            r#""proxy_env":"unavailable: process exited""#,
            r#""async":true"#,
            r#""end":"#,
        ] {
            assert!(lines.iter().any(|l| l.contains(part)), "no line has {part}");
        }
    }

    #[test]
    fn a_proxy_verdict_is_written_as_its_own_json() {
        use crate::verdict::{
            endpoints_of, judge,
            resolve::{Resolver, Root},
        };
        let a = attempt();
        let proc = Arc::new(proc_info());
        let mut resolver = Resolver::new(std::path::Path::new("/nonexistent-root"));
        let dest = a.destination.ip_port();
        let verdict = proc.proxy_env().and_then(|env| {
            judge(
                dest,
                env,
                &endpoints_of(env),
                None,
                &mut resolver,
                Root::HOST,
            )
        });
        assert!(
            verdict.as_ref().is_some_and(|v| v.via == Some(true)),
            "{verdict:?}"
        );
        let facts = Facts {
            attempt: &a,
            proc: &proc,
            verdict: verdict.as_ref(),
            exchange: None,
            mode: Mode::Socket,
            wall_offset_ns: 0,
            domain: None,
        };
        let mut out = Vec::new();
        AttemptWriter::new().write(&mut out, &facts, &proc);
        let line: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(
            line["tracer"]["proxy"],
            serde_json::to_value(verdict.as_ref()).expect("verdict"),
        );
    }

    #[test]
    fn a_new_snapshot_of_a_pid_gets_new_fragments() {
        let a = attempt();
        let mut w = AttemptWriter::new();
        let first = Arc::new(proc_info());
        let second = Arc::new(ProcInfo {
            exe: Some("/usr/bin/other".into()),
            ..proc_info()
        });
        let mut line = |p: &Arc<ProcInfo>| {
            let facts = Facts {
                attempt: &a,
                proc: p,
                verdict: None,
                exchange: None,
                mode: Mode::Socket,
                wall_offset_ns: 0,
                domain: None,
            };
            let mut out = Vec::new();
            w.write(&mut out, &facts, p);
            String::from_utf8(out).expect("utf8")
        };
        assert!(line(&first).contains("/usr/bin/containerd"));
        assert!(line(&second).contains("/usr/bin/other"));
    }

    #[test]
    fn timestamps_cross_seconds_correctly() {
        let mut clock = SecondPrefix {
            second: None,
            text: Vec::new(),
        };
        for ns in [
            0u64,
            999_999_999,
            1_000_000_000,
            1_764_250_000_000_000_007,
            1_764_250_000_999_999_999,
            1_764_250_001_000_000_000,
        ] {
            let mut out = Vec::new();
            clock.push(&mut out, ns);
            let want = format!("\"{}\"", words::rfc3339(ns));
            assert_eq!(String::from_utf8(out).expect("utf8"), want);
        }
    }
}
