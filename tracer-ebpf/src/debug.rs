//! Diagnostics for an operator debugging the tracer itself
//! (`tracer trace --debug-ebpf`), through aya-log: an unexpected TCP state
//! transition of a tracked socket, a map insert that failed, a BTF offset
//! that reads back nonsense.
//!
//! Off, they cost nothing: `DEBUG_EBPF` (config.rs) and aya-log's
//! `AYA_LOG_LEVEL` live in .rodata, userspace sets both to 0 before load,
//! and the verifier then knows every log branch is dead and never runs it.
//! On, each CPU writes at most `BURST` lines per second, so a pathological
//! case (every connect failing to insert) cannot flood the log ring or the
//! reader.

use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, macros::map, maps::PerCpuArray};

/// Lines per CPU per second at most.
const BURST: u64 = 10;

/// Per CPU: [the second of the last line, lines written in it].
#[map]
static LOG_BUDGET: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Whether this CPU may write another line this second.
#[inline(always)]
pub fn allowed() -> bool {
    let Some(slot) = LOG_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU slot; a program runs to completion on one CPU.
    let slot = unsafe { &mut *slot };
    let second = unsafe { bpf_ktime_get_ns() } / 1_000_000_000;
    if slot[0] != second {
        slot[0] = second;
        slot[1] = 0;
    }
    if slot[1] >= BURST {
        return false;
    }
    slot[1] += 1;
    true
}

/// `diag!(ctx, "format", args...)`: a rate-bounded warning, compiled in
/// but dead unless `--debug-ebpf` is given.
macro_rules! diag {
    ($ctx:expr, $($arg:tt)+) => {
        if $crate::config::debug_ebpf() && $crate::debug::allowed() {
            aya_log_ebpf::warn!($ctx, $($arg)+);
        }
    };
}
pub(crate) use diag;
