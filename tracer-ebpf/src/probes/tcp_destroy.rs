//! Safety net: tcp:tcp_destroy_sock.
//!
//! Kernel hook: `trace_tcp_destroy_sock()` in `tcp_v4_destroy_sock()`
//! (net/ipv4/tcp_ipv4.c), the `destroy` of every TCP socket (IPv6 calls it
//! too). Format on 6.18 (/sys/kernel/tracing/events/tcp/tcp_destroy_sock/
//! format): `const void * skaddr offset:8`.
//! https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/tcp.h
//!
//! An attempt still in `CONNS` when its socket is freed never reached an
//! outcome through `inet_sock_set_state`: connect() failed before a SYN was
//! sent (no route, no free port), or the tracer started mid-attempt. It is
//! reported here, and the entry is removed so a later socket that reuses
//! the same slab address cannot inherit it.

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext,
};
use tracer_common::{flags, outcome};

use crate::{emit::emit_conn, maps::CONNS};

const OFF_SKADDR: usize = 8;

#[tracepoint(category = "tcp", name = "tcp_destroy_sock")]
pub fn tcp_destroy_sock(ctx: TracePointContext) -> u32 {
    // SAFETY: offset from the tracepoint format above.
    let Ok(sk) = (unsafe { ctx.read_at::<u64>(OFF_SKADDR) }) else {
        return 0;
    };
    let Some(conn) = CONNS.get_ptr_mut(sk) else {
        return 0;
    };
    // SAFETY: map value pointer, valid for this program run.
    let conn = unsafe { &mut *conn };
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
