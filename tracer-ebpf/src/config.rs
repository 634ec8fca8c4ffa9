//! Read-only settings written by userspace before load (`EbpfLoader::set_global`).
//!
//! They live in .rodata, so the verifier sees them as constants and prunes
//! the branches a setting disables: an unset filter costs nothing.

use tracer_common::KernelOffsets;

/// Non-zero: only trace tgids present in `maps::PIDS`.
#[unsafe(no_mangle)]
static FILTER_PID: u8 = 0;
/// Non-zero: only trace comms present in `maps::COMMS`.
#[unsafe(no_mangle)]
static FILTER_COMM: u8 = 0;
/// Non-zero: drop successful attempts in the kernel (`--failed-only`).
#[unsafe(no_mangle)]
static FAILED_ONLY: u8 = 0;
/// Non-zero: the syscall tracepoints are attached (`--mode syscall`).
#[unsafe(no_mangle)]
static SYSCALL_MODE: u8 = 0;
/// Non-zero: `--debug-ebpf`, write the diagnostics of debug.rs.
#[unsafe(no_mangle)]
static DEBUG_EBPF: u8 = 0;
/// The tracer's own tgid: its own connects (DNS lookups of proxy names) are
/// never traced, so it cannot feed on itself.
#[unsafe(no_mangle)]
static TRACER_TGID: u32 = 0;
/// Structure offsets from the running kernel's BTF.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    sock_sk_err: 0,
    sock_sk_socket: 0,
    socket_file: 0,
    file_f_flags: 0,
    inet_sport: 0,
    inet_saddr: 0,
    sock_skc_v6_rcv_saddr: 0,
    task_mm: 0,
    mm_env_start: 0,
    mm_env_end: 0,
    task_signal: 0,
    signal_live: 0,
    task_nsproxy: 0,
    nsproxy_mnt_ns: 0,
    mnt_ns_inum: 0,
    task_real_parent: 0,
    task_tgid: 0,
};

// `read_volatile` keeps LLVM from folding the placeholder values above into
// the code: the real values only exist once userspace has patched .rodata.
#[inline(always)]
pub fn filter_pid() -> bool {
    unsafe { core::ptr::read_volatile(&FILTER_PID) != 0 }
}
#[inline(always)]
pub fn filter_comm() -> bool {
    unsafe { core::ptr::read_volatile(&FILTER_COMM) != 0 }
}
#[inline(always)]
pub fn failed_only() -> bool {
    unsafe { core::ptr::read_volatile(&FAILED_ONLY) != 0 }
}
#[inline(always)]
pub fn syscall_mode() -> bool {
    unsafe { core::ptr::read_volatile(&SYSCALL_MODE) != 0 }
}
#[inline(always)]
pub fn debug_ebpf() -> bool {
    unsafe { core::ptr::read_volatile(&DEBUG_EBPF) != 0 }
}
#[inline(always)]
pub fn tracer_tgid() -> u32 {
    unsafe { core::ptr::read_volatile(&TRACER_TGID) }
}
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}
