//! DNS observation (`tracer trace --dns`): which process asked which name,
//! and what it was told.
//!
//! Kernel hooks:
//! - `cgroup/connect4`, `cgroup/connect6` (`dns_connect4/6`): run from
//!   `udp_pre_connect()` (net/ipv4/udp.c) and `tcp_v4_pre_connect()` in the
//!   caller's context. glibc's resolver connect()s its UDP socket to the
//!   server (res_send.c, `send_dg`), and every TCP fallback connects.
//!   https://elixir.bootlin.com/linux/v6.18/source/net/ipv4/udp.c#L2108
//! - `cgroup/sendmsg4`, `cgroup/sendmsg6` (`dns_sendmsg4/6`):
//!   BPF_CGROUP_RUN_PROG_UDP4_SENDMSG_LOCK in `udp_sendmsg()`, run in the
//!   caller's context when sendto() names a destination (an unconnected
//!   UDP socket: Go's and musl's resolvers may send that way).
//!   https://elixir.bootlin.com/linux/v6.18/source/net/ipv4/udp.c#L1297
//! - `cgroup_skb/egress` (`dns_egress`): `__cgroup_bpf_run_filter_skb()`
//!   from `ip_finish_output()` / `ip6_finish_output()`;
//!   `cgroup_skb/ingress` (`dns_ingress`): the same from `sk_filter()` once
//!   the receiving socket is known (`tcp_v4_rcv()`, `udp_queue_rcv_one_skb()`).
//!   Both see the packet from its network header on; `skb->sk` is the
//!   local socket in both directions.
//!   https://elixir.bootlin.com/linux/v6.18/source/kernel/bpf/cgroup.c#L1480
//!
//! The skb programs run for every packet of every process on the node, and
//! in softirq (or the peer's) context, where `bpf_get_current_pid_tgid`
//! names the wrong task. So the address hooks, which run in the owner's
//! context, mark sockets that talk to port 53 (`DNS_SOCKS`, by socket
//! cookie, the same value in all these programs), and the skb programs copy
//! only packets of marked sockets. Everything else leaves after two short
//! header reads. The tracer's own lookups are never marked (traced_task).
//!
//! Every program here allows what it sees: cgroup_skb and sock_addr
//! programs return 1 for "allow", and a tracer must never change that.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_uid_gid,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_skb_load_bytes,
        },
    },
    macros::{cgroup_skb, cgroup_sock_addr, map},
    maps::LruHashMap,
    programs::{SkBuffContext, SockAddrContext},
};
use tracer_common::{
    dnsflags, kind, lost, lru, DnsEvent, DnsSock, AF_INET, AF_INET6, DNS_PAYLOAD_MAX, IPPROTO_TCP,
    IPPROTO_UDP,
};

use crate::{
    emit::{announce_process, traced_task, zero},
    maps::{count_lost, count_lru, EVENTS},
};

/// The DNS port.
const DNS_PORT: u16 = 53;
/// `skb->protocol` values (ETH_P_IP, ETH_P_IPV6), in network byte order as
/// the field holds them, read on a little-endian CPU.
const ETH_P_IP_BE: u32 = 0x0008;
const ETH_P_IPV6_BE: u32 = 0xdd86;
/// The smallest DNS message: its header.
const DNS_HEADER_LEN: u32 = 12;

/// Sockets that talk to port 53, by socket cookie, with their owner.
///
/// An entry is written at each connect()/sendto() to port 53, so a socket
/// the resolver keeps open stays marked. Socket cookies are never reused
/// while the system runs, so a stale entry cannot be inherited by another
/// socket: it only takes space until LRU evicts it. 16,384 entries
/// (40 bytes each, 640 KiB) cover that many sockets used for lookups
/// within the LRU's memory; an evicted socket that is still in use loses
/// its packets' attribution, so they are not copied (never misattributed).
#[map]
static DNS_SOCKS: LruHashMap<u64, DnsSock> = LruHashMap::with_max_entries(16384, 0);

#[cgroup_sock_addr(connect4)]
pub fn dns_connect4(ctx: SockAddrContext) -> i32 {
    if crate::floor() {
        return 1;
    }
    mark(&ctx);
    1
}

#[cgroup_sock_addr(connect6)]
pub fn dns_connect6(ctx: SockAddrContext) -> i32 {
    if crate::floor() {
        return 1;
    }
    mark(&ctx);
    1
}

#[cgroup_sock_addr(sendmsg4)]
pub fn dns_sendmsg4(ctx: SockAddrContext) -> i32 {
    if crate::floor() {
        return 1;
    }
    mark(&ctx);
    1
}

#[cgroup_sock_addr(sendmsg6)]
pub fn dns_sendmsg6(ctx: SockAddrContext) -> i32 {
    if crate::floor() {
        return 1;
    }
    mark(&ctx);
    1
}

/// Remember who owns this socket, if it is addressing port 53.
#[inline(always)]
fn mark(ctx: &SockAddrContext) {
    // SAFETY: the context pointer is valid for the whole program run.
    let sa = unsafe { &*ctx.sock_addr };
    // user_port holds the port in network byte order in its low 16 bits.
    if u16::from_be(sa.user_port as u16) != DNS_PORT {
        return;
    }
    let Some(task) = traced_task() else {
        return;
    };
    // SAFETY: bpf_get_socket_cookie accepts a sock_addr context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut c_void) };
    let owner = DnsSock {
        pid_tgid: task.pid_tgid,
        uid_gid: bpf_get_current_uid_gid(),
        // SAFETY: plain helper call, allowed in cgroup programs.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: task.comm,
    };
    // An LRU insert makes room by evicting; it cannot fail for lack of it.
    // A new key is counted (evictions are derived from it); a socket that
    // sends again only has its owner updated.
    if DNS_SOCKS
        .insert(&cookie, &owner, u64::from(aya_ebpf::bindings::BPF_NOEXIST))
        .is_ok()
    {
        count_lru(lru::DNS_INSERTED);
    } else {
        let _ = DNS_SOCKS.insert(&cookie, &owner, 0);
    }
    // A resolver such as `getent` may exit before userspace reads its
    // /proc entry: announce it now, in its own context, as a TCP connect
    // would at SYN_SENT. Once per process per exec (emit.rs).
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    announce_process(ctx, task.pid_tgid, &task.comm, now);
}

#[cgroup_skb(egress)]
pub fn dns_egress(ctx: SkBuffContext) -> i32 {
    if crate::floor() {
        return 1;
    }
    on_packet(&ctx, true);
    1
}

#[cgroup_skb(ingress)]
pub fn dns_ingress(ctx: SkBuffContext) -> i32 {
    if crate::floor() {
        return 1;
    }
    on_packet(&ctx, false);
    1
}

/// Copy a DNS message of a marked socket to userspace. Queries leave to
/// port 53; answers arrive from it.
#[inline(always)]
fn on_packet(ctx: &SkBuffContext, egress: bool) {
    let skb = ctx.skb.skb;
    // SAFETY: the context pointer is valid for the whole program run.
    let eth_proto = unsafe { (*skb).protocol };
    // The first 10 bytes name the transport (IPv4 byte 9, IPv6 byte 6).
    let Ok(head) = ctx.load::<[u8; 10]>(0) else {
        return;
    };
    let (family, l4, ipproto) = if eth_proto == ETH_P_IP_BE {
        (AF_INET, u32::from(head[0] & 0x0f) * 4, head[9])
    } else if eth_proto == ETH_P_IPV6_BE {
        // Extension headers are not followed: resolvers do not send them.
        (AF_INET6, 40, head[6])
    } else {
        return;
    };
    let ipproto = u16::from(ipproto);
    if ipproto != IPPROTO_UDP && ipproto != IPPROTO_TCP {
        return;
    }
    let Ok(ports) = ctx.load::<[u8; 4]>(l4 as usize) else {
        return;
    };
    let port = if egress {
        u16::from_be_bytes([ports[2], ports[3]])
    } else {
        u16::from_be_bytes([ports[0], ports[1]])
    };
    if port != DNS_PORT {
        return;
    }
    // Only sockets whose owner was seen addressing port 53.
    // SAFETY: bpf_get_socket_cookie accepts an skb context.
    let cookie = unsafe { bpf_get_socket_cookie(skb as *mut c_void) };
    // SAFETY: a map value read by copy right away.
    let Some(owner) = (unsafe { DNS_SOCKS.get(&cookie) }).copied() else {
        return;
    };
    copy_message(ctx, egress, family, l4, ipproto, cookie, &owner);
}

#[inline(always)]
fn copy_message(
    ctx: &SkBuffContext,
    egress: bool,
    family: u16,
    l4: u32,
    ipproto: u16,
    cookie: u64,
    owner: &DnsSock,
) {
    let skb_len = ctx.skb.len();
    let mut flags = if egress { dnsflags::EGRESS } else { 0 };
    let (off, wire_len) = if ipproto == IPPROTO_TCP {
        // TCP: skip the header (data offset in the high nibble of byte
        // 12) and the message's 2-byte length prefix. A segment that does
        // not start a message (a continuation, a bare ACK) is too short or
        // does not parse in userspace.
        let Ok(doff) = ctx.load::<u8>(l4 as usize + 12) else {
            return;
        };
        let data = l4 + u32::from(doff >> 4) * 4;
        let Ok(prefix) = ctx.load::<[u8; 2]>(data as usize) else {
            return;
        };
        flags |= dnsflags::TCP;
        (data + 2, u32::from(u16::from_be_bytes(prefix)))
    } else {
        (l4 + 8, skb_len.saturating_sub(l4 + 8))
    };
    let avail = skb_len.saturating_sub(off);
    if avail < DNS_HEADER_LEN {
        return;
    }
    let n = if avail > DNS_PAYLOAD_MAX as u32 {
        DNS_PAYLOAD_MAX as u32
    } else {
        avail
    };
    let Some(mut entry) = EVENTS.reserve::<DnsEvent>(0) else {
        count_lost(lost::DNS_FULL);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to a reserved, exclusively owned record; every
    // byte is written below: the payload is zeroed first, so the bytes
    // past `len` are not those of whatever record (another process's
    // message, attempt or exchange line) used this ring memory before.
    unsafe {
        zero((*ev).payload.as_mut_ptr(), DNS_PAYLOAD_MAX as u32);
        (*ev).kind = kind::DNS;
        (*ev).len = n;
        (*ev).cookie = cookie;
        (*ev).flags = flags;
        (*ev).wire_len = wire_len;
        let c = &mut (*ev).conn;
        *c = tracer_common::Conn::zeroed();
        c.start_ns = bpf_ktime_get_ns();
        c.pid_tgid = owner.pid_tgid;
        c.uid_gid = owner.uid_gid;
        c.cgroup_id = owner.cgroup_id;
        c.comm = owner.comm;
        c.family = family;
        c.protocol = ipproto;
        c.dport = DNS_PORT;
        // The server: the destination of a query, the source of an answer.
        let ok = if family == AF_INET {
            let at = if egress { 16 } else { 12 };
            ctx.load::<[u8; 4]>(at).map(|a| {
                c.daddr[..4].copy_from_slice(&a);
            })
        } else {
            let at = if egress { 24 } else { 8 };
            ctx.load::<[u8; 16]>(at).map(|a| {
                c.daddr = a;
            })
        };
        if ok.is_err()
            || bpf_skb_load_bytes(
                skb_ptr(ctx),
                off,
                (*ev).payload.as_mut_ptr() as *mut c_void,
                n,
            ) != 0
        {
            entry.discard(0);
            return;
        }
    }
    entry.submit(0);
}

#[inline(always)]
fn skb_ptr(ctx: &SkBuffContext) -> *const c_void {
    ctx.skb.skb as *const c_void
}
