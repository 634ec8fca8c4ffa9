//! Maps shared by the probes. Each states why it has its size and what
//! happens when it is full.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{lost, lru, Conn, Inflight, ProxyKey, ProxySock, COMM_LEN};

/// Finished attempts, DNS messages (`--dns`) and proxy exchange lines, to
/// userspace.
///
/// Budget: a TCP record (`ConnEvent`) is 120 bytes, +8 bytes of ring-buffer
/// header; an AF_UNIX one (`Event`, syscall mode only) 232 + 8. 8 MiB holds
/// about 65,000 TCP records, i.e. 1.3 s of a 50,000 connects/s storm (the
/// loopback storm rate the issue gives for this machine) while the reader
/// is descheduled: 65 times the 20 ms userspace lets records accumulate
/// before each drain, which leaves room for a slow disk write or a busy
/// CPU. When full, the reservation fails and the record is counted by its
/// kind: `LOST[RINGBUF_FULL]` (an attempt), `LOST[DNS_FULL]`,
/// `LOST[EXCHANGE_FULL]`; userspace reports each count in the stream.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Process announcements (`kind::PROCESS`, a 4,224-byte `ProcEvent` with
/// the proxy variables), to userspace. Separate from `EVENTS` because
/// userspace drains it at once, unbatched: it must read /proc/<pid> while a
/// short-lived process is still alive. The record is built in the ring
/// itself (emit.rs), never in a per-CPU buffer another program could be
/// writing at the same time. One record per process per exec;
/// 2 MiB holds about 490, a burst of that many new processes connecting
/// within one drain. When full, the announcement is counted in
/// `LOST[RINGBUF_FULL]` and userspace falls back to reading /proc when the
/// attempt arrives.
#[map]
pub static PROCS: RingBuf = RingBuf::with_byte_size(2 * 1024 * 1024, 0);

/// In-flight TCP attempts, keyed by the kernel address of the `struct sock`.
///
/// An entry lives from connect() until the handshake ends (usually well
/// under a second; at most the SYN retry timeout, about 130 s by default).
/// 65,536 entries (112 bytes each, about 7 MiB) covers a node with tens of
/// thousands of simultaneously pending dials. When full, the attempt is not
/// tracked and `LOST[INFLIGHT_FULL]` counts it.
///
/// Entries are removed when the socket leaves SYN_SENT. One whose
/// connect() failed before the SYN never gets there: userspace takes it out
/// a second later (tracer-user probe::Probes::failed_early), and a later
/// socket that the kernel puts in the same `struct sock` slab slot first
/// reports it (connect_hook.rs `track`), so no socket inherits another's
/// attempt. No program on `tcp_destroy_sock` is needed for that, which
/// spares every TCP socket of the node one or two program runs.
#[map]
pub static CONNS: HashMap<u64, Conn> = HashMap::with_max_entries(65536, 0);

/// The `sks` experiment (issue 20 §1): the attempt of a socket kept in the
/// socket's own local storage instead of `CONNS` (socket mode). Created by
/// connect4/6 (`bpf_sk_storage_get(F_CREATE)`), looked up and deleted by
/// `tp_btf/inet_sock_set_state`; the kernel frees it with the socket, so a
/// socket never tracked costs a NULL `sk_bpf_storage` check, no hash. No
/// size: sk storage grows with the sockets that have it (`max_entries` must
/// be 0). Needs BTF (the kernel refuses the map without key and value type
/// ids) and Linux 5.2 (5.11 for tracing programs).
#[cfg(all(feature = "sks", not(feature = "sks-conns")))]
#[aya_ebpf::macros::btf_map]
pub static SK_CONNS: aya_ebpf::btf_maps::SkStorage<Conn> = aya_ebpf::btf_maps::SkStorage::new();

/// Syscall mode only: connect() calls between sys_enter and sys_exit, keyed
/// by pid_tgid. A thread is in at most one connect() at a time, so this is
/// bounded by the number of threads connecting at once. When full, the
/// attempt is counted in `LOST[INFLIGHT_FULL]`.
#[map]
pub static INFLIGHT: HashMap<u64, Inflight> = HashMap::with_max_entries(16384, 0);

/// `--pid` filter: tgids to trace. 1,024 is far more than anyone types.
#[map]
pub static PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// `--comm` filter: comms to trace (NUL-padded to 16 bytes).
#[map]
pub static COMMS: HashMap<[u8; COMM_LEN], u8> = HashMap::with_max_entries(256, 0);

/// Processes already announced to userspace with a `kind::PROCESS` record
/// since their last exec. LRU: forgetting an old process only costs one
/// extra (harmless) announcement.
///
/// Sizes of the three LRU maps (`SEEN`, `PROXY_SOCKS`, `DNS_SOCKS`) are
/// bases: userspace adds room per possible CPU before load
/// (`probe::lru_entries`), because the kernel's common LRU
/// (kernel/bpf/bpf_lru_list.c) moves free nodes to per-CPU lists in
/// batches of `LOCAL_FREE_TARGET` (128) and evicts live entries to refill
/// a CPU's list once the global one is empty: on a 64-CPU node 8,192 free
/// entries can sit on other CPUs' lists while one CPU evicts. Evictions
/// are counted (`LRU_OPS`).
#[map]
pub static SEEN: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);

/// New keys and deliberate deletes of each LRU map, indexed by
/// `tracer_common::lru`; userspace derives evictions from them and the
/// entries present.
#[map]
pub static LRU_OPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(lru::COUNT, 0);

/// Count one LRU map operation (`tracer_common::lru`).
#[inline(always)]
pub fn count_lru(index: u32) {
    count_in(&LRU_OPS, index);
}

/// Non-zero once userspace has put a proxy endpoint in `PROXY_ADDRS`:
/// until then connect4/6 skip the lookup (a hash of a 24-byte key per
/// connect). An array lookup, which the verifier inlines (a bounds check
/// and a load, no helper call).
#[map]
pub static PROXIES_KNOWN: Array<u32> = Array::with_max_entries(1, 0);

/// Tracked sockets in a simultaneous open (SYN_SENT -> SYN_RECV) not yet
/// finished. Only such a socket can leave SYN_RECV as a tracked attempt;
/// every accepted server socket leaves SYN_RECV too, so while this is 0
/// inet_sock_set_state skips those moves without a CONNS lookup. A count
/// left too high costs only that lookup; it is decremented only by whoever
/// clears `flags::SIMOPEN` on a tracked entry, so it cannot go too low.
#[map]
pub static SIMOPEN: Array<u64> = Array::with_max_entries(1, 0);

/// Add `delta` (wrapping: `u64::MAX` subtracts one) to `SIMOPEN`.
#[inline(always)]
pub fn simopen_add(delta: u64) {
    if let Some(counter) = SIMOPEN.get_ptr_mut(0) {
        // SAFETY: a valid, aligned map value; atomic as in count_lost.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                counter, delta,
            );
        }
    }
}

/// Whether any tracked socket is in a simultaneous open.
#[inline(always)]
pub fn simopen_any() -> bool {
    SIMOPEN
        .get(0)
        .is_some_and(|v| unsafe { core::ptr::read_volatile(v) } != 0)
}

/// Whether `PROXY_ADDRS` holds anything.
#[inline(always)]
pub fn proxies_known() -> bool {
    PROXIES_KNOWN
        .get(0)
        .is_some_and(|v| unsafe { core::ptr::read_volatile(v) } != 0)
}

/// Lost-record counters, indexed by `tracer_common::lost`. Per-CPU so the
/// hot path never contends on a shared cache line.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost::COUNT, 0);

/// Scratch space for building an `Inflight` (240 bytes) without using half
/// of the 512-byte eBPF stack. Used by `sys_enter_connect` alone, which
/// cannot share it with another run on the same CPU:
/// - `perf_syscall_enter()` (kernel/trace/trace_syscalls.c) disables
///   preemption (`guard(preempt_notrace)()`, since syscall tracepoints
///   became faultable in 6.14; before that the tracepoint itself ran with
///   preemption disabled) before `trace_call_bpf()`, so no other task runs
///   on this CPU until the program returns;
/// - the syscall-entry tracepoint fires only in process context, at the
///   entry of a syscall, so no interrupt, softirq or NMI can start a second
///   run of it on this CPU; and `trace_call_bpf()` (kernel/trace/bpf_trace.c)
///   refuses to nest tracing programs anyway (`bpf_prog_active`).
///
/// The other programs (cgroup sock_addr and cgroup_skb ones run under
/// `migrate_disable()` only, in `bpf_prog_run_array_cg()`,
/// kernel/bpf/cgroup.c: preemptible, and interruptible by softirq) build
/// their records in the ring buffer directly or on their own stack.
#[map]
pub static SCRATCH: PerCpuArray<Inflight> = PerCpuArray::with_max_entries(1, 0);

/// Count a lost record. An atomic add: the slot is this CPU's, but a
/// preemptible program (cgroup hooks) may be interrupted by another that
/// counts into the same slot, and a plain `+= 1` would lose one of them.
#[inline(always)]
pub fn count_lost(index: u32) {
    count_in(&LOST, index);
}

#[inline(always)]
fn count_in(map: &PerCpuArray<u64>, index: u32) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // The intrinsic, not AtomicU64::fetch_add: rustc's bpfel target has
        // no compare-and-swap, so core offers no atomic read-modify-write;
        // LLVM turns this add, whose result is unused, into BPF's
        // `lock *(u64 *)(r + 0) += 1`, which every eBPF CPU version has.
        // SAFETY: a valid, aligned map value for this program run.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                counter, 1,
            );
        }
    }
}

/// Proxy endpoints (`--proxy HOST:PORT`, and the proxies named by the
/// environments of announced processes), written by userspace. connect4/6
/// look the destination up here: a hit marks the socket in `PROXY_SOCKS`.
/// 1,024 endpoints is far more than a node's proxies; when full, userspace
/// logs that a proxy could not be added and its exchanges go unseen.
#[map]
pub static PROXY_ADDRS: HashMap<ProxyKey, u8> = HashMap::with_max_entries(1024, 0);

/// The ports of `PROXY_ADDRS`' endpoints, one bit per port (bit `p % 64`
/// of word `p / 64`), written by userspace before the endpoint itself and
/// never cleared. Only a socket whose peer port is set here can have been
/// marked in `PROXY_SOCKS` (the key holds the port), so the payload
/// programs let every other packet through after this lookup: an array
/// lookup the verifier inlines, instead of a socket cookie and a hash
/// lookup. This is what the programs cost the unrelated sockets of a
/// cgroup watched through a common parent.
#[map]
pub static PROXY_PORTS: Array<u64> = Array::with_max_entries(PROXY_PORT_WORDS, 0);

/// 65,536 ports, 64 a word.
pub const PROXY_PORT_WORDS: u32 = 1024;

/// Whether `port` (host order) is the port of a proxy endpoint.
#[inline(always)]
pub fn proxy_port(port: u16) -> bool {
    PROXY_PORTS
        .get(u32::from(port) / 64)
        // SAFETY: a valid map value; userspace only ever sets bits.
        .is_some_and(|w| unsafe { core::ptr::read_volatile(w) } & (1u64 << (port % 64)) != 0)
}

/// Sockets that dialled a proxy, keyed by socket cookie (unique for the
/// socket's life and never reused, unlike its address), with the attempt
/// they belong to. LRU and bounded: the cgroup_skb programs delete the
/// entry once both lines are seen; an exchange that never completes is
/// evicted by newer ones. 8,192 covers thousands of concurrent proxy dials;
/// an evicted entry only costs that attempt its exchange.
#[map]
pub static PROXY_SOCKS: LruHashMap<u64, ProxySock> = LruHashMap::with_max_entries(8192, 0);
