//! Outcome of a TCP attempt: sock:inet_sock_set_state.
//!
//! Kernel hook: `trace_inet_sock_set_state()` in `inet_sk_state_store()` /
//! `tcp_set_state()` (net/ipv4/tcp.c). Format on 6.18, from
//! /sys/kernel/tracing/events/sock/inet_sock_set_state/format:
//! ```text
//! const void * skaddr  offset:8   int oldstate  offset:16  int newstate offset:20
//! __u16 sport offset:24  __u16 dport offset:26  __u16 family offset:28
//! __u16 protocol offset:30  __u8 saddr[4] offset:32  __u8 daddr[4] offset:36
//! __u8 saddr_v6[16] offset:40  __u8 daddr_v6[16] offset:56
//! ```
//! https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/sock.h#L141
//!
//! The transitions that matter for a client:
//! - CLOSE -> SYN_SENT: `tcp_v4_connect()` sent the SYN (caller's context).
//! - SYN_SENT -> ESTABLISHED: the handshake completed (often softirq).
//! - SYN_SENT -> CLOSE: the attempt ended. `tcp_done_with_error()`
//!   (net/ipv4/tcp_input.c) writes `sk->sk_err` (ECONNREFUSED on a reset,
//!   ETIMEDOUT after the SYN retries, EHOSTUNREACH on ICMP) *before*
//!   `tcp_done()` moves the socket to CLOSE, so reading `sk_err` here gives
//!   the error; it is 0 when the owner closed the socket instead.
//!   This may run in softirq context with an unrelated current task, so the
//!   attempt is found by `skaddr`, never by pid.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, generated::bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{flags, outcome, Conn, AF_INET, IPPROTO_TCP};

use crate::{config, emit::emit_conn, maps::CONNS};

/// TCP states, include/net/tcp_states.h.
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;

const OFF_SKADDR: usize = 8;
const OFF_OLDSTATE: usize = 16;
const OFF_NEWSTATE: usize = 20;
const OFF_SPORT: usize = 24;
const OFF_FAMILY: usize = 28;
const OFF_PROTOCOL: usize = 30;
const OFF_SADDR: usize = 32;
const OFF_SADDR_V6: usize = 40;

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_set_state(&ctx);
    0
}

#[inline(always)]
fn try_set_state(ctx: &TracePointContext) -> Result<(), i32> {
    // SAFETY (all read_at calls): offsets from the tracepoint format above.
    let protocol: u16 = unsafe { ctx.read_at(OFF_PROTOCOL)? };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let old: i32 = unsafe { ctx.read_at(OFF_OLDSTATE)? };
    let new: i32 = unsafe { ctx.read_at(OFF_NEWSTATE)? };
    // Server-side and teardown transitions are the vast majority on a busy
    // node; leave before the map lookup.
    let interesting = matches!(
        (old, new),
        (TCP_CLOSE, TCP_SYN_SENT) | (TCP_SYN_SENT, TCP_ESTABLISHED) | (TCP_SYN_SENT, TCP_CLOSE)
    );
    if !interesting {
        return Ok(());
    }
    let sk: u64 = unsafe { ctx.read_at(OFF_SKADDR)? };
    let Some(conn) = CONNS.get_ptr_mut(sk) else {
        return Ok(());
    };
    // SAFETY: map value pointer, valid for this program run.
    let conn = unsafe { &mut *conn };

    match (old, new) {
        (TCP_CLOSE, TCP_SYN_SENT) => {
            conn.flags |= flags::SYN_SENT;
            read_source(ctx, conn)?;
        }
        (TCP_SYN_SENT, TCP_ESTABLISHED) => {
            read_source(ctx, conn)?;
            conn.outcome = outcome::CONNECTED;
            finish(sk, conn);
        }
        _ => {
            // The source port is allocated after the CLOSE -> SYN_SENT
            // transition (inet_hash_connect), so it is first visible here
            // or at ESTABLISHED.
            read_source(ctx, conn)?;
            let off = config::offsets();
            let err: i32 = if off.sock_sk_err != 0 {
                unsafe { bpf_probe_read_kernel((sk + u64::from(off.sock_sk_err)) as *const i32) }
                    .unwrap_or(0)
            } else {
                0
            };
            if err > 0 {
                conn.outcome = outcome::ERROR;
                conn.errno = err;
            } else {
                conn.outcome = outcome::ABORTED;
            }
            finish(sk, conn);
        }
    }
    Ok(())
}

/// The source address and port, once the kernel has chosen them.
#[inline(always)]
fn read_source(ctx: &TracePointContext, conn: &mut Conn) -> Result<(), i32> {
    let sport: u16 = unsafe { ctx.read_at(OFF_SPORT)? };
    if sport == 0 {
        return Ok(());
    }
    conn.sport = sport;
    let family: u16 = unsafe { ctx.read_at(OFF_FAMILY)? };
    if family == AF_INET {
        let saddr: [u8; 4] = unsafe { ctx.read_at(OFF_SADDR)? };
        conn.saddr[..4].copy_from_slice(&saddr);
    } else {
        conn.saddr = unsafe { ctx.read_at(OFF_SADDR_V6)? };
    }
    Ok(())
}

/// Report the attempt and forget the socket. In syscall mode an outcome
/// seen while connect() is still running (loopback: the whole handshake
/// happens inside the call) is left for sys_exit_connect, which adds the
/// return value and reports it.
#[inline(always)]
fn finish(sk: u64, conn: &mut Conn) {
    conn.end_ns = unsafe { bpf_ktime_get_ns() };
    if conn.flags & flags::IN_SYSCALL != 0 {
        return;
    }
    emit_conn(conn);
    let _ = CONNS.remove(sk);
}
