//! Decode: ring-buffer bytes -> typed `Attempt`.
//!
//! Pure functions, no I/O: the kernel record formats are
//! `tracer_common::ConnEvent` and, for AF_UNIX, `tracer_common::Event`.

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use thiserror::Error;
use tracer_common::{
    dnsflags, envcap, flags, kind, outcome, Conn, ConnEvent, DnsEvent, Event, ProcEvent, AF_INET,
    AF_INET6, AF_UNIX, DNS_PAYLOAD_MAX, ENV_CAP, IPPROTO_TCP, IPPROTO_UDP, UNIX_PATH_LEN,
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {0} bytes is shorter than an event ({1} bytes)")]
    Short(usize, usize),
    #[error("unknown record kind {0}")]
    Kind(u32),
}

/// How an attempt ended: the `tracer.result` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Connected,
    Refused,
    TimedOut,
    Unreachable,
    Aborted,
    Failed,
    Pending,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Unix => "unix",
        }
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl Peer {
    /// The address and port of an IP peer; None for AF_UNIX.
    pub fn ip_port(&self) -> Option<(IpAddr, u16)> {
        match self {
            Peer::Ip { ip, port } => Some((*ip, *port)),
            Peer::Unix(_) => None,
        }
    }
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
    pub comm: Comm,
    pub transport: Option<Transport>,
    pub destination: Peer,
    pub source: Option<(IpAddr, u16)>,
    pub verdict: Verdict,
    /// errno for failures the kernel named.
    pub errno: Option<i32>,
    /// connect() returned EINPROGRESS (None: not known in this mode).
    pub is_async: Option<bool>,
}

/// A decoded ring-buffer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Attempt(Attempt),
    /// First connect of this tgid since exec: snapshot /proc now.
    Process {
        pid: u32,
        /// Start (kernel ns) of the attempt that made the kernel announce
        /// the process: the first of this exec, 0 when unknown.
        since_ns: u64,
        /// The proxy variables the kernel read from the process's
        /// environment block at that connect.
        env: KernelEnv,
    },
    /// An announced process exited.
    Exit {
        pid: u32,
    },
    /// A DNS message on a socket a process used for lookups (`--dns`).
    Dns(Box<DnsPacket>),
    /// A request or status line of a socket that dialled a proxy.
    Exchange(crate::exchange::Line),
}

/// One DNS message as the kernel copied it (`tracer_common::DnsEvent`),
/// not parsed yet: enrich/dns reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsPacket {
    /// Kernel time the packet passed.
    pub time_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: Comm,
    /// The DNS server (destination of a query, source of an answer).
    pub server: (IpAddr, u16),
    pub transport: Transport,
    /// The socket's cookie: a query and its answer share it.
    pub cookie: u64,
    /// A query leaving; else an answer arriving.
    pub egress: bool,
    /// The message was longer than the kernel copies (DNS_PAYLOAD_MAX).
    pub cut: bool,
    /// The DNS message (without TCP's length prefix).
    pub message: Vec<u8>,
}

/// The proxy part of an environment as the kernel read it (`ProcEvent`):
/// `KEY=VALUE\0` entries of proxy variables only, and how the read went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelEnv {
    pub entries: Vec<u8>,
    /// `tracer_common::envcap` bits.
    pub flags: u32,
    /// The process's mount namespace at that connect (`ProcEvent::mnt_ns`),
    /// None when the kernel could not read it.
    pub mnt_ns: Option<u64>,
    /// Its parent's tgid then (`ProcEvent::parent`).
    pub parent: Option<u32>,
}

impl KernelEnv {
    /// Every proxy variable of the block is in `entries`: the walk reached
    /// the end and left nothing out.
    pub fn is_complete(&self) -> bool {
        self.flags & envcap::COMPLETE != 0 && self.flags & envcap::TRUNCATED == 0
    }

    /// Why the kernel's read is not the whole story, in words.
    pub fn shortfall(&self) -> Option<&'static str> {
        let f = self.flags;
        if f & envcap::FAULT != 0 {
            Some("the kernel could not read a page of its environment (not resident)")
        } else if f & envcap::TOO_LONG != 0 {
            Some("its environment is too long for the kernel-side read")
        } else if f & envcap::TRUNCATED != 0 {
            Some("its proxy variables are too long for the kernel-side read")
        } else if f & envcap::NO_ENV != 0 {
            Some("it has no environment block")
        } else if f & envcap::NO_OFFSETS != 0 {
            Some("this kernel's BTF lacks the mm_struct environment fields")
        } else if f & envcap::COMPLETE == 0 {
            Some("the kernel did not read its environment")
        } else {
            None
        }
    }
}

/// Decode one ring-buffer record: a `ConnEvent`, or for AF_UNIX an `Event`
/// (which starts like a `ConnEvent` and carries the path after it).
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let head: ConnEvent = read_record(bytes)?;
    match head.kind {
        kind::PROCESS => Ok(Record::Process {
            pid: (head.conn.pid_tgid >> 32) as u32,
            since_ns: head.conn.start_ns,
            env: kernel_env_of(bytes)?,
        }),
        kind::EXIT => Ok(Record::Exit {
            pid: (head.conn.pid_tgid >> 32) as u32,
        }),
        kind::DNS => dns_of(bytes).map(|p| Record::Dns(Box::new(p))),
        kind::CONNECT => {
            let path = if head.conn.family == AF_UNIX {
                Some(path_of(bytes, head.path_len)?)
            } else {
                None
            };
            Ok(Record::Attempt(attempt_from(&head.conn, path)))
        }
        kind::EXCHANGE => {
            crate::exchange::line_of(bytes)
                .map(Record::Exchange)
                .ok_or(DecodeError::Short(
                    bytes.len(),
                    size_of::<tracer_common::ExchangeEvent>(),
                ))
        }
        other => Err(DecodeError::Kind(other)),
    }
}

/// A record struct from the front of `bytes`, or `Short` when they are
/// fewer than its size.
pub(crate) fn read_record<T: RingRecord>(bytes: &[u8]) -> Result<T, DecodeError> {
    let size = size_of::<T>();
    if bytes.len() < size {
        return Err(DecodeError::Short(bytes.len(), size));
    }
    // SAFETY: length checked above; `RingRecord` types are plain old data
    // (every bit pattern valid) and read_unaligned copes with any
    // alignment of the ring buffer's bytes.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The `repr(C)` plain-old-data structs the kernel writes to the rings
/// (tracer-common), which `read_record` may read from any bytes.
pub(crate) trait RingRecord: Copy {}
impl RingRecord for ConnEvent {}
impl RingRecord for DnsEvent {}
impl RingRecord for ProcEvent {}
impl RingRecord for tracer_common::ExchangeEvent {}

/// The DNS message of a `DnsEvent` record.
fn dns_of(bytes: &[u8]) -> Result<DnsPacket, DecodeError> {
    let ev: DnsEvent = read_record(bytes)?;
    let len = (ev.len as usize).min(DNS_PAYLOAD_MAX);
    let c = &ev.conn;
    Ok(DnsPacket {
        time_ns: c.start_ns,
        pid: (c.pid_tgid >> 32) as u32,
        tid: c.pid_tgid as u32,
        uid: c.uid_gid as u32,
        gid: (c.uid_gid >> 32) as u32,
        cgroup_id: c.cgroup_id,
        comm: comm_of(&c.comm),
        server: (ip_of(c.family, &c.daddr), c.dport),
        transport: if ev.flags & dnsflags::TCP != 0 {
            Transport::Tcp
        } else {
            Transport::Udp
        },
        cookie: ev.cookie,
        egress: ev.flags & dnsflags::EGRESS != 0,
        cut: (ev.len as usize) < ev.wire_len as usize,
        message: ev.payload[..len].to_vec(),
    })
}

/// The environment capture of a `ProcEvent` record.
fn kernel_env_of(bytes: &[u8]) -> Result<KernelEnv, DecodeError> {
    let ev: ProcEvent = read_record(bytes)?;
    let len = (ev.env_len as usize).min(ENV_CAP);
    Ok(KernelEnv {
        entries: ev.env[..len].to_vec(),
        flags: ev.env_flags,
        mnt_ns: (ev.mnt_ns != 0).then_some(u64::from(ev.mnt_ns)),
        parent: (ev.parent != 0).then_some(ev.parent),
    })
}

/// The AF_UNIX path of a full `Event` record.
fn path_of(bytes: &[u8], path_len: u32) -> Result<String, DecodeError> {
    let size = size_of::<Event>();
    let start = std::mem::offset_of!(Event, path);
    let len = (path_len as usize).min(UNIX_PATH_LEN);
    let raw = bytes
        .get(start..start + len)
        .filter(|_| bytes.len() >= size)
        .ok_or(DecodeError::Short(bytes.len(), size))?;
    Ok(unix_path(raw))
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

/// A task's comm as text, held inline so that decoding an event does not
/// allocate. The kernel's 16 bytes become at most 48 bytes of UTF-8 (each
/// invalid byte turns into the three-byte U+FFFD).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Comm {
    buf: [u8; 48],
    len: u8,
}

impl Comm {
    pub fn as_str(&self) -> &str {
        // Built only from valid UTF-8 (see comm_of), so this cannot fail.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::ops::Deref for Comm {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<&str> for Comm {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The comm as text: up to the first NUL, lossy for non-UTF-8 bytes.
pub fn comm_of(raw: &[u8]) -> Comm {
    let end = raw
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(raw.len())
        .min(16);
    let mut comm = Comm {
        buf: [0; 48],
        len: 0,
    };
    if std::str::from_utf8(&raw[..end]).is_ok() {
        // The usual case: copy as is.
        comm.buf[..end].copy_from_slice(&raw[..end]);
        comm.len = end as u8;
        return comm;
    }
    let text = String::from_utf8_lossy(&raw[..end]);
    // 16 bytes of input never exceed 48 bytes of output; the char loop
    // keeps a cut on a boundary should that ever change.
    for c in text.chars() {
        let at = usize::from(comm.len);
        if at + c.len_utf8() > comm.buf.len() {
            break;
        }
        c.encode_utf8(&mut comm.buf[at..]);
        comm.len += c.len_utf8() as u8;
    }
    comm
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

/// The errnos a connect() can end with: symbolic name and the text Go
/// prints (glibc's strerror in the C locale, first letter lowered). A static
/// table, because strerror goes through gettext on every call and this runs
/// once per failed attempt.
fn errno_info(errno: i32) -> Option<(&'static str, &'static str)> {
    Some(match errno {
        libc::EPERM => ("EPERM", "operation not permitted"),
        libc::ENOENT => ("ENOENT", "no such file or directory"),
        libc::EINTR => ("EINTR", "interrupted system call"),
        libc::EIO => ("EIO", "input/output error"),
        libc::EBADF => ("EBADF", "bad file descriptor"),
        libc::EAGAIN => ("EAGAIN", "resource temporarily unavailable"),
        libc::ENOMEM => ("ENOMEM", "cannot allocate memory"),
        libc::EACCES => ("EACCES", "permission denied"),
        libc::EFAULT => ("EFAULT", "bad address"),
        libc::EINVAL => ("EINVAL", "invalid argument"),
        libc::EMFILE => ("EMFILE", "too many open files"),
        libc::ENOTDIR => ("ENOTDIR", "not a directory"),
        libc::ENOTSOCK => ("ENOTSOCK", "socket operation on non-socket"),
        libc::EPROTOTYPE => ("EPROTOTYPE", "protocol wrong type for socket"),
        libc::EPROTONOSUPPORT => ("EPROTONOSUPPORT", "protocol not supported"),
        libc::EOPNOTSUPP => ("EOPNOTSUPP", "operation not supported"),
        libc::EAFNOSUPPORT => ("EAFNOSUPPORT", "address family not supported by protocol"),
        libc::EADDRINUSE => ("EADDRINUSE", "address already in use"),
        libc::EADDRNOTAVAIL => ("EADDRNOTAVAIL", "cannot assign requested address"),
        libc::ENETDOWN => ("ENETDOWN", "network is down"),
        libc::ENETUNREACH => ("ENETUNREACH", "network is unreachable"),
        libc::ENETRESET => ("ENETRESET", "network dropped connection on reset"),
        libc::ECONNABORTED => ("ECONNABORTED", "software caused connection abort"),
        libc::ECONNRESET => ("ECONNRESET", "connection reset by peer"),
        libc::ENOBUFS => ("ENOBUFS", "no buffer space available"),
        libc::EISCONN => ("EISCONN", "transport endpoint is already connected"),
        libc::ENOTCONN => ("ENOTCONN", "transport endpoint is not connected"),
        libc::ETIMEDOUT => ("ETIMEDOUT", "connection timed out"),
        libc::ECONNREFUSED => ("ECONNREFUSED", "connection refused"),
        libc::EHOSTDOWN => ("EHOSTDOWN", "host is down"),
        libc::EHOSTUNREACH => ("EHOSTUNREACH", "no route to host"),
        libc::EALREADY => ("EALREADY", "operation already in progress"),
        libc::EINPROGRESS => ("EINPROGRESS", "operation now in progress"),
        libc::EPROTO => ("EPROTO", "protocol error"),
        libc::ENOPROTOOPT => ("ENOPROTOOPT", "protocol not available"),
        libc::ENONET => ("ENONET", "machine is not on the network"),
        libc::ELOOP => ("ELOOP", "too many levels of symbolic links"),
        libc::ENAMETOOLONG => ("ENAMETOOLONG", "file name too long"),
        libc::ECANCELED => ("ECANCELED", "operation canceled"),
        _ => return None,
    })
}

/// The symbolic name of an errno ("ECONNREFUSED"), for `error.code`.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    errno_info(errno).map(|(name, _)| name)
}

/// The human text of an errno, as Go prints it ("connection refused").
pub fn errno_message(errno: i32) -> Cow<'static, str> {
    if let Some((_, text)) = errno_info(errno) {
        return Cow::Borrowed(text);
    }
    // Rare: an errno outside the table; ask libc.
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    // std formats "Connection refused (os error 111)".
    let text = text
        .rsplit_once(" (os error")
        .map_or(text.as_str(), |(head, _)| head);
    let mut chars = text.chars();
    Cow::Owned(match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("errno {errno}"),
    })
}

/// A kernel record as the ring buffer hands it over, for tests.
#[cfg(test)]
pub(crate) fn event_bytes(ev: &Event) -> Vec<u8> {
    // SAFETY: Event is plain old data; view it as bytes.
    unsafe { std::slice::from_raw_parts((ev as *const Event).cast::<u8>(), size_of::<Event>()) }
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(conn: Conn) -> Vec<u8> {
        event_bytes(&Event {
            kind: kind::CONNECT,
            conn,
            ..Event::zeroed()
        })
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
    fn comms_are_cut_at_nul_and_kept_lossy() {
        assert_eq!(comm_of(b"curl\0\0garbage"), "curl");
        assert_eq!(comm_of(b"0123456789abcdef"), "0123456789abcdef");
        assert_eq!(comm_of(&[0xff; 16]).as_str(), "\u{fffd}".repeat(16));
        assert_eq!(comm_of(b""), "");
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
        // Outside the table: libc's text, lowered.
        assert_eq!(errno_message(libc::ENOSPC), "no space left on device");
        // The table agrees with libc for every entry it has.
        for errno in 1..200 {
            if let Some((_, text)) = errno_info(errno) {
                let libc_text = std::io::Error::from_raw_os_error(errno).to_string();
                assert!(
                    libc_text.to_lowercase().starts_with(text),
                    "{errno}: {text} vs {libc_text}"
                );
            }
        }
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
        assert_eq!(a.transport, Some(Transport::Udp));
        c.flags |= flags::EINPROGRESS;
        assert_eq!(attempt_from(&c, None).is_async, Some(true));
    }

    #[test]
    fn compact_and_full_records_decode() {
        let mut c = Conn::zeroed();
        c.pid_tgid = 7 << 32;
        c.family = AF_INET;
        c.protocol = IPPROTO_TCP;
        c.outcome = outcome::CONNECTED;
        // A TCP attempt comes as a 120-byte ConnEvent.
        let compact = event(c)[..size_of::<ConnEvent>()].to_vec();
        let Ok(Record::Attempt(a)) = decode(&compact) else {
            panic!("compact record did not decode");
        };
        assert_eq!((a.pid, a.verdict), (7, Verdict::Connected));
        // An AF_UNIX attempt carries its path in a full Event.
        c.family = AF_UNIX;
        let mut ev = Event {
            kind: kind::CONNECT,
            conn: c,
            ..Event::zeroed()
        };
        ev.path[..9].copy_from_slice(b"/run/x.so");
        ev.path_len = 9;
        let full = event_bytes(&ev);
        let Ok(Record::Attempt(a)) = decode(&full) else {
            panic!("full record did not decode");
        };
        assert_eq!(a.destination, Peer::Unix("/run/x.so".into()));
        // An AF_UNIX record cut to the compact size is an error, not a
        // read past the end.
        assert!(matches!(
            decode(&full[..size_of::<ConnEvent>()]),
            Err(DecodeError::Short(120, 232))
        ));
    }

    #[test]
    fn a_process_record_carries_the_kernel_env() {
        let mut ev = ProcEvent {
            kind: kind::PROCESS,
            env_len: 0,
            conn: Conn::zeroed(),
            env_flags: envcap::COMPLETE | envcap::REQUEST_METHOD_PRESENT,
            env_steps: 3,
            mnt_ns: 4026531841,
            parent: 4241,
            env: [0; tracer_common::ENV_CAP + tracer_common::ENV_ENTRY_MAX],
        };
        ev.conn.pid_tgid = (4242u64 << 32) | 4243;
        let entries = b"HTTPS_PROXY=http://127.0.0.1:9\0no_proxy=x\0";
        ev.env[..entries.len()].copy_from_slice(entries);
        ev.env_len = entries.len() as u32;
        // SAFETY: ProcEvent is plain old data.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const ProcEvent).cast::<u8>(),
                size_of::<ProcEvent>(),
            )
        };
        let Ok(Record::Process { pid, env, .. }) = decode(bytes) else {
            panic!("not a process record");
        };
        assert_eq!(pid, 4242);
        assert_eq!(env.mnt_ns, Some(4026531841));
        assert_eq!(env.parent, Some(4241));
        assert_eq!(env.entries, entries.to_vec());
        assert!(env.is_complete());
        assert_eq!(env.shortfall(), None);
        // A length beyond the capture is clamped, never read past.
        ev.env_len = u32::MAX;
        ev.env_flags = envcap::FAULT;
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const ProcEvent).cast::<u8>(),
                size_of::<ProcEvent>(),
            )
        };
        let Ok(Record::Process { env, .. }) = decode(bytes) else {
            panic!("not a process record");
        };
        assert_eq!(env.entries.len(), tracer_common::ENV_CAP);
        assert!(!env.is_complete());
        assert!(env.shortfall().is_some_and(|s| s.contains("not resident")));
        // Cut short: an error, not a read past the end.
        assert!(matches!(
            decode(&bytes[..200]),
            Err(DecodeError::Short(200, _))
        ));
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert!(matches!(decode(&[0u8; 10]), Err(DecodeError::Short(10, _))));
        let mut bytes = event(Conn::zeroed());
        bytes[0] = 99;
        assert_eq!(decode(&bytes), Err(DecodeError::Kind(99)));
    }
}
