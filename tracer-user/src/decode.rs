//! Decode: ring-buffer bytes -> typed `Attempt`.
//!
//! Pure functions, no I/O: the kernel record format is `tracer_common::Event`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use thiserror::Error;
use tracer_common::{
    flags, kind, outcome, Conn, Event, AF_INET, AF_INET6, AF_UNIX, IPPROTO_TCP, IPPROTO_UDP,
    UNIX_PATH_LEN,
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {0} bytes is shorter than an event ({1} bytes)")]
    Short(usize, usize),
    #[error("unknown record kind {0}")]
    Kind(u32),
}

/// How an attempt ended: the `tracer.result` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Connected,
    Refused,
    TimedOut,
    Unreachable,
    Aborted,
    Failed,
    Pending,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Refused => "refused",
            Self::TimedOut => "timed_out",
            Self::Unreachable => "unreachable",
            Self::Aborted => "aborted",
            Self::Failed => "failed",
            Self::Pending => "pending",
        }
    }

    /// ECS `event.outcome`.
    pub fn ecs_outcome(self) -> &'static str {
        match self {
            Self::Connected => "success",
            Self::Pending => "unknown",
            _ => "failure",
        }
    }

    pub fn is_failure(self) -> bool {
        !matches!(self, Self::Connected | Self::Pending)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
    Unix,
}

/// The far end of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Ip {
        ip: IpAddr,
        port: u16,
    },
    /// AF_UNIX path; an abstract name is shown with a leading '@'.
    Unix(String),
}

/// One decoded connect attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub start_ns: u64,
    pub end_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: String,
    pub transport: Option<Transport>,
    pub destination: Peer,
    pub source: Option<(IpAddr, u16)>,
    pub verdict: Verdict,
    /// errno for failures the kernel named.
    pub errno: Option<i32>,
    /// connect() returned EINPROGRESS (None: not known in this mode).
    pub is_async: Option<bool>,
    /// The syscall's return value, when seen (syscall mode).
    pub ret: Option<i32>,
}

/// A decoded ring-buffer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Attempt(Attempt),
    /// First connect of this tgid since exec: snapshot /proc now.
    Process {
        pid: u32,
    },
}

/// Decode one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let size = std::mem::size_of::<Event>();
    if bytes.len() < size {
        return Err(DecodeError::Short(bytes.len(), size));
    }
    // SAFETY: length checked above; Event is plain old data (every bit
    // pattern valid) and read_unaligned copes with any alignment.
    let event: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) };
    match event.kind {
        kind::PROCESS => Ok(Record::Process {
            pid: (event.conn.pid_tgid >> 32) as u32,
        }),
        kind::CONNECT => Ok(Record::Attempt(attempt_from(&event.conn, path_of(&event)))),
        other => Err(DecodeError::Kind(other)),
    }
}

fn path_of(event: &Event) -> Option<String> {
    if event.conn.family != AF_UNIX {
        return None;
    }
    let len = (event.path_len as usize).min(UNIX_PATH_LEN);
    let raw = &event.path[..len];
    Some(unix_path(raw))
}

/// sun_path as a person writes it: a filesystem path stops at the first NUL;
/// an abstract name (leading NUL) is shown as '@' + name, like `ss` does.
pub fn unix_path(raw: &[u8]) -> String {
    match raw.split_first() {
        Some((0, rest)) => {
            let end = rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            format!("@{}", String::from_utf8_lossy(&rest[..end]))
        }
        _ => {
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).into_owned()
        }
    }
}

/// An address as the kernel stored it; IPv4-mapped IPv6 becomes IPv4
/// (an AF_INET6 socket dialling ::ffff:1.2.3.4 talks IPv4 on the wire).
pub fn ip_of(family: u16, raw: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        return IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]));
    }
    let v6 = Ipv6Addr::from(*raw);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The comm as text: up to the first NUL, lossy for non-UTF-8 bytes.
pub fn comm_of(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Turn a kernel in-flight or finished record into an attempt. Also used
/// for the `pending` flush at shutdown, where `outcome` is still NONE.
pub fn attempt_from(conn: &Conn, path: Option<String>) -> Attempt {
    let transport = match (conn.family, conn.protocol) {
        (AF_UNIX, _) => Some(Transport::Unix),
        (_, IPPROTO_TCP) => Some(Transport::Tcp),
        (_, IPPROTO_UDP) => Some(Transport::Udp),
        _ => None,
    };
    let destination = match path {
        Some(p) => Peer::Unix(p),
        None => Peer::Ip {
            ip: ip_of(conn.family, &conn.daddr),
            port: conn.dport,
        },
    };
    let source = (conn.family == AF_INET || conn.family == AF_INET6)
        .then(|| (ip_of(conn.family, &conn.saddr), conn.sport))
        .filter(|(_, port)| *port != 0);
    let (verdict, errno) = match conn.outcome {
        outcome::CONNECTED => (Verdict::Connected, None),
        outcome::ERROR => (verdict_for_errno(conn.errno), Some(conn.errno)),
        outcome::ABORTED => (Verdict::Aborted, None),
        outcome::FAILED_EARLY => (Verdict::Failed, None),
        _ => (Verdict::Pending, None),
    };
    let ret_known = conn.flags & flags::RET_KNOWN != 0;
    let is_async = if ret_known {
        Some(conn.flags & flags::EINPROGRESS != 0)
    } else if conn.outcome == outcome::NONE && conn.flags & flags::IN_SYSCALL != 0 {
        // Flushed while the syscall was still running: it never returned.
        Some(false)
    } else {
        // Socket mode: a non-blocking TCP connect that sent its SYN always
        // returns EINPROGRESS; a blocking one never does.
        Some(conn.flags & flags::NONBLOCK != 0 && conn.outcome != outcome::FAILED_EARLY)
    };
    Attempt {
        start_ns: conn.start_ns,
        end_ns: conn.end_ns,
        pid: (conn.pid_tgid >> 32) as u32,
        tid: conn.pid_tgid as u32,
        uid: conn.uid_gid as u32,
        gid: (conn.uid_gid >> 32) as u32,
        cgroup_id: conn.cgroup_id,
        comm: comm_of(&conn.comm),
        transport,
        destination,
        source,
        verdict,
        errno,
        is_async,
        ret: ret_known.then_some(conn.ret),
    }
}

/// Map an errno to the result word of the connect-tracer spec.
pub fn verdict_for_errno(errno: i32) -> Verdict {
    match errno {
        libc::ECONNREFUSED => Verdict::Refused,
        libc::ETIMEDOUT => Verdict::TimedOut,
        libc::EHOSTUNREACH | libc::ENETUNREACH => Verdict::Unreachable,
        _ => Verdict::Failed,
    }
}

/// The symbolic name of an errno ("ECONNREFUSED"), for `error.code`.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENOTDIR => "ENOTDIR",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EPROTOTYPE => "EPROTOTYPE",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENETRESET => "ENETRESET",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOBUFS => "ENOBUFS",
        libc::EISCONN => "EISCONN",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::EPROTO => "EPROTO",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::ENONET => "ENONET",
        libc::ELOOP => "ELOOP",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ECANCELED => "ECANCELED",
        _ => return None,
    })
}

/// The human text of an errno, as Go prints it ("connection refused").
pub fn errno_message(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    // std formats "Connection refused (os error 111)".
    let text = text
        .rsplit_once(" (os error")
        .map_or(text.as_str(), |(head, _)| head);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("errno {errno}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(conn: Conn) -> Vec<u8> {
        let ev = Event {
            kind: kind::CONNECT,
            conn,
            ..Event::zeroed()
        };
        // SAFETY: Event is POD; view it as bytes like the ring buffer does.
        unsafe {
            std::slice::from_raw_parts((&ev as *const Event).cast::<u8>(), size_of::<Event>())
        }
        .to_vec()
    }

    #[test]
    fn decodes_a_refused_ipv4_attempt() {
        let mut c = Conn::zeroed();
        c.pid_tgid = (812u64 << 32) | 815;
        c.uid_gid = (5u64 << 32) | 1000;
        c.family = AF_INET;
        c.protocol = IPPROTO_TCP;
        c.daddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        c.dport = 7897;
        c.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        c.sport = 40000;
        c.outcome = outcome::ERROR;
        c.errno = libc::ECONNREFUSED;
        c.flags = flags::NONBLOCK | flags::SYN_SENT;
        c.comm[..10].copy_from_slice(b"containerd");
        let Record::Attempt(a) = decode(&event(c)).expect("decode") else {
            panic!("not an attempt");
        };
        assert_eq!(a.pid, 812);
        assert_eq!(a.tid, 815);
        assert_eq!(a.uid, 1000);
        assert_eq!(a.gid, 5);
        assert_eq!(a.comm, "containerd");
        assert_eq!(a.transport, Some(Transport::Tcp));
        assert_eq!(
            a.destination,
            Peer::Ip {
                ip: "10.0.0.1".parse().expect("ip"),
                port: 7897
            }
        );
        assert_eq!(a.verdict, Verdict::Refused);
        assert_eq!(a.errno, Some(111));
        assert_eq!(a.is_async, Some(true));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_reported_as_ipv4() {
        let mut raw = [0u8; 16];
        raw[10] = 0xff;
        raw[11] = 0xff;
        raw[12..].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            ip_of(AF_INET6, &raw),
            "127.0.0.1".parse::<IpAddr>().expect("ip")
        );
        let v6 = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(ip_of(AF_INET6, &v6), "::1".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn unix_paths_and_abstract_names() {
        assert_eq!(unix_path(b"/run/x.sock\0\0garbage"), "/run/x.sock");
        assert_eq!(unix_path(b"\0abstract\0\0"), "@abstract");
        assert_eq!(unix_path(b"/bad\xffbyte"), "/bad\u{fffd}byte");
        assert_eq!(unix_path(b""), "");
    }

    #[test]
    fn errno_words_names_and_messages() {
        assert_eq!(verdict_for_errno(libc::ECONNREFUSED), Verdict::Refused);
        assert_eq!(verdict_for_errno(libc::ETIMEDOUT), Verdict::TimedOut);
        assert_eq!(verdict_for_errno(libc::EHOSTUNREACH), Verdict::Unreachable);
        assert_eq!(verdict_for_errno(libc::ENETUNREACH), Verdict::Unreachable);
        assert_eq!(verdict_for_errno(libc::ENOENT), Verdict::Failed);
        assert_eq!(errno_name(111), Some("ECONNREFUSED"));
        assert_eq!(errno_name(2), Some("ENOENT"));
        assert_eq!(errno_name(9999), None);
        assert_eq!(errno_message(111), "connection refused");
        assert_eq!(errno_message(2), "no such file or directory");
    }

    #[test]
    fn outcomes_map_to_words() {
        let mut c = Conn::zeroed();
        c.family = AF_INET;
        c.protocol = IPPROTO_TCP;
        for (o, want) in [
            (outcome::CONNECTED, Verdict::Connected),
            (outcome::ABORTED, Verdict::Aborted),
            (outcome::FAILED_EARLY, Verdict::Failed),
            (outcome::NONE, Verdict::Pending),
        ] {
            c.outcome = o;
            assert_eq!(attempt_from(&c, None).verdict, want);
        }
        assert_eq!(Verdict::Pending.ecs_outcome(), "unknown");
        assert_eq!(Verdict::Aborted.ecs_outcome(), "failure");
    }

    #[test]
    fn syscall_mode_async_comes_from_the_return_value() {
        let mut c = Conn::zeroed();
        c.family = AF_INET;
        c.protocol = IPPROTO_UDP;
        c.flags = flags::RET_KNOWN;
        c.outcome = outcome::CONNECTED;
        let a = attempt_from(&c, None);
        assert_eq!(a.is_async, Some(false));
        assert_eq!(a.ret, Some(0));
        assert_eq!(a.transport, Some(Transport::Udp));
        c.flags |= flags::EINPROGRESS;
        assert_eq!(attempt_from(&c, None).is_async, Some(true));
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert!(matches!(decode(&[0u8; 10]), Err(DecodeError::Short(10, _))));
        let mut bytes = event(Conn::zeroed());
        bytes[0] = 99;
        assert_eq!(decode(&bytes), Err(DecodeError::Kind(99)));
    }
}
