//! Start of an attempt: cgroup/connect4 and cgroup/connect6.
//!
//! Kernel hook: BPF_CGROUP_RUN_PROG_INET4_CONNECT / _INET6_CONNECT, run from
//! `tcp_v4_pre_connect()` / `tcp_v6_pre_connect()` (net/ipv4/tcp_ipv4.c,
//! net/ipv6/tcp_ipv6.c) and `udp_pre_connect()` (net/ipv4/udp.c), which
//! `__inet_stream_connect()` (net/ipv4/af_inet.c) calls only for an
//! SS_UNCONNECTED socket, i.e. once per new attempt, never for a repeated
//! connect() polling an attempt in progress. It runs in the caller's context
//! with the destination as given to connect(), before any packet leaves.
//! https://elixir.bootlin.com/linux/v6.18/source/net/ipv4/af_inet.c#L716
//!
//! A tracer must never change the verdict: both programs always return 1
//! (allow).

use aya_ebpf::{
    bindings::{bpf_sock, BPF_NOEXIST},
    helpers::{
        bpf_get_current_uid_gid, bpf_probe_read_kernel,
        generated::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use tracer_common::{
    flags, lost, lru, outcome, Conn, ProxyKey, ProxySock, AF_INET, AF_INET6, IPPROTO_TCP,
};

use crate::{
    config,
    debug::diag,
    emit::{emit_conn, traced_task},
    maps::{count_lost, count_lru, proxies_known, CONNS, INFLIGHT, PROXY_ADDRS, PROXY_SOCKS},
};

/// O_NONBLOCK from include/uapi/asm-generic/fcntl.h (x86, arm64, riscv).
const O_NONBLOCK: u32 = 0o4000;
/// include/uapi/asm-generic/errno-base.h: what a BPF_NOEXIST insert of an
/// existing key returns.
const EEXIST: i32 = 17;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    if crate::floor() {
        return 1;
    }
    on_connect(&ctx, AF_INET);
    1
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    if crate::floor() {
        return 1;
    }
    on_connect(&ctx, AF_INET6);
    1
}

#[inline(always)]
fn on_connect(ctx: &SockAddrContext, family: u16) {
    // SAFETY: the context pointer is valid for the whole program run.
    let sa = unsafe { &*ctx.sock_addr };
    let sk_ptr: *mut bpf_sock = unsafe { sa.__bindgen_anon_1.sk };
    // The verifier forbids arithmetic on a socket pointer, but the key we
    // need is its plain address (the tracepoints report `skaddr`). Copying
    // it through bpf_probe_read_kernel turns it into a scalar.
    let sk: u64 = unsafe { bpf_probe_read_kernel(&sk_ptr as *const *mut bpf_sock as *const u64) }
        .unwrap_or(0);
    if sk == 0 {
        return;
    }
    let protocol = sa.protocol as u16;

    if config::syscall_mode() {
        on_connect_in_syscall(ctx, sa, sk, protocol);
        return;
    }
    // Socket mode traces TCP only: a UDP connect() has no later socket
    // event, its result exists only as the syscall's return value.
    if protocol != IPPROTO_TCP {
        return;
    }
    let Some(task) = traced_task() else {
        return;
    };
    // The process is announced at CLOSE -> SYN_SENT (sock_state.rs), still
    // in the caller's context, so an attempt that never sends a SYN costs
    // nothing more here.

    let mut conn = Conn::zeroed();
    conn.start_ns = unsafe { bpf_ktime_get_ns() };
    conn.pid_tgid = task.pid_tgid;
    conn.uid_gid = bpf_get_current_uid_gid();
    conn.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    conn.comm = task.comm;
    conn.family = family;
    conn.protocol = protocol;
    // user_port holds the port in network byte order in its low 16 bits.
    conn.dport = u16::from_be(sa.user_port as u16);
    if family == AF_INET {
        conn.daddr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    } else {
        let mut i = 0;
        while i < 4 {
            conn.daddr[i * 4..i * 4 + 4].copy_from_slice(&sa.user_ip6[i].to_ne_bytes());
            i += 1;
        }
    }
    if socket_is_nonblocking(sk) {
        conn.flags |= flags::NONBLOCK;
    }
    #[cfg(all(feature = "sks", not(feature = "sks-conns")))]
    track_in_storage(ctx, &mut conn);
    #[cfg(not(all(feature = "sks", not(feature = "sks-conns"))))]
    track(ctx, sk, &conn);
}

/// Syscall mode: sys_enter_connect already recorded the call; attach the
/// socket to it so sys_exit_connect and the socket events can meet.
#[inline(always)]
fn on_connect_in_syscall(
    ctx: &SockAddrContext,
    sa: &aya_ebpf::bindings::bpf_sock_addr,
    sk: u64,
    protocol: u16,
) {
    let pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    let Some(inflight) = INFLIGHT.get_ptr_mut(pid_tgid) else {
        // Not traced (filtered at sys_enter), or the in-flight map was full.
        return;
    };
    // SAFETY: map value pointer, valid for this program run.
    let inflight = unsafe { &mut *inflight };
    inflight.sk = sk;
    inflight.event.conn.protocol = protocol;
    inflight.event.conn.flags |= flags::HOOKED;
    // The family the socket really uses (an AF_INET6 socket may be handed a
    // v4-mapped address; the tracepoints then report AF_INET6 too).
    inflight.event.conn.family = sa.family as u16;
    if protocol != IPPROTO_TCP {
        return;
    }
    let mut conn = inflight.event.conn;
    conn.flags |= flags::IN_SYSCALL;
    if socket_is_nonblocking(sk) {
        conn.flags |= flags::NONBLOCK;
    }
    track(ctx, sk, &conn);
}

/// Put the attempt in the in-flight map. A leftover entry for the same
/// socket is an earlier attempt that never got an outcome (for example a
/// connect() that failed before its SYN, retried on the same socket): it is
/// reported first, so no attempt disappears.
#[inline(always)]
fn track(ctx: &SockAddrContext, sk: u64, conn: &Conn) {
    // No proxy known yet (no --proxy, no announced process with one): no
    // socket can be a proxy dial, so no lookup.
    if proxies_known() {
        mark_if_proxy(ctx, conn);
    }
    // The common case, a socket's first attempt, is one map operation.
    match CONNS.insert(sk, conn, u64::from(BPF_NOEXIST)) {
        Ok(()) => return,
        Err(e) if e != -EEXIST => {
            count_lost(lost::INFLIGHT_FULL);
            diag!(ctx, "CONNS insert failed ({}): attempt not tracked", e);
            return;
        }
        Err(_) => {}
    }
    if let Some(old) = CONNS.get_ptr_mut(sk) {
        // SAFETY: map value pointer, valid for this program run.
        report_leftover(unsafe { &mut *old }, conn.start_ns);
    }
    if let Err(e) = CONNS.insert(sk, conn, 0) {
        count_lost(lost::INFLIGHT_FULL);
        diag!(ctx, "CONNS insert failed ({}): attempt not tracked", e);
    }
}

/// An earlier attempt on the socket that is connecting again, never given
/// an outcome: reported as aborted (its SYN was out) or failed early.
#[inline(always)]
fn report_leftover(old: &mut Conn, now: u64) {
    if old.flags & flags::SIMOPEN != 0 {
        old.flags &= !flags::SIMOPEN;
        crate::maps::simopen_add(u64::MAX);
    }
    if old.outcome == outcome::NONE {
        old.outcome = if old.flags & flags::SYN_SENT != 0 {
            outcome::ABORTED
        } else {
            outcome::FAILED_EARLY
        };
        old.end_ns = now;
    }
    emit_conn(old);
}

/// The `sks` experiment (sock_state_sks.rs): the attempt goes into the
/// socket's own storage, created with it in one helper call. A value that
/// was already there is an earlier attempt on this socket: reported first
/// unless it has its outcome (reported then, and kept with `sks-keep`), as
/// `track` does.
#[cfg(all(feature = "sks", not(feature = "sks-conns")))]
#[inline(always)]
fn track_in_storage(ctx: &SockAddrContext, conn: &mut Conn) {
    if proxies_known() {
        mark_if_proxy(ctx, conn);
    }
    let start_ns = conn.start_ns;
    // SAFETY: ctx->sk of a connect hook is a full socket the helper takes;
    // `conn` is the initial value, copied when the storage is created.
    let slot = unsafe { crate::maps::SK_CONNS.get_or_insert_ptr_mut(ctx, Some(&mut *conn)) };
    if slot.is_null() {
        count_lost(lost::INFLIGHT_FULL);
        diag!(ctx, "socket storage failed: attempt not tracked");
        return;
    }
    // SAFETY: a socket-storage value, valid for this program run.
    let slot = unsafe { &mut *slot };
    // Just created from `conn` (a leftover started earlier).
    if slot.start_ns == start_ns {
        return;
    }
    if slot.outcome == outcome::NONE {
        report_leftover(slot, start_ns);
    }
    *slot = *conn;
}

/// Whether the socket's file has O_NONBLOCK, following
/// sock->sk_socket->file->f_flags with offsets from the kernel's BTF.
/// A non-blocking TCP connect that sends a SYN always returns EINPROGRESS.
#[inline(always)]
fn socket_is_nonblocking(sk: u64) -> bool {
    let off = config::offsets();
    if off.sock_sk_socket == 0 || off.socket_file == 0 {
        return false;
    }
    let read_u64 = |addr: u64| unsafe { bpf_probe_read_kernel(addr as *const u64) }.unwrap_or(0);
    let socket = read_u64(sk + u64::from(off.sock_sk_socket));
    if socket == 0 {
        return false;
    }
    let file = read_u64(socket + u64::from(off.socket_file));
    if file == 0 {
        return false;
    }
    let f_flags =
        unsafe { bpf_probe_read_kernel((file + u64::from(off.file_f_flags)) as *const u32) }
            .unwrap_or(0);
    f_flags & O_NONBLOCK != 0
}

/// A dial to a known proxy endpoint: remember the socket (by cookie) with
/// its attempt, so `proxy_payload.rs` copies the request and status lines
/// of this socket, and only of sockets marked here. One hash lookup per
/// attempt otherwise (the map holds only proxies, and is usually empty).
///
/// A dual-stack AF_INET6 socket (Java's default, and any program that
/// clears IPV6_V6ONLY) dials an IPv4 proxy as `::ffff:a.b.c.d`; it goes out
/// as IPv4. Such a destination is looked up as the IPv4 key userspace
/// writes for that proxy, so it is marked like a plain IPv4 dial.
#[inline(always)]
fn mark_if_proxy(ctx: &SockAddrContext, conn: &Conn) {
    let mut key = ProxyKey {
        addr: conn.daddr,
        port: conn.dport,
        family: conn.family,
        _pad: 0,
    };
    if conn.family == AF_INET6 && is_v4_mapped(&conn.daddr) {
        key.addr = [0; 16];
        key.addr[..4].copy_from_slice(&conn.daddr[12..]);
        key.family = AF_INET;
    }
    // SAFETY: the value is not kept past this program run.
    if unsafe { PROXY_ADDRS.get(&key) }.is_none() {
        return;
    }
    // SAFETY: ctx is the program's own context (bpf_sock_addr), which
    // bpf_get_socket_cookie accepts in cgroup/connect4 and connect6.
    let cookie = unsafe {
        aya_ebpf::helpers::generated::bpf_get_socket_cookie(aya_ebpf::EbpfContext::as_ptr(ctx))
    };
    let entry = ProxySock {
        pid_tgid: conn.pid_tgid,
        start_ns: conn.start_ns,
        state: 0,
        _pad: 0,
    };
    // Cookies are never reused, so this always puts a new key.
    match PROXY_SOCKS.insert(&cookie, &entry, 0) {
        Ok(()) => count_lru(lru::PROXY_INSERTED),
        Err(e) => diag!(ctx, "PROXY_SOCKS insert failed ({}): exchange not seen", e),
    }
}

/// `::ffff:a.b.c.d` (RFC 4291 2.5.5.2), as `ipv6_addr_v4mapped()` tests it.
#[inline(always)]
fn is_v4_mapped(addr: &[u8; 16]) -> bool {
    let head = u64::from_ne_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]);
    head == 0 && addr[8] == 0 && addr[9] == 0 && addr[10] == 0xff && addr[11] == 0xff
}
