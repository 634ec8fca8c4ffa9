//! The `sks` experiment (issue 20 §1): the outcome of a TCP attempt from the
//! BTF tracepoint `tp_btf/inet_sock_set_state`, the attempt kept in socket
//! local storage (`SK_CONNS`, created by connect4/6) instead of `CONNS`.
//! Built only with tracer-ebpf's `sks` feature, in place of the raw
//! tracepoint of sock_state.rs, for `cargo xtask bench --only kernel --sks`.
//!
//! Kernel hook: `trace_inet_sock_set_state()` as in sock_state.rs,
//! `TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)`,
//! reached through the same raw-tracepoint dispatch (`bpf_trace_run3()`,
//! kernel/trace/bpf_trace.c) but verified against the tracepoint's BTF: the
//! verifier types `sk` as `PTR_TO_BTF_ID` of `struct sock`, so
//! - fields of `struct sock` are read with plain loads (the offsets come
//!   from the kernel's BTF through `.rodata`, constants to the verifier);
//! - `bpf_sk_storage_get()` and `bpf_sk_storage_delete()` take it
//!   (net/core/bpf_sk_storage.c, `bpf_sk_storage_tracing_allowed()`: tp_btf
//!   programs may, Linux 5.11+), so a socket connect4 never tracked costs a
//!   NULL `sk_bpf_storage` check instead of a failed hash lookup;
//! - fields of `struct inet_sock` (`inet_sport`, `inet_saddr`) lie past
//!   `struct sock`, beyond what the verifier lets a `struct sock *` load:
//!   `bpf_skc_to_tcp_sock()` (Linux 5.9+) gives the same address typed as
//!   `struct tcp_sock`, which holds them.
//!
//! Socket mode only: syscall mode still tracks in `CONNS`, which this
//! program does not read. An attempt that fails inside connect() before its
//! SYN stays in its socket's storage until the socket's next connect
//! reports it or the socket is freed (then it is lost): userspace cannot
//! walk socket storage as it walks `CONNS` (probe::Probes::failed_early).

#[cfg(not(feature = "sks-conns"))]
use core::ptr::{addr_of, null_mut};
use core::{ffi::c_void, ptr::read_volatile};

#[cfg(not(any(feature = "sks-keep", feature = "sks-conns")))]
use aya_ebpf::helpers::generated::bpf_sk_storage_delete;
#[cfg(not(feature = "sks-conns"))]
use aya_ebpf::helpers::generated::bpf_sk_storage_get;
use aya_ebpf::{
    helpers::generated::bpf_skc_to_tcp_sock, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use tracer_common::{Conn, KernelOffsets, AF_INET};

use super::sock_state::{on_tracked, wanted, TrackedSock};
#[cfg(not(feature = "sks-conns"))]
use crate::maps::SK_CONNS;

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    if crate::floor() {
        return 0;
    }
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    if !wanted(old, new) {
        return 0;
    }
    // Loaded straight from the context, so the verifier keeps its type
    // (PTR_TO_BTF_ID of struct sock).
    let sk: *mut c_void = ctx.arg(0);
    let Some(conn) = attempt_of(sk) else {
        return 0;
    };
    // SAFETY: a socket-storage (or `CONNS`) value, valid for this run.
    let conn = unsafe { &mut *conn };
    on_tracked(&ctx, old, new, conn, &BtfSock(sk));
    0
}

/// The socket's attempt in flight, if connect4/6 tracked one.
#[cfg(not(feature = "sks-conns"))]
#[inline(always)]
fn attempt_of(sk: *mut c_void) -> Option<*mut Conn> {
    // SAFETY: the helper checks the map and the socket; NULL when this
    // socket has no attempt (no F_CREATE here).
    let conn = unsafe { bpf_sk_storage_get(storage(), sk, null_mut(), 0) }.cast::<Conn>();
    // With `sks-keep`, a finished attempt stays until its socket is freed.
    if conn.is_null() || (cfg!(feature = "sks-keep") && unsafe { (*conn).outcome } != 0) {
        return None;
    }
    Some(conn)
}

/// `sks-conns`: the attempt in `CONNS`, by the socket's address.
#[cfg(feature = "sks-conns")]
#[inline(always)]
fn attempt_of(sk: *mut c_void) -> Option<*mut Conn> {
    crate::maps::CONNS.get_ptr_mut(sk as u64)
}

/// `SK_CONNS` as the helpers take it (a map reference the loader patches).
#[cfg(not(feature = "sks-conns"))]
#[inline(always)]
fn storage() -> *mut c_void {
    addr_of!(SK_CONNS).cast_mut().cast()
}

/// The tracepoint's typed `struct sock *`.
struct BtfSock(*mut c_void);

impl TrackedSock for BtfSock {
    #[inline(always)]
    fn read_source(&self, conn: &mut Conn, off: &KernelOffsets) {
        if off.inet_sport == 0 {
            return;
        }
        // SAFETY: the helper returns NULL unless the socket is a full TCP
        // socket; the result is the same socket typed as struct tcp_sock.
        let tp = unsafe { bpf_skc_to_tcp_sock(self.0) }.cast::<u8>();
        if tp.is_null() {
            return;
        }
        // SAFETY (all loads): offsets of inet_sock fields from the kernel's
        // BTF, inside struct tcp_sock (which begins with an inet_sock); the
        // verifier checks each against the BTF type.
        let sport =
            u16::from_be(unsafe { read_volatile(tp.add(off.inet_sport as usize).cast::<u16>()) });
        if sport == 0 {
            return;
        }
        conn.sport = sport;
        if conn.family == AF_INET {
            let saddr = unsafe { read_volatile(tp.add(off.inet_saddr as usize).cast::<u32>()) };
            conn.saddr[..4].copy_from_slice(&saddr.to_ne_bytes());
        } else {
            // struct in6_addr as its four __be32 words (s6_addr32), the
            // widest members the verifier lets a load cover.
            let base = off.sock_skc_v6_rcv_saddr as usize;
            let mut i = 0;
            while i < 4 {
                let word =
                    unsafe { read_volatile(tp.add(base + 4 * i).cast::<u32>()) }.to_ne_bytes();
                conn.saddr[4 * i..4 * i + 4].copy_from_slice(&word);
                i += 1;
            }
        }
    }

    #[inline(always)]
    fn sk_err(&self, off: &KernelOffsets) -> i32 {
        if off.sock_sk_err == 0 {
            return 0;
        }
        // SAFETY: `struct sock::sk_err`, an int, offset from BTF.
        unsafe {
            read_volatile(
                self.0
                    .cast::<u8>()
                    .add(off.sock_sk_err as usize)
                    .cast::<i32>(),
            )
        }
    }

    #[inline(always)]
    fn forget(&self) {
        // `sks-keep`: the outcome, set already, marks it finished.
        #[cfg(not(any(feature = "sks-keep", feature = "sks-conns")))]
        // SAFETY: the helper checks the map and the socket.
        unsafe {
            bpf_sk_storage_delete(storage(), self.0)
        };
        #[cfg(feature = "sks-conns")]
        let _ = crate::maps::CONNS.remove(self.0 as u64);
    }
}
