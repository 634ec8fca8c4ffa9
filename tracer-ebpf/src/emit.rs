//! Shared helpers: filters, and writing records to the ring buffer.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_probe_read_kernel},
    EbpfContext,
};
use tracer_common::{
    envcap, kind, lost, lru, outcome, Conn, ConnEvent, Event, ProcEvent, COMM_LEN, ENV_CAP,
    ENV_ENTRY_MAX,
};

use crate::{
    config,
    debug::diag,
    environ,
    maps::{count_lost, count_lru, COMMS, EVENTS, PIDS, PROCS, SEEN},
};

/// The longest run of bytes `zero` clears in one call.
pub const ZEROS_LEN: usize = 2048;

/// Zeros, the source `zero` copies from (read-only data of the object).
static ZEROS: [u8; ZEROS_LEN] = [0; ZEROS_LEN];

/// Clear `len` bytes at `dst` (at most `ZEROS_LEN`) with one helper call:
/// a copy from `ZEROS`. Used on records reserved in a ring, whose memory
/// still holds an earlier record (another process's), for the bytes past
/// what a record uses: nothing stale may leave the kernel. One call, not a
/// loop, so the verifier checks it once whatever path led there (a loop
/// after the environment walk of environ.rs was re-verified for each of
/// the walk's end states, past the verifier's 1M-instruction budget).
///
/// # Safety
/// `dst..dst + len` must be writable memory of this program (the verifier
/// checks that the range lies inside the record, with `len` a constant).
#[inline(always)]
pub unsafe fn zero(dst: *mut u8, len: u32) {
    let len = if len as usize > ZEROS_LEN {
        ZEROS_LEN as u32
    } else {
        len
    };
    // SAFETY: ZEROS is ZEROS_LEN readable bytes; the caller vouches for dst.
    unsafe {
        bpf_probe_read_kernel(dst.cast(), len, ZEROS.as_ptr().cast());
    }
}

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
    count_lru(lru::SEEN_INSERTED);
    // Built in the ring itself: a per-CPU buffer could be shared with
    // another announcement, because the cgroup hooks that call this
    // (dns.rs) run preemptible (see maps::SCRATCH), so one process's proxy
    // variables could end up in another's record.
    let Some(mut entry) = PROCS.reserve::<ProcEvent>(0) else {
        count_lost(lost::ANNOUNCE_FULL);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to a reserved record, exclusively ours until
    // submit. The header is written first and `env` zeroed, so the record
    // is fully initialised before a reference to it is made, and nothing
    // of whatever record used this ring memory before can leave.
    let ev = unsafe {
        (*ev).kind = kind::PROCESS;
        (*ev).env_len = 0;
        (*ev).env_flags = 0;
        (*ev).env_steps = 0;
        (*ev).mnt_ns = 0;
        (*ev).parent = 0;
        (*ev).conn = Conn::zeroed();
        (*ev).conn.pid_tgid = pid_tgid;
        (*ev).conn.comm = *comm;
        (*ev).conn.start_ns = since_ns;
        let env = (*ev).env.as_mut_ptr();
        zero(env, ENV_CAP as u32);
        zero(env.add(ENV_CAP), ENV_ENTRY_MAX as u32);
        &mut *ev
    };
    if bpf_get_current_pid_tgid() >> 32 == pid_tgid >> 32 {
        // The head of each environment entry, including those that are
        // not proxy variables: on this program's own stack, never in
        // memory another program or userspace can see.
        (ev.mnt_ns, ev.parent) = namespace_and_parent();
        let mut head = [0u8; environ::HEAD_LEN];
        environ::capture(ev, &mut head);
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
    entry.submit(0);
}

/// The inode of the current task's mount namespace
/// (`current->nsproxy->mnt_ns->ns.inum`) and its parent's tgid
/// (`current->real_parent->tgid`), each 0 when it cannot be read. Read
/// here because a short-lived client is often gone, and reaped, by the
/// time userspace reads /proc/<pid>: its proxy's name must still be
/// resolved in its own view of /etc/hosts, reached through a live process
/// of that namespace (its parent, usually).
#[inline(always)]
fn namespace_and_parent() -> (u32, u32) {
    let off = config::offsets();
    // SAFETY (all reads): bpf_probe_read_kernel copes with any address;
    // the offsets come from this kernel's BTF. A task in exit may have a
    // NULL nsproxy: checked.
    use aya_ebpf::helpers::bpf_probe_read_kernel as read_kernel;
    let read = |addr: u64| unsafe { read_kernel(addr as *const u64) }.unwrap_or(0);
    let read_u32 = |addr: u64| unsafe { read_kernel(addr as *const u32) }.unwrap_or(0);
    let task = unsafe { aya_ebpf::helpers::generated::bpf_get_current_task() };
    let parent = if off.task_real_parent != 0 && off.task_tgid != 0 {
        let real_parent = read(task + u64::from(off.task_real_parent));
        if real_parent == 0 {
            0
        } else {
            read_u32(real_parent + u64::from(off.task_tgid))
        }
    } else {
        0
    };
    if off.task_nsproxy == 0 || off.nsproxy_mnt_ns == 0 {
        return (0, parent);
    }
    let nsproxy = read(task + u64::from(off.task_nsproxy));
    if nsproxy == 0 {
        return (0, parent);
    }
    let mnt_ns = read(nsproxy + u64::from(off.nsproxy_mnt_ns));
    if mnt_ns == 0 {
        return (0, parent);
    }
    (read_u32(mnt_ns + u64::from(off.mnt_ns_inum)), parent)
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
