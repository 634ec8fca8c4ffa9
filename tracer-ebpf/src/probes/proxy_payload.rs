//! The proxy exchange: cgroup_skb/egress and cgroup_skb/ingress.
//!
//! Kernel hook: BPF_CGROUP_RUN_PROG_INET_EGRESS, run from
//! `ip_finish_output()` / `ip6_finish_output()` (net/ipv4/ip_output.c,
//! net/ipv6/ip6_output.c) for every packet a socket of the cgroup sends,
//! and BPF_CGROUP_RUN_PROG_INET_INGRESS from `sk_filter_trim_cap()`
//! (net/core/filter.c), i.e. `tcp_v4_rcv()` / `tcp_v6_rcv()` once the
//! receiving socket is known. `__cgroup_bpf_run_filter_skb()`
//! (kernel/bpf/cgroup.c) points `skb->data` at the network header first.
//! https://elixir.bootlin.com/linux/v6.18/source/kernel/bpf/cgroup.c#L1530
//!
//! They run for every packet of the cgroups they are attached to, often in
//! softirq or in the peer's context (loopback), so the current task means
//! nothing here: the attempt is named by what connect4/6 stored for the
//! socket's cookie (`PROXY_SOCKS`). Sockets whose peer port is no proxy's
//! (`PROXY_PORTS`) cost an inlined array lookup and nothing else; the
//! others without that mark, one cookie lookup more. Userspace attaches
//! these programs only to the cgroups of processes that have a proxy
//! (past 16 siblings or 256 attachments, once at their common parent,
//! where every socket below runs them), never to the root, so the node's
//! other traffic does not run them at all.
//!
//! Privacy: of the first payload segment in each direction, only the bytes
//! before the first CR or LF (the request line, the status line) are
//! copied to the ring buffer. Headers such as `Proxy-Authorization` are
//! read into a buffer on the program's own stack, which is never sent.
//! Not a per-CPU map: cgroup_skb programs run under `migrate_disable()`
//! only (`bpf_prog_run_array_cg()`, kernel/bpf/cgroup.c), so an egress
//! run in a process's context can be preempted, or interrupted by the
//! softirq that runs ingress for another socket on the same CPU; a shared
//! buffer would then hand one connection's bytes to another's record.
//!
//! `bpf_skb_pull_data` is refused in cgroup_skb and the linear area holds
//! only the headers, so the payload is read with `bpf_skb_load_bytes`.
//! Both programs always return 1 (let the packet through).
//!
//! A `CONNECT` answered 2xx makes the socket a tunnel (`exchange::TUNNEL`):
//! the entry stays, and the tunnel's first client payload (a TLS
//! ClientHello) and then its first server payload (the ServerHello, and
//! with TLS 1.2 the Certificate in clear) are read by `crate::tls`. Of
//! those, only versions, the SNI host name and the leaf certificate's
//! issuer Name leave the kernel; then the entry is removed. Every other
//! socket, and every later packet of a tunnel, costs what it did before.

use aya_ebpf::{
    helpers::generated::{bpf_get_socket_cookie, bpf_skb_load_bytes},
    macros::cgroup_skb,
    programs::SkBuffContext,
    EbpfContext,
};
use tracer_common::{exchange, kind, lost, ExchangeEvent, ProxySock, LINE_MAX};

/// The scratch buffer in 8-byte words (zeroed and copied a word at a time).
const LINE_WORDS: usize = LINE_MAX / 8;

use crate::{
    maps::{count_lost, proxy_port, EVENTS, PROXY_SOCKS},
    tls,
};

/// include/uapi/linux/in.h
const IPPROTO_TCP: u8 = 6;

#[cgroup_skb(egress)]
pub fn proxy_egress(ctx: SkBuffContext) -> i32 {
    if crate::floor() {
        return 1;
    }
    on_packet(&ctx, exchange::REQUEST);
    1
}

#[cgroup_skb(ingress)]
pub fn proxy_ingress(ctx: SkBuffContext) -> i32 {
    if crate::floor() {
        return 1;
    }
    on_packet(&ctx, exchange::RESPONSE);
    1
}

#[inline(always)]
fn on_packet(ctx: &SkBuffContext, direction: u32) {
    // First, the socket's peer port: only a socket to a proxy's port can
    // be in PROXY_SOCKS (maps::PROXY_PORTS). `__sk_buff.remote_port` is
    // the socket's `skc_dport` (skb->sk, the sending socket on egress, the
    // receiving one on ingress: the client's both ways), in network order
    // in the upper 16 bits on little-endian (`bpf_convert_ctx_access`,
    // net/core/filter.c); in the lower 16 on big-endian.
    let raw = ctx.skb.remote_port();
    let port = if cfg!(target_endian = "little") {
        u16::from_be((raw >> 16) as u16)
    } else {
        u16::from_be(raw as u16)
    };
    if !proxy_port(port) {
        return;
    }
    // SAFETY: the program's own __sk_buff context, which
    // bpf_get_socket_cookie accepts in cgroup_skb (it names skb->sk).
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let Some(entry) = PROXY_SOCKS.get_ptr_mut(&cookie) else {
        return;
    };
    // SAFETY: map value pointer, valid for this program run.
    let entry = unsafe { &mut *entry };
    if entry.state & exchange::TUNNEL != 0 {
        on_tunnel(ctx, cookie, entry, direction);
        return;
    }
    let bit = if direction == exchange::REQUEST {
        exchange::SEEN_REQUEST
    } else {
        exchange::SEEN_RESPONSE
    };
    if entry.state & bit != 0 {
        return;
    }
    // Bytes from the proxy before the client spoke are no answer to it.
    if direction == exchange::RESPONSE && entry.state & exchange::SEEN_REQUEST == 0 {
        return;
    }
    let Some(offset) = payload_offset(ctx) else {
        return;
    };
    let len = ctx.len();
    if len <= offset {
        // SYN, ACK, FIN: no payload yet.
        return;
    }
    let avail = len - offset;
    // Zeroed: the scan below then stops at the copied bytes' end (a NUL).
    let mut buf = [0u64; LINE_WORDS];
    // black_box: the verifier must see the 1..=LINE_MAX bound checked
    // here, not a range LLVM proved and folded away.
    let n = core::hint::black_box(if avail > LINE_MAX as u32 {
        LINE_MAX as u32
    } else {
        avail
    });
    if n == 0 || n > LINE_MAX as u32 {
        return;
    }
    // SAFETY: `buf` holds LINE_MAX bytes and 0 < n <= LINE_MAX.
    let ret = unsafe { bpf_skb_load_bytes(ctx.as_ptr(), offset, buf.as_mut_ptr().cast(), n) };
    if ret != 0 {
        return;
    }
    // The line ends at the first CR, LF or NUL (the end of the copied
    // bytes); nothing after it is sent.
    let bytes: &[u8; LINE_MAX] = unsafe { &*(&raw const buf).cast() };
    let mut line_len = LINE_MAX;
    let mut i = 0usize;
    while i < LINE_MAX {
        let b = bytes[i];
        if b == b'\r' || b == b'\n' || b == 0 {
            line_len = i;
            break;
        }
        i += 1;
    }
    // Cut before a CR/LF only if one was there: else the line went on
    // past what this segment (or LINE_MAX) holds.
    let truncated = line_len >= n as usize || bytes[line_len & (LINE_MAX - 1)] == 0;
    entry.state |= bit;
    if direction == exchange::REQUEST && buf[0] == u64::from_le_bytes(*b"CONNECT ") {
        entry.state |= exchange::CONNECT_SENT;
    }
    // `HTTP/1.x 2xx` to a CONNECT: the tunnel is up (RFC 9110 9.3.6).
    if direction == exchange::RESPONSE
        && entry.state & exchange::CONNECT_SENT != 0
        && line_len >= 12
        && bytes[0] == b'H'
        && bytes[4] == b'/'
        && bytes[8] == b' '
        && bytes[9] == b'2'
    {
        entry.state |= exchange::TUNNEL;
    }
    let pid_tgid = entry.pid_tgid;
    let start_ns = entry.start_ns;
    if entry.state & (exchange::SEEN_REQUEST | exchange::SEEN_RESPONSE | exchange::TUNNEL)
        == exchange::SEEN_REQUEST | exchange::SEEN_RESPONSE
    {
        // Both lines seen and no tunnel: the socket is of no more interest.
        if PROXY_SOCKS.remove(&cookie).is_ok() {
            crate::maps::count_lru(tracer_common::lru::PROXY_DELETED);
        }
    }
    let Some(mut rec) = EVENTS.reserve::<ExchangeEvent>(0) else {
        count_lost(lost::EXCHANGE_FULL);
        return;
    };
    let ev = rec.as_mut_ptr();
    // SAFETY: `ev` points to a reserved, exclusively owned record; every
    // byte is written before submit, so no stale ring memory leaks.
    unsafe {
        (*ev).kind = kind::EXCHANGE;
        (*ev).direction = direction;
        (*ev).pid_tgid = pid_tgid;
        (*ev).start_ns = start_ns;
        (*ev).len = line_len as u32;
        (*ev).flags = if truncated { exchange::TRUNCATED } else { 0 };
        let line = (*ev).line.as_mut_ptr().cast::<u64>();
        let mut j = 0usize;
        while j < LINE_WORDS {
            // Word by word; bytes past the line are zeroed.
            let word = buf[j];
            let keep = line_len.saturating_sub(j * 8);
            let masked = if keep >= 8 {
                word
            } else {
                word & ((1u64 << (keep * 8)) - 1)
            };
            line.add(j).write_unaligned(masked);
            j += 1;
        }
    }
    rec.submit(0);
}

/// A packet of a tunnel: the first client payload (ClientHello), then the
/// first server payload (ServerHello); everything else passes untouched.
#[inline(always)]
fn on_tunnel(ctx: &SkBuffContext, cookie: u64, entry: &mut ProxySock, direction: u32) {
    let client = direction == exchange::REQUEST;
    let hello_seen = entry.state & exchange::SEEN_CLIENT_HELLO != 0;
    // The client speaks first in TLS: server bytes before the ClientHello,
    // and client bytes after it, are not what is looked for.
    if client == hello_seen {
        return;
    }
    let Some(p0) = payload_offset(ctx) else {
        return;
    };
    if ctx.len() <= p0 {
        return;
    }
    let pid_tgid = entry.pid_tgid;
    let start_ns = entry.start_ns;
    let Some(mut rec) = EVENTS.reserve::<ExchangeEvent>(0) else {
        count_lost(lost::EXCHANGE_FULL);
        // Not read, so not known to be TLS: nothing more to wait for.
        if PROXY_SOCKS.remove(&cookie).is_ok() {
            crate::maps::count_lru(tracer_common::lru::PROXY_DELETED);
        }
        return;
    };
    let ev = rec.as_mut_ptr();
    // SAFETY: `ev` points to a reserved, exclusively owned record; every
    // byte is written before submit: the header here, `line` zeroed (its
    // first words are the parser's scratch), then at most LINE_MAX bytes
    // of the name loaded over it.
    unsafe {
        (*ev).kind = kind::EXCHANGE;
        (*ev).direction = if client {
            exchange::TLS_CLIENT
        } else {
            exchange::TLS_SERVER
        };
        (*ev).pid_tgid = pid_tgid;
        (*ev).start_ns = start_ns;
        (*ev).len = 0;
        core::ptr::addr_of_mut!((*ev).flags).write_volatile(0);
        zero_line(ev);
    }
    let out = tls::Out(ev);
    if client {
        tls::client_hello(ctx, p0, &out);
    } else {
        tls::server_hello(ctx, p0, &out);
    }
    // SAFETY: as above.
    let mut flags = unsafe { core::ptr::addr_of!((*ev).flags).read_volatile() };
    if client && flags & exchange::NOT_TLS == 0 {
        entry.state |= exchange::SEEN_CLIENT_HELLO;
    } else {
        // Not TLS, or the server's answer is in: nothing more to read.
        if PROXY_SOCKS.remove(&cookie).is_ok() {
            crate::maps::count_lru(tracer_common::lru::PROXY_DELETED);
        }
    }
    let name_off = out.get(tls::NAME_OFF);
    let name_len = out.get(tls::NAME_LEN);
    // SAFETY: as above.
    unsafe { zero_line(ev) };
    let mut len = 0u32;
    if flags & exchange::HAS_NAME != 0 {
        let max = if client {
            exchange::TLS_NAME_MAX as u32
        } else {
            LINE_MAX as u32
        };
        // What the segment holds of it, then at most `max`.
        let avail = ctx.len().saturating_sub(name_off);
        let mut n = name_len;
        if n > avail {
            n = avail;
            flags |= exchange::TRUNCATED;
        }
        if n > max {
            n = max;
            flags |= exchange::TRUNCATED;
        }
        if n > 0 {
            // 1..=LINE_MAX by construction (n <= max <= LINE_MAX, so this
            // is n itself), in a form the verifier can follow; black_box
            // keeps LLVM from folding the mask away again.
            let size = ((core::hint::black_box(n) - 1) & (LINE_MAX as u32 - 1)) + 1;
            // SAFETY: `line` holds LINE_MAX bytes and 0 < size <= LINE_MAX;
            // on failure the helper zeroes them.
            let ret = unsafe {
                bpf_skb_load_bytes(ctx.as_ptr(), name_off, (*ev).line.as_mut_ptr().cast(), size)
            };
            if ret == 0 {
                len = size;
            }
        }
        if len == 0 {
            flags &= !(exchange::HAS_NAME | exchange::TRUNCATED);
            flags |= exchange::MALFORMED;
        }
    }
    // SAFETY: as above.
    unsafe {
        (*ev).len = len;
        (*ev).flags = flags;
    }
    rec.submit(0);
}

/// Zero the record's `line`, a word at a time.
///
/// # Safety
/// `ev` points to a reserved, exclusively owned record.
#[inline(always)]
unsafe fn zero_line(ev: *mut ExchangeEvent) {
    let line = unsafe { (*ev).line.as_mut_ptr().cast::<u64>() };
    let mut j = 0usize;
    while j < LINE_WORDS {
        // Volatile: else LLVM makes this a byte-wise memset loop, which
        // the verifier would walk 256 times on every path here.
        unsafe { line.add(j).write_volatile(0) };
        j += 1;
    }
}

/// Where the TCP payload starts, from the network header (`skb->data`
/// here): IPv4 with options, or IPv6 whose next header is TCP. None for
/// anything else (UDP, IPv6 extension headers).
#[inline(always)]
fn payload_offset(ctx: &SkBuffContext) -> Option<u32> {
    let first: u8 = ctx.load(0).ok()?;
    let ip_len = match first >> 4 {
        4 => {
            let proto: u8 = ctx.load(9).ok()?;
            if proto != IPPROTO_TCP {
                return None;
            }
            u32::from(first & 0x0f) * 4
        }
        6 => {
            let next: u8 = ctx.load(6).ok()?;
            if next != IPPROTO_TCP {
                return None;
            }
            40
        }
        _ => return None,
    };
    let doff: u8 = ctx.load(ip_len as usize + 12).ok()?;
    Some(ip_len + u32::from(doff >> 4) * 4)
}
