//! Per-process state reset: sched:sched_process_exec and sched:sched_process_exit.
//!
//! Kernel hooks: `trace_sched_process_exec()` in `exec_binprm()` (fs/exec.c),
//! fired once a new program image replaced the old one, and
//! `trace_sched_process_exit()` in `do_exit()` (kernel/exit.c). Formats on
//! 6.18: exec `pid_t pid offset:12`; exit `bool group_dead offset:32`.
//! https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/sched.h
//!
//! An exec keeps the pid and start time but replaces the environment and the
//! command line; an exit frees the pid for reuse by an unrelated process. In
//! both cases the process must be announced to userspace again at its next
//! connect, so userspace re-reads /proc instead of trusting its cache.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::maps::SEEN;

const OFF_EXEC_PID: usize = 12;
const OFF_EXIT_GROUP_DEAD: usize = 32;

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    // SAFETY: offset from the tracepoint format above.
    if let Ok(pid) = unsafe { ctx.read_at::<i32>(OFF_EXEC_PID) } {
        let _ = SEEN.remove(pid as u32);
    }
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    // Only the last thread of a process frees its tgid.
    // SAFETY: offset from the tracepoint format above.
    let group_dead = unsafe { ctx.read_at::<u8>(OFF_EXIT_GROUP_DEAD) }.unwrap_or(0);
    if group_dead == 0 {
        return 0;
    }
    // do_exit() runs in the exiting task's own context, so the helper gives
    // the tgid even when the last thread is not the group leader.
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    let _ = SEEN.remove(tgid);
    0
}
