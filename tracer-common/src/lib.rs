//! Types shared by the eBPF probes (`tracer-ebpf`) and the userspace daemon
//! (`tracer-user`).
//!
//! Everything here crosses the kernel/user boundary as raw bytes through the
//! ring buffer or a map, so every struct is `#[repr(C)]`, has no implicit
//! padding (explicit `_pad` fields instead, so the verifier never sees
//! uninitialised stack bytes), and its size is pinned by a test.
#![no_std]

/// Length of `task->comm` (TASK_COMM_LEN in include/linux/sched.h).
pub const COMM_LEN: usize = 16;
/// Length of `sockaddr_un.sun_path` (UNIX_PATH_MAX in include/uapi/linux/un.h).
pub const UNIX_PATH_LEN: usize = 108;

/// Address families, from include/linux/socket.h.
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
/// IP protocols, from include/uapi/linux/in.h.
pub const IPPROTO_TCP: u16 = 6;
pub const IPPROTO_UDP: u16 = 17;

/// How an attempt ended, as far as the kernel side knows. Userspace turns
/// `OUTCOME_ERROR` plus the errno into `refused`, `timed_out`, ...
pub mod outcome {
    /// Not decided yet (only seen in the in-flight map, or flushed as `pending`).
    pub const NONE: u8 = 0;
    /// The handshake completed (TCP) or connect() returned 0 (UDP, unix).
    pub const CONNECTED: u8 = 1;
    /// The kernel reported an error; `Conn::errno` holds it.
    pub const ERROR: u8 = 2;
    /// The socket was closed (or the process exited) while SYN_SENT, with no
    /// error recorded: the client gave up. This is a Go dial timeout.
    pub const ABORTED: u8 = 3;
    /// connect() failed before a SYN was sent, and the errno is only visible
    /// from the syscall's return value, which the default (socket) mode does
    /// not hook.
    pub const FAILED_EARLY: u8 = 4;
}

/// Bits of `Conn::flags`.
pub mod flags {
    /// The socket had O_NONBLOCK when connect() was called.
    pub const NONBLOCK: u8 = 1;
    /// connect() returned EINPROGRESS (only known in syscall mode).
    pub const EINPROGRESS: u8 = 2;
    /// The socket reached SYN_SENT: a SYN left.
    pub const SYN_SENT: u8 = 4;
    /// Syscall mode: the connect() syscall is still running, so an outcome
    /// seen now is held until sys_exit_connect can add the return value.
    pub const IN_SYSCALL: u8 = 8;
    /// The syscall's return value was seen (syscall mode).
    pub const RET_KNOWN: u8 = 16;
    /// The attempt went through the cgroup connect hook (so it has a socket).
    pub const HOOKED: u8 = 32;
    /// A simultaneous open (SYN_SENT -> SYN_RECV) counted in the kernel's
    /// `SIMOPEN` and not yet finished (kernel-internal).
    pub const SIMOPEN: u8 = 64;
}

/// Record kinds in the ring buffer.
pub mod kind {
    /// A finished (or flushed) connect attempt.
    pub const CONNECT: u32 = 1;
    /// First connect of a process since exec: userspace should snapshot its
    /// /proc entry now, while it is still alive. The record is a
    /// `ProcEvent`, carrying the proxy variables of the environment.
    pub const PROCESS: u32 = 2;
    /// An announced process exited (its last thread): userspace may forget
    /// it once its last attempts are drained. A `ConnEvent` with pid_tgid.
    pub const EXIT: u32 = 3;
    /// A DNS message (`--dns`): a `DnsEvent`.
    pub const DNS: u32 = 4;
    /// The first line a proxied socket sent or received (`ExchangeEvent`).
    pub const EXCHANGE: u32 = 5;
}

/// The longest request or status line the kernel copies. A `CONNECT
/// host:port HTTP/1.1` line is short; an absolute-form `GET http://...`
/// may be longer, and is then cut here (`exchange::TRUNCATED`). A power of
/// two, so the eBPF side can bound lengths with a mask.
pub const LINE_MAX: usize = 256;

/// `ExchangeEvent::direction` and `ExchangeEvent::flags`.
pub mod exchange {
    /// The first payload the client sent to its proxy: the request line.
    pub const REQUEST: u32 = 1;
    /// The first payload the proxy sent back: the status line.
    pub const RESPONSE: u32 = 2;
    /// Flag: no CR or LF within `LINE_MAX` bytes (or the segment ended
    /// first); `line` holds a prefix of the line, never anything after it.
    pub const TRUNCATED: u32 = 1;
    /// `ProxySock::state` bits: which line has been seen already.
    pub const SEEN_REQUEST: u32 = 1;
    pub const SEEN_RESPONSE: u32 = 2;
    /// `ProxySock::state`: the request line was `CONNECT ...`.
    pub const CONNECT_SENT: u32 = 4;
    /// `ProxySock::state`: the proxy answered the CONNECT with 2xx, so the
    /// socket is now a tunnel whose first client record should be a TLS
    /// ClientHello.
    pub const TUNNEL: u32 = 8;
    /// `ProxySock::state`: the tunnel's first client payload was read.
    pub const SEEN_CLIENT_HELLO: u32 = 16;

    /// Direction of the record made of the tunnel's first client payload
    /// (a TLS ClientHello): `line` holds the SNI host name, nothing else.
    pub const TLS_CLIENT: u32 = 3;
    /// Direction of the record made of the tunnel's first server payload
    /// (a TLS ServerHello): the negotiated version, and for TLS 1.2 `line`
    /// holds the leaf certificate's issuer Name (DER), nothing else.
    pub const TLS_SERVER: u32 = 4;

    /// TLS record flag: the payload is not a TLS handshake record of the
    /// expected message (ClientHello, ServerHello): nothing was parsed.
    pub const NOT_TLS: u32 = 2;
    /// TLS record flag: a handshake, but a length pointed past its record
    /// or past the segment, or a field was out of range; what was parsed
    /// before that point is in the record.
    pub const MALFORMED: u32 = 4;
    /// TLS record flag: `line` holds the server name (TLS_CLIENT) or the
    /// issuer Name DER (TLS_SERVER); `TRUNCATED` when it was cut at
    /// `TLS_NAME_MAX` / `LINE_MAX` bytes.
    pub const HAS_NAME: u32 = 8;
    /// TLS_CLIENT flag: the ClientHello carries supported_versions, which
    /// the offered mask comes from (else only legacy_version was offered).
    pub const VERSIONS_EXT: u32 = 16;
    /// TLS_CLIENT: bits 8..16 of `flags` are the offered versions, bit n
    /// for version 0x03nn (0 = SSL 3.0 .. 4 = TLS 1.3), GREASE ignored.
    pub const OFFERED_SHIFT: u32 = 8;
    /// Bits 16..32 of `flags`: the ClientHello's legacy_version
    /// (TLS_CLIENT), or the version the server selected (TLS_SERVER:
    /// supported_versions if present, else legacy_version); 0 if unknown.
    pub const VERSION_SHIFT: u32 = 16;
    /// The longest server name the kernel copies (RFC 6066 allows 2^16-1
    /// bytes; a DNS name has at most 253).
    pub const TLS_NAME_MAX: usize = 255;
}

/// A proxy endpoint the kernel marks sockets for (`PROXY_ADDRS` key):
/// the destination of connect() as given, address in network order.
///
/// Layout (24 bytes, align 4): `addr` [u8;16] (IPv4 in the first 4 bytes),
/// `port` u16 host order, `family` u16, `_pad` u32.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProxyKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u16,
    pub _pad: u32,
}

/// What connect4/6 remembers of a socket that dialled a proxy
/// (`PROXY_SOCKS`, keyed by socket cookie), so the cgroup_skb programs,
/// which run in softirq or the peer's context, can name the attempt.
///
/// Layout (24 bytes, align 8): `pid_tgid` u64, `start_ns` u64 (the
/// attempt's `Conn::start_ns`), `state` u32 (`exchange::SEEN_*`), `_pad`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxySock {
    pub pid_tgid: u64,
    pub start_ns: u64,
    pub state: u32,
    pub _pad: u32,
}

/// One line of a proxy exchange (`kind::EXCHANGE`), cut in the kernel at
/// the first CR or LF: headers such as `Proxy-Authorization` never leave
/// the kernel. After a `CONNECT` answered 2xx, the same record carries the
/// facts of the tunnel's TLS handshake (`exchange::TLS_CLIENT`,
/// `exchange::TLS_SERVER`): versions in `flags`, and in `line` only the
/// SNI host name or the leaf certificate's issuer Name.
///
/// Layout (288 bytes, align 8):
/// ```text
///   0 kind       u32   kind::EXCHANGE
///   4 direction  u32   exchange::REQUEST / RESPONSE / TLS_CLIENT / TLS_SERVER
///   8 pid_tgid   u64   of the attempt (from connect time)
///  16 start_ns   u64   the attempt's start: with pid, its identity
///  24 len        u32   bytes of `line` in use
///  28 flags      u32   exchange::TRUNCATED (TLS: and NOT_TLS, MALFORMED,
///                      HAS_NAME, VERSIONS_EXT, versions in the upper bits)
///  32 line       [u8; LINE_MAX]
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExchangeEvent {
    pub kind: u32,
    pub direction: u32,
    pub pid_tgid: u64,
    pub start_ns: u64,
    pub len: u32,
    pub flags: u32,
    pub line: [u8; LINE_MAX],
}

/// Bytes of proxy variables a `ProcEvent` carries at most, as `KEY=VALUE\0`
/// entries. Proxy URLs are short; a long Kubernetes NO_PROXY list may not
/// fit, which sets `envcap::TRUNCATED` and userspace reads /proc instead.
pub const ENV_CAP: usize = 2048;
/// The longest single entry the kernel copies. The copy buffer is
/// `ENV_CAP + ENV_ENTRY_MAX` so that an entry starting anywhere below
/// `ENV_CAP` provably stays inside it (the verifier needs that bound).
pub const ENV_ENTRY_MAX: usize = 2048;

/// Bits of `ProcEvent::env_flags`: how the kernel-side read of the
/// environment block (`mm->env_start`..`env_end`) went.
pub mod envcap {
    /// The whole block was walked: `env` holds every proxy variable.
    pub const COMPLETE: u32 = 1;
    /// A proxy entry did not fit into `env` and was left out.
    pub const TRUNCATED: u32 = 2;
    /// A page of the block could not be read (not resident; a
    /// non-sleepable program cannot fault it in). The walk stopped there.
    pub const FAULT: u32 = 4;
    /// The task has no mm (a kernel thread) or no environment block.
    pub const NO_ENV: u32 = 8;
    /// The walk hit its step bound before the end of a huge block.
    pub const TOO_LONG: u32 = 16;
    /// The announcement was not made in the process's own context, so its
    /// memory could not be read (should not happen; see sock_state.rs).
    pub const NOT_CURRENT: u32 = 32;
    /// BTF lacked the offsets of `task_struct::mm` or `mm_struct::env_*`.
    pub const NO_OFFSETS: u32 = 64;
    /// `REQUEST_METHOD` is present (Go's and Python's CGI rule). Its value
    /// never leaves the kernel, only these two bits.
    pub const REQUEST_METHOD_PRESENT: u32 = 128;
    /// `REQUEST_METHOD` has a non-empty value.
    pub const REQUEST_METHOD_SET: u32 = 256;
}

/// Indices of the `LOST` per-CPU counter array: one per record kind, so
/// a lost DNS message or exchange line is never counted as a lost attempt.
pub mod lost {
    /// A finished attempt did not fit in the EVENTS ring (it was full).
    pub const RINGBUF_FULL: u32 = 0;
    /// The in-flight map was full, so an attempt could not be tracked.
    pub const INFLIGHT_FULL: u32 = 1;
    /// A process announcement or exit record did not fit in the PROCS ring.
    /// No attempt is lost with it: userspace reads /proc when the attempt
    /// comes (and the proxy environment may then be unknown).
    pub const ANNOUNCE_FULL: u32 = 2;
    /// A DNS message (`--dns`) did not fit in the EVENTS ring. No attempt
    /// is lost with it: the attempt that follows is reported without the
    /// name it was looked up by.
    pub const DNS_FULL: u32 = 3;
    /// A proxy exchange line (request or status line) did not fit in the
    /// EVENTS ring. No attempt is lost with it: the attempt is reported
    /// without that line (`exchange: not_seen` when the request was lost).
    pub const EXCHANGE_FULL: u32 = 4;
    pub const COUNT: u32 = 5;
}

/// Indices of the kernel's per-CPU `LRU_OPS` counters: new keys put into
/// each LRU map and keys deleted from it on purpose. An LRU map drops
/// entries silently to make room; userspace counts the entries present,
/// and what is neither deleted nor present was evicted
/// (inserted - deleted - present).
pub mod lru {
    /// `SEEN`: a process announced.
    pub const SEEN_INSERTED: u32 = 0;
    /// `SEEN`: forgotten at exec or exit.
    pub const SEEN_DELETED: u32 = 1;
    /// `PROXY_SOCKS`: a socket that dialled a proxy.
    pub const PROXY_INSERTED: u32 = 2;
    /// `PROXY_SOCKS`: both lines seen.
    pub const PROXY_DELETED: u32 = 3;
    /// `DNS_SOCKS`: a socket that talks to port 53 (never deleted: a
    /// closed socket's entry stays until evicted).
    pub const DNS_INSERTED: u32 = 4;
    pub const COUNT: u32 = 5;
}

/// One connect attempt, as tracked in the kernel.
///
/// Layout (112 bytes, align 8):
/// ```text
///   0 start_ns   u64   bpf_ktime_get_ns() at connect()
///   8 end_ns     u64   when the outcome was seen (0 while in flight)
///  16 pid_tgid   u64   tgid << 32 | tid of the connecting thread
///  24 uid_gid    u64   gid << 32 | uid
///  32 cgroup_id  u64   cgroup v2 id of the connecting task
///  40 comm       [u8;16]
///  56 daddr      [u8;16] IPv4 in the first 4 bytes, or IPv6
///  72 saddr      [u8;16]
///  88 errno      i32   positive errno, 0 if none
///  92 family     u16   AF_INET / AF_INET6 / AF_UNIX
///  94 protocol   u16   IPPROTO_TCP / IPPROTO_UDP / 0 (unix or unknown)
///  96 dport      u16   host byte order
///  98 sport      u16   host byte order
/// 100 outcome    u8    see `outcome`
/// 101 flags      u8    see `flags`
/// 102 _pad       [u8;2]
/// 104 ret        i32   connect()'s return value when RET_KNOWN
/// 108 _pad2      u32
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    pub start_ns: u64,
    pub end_ns: u64,
    pub pid_tgid: u64,
    pub uid_gid: u64,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
    pub daddr: [u8; 16],
    pub saddr: [u8; 16],
    pub errno: i32,
    pub family: u16,
    pub protocol: u16,
    pub dport: u16,
    pub sport: u16,
    pub outcome: u8,
    pub flags: u8,
    pub _pad: [u8; 2],
    pub ret: i32,
    pub _pad2: u32,
}

impl Conn {
    pub const fn zeroed() -> Self {
        Self {
            start_ns: 0,
            end_ns: 0,
            pid_tgid: 0,
            uid_gid: 0,
            cgroup_id: 0,
            comm: [0; COMM_LEN],
            daddr: [0; 16],
            saddr: [0; 16],
            errno: 0,
            family: 0,
            protocol: 0,
            dport: 0,
            sport: 0,
            outcome: outcome::NONE,
            flags: 0,
            _pad: [0; 2],
            ret: 0,
            _pad2: 0,
        }
    }
}

/// A ring-buffer record without a path: every TCP attempt, every process
/// announcement. The first 120 bytes of an `Event`, so a reader can look at
/// `kind` and `conn` without knowing which of the two it got; half the size
/// of an `Event`, which halves the ring-buffer memory a storm writes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnEvent {
    pub kind: u32,
    /// Always 0: no path follows.
    pub path_len: u32,
    pub conn: Conn,
}

impl ConnEvent {
    pub const fn zeroed() -> Self {
        Self {
            kind: 0,
            path_len: 0,
            conn: Conn::zeroed(),
        }
    }
}

/// One ring-buffer record that may carry an AF_UNIX path (syscall mode).
///
/// Layout (232 bytes, align 8):
/// ```text
///   0 kind      u32   see `kind`
///   4 path_len  u32   bytes of `path` in use (AF_UNIX only)
///   8 conn      Conn  (112 bytes)
/// 120 path      [u8;108] sun_path; an abstract name starts with NUL
/// 228 _pad      u32
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: u32,
    pub path_len: u32,
    pub conn: Conn,
    pub path: [u8; UNIX_PATH_LEN],
    pub _pad: u32,
}

impl Event {
    pub const fn zeroed() -> Self {
        Self {
            kind: 0,
            path_len: 0,
            conn: Conn::zeroed(),
            path: [0; UNIX_PATH_LEN],
            _pad: 0,
        }
    }
}

/// A process announcement (`kind::PROCESS`): who, and the proxy variables
/// of its environment, read by the kernel in the process's own context at
/// its first connect since exec. A client such as `curl` may exit within
/// milliseconds of a refused connect, before userspace could read
/// /proc/<pid>/environ; this record keeps the verdict possible. Only entries
/// named like a proxy variable are copied: no other variable leaves the
/// kernel.
///
/// Layout (4232 bytes, align 8):
/// ```text
///   0 kind       u32   kind::PROCESS
///   4 env_len    u32   bytes of `env` in use
///   8 conn       Conn  pid_tgid and comm set, the rest zero (112 bytes)
/// 120 env_flags  u32   see `envcap`
/// 124 env_steps  u32   reads the walk took (diagnostics)
/// 128 mnt_ns     u32   inode of its mount namespace, 0 when unread
/// 132 parent     u32   tgid of its parent, 0 when unread
/// 136 env        [u8; ENV_CAP + ENV_ENTRY_MAX]  "KEY=VALUE\0KEY=VALUE\0"
/// ```
/// It starts like a `ConnEvent`, so a reader can look at `kind` first.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcEvent {
    pub kind: u32,
    pub env_len: u32,
    pub conn: Conn,
    pub env_flags: u32,
    pub env_steps: u32,
    /// Its mount namespace (`task->nsproxy->mnt_ns->ns.inum`, what
    /// /proc/<pid>/ns/mnt names), read with the environment: the view of
    /// /etc/hosts its proxy's name is resolved in, known even when the
    /// process is gone before userspace reads /proc.
    pub mnt_ns: u32,
    /// Its parent's tgid (`task->real_parent->tgid`), read at the same
    /// time: where a view of that namespace may still be reached once the
    /// process itself is gone and reaped.
    pub parent: u32,
    pub env: [u8; ENV_CAP + ENV_ENTRY_MAX],
}

/// A connect() in progress in syscall mode, keyed by pid_tgid: what
/// sys_enter_connect saw, plus the socket the cgroup hook found.
///
/// Layout (240 bytes, align 8): `event` (232), `sk` u64.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inflight {
    pub event: Event,
    /// Kernel address of the `struct sock`, 0 when no cgroup hook ran.
    pub sk: u64,
}

/// Kernel structure offsets the probes need, found by userspace in the
/// running kernel's BTF (/sys/kernel/btf/vmlinux) so that one eBPF object
/// works across kernel versions without CO-RE support in the Rust toolchain.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `struct sock::sk_err`
    pub sock_sk_err: u32,
    /// `struct sock::sk_socket`
    pub sock_sk_socket: u32,
    /// `struct socket::file`
    pub socket_file: u32,
    /// `struct file::f_flags`
    pub file_f_flags: u32,
    /// `struct inet_sock::inet_sport`: the local port, network order.
    /// (`skc_num` is no use: tcp_set_state() clears it before reporting
    /// the move to CLOSE.)
    pub inet_sport: u32,
    /// `struct inet_sock::inet_saddr`: the local IPv4 address.
    pub inet_saddr: u32,
    /// `struct sock::__sk_common.skc_v6_rcv_saddr`: the local IPv6 address.
    pub sock_skc_v6_rcv_saddr: u32,
    /// `struct task_struct::mm`
    pub task_mm: u32,
    /// `struct mm_struct::env_start` and `env_end`: the environment block
    /// in the process's memory, as /proc/<pid>/environ reads it.
    pub mm_env_start: u32,
    pub mm_env_end: u32,
    /// `struct task_struct::signal` and `struct signal_struct::live`: the
    /// count of live threads, 0 once the last one is exiting.
    pub task_signal: u32,
    pub signal_live: u32,
    /// `struct task_struct::nsproxy`, `struct nsproxy::mnt_ns`, and the
    /// inode number in `struct mnt_namespace` (`ns.inum`).
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    pub mnt_ns_inum: u32,
    /// `struct task_struct::real_parent` and `::tgid`.
    pub task_real_parent: u32,
    pub task_tgid: u32,
}

/// Bytes of a DNS message a `DnsEvent` carries at most. A classic UDP
/// answer is at most 512 bytes; EDNS answers may be longer, and a
/// registry's name with a CNAME chain and a few addresses fits well within
/// 1 KiB. A longer message is cut (`DnsEvent::len` < `DnsEvent::wire_len`)
/// and userspace reads what it can of it.
pub const DNS_PAYLOAD_MAX: usize = 1024;

/// Bits of `DnsEvent::flags`.
pub mod dnsflags {
    /// The message left the socket (a query); else it arrived (an answer).
    pub const EGRESS: u32 = 1;
    /// Carried over TCP (the 2-byte length prefix is already skipped).
    pub const TCP: u32 = 2;
}

/// Who owns a socket that talks to port 53, recorded in the owner's
/// context by `cgroup/connect4/6` and `cgroup/sendmsg4/6` and keyed by the
/// socket cookie: the `cgroup_skb` programs that see the packets run in
/// softirq or in the peer's context, where the current task is not the
/// owner.
///
/// Layout (40 bytes, align 8): pid_tgid u64, uid_gid u64, cgroup_id u64,
/// comm [u8; 16].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsSock {
    pub pid_tgid: u64,
    pub uid_gid: u64,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

/// One DNS message seen on a marked socket (`kind::DNS`).
///
/// Layout (1160 bytes, align 8):
/// ```text
///    0 kind      u32   kind::DNS
///    4 len       u32   bytes of `payload` in use
///    8 conn      Conn  start_ns = when the packet passed, the owner from
///                      `DnsSock`, daddr/dport = the DNS server, family,
///                      protocol (112 bytes)
///  120 cookie    u64   socket cookie (bpf_get_socket_cookie)
///  128 flags     u32   see `dnsflags`
///  132 wire_len  u32   length of the whole DNS message on the wire
///  136 payload   [u8; DNS_PAYLOAD_MAX]
/// ```
/// It starts like a `ConnEvent`, so a reader can look at `kind` first.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsEvent {
    pub kind: u32,
    pub len: u32,
    pub conn: Conn,
    pub cookie: u64,
    pub flags: u32,
    pub wire_len: u32,
    pub payload: [u8; DNS_PAYLOAD_MAX],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all these types are #[repr(C)], made only of integers and
    // integer arrays, with explicit padding fields, so every bit pattern is
    // a valid value and there are no uninitialised bytes.
    unsafe impl aya::Pod for super::Conn {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::ConnEvent {}
    unsafe impl aya::Pod for super::Inflight {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::ProcEvent {}
    unsafe impl aya::Pod for super::DnsSock {}
    unsafe impl aya::Pod for super::DnsEvent {}
    unsafe impl aya::Pod for super::ProxyKey {}
    unsafe impl aya::Pod for super::ProxySock {}
    unsafe impl aya::Pod for super::ExchangeEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn layouts_are_pinned() {
        assert_eq!(size_of::<Conn>(), 112);
        assert_eq!(align_of::<Conn>(), 8);
        assert_eq!(offset_of!(Conn, errno), 88);
        assert_eq!(offset_of!(Conn, outcome), 100);
        assert_eq!(offset_of!(Conn, ret), 104);
        assert_eq!(size_of::<Event>(), 232);
        // ConnEvent is a prefix of Event.
        assert_eq!(size_of::<ConnEvent>(), 120);
        assert_eq!(offset_of!(ConnEvent, conn), offset_of!(Event, conn));
        assert_eq!(offset_of!(ConnEvent, path_len), offset_of!(Event, path_len));
        assert_eq!(offset_of!(Event, conn), 8);
        assert_eq!(offset_of!(Event, path), 120);
        assert_eq!(size_of::<Inflight>(), 240);
        assert_eq!(size_of::<KernelOffsets>(), 68);
        assert_eq!(size_of::<ProcEvent>(), 4232);
        assert_eq!(align_of::<ProcEvent>(), 8);
        // ProcEvent starts like a ConnEvent.
        assert_eq!(offset_of!(ProcEvent, conn), offset_of!(ConnEvent, conn));
        assert_eq!(
            offset_of!(ProcEvent, env_len),
            offset_of!(ConnEvent, path_len)
        );
        assert_eq!(offset_of!(ProcEvent, mnt_ns), 128);
        assert_eq!(offset_of!(ProcEvent, env), 136);
        assert_eq!(size_of::<DnsSock>(), 40);
        assert_eq!(size_of::<DnsEvent>(), 1160);
        assert_eq!(align_of::<DnsEvent>(), 8);
        assert_eq!(offset_of!(DnsEvent, conn), offset_of!(ConnEvent, conn));
        assert_eq!(offset_of!(DnsEvent, cookie), 120);
        assert_eq!(offset_of!(DnsEvent, payload), 136);
        assert_eq!(size_of::<ProxyKey>(), 24);
        assert_eq!(size_of::<ProxySock>(), 24);
        assert_eq!(size_of::<ExchangeEvent>(), 288);
        assert_eq!(offset_of!(ExchangeEvent, line), 32);
        // Starts with `kind`, like every record of the ring.
        assert_eq!(offset_of!(ExchangeEvent, kind), offset_of!(ConnEvent, kind));
    }
}
