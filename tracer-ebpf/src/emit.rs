//! Shared helpers: filters, and writing records to the ring buffer.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    EbpfContext,
};
use tracer_common::{envcap, kind, lost, outcome, Conn, ConnEvent, Event, ProcEvent, COMM_LEN};

use crate::{
    config,
    debug::diag,
    environ,
    maps::{count_lost, COMMS, EVENTS, PIDS, PROCS, PROC_SCRATCH, SEEN},
};

/// What the connecting task is, captured once in its own context.
pub struct Task {
    pub pid_tgid: u64,
    pub comm: [u8; COMM_LEN],
}

/// The current task, or `None` when the filters exclude it. The tracer's
/// own process is always excluded.
#[inline(always)]
pub fn traced_task() -> Option<Task> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == config::tracer_tgid() {
        return None;
    }
    if config::filter_pid() && unsafe { PIDS.get(tgid) }.is_none() {
        return None;
    }
    let comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    if config::filter_comm() && unsafe { COMMS.get(comm) }.is_none() {
        return None;
    }
    Some(Task { pid_tgid, comm })
}

/// On the first traced connect of a process since its last exec, tell
/// userspace at once, so it can read /proc/<pid> (cgroup, executable)
/// while the process is surely alive, and hand it the proxy variables of
/// the environment, read here in the process's own context (environ.rs).
///
/// Must run in the context of the task `pid_tgid` names: the connect hooks
/// and the CLOSE -> SYN_SENT transition do.
#[inline(always)]
///
/// `since_ns` is the start of the attempt that triggers the announcement,
/// the first of this image: userspace keeps the previous snapshot for
/// attempts that started earlier (see `ProcCache::get`).
pub fn announce_process<C: EbpfContext>(
    ctx: &C,
    pid_tgid: u64,
    comm: &[u8; COMM_LEN],
    since_ns: u64,
) {
    let tgid = (pid_tgid >> 32) as u32;
    if unsafe { SEEN.get(tgid) }.is_some() {
        return;
    }
    // NOEXIST: of two threads announcing at once, one wins.
    if SEEN.insert(tgid, 1, u64::from(BPF_NOEXIST)).is_err() {
        return;
    }
    let Some(scratch) = PROC_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch slot, exclusively ours for this program run.
    let scratch = unsafe { &mut *scratch };
    let ev = &mut scratch.event;
    ev.kind = kind::PROCESS;
    ev.env_len = 0;
    ev.env_flags = 0;
    ev.env_steps = 0;
    ev.conn = Conn::zeroed();
    ev.conn.pid_tgid = pid_tgid;
    ev.conn.comm = *comm;
    ev.conn.start_ns = since_ns;
    if bpf_get_current_pid_tgid() >> 32 == pid_tgid >> 32 {
        environ::capture(ev, &mut scratch.head);
        if ev.env_flags & envcap::NO_ENV != 0 {
            // Every process that connects is a user process with an
            // environment block; none found means the mm_struct offsets
            // (or task_struct::mm) from BTF are off.
            diag!(
                ctx,
                "no environment block found for pid {}: BTF offsets of mm_struct.env_start/env_end ({}) look wrong",
                tgid,
                config::offsets().mm_env_start
            );
        }
    } else {
        ev.env_flags = envcap::NOT_CURRENT;
    }
    if PROCS.output::<ProcEvent>(&*ev, 0).is_err() {
        count_lost(lost::ANNOUNCE_FULL);
    }
}

/// Tell userspace that an announced process is gone, so it can forget its
/// cached state (after draining its last attempts).
#[inline(always)]
pub fn announce_exit(pid_tgid: u64) {
    match PROCS.reserve::<ConnEvent>(0) {
        Some(mut entry) => {
            let ev = entry.as_mut_ptr();
            // SAFETY: `ev` points to a reserved, exclusively owned record.
            unsafe {
                (*ev).kind = kind::EXIT;
                (*ev).path_len = 0;
                (*ev).conn = Conn::zeroed();
                (*ev).conn.pid_tgid = pid_tgid;
            }
            entry.submit(0);
        }
        None => count_lost(lost::ANNOUNCE_FULL),
    }
}

/// Whether `--failed-only` drops this finished attempt in the kernel.
#[inline(always)]
fn filtered_out(conn: &Conn) -> bool {
    config::failed_only() && conn.outcome == outcome::CONNECTED
}

/// Send a finished TCP/UDP attempt (no path) to userspace.
#[inline(always)]
pub fn emit_conn(conn: &Conn) {
    if filtered_out(conn) {
        return;
    }
    match EVENTS.reserve::<ConnEvent>(0) {
        Some(mut entry) => {
            let ev = entry.as_mut_ptr();
            // SAFETY: `ev` points to a reserved, exclusively owned record.
            unsafe {
                (*ev).kind = kind::CONNECT;
                (*ev).path_len = 0;
                (*ev).conn = *conn;
            }
            entry.submit(0);
        }
        None => count_lost(lost::RINGBUF_FULL),
    }
}

/// Send a finished attempt that may carry an AF_UNIX path.
#[inline(always)]
pub fn emit_event(event: &Event) {
    if filtered_out(&event.conn) {
        return;
    }
    if EVENTS.output::<Event>(event, 0).is_err() {
        count_lost(lost::RINGBUF_FULL);
    }
}
