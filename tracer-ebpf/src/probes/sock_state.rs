//! Outcome of a TCP attempt: raw tracepoint `inet_sock_set_state`.
//!
//! Kernel hook: `trace_inet_sock_set_state()` in `inet_sk_state_store()` /
//! `tcp_set_state()` (net/ipv4/tcp.c), declared in include/trace/events/sock.h
//! as `TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)`.
//! https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/sock.h#L141
//!
//! A raw tracepoint, not the classic `sock:inet_sock_set_state`: this fires
//! on every TCP state change of every socket on the node (about six per
//! loopback connect, counting the server side), and the classic form makes
//! the kernel build a 72-byte trace record for each before the program
//! runs. The raw form hands over the three arguments as they are; the few
//! socket fields needed are read with offsets from the kernel's BTF.
//! Raw tracepoints exist since Linux 4.17.
//!
//! The transitions that matter for a client:
//! - CLOSE -> SYN_SENT: `tcp_v4_connect()` is sending the SYN, in the
//!   caller's context: the attempt is marked `SYN_SENT` (an entry without
//!   the mark a second later failed inside connect(): userspace reports it,
//!   tracer-user probe::Probes::failed_early), and the process is
//!   announced, once per exec.
//! - SYN_SENT -> ESTABLISHED: the handshake completed (often softirq).
//! - SYN_SENT -> CLOSE: the attempt ended. `tcp_done_with_error()`
//!   (net/ipv4/tcp_input.c) writes `sk->sk_err` (ECONNREFUSED on a reset,
//!   ETIMEDOUT after the SYN retries, EHOSTUNREACH on ICMP) *before*
//!   `tcp_done()` moves the socket to CLOSE, so reading `sk_err` here gives
//!   the error; it is 0 when the owner closed the socket instead.
//!   This may run in softirq context with an unrelated current task, so the
//!   attempt is found by the socket's address, never by pid.

#[cfg(not(feature = "sks"))]
use aya_ebpf::{
    helpers::bpf_probe_read_kernel, macros::raw_tracepoint, programs::RawTracePointContext,
};
use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, EbpfContext};
#[cfg(not(feature = "sks"))]
use tracer_common::AF_INET;
use tracer_common::{flags, outcome, Conn, KernelOffsets};

#[cfg(not(feature = "sks"))]
use crate::maps::CONNS;
use crate::{
    config,
    debug::diag,
    emit::{announce_process, emit_conn},
    maps::{simopen_add, simopen_any},
};

/// TCP states, include/net/tcp_states.h.
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;

#[cfg(not(feature = "sks"))]
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> i32 {
    if crate::floor() {
        return 0;
    }
    on_set_state(&ctx);
    0
}

#[cfg(not(feature = "sks"))]
#[inline(always)]
fn on_set_state(ctx: &RawTracePointContext) {
    let old = ctx.arg::<u64>(1) as i32;
    let new = ctx.arg::<u64>(2) as i32;
    if !wanted(old, new) {
        return;
    }
    let sk: u64 = ctx.arg(0);
    let Some(conn) = CONNS.get_ptr_mut(sk) else {
        return;
    };
    // SAFETY: map value pointer, valid for this program run.
    let conn = unsafe { &mut *conn };
    on_tracked(ctx, old, new, conn, &RawSock(sk));
}

/// Whether a transition can concern a tracked attempt.
///
/// Server-side and teardown transitions are the vast majority on a busy
/// node; leave before the map lookup. Only TCP sockets that connect4/6
/// tracked can match, so other protocols need no check. Any move out of
/// SYN_SENT is looked at, and out of SYN_RECV only while a tracked socket
/// is in a simultaneous open (tcp_rcv_synsent_state_process(), counted in
/// `SIMOPEN`): every accepted server socket leaves SYN_RECV too
/// (tcp_rcv_state_process()), and would cost a failed lookup each.
#[inline(always)]
pub(crate) fn wanted(old: i32, new: i32) -> bool {
    (old == TCP_CLOSE && new == TCP_SYN_SENT)
        || old == TCP_SYN_SENT
        || (old == TCP_SYN_RECV && simopen_any())
}

/// How the transition code reads a tracked socket and forgets its attempt:
/// by address with `bpf_probe_read_kernel` and `CONNS` (the raw
/// tracepoint), or by typed loads and socket storage (the `sks` experiment,
/// sock_state_sks.rs).
pub(crate) trait TrackedSock {
    /// The source address and port, once the kernel has chosen them: what
    /// the classic tracepoint reports as `sport` and `saddr`/`saddr_v6`.
    fn read_source(&self, conn: &mut Conn, off: &KernelOffsets);
    /// `sk->sk_err`.
    fn sk_err(&self, off: &KernelOffsets) -> i32;
    /// Drop the attempt (reported already).
    fn forget(&self);
}

/// A socket the raw tracepoint reports: its address, the key of `CONNS`.
#[cfg(not(feature = "sks"))]
struct RawSock(u64);

#[cfg(not(feature = "sks"))]
impl TrackedSock for RawSock {
    #[inline(always)]
    fn read_source(&self, conn: &mut Conn, off: &KernelOffsets) {
        read_source(self.0, conn, off);
    }

    #[inline(always)]
    fn sk_err(&self, off: &KernelOffsets) -> i32 {
        if off.sock_sk_err == 0 {
            return 0;
        }
        unsafe { bpf_probe_read_kernel((self.0 + u64::from(off.sock_sk_err)) as *const i32) }
            .unwrap_or(0)
    }

    #[inline(always)]
    fn forget(&self) {
        let _ = CONNS.remove(self.0);
    }
}

/// A transition of a tracked socket.
#[inline(always)]
pub(crate) fn on_tracked<C: EbpfContext, S: TrackedSock>(
    ctx: &C,
    old: i32,
    new: i32,
    conn: &mut Conn,
    sk: &S,
) {
    match (old, new) {
        (TCP_CLOSE, TCP_SYN_SENT) => {
            // Userspace tells a SYN that is out from a connect() that
            // failed before it by this flag (probe::Probes::failed_early).
            conn.flags |= flags::SYN_SENT;
            // tcp_v4_connect()/tcp_v6_connect() make this move inside the
            // connect() call, so the current task is the caller: the one
            // moment its environment can be read for sure, however soon it
            // exits afterwards. Once per process per exec.
            announce_process(ctx, conn.pid_tgid, &conn.comm, conn.start_ns);
        }
        (TCP_SYN_SENT | TCP_SYN_RECV, TCP_ESTABLISHED) => {
            sk.read_source(conn, &config::offsets());
            if conn.sport == 0 {
                // A connected socket always has a local port.
                diag!(
                    ctx,
                    "source port read as 0 at ESTABLISHED: BTF offset of inet_sock.inet_sport ({}) looks wrong",
                    config::offsets().inet_sport
                );
            }
            conn.outcome = outcome::CONNECTED;
            finish(sk, conn);
        }
        (TCP_SYN_SENT | TCP_SYN_RECV, TCP_CLOSE) => {
            // The source port is allocated after the CLOSE -> SYN_SENT
            // transition (inet_hash_connect), so it is first visible here
            // or at ESTABLISHED.
            let off = config::offsets();
            sk.read_source(conn, &off);
            let err = sk.sk_err(&off);
            if err > 0 {
                conn.outcome = outcome::ERROR;
                conn.errno = err;
            } else {
                conn.outcome = outcome::ABORTED;
            }
            finish(sk, conn);
        }
        (TCP_SYN_SENT, TCP_SYN_RECV) => {
            // A simultaneous open (a SYN arrived while ours was out, e.g. a
            // socket connecting to itself): rare enough to mention; the
            // attempt ends at SYN_RECV -> ESTABLISHED or CLOSE, which the
            // filter above lets through while `SIMOPEN` counts it.
            if conn.flags & flags::SIMOPEN == 0 {
                conn.flags |= flags::SIMOPEN;
                simopen_add(1);
            }
            diag!(
                ctx,
                "simultaneous open: tracked socket of pid {} went SYN_SENT -> SYN_RECV",
                (conn.pid_tgid >> 32) as u32
            );
        }
        (from, to) => {
            // A state this code does not know: the attempt stays tracked
            // until its socket leaves it or its slab slot is reused
            // (connect_hook.rs `track`).
            diag!(
                ctx,
                "unexpected TCP state transition {} -> {} of a tracked socket (pid {})",
                from,
                to,
                (conn.pid_tgid >> 32) as u32
            );
        }
    }
}

/// The source address and port, once the kernel has chosen them: what the
/// classic tracepoint reports as `sport` and `saddr`/`saddr_v6`.
#[cfg(not(feature = "sks"))]
#[inline(always)]
fn read_source(sk: u64, conn: &mut Conn, off: &KernelOffsets) {
    if off.inet_sport == 0 {
        return;
    }
    // SAFETY (all reads): `sk` is the live socket the tracepoint reports
    // (a TCP socket, so a struct inet_sock); bpf_probe_read_kernel copes
    // with any address.
    if conn.family == AF_INET {
        // inet_saddr, uc_ttl, inet_sport: 8 bytes in one read where the
        // port lies within them (every kernel since 4.x: 6 bytes apart;
        // the offsets come from BTF and are constants to the verifier,
        // which drops the other branch).
        let gap = off.inet_sport.wrapping_sub(off.inet_saddr);
        if (4..=6).contains(&gap) {
            let Ok(head) = (unsafe {
                bpf_probe_read_kernel((sk + u64::from(off.inet_saddr)) as *const [u8; 8])
            }) else {
                return;
            };
            let word = u64::from_le_bytes(head);
            let sport =
                u16::from_be_bytes([(word >> (8 * gap)) as u8, (word >> (8 * (gap + 1))) as u8]);
            if sport == 0 {
                return;
            }
            conn.sport = sport;
            conn.saddr[..4].copy_from_slice(&head[..4]);
            return;
        }
    }
    let sport = unsafe { bpf_probe_read_kernel((sk + u64::from(off.inet_sport)) as *const u16) }
        .map(u16::from_be)
        .unwrap_or(0);
    if sport == 0 {
        return;
    }
    conn.sport = sport;
    if conn.family == AF_INET {
        if let Ok(saddr) =
            unsafe { bpf_probe_read_kernel((sk + u64::from(off.inet_saddr)) as *const [u8; 4]) }
        {
            conn.saddr[..4].copy_from_slice(&saddr);
        }
    } else if let Ok(saddr) = unsafe {
        bpf_probe_read_kernel((sk + u64::from(off.sock_skc_v6_rcv_saddr)) as *const [u8; 16])
    } {
        conn.saddr = saddr;
    }
}

/// Report the attempt and forget the socket. In syscall mode an outcome
/// seen while connect() is still running (loopback: the whole handshake
/// happens inside the call) is left for sys_exit_connect, which adds the
/// return value and reports it.
#[inline(always)]
fn finish<S: TrackedSock>(sk: &S, conn: &mut Conn) {
    conn.end_ns = unsafe { bpf_ktime_get_ns() };
    // Out of SYN_RECV: the simultaneous open is over.
    if conn.flags & flags::SIMOPEN != 0 {
        conn.flags &= !flags::SIMOPEN;
        simopen_add(u64::MAX);
    }
    if conn.flags & flags::IN_SYSCALL != 0 {
        return;
    }
    emit_conn(conn);
    sk.forget();
}
