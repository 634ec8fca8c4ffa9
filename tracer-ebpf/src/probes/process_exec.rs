//! Per-process state reset: raw tracepoints `sched_process_exec` and
//! `sched_process_exit`.
//!
//! Kernel hooks, include/trace/events/sched.h:
//! - `trace_sched_process_exec(current, old_pid, bprm)` in `exec_binprm()`
//!   (fs/exec.c), fired in the exec'ing task once the new program image
//!   replaced the old one. `TP_PROTO(struct task_struct *p, pid_t old_pid,
//!   struct linux_binprm *bprm)` since Linux 3.4.
//! - `trace_sched_process_exit(tsk, ...)` in `do_exit()` (kernel/exit.c),
//!   in the exiting task. Its prototype gained a `bool group_dead` argument
//!   in 6.x, so the group is judged from the task instead:
//!   `do_exit()` decrements `tsk->signal->live` before the tracepoint, and
//!   the last thread leaves it at 0 (the same test do_exit makes).
//! https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/sched.h
//! https://elixir.bootlin.com/linux/v6.18/source/kernel/exit.c
//!
//! Raw tracepoints, not the classic `sched:` ones: a raw tracepoint is
//! attached by name through BPF_RAW_TRACEPOINT_OPEN and needs no tracefs,
//! which is not mounted at boot on many nodes nor in most containers. The
//! one field read (`signal->live`) is found through BTF offsets, not a
//! format file.
//!
//! An exec keeps the pid but replaces the environment and the command line;
//! an exit frees the pid for reuse by an unrelated process. In both cases
//! the process must be announced to userspace again at its next connect,
//! so userspace re-reads /proc instead of trusting its cache. An exit of an
//! announced process is also reported (`kind::EXIT`), so userspace can
//! evict its cached state and a long-running tracer's memory stays flat.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};

use tracer_common::lru;

use crate::{
    config,
    emit::announce_exit,
    maps::{count_lru, SEEN},
};

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(_ctx: RawTracePointContext) -> i32 {
    if crate::floor() {
        return 0;
    }
    // Runs in the exec'ing task. After de_thread() it is the group leader,
    // so its tgid is the process's pid, old or new thread alike.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if SEEN.remove(tgid).is_ok() {
        count_lru(lru::SEEN_DELETED);
    }
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(ctx: RawTracePointContext) -> i32 {
    if crate::floor() {
        return 0;
    }
    let task: u64 = ctx.arg(0);
    if !group_dead(task) {
        return 0;
    }
    // do_exit() runs in the exiting task's own context, so the helper gives
    // the tgid even when the last thread is not the group leader.
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // Only processes that were announced (they connected) are reported, so
    // the node's other exits cost one failed map delete.
    if SEEN.remove(tgid).is_ok() {
        count_lru(lru::SEEN_DELETED);
        announce_exit(pid_tgid);
    }
    0
}

/// Whether the exiting `task` is the last thread of its process. When the
/// offsets are unknown, every exit counts: forgetting a process too early
/// only costs one extra announcement, keeping it too long would hide a
/// reused pid.
#[inline(always)]
fn group_dead(task: u64) -> bool {
    let off = config::offsets();
    if off.task_signal == 0 || task == 0 {
        return true;
    }
    // SAFETY: `task` is the task_struct the tracepoint hands over;
    // bpf_probe_read_kernel copes with any address.
    let signal =
        unsafe { bpf_probe_read_kernel((task + u64::from(off.task_signal)) as *const u64) }
            .unwrap_or(0);
    if signal == 0 {
        return true;
    }
    // `live` is an atomic_t: an int counter.
    let live =
        unsafe { bpf_probe_read_kernel((signal + u64::from(off.signal_live)) as *const i32) }
            .unwrap_or(0);
    live <= 0
}
