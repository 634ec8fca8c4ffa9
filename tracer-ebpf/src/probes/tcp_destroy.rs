//! Safety net: raw tracepoint `tcp_destroy_sock`.
//!
//! Kernel hook: `trace_tcp_destroy_sock()` in `tcp_v4_destroy_sock()`
//! (net/ipv4/tcp_ipv4.c), the `destroy` of every TCP socket (IPv6 calls it
//! too), declared in include/trace/events/tcp.h with
//! `TP_PROTO(struct sock *sk)`. Raw rather than the classic
//! `tcp:tcp_destroy_sock` because it fires for every TCP socket on the node
//! and the classic form builds a trace record first (see sock_state.rs).
//! https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/tcp.h
//!
//! An attempt still in `CONNS` when its socket is freed never reached an
//! outcome through `inet_sock_set_state`: connect() failed before a SYN was
//! sent (no route, no free port), or the tracer started mid-attempt. It is
//! reported here, and the entry is removed so a later socket that reuses
//! the same slab address cannot inherit it.

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_ns, macros::raw_tracepoint, programs::RawTracePointContext,
};
use tracer_common::{flags, outcome};

use crate::{
    emit::emit_conn,
    maps::{simopen_add, CONNS},
};

#[raw_tracepoint(tracepoint = "tcp_destroy_sock")]
pub fn tcp_destroy_sock(ctx: RawTracePointContext) -> i32 {
    if crate::floor() {
        return 0;
    }
    let sk: u64 = ctx.arg(0);
    let Some(conn) = CONNS.get_ptr_mut(sk) else {
        return 0;
    };
    // SAFETY: map value pointer, valid for this program run.
    let conn = unsafe { &mut *conn };
    if conn.flags & flags::SIMOPEN != 0 {
        conn.flags &= !flags::SIMOPEN;
        simopen_add(u64::MAX);
    }
    if conn.outcome == outcome::NONE {
        conn.outcome = if conn.flags & flags::SYN_SENT != 0 {
            outcome::ABORTED
        } else {
            outcome::FAILED_EARLY
        };
        conn.end_ns = unsafe { bpf_ktime_get_ns() };
    }
    emit_conn(conn);
    let _ = CONNS.remove(sk);
    0
}
