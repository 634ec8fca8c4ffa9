//! eBPF side of the connect tracer.
//!
//! Pipeline (kernel half): a hook sees connect() start -> the attempt is kept
//! in `CONNS`, keyed by the kernel address of its `struct sock` -> a socket
//! event decides the outcome -> one record goes to the `EVENTS` ring buffer.
//!
//! Outcomes are matched to attempts by socket, never by the pid of whatever
//! context reports them: a refusal after a retransmitted SYN is processed in
//! softirq context, where the "current" task is unrelated (pid 0, swapper).
//!
//! One file per hook in `probes/`, each citing the kernel code it relies on.
#![no_std]
#![no_main]
// atomic_xadd for the loss counters (maps::count_lost): the eBPF object is
// built with nightly (build-std), and core has no other atomic add on bpfel.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod config;
mod debug;
mod emit;
mod environ;
mod maps;
mod probes;
mod tls;

/// The `floor` feature: every program returns what it always returns, in
/// its first instructions, and does nothing else. The programs keep their
/// types, sections and hooks, so userspace loads and attaches them exactly
/// as the real ones, and bpf_stats then measures what merely running each
/// hook costs (its own timing included). Only the kernel-cost bench builds
/// it (`cargo xtask bench --only kernel --floor`); the rest of each body is
/// dead code there. The maps and settings stay in the object (bpf-linker
/// keeps exported symbols), so userspace sizes, fills and reads them as
/// usual.
#[inline(always)]
pub(crate) const fn floor() -> bool {
    cfg!(feature = "floor")
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a panic, so this is
    // unreachable in a loaded object.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
