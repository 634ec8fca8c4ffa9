//! Probe: load the eBPF object, configure it, attach every hook.
//!
//! The object is built by build.rs (aya-build) and embedded in the binary.

pub mod btf;
pub mod dns;
pub mod lru;
pub mod payload;
pub mod privileges;
pub mod tracefs;

use std::{fs::File, path::PathBuf};

use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{CgroupAttachMode, CgroupSockAddr, RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use thiserror::Error;
use tracer_common::{flags, lost, outcome, Conn, Inflight, COMM_LEN};

use crate::enrich::cgroupns::{host_cgroups, CgroupTreeError};

/// Which hooks are attached. See the README's "Modes" section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Socket events only: TCP attempts; unrelated syscalls pay nothing.
    Socket,
    /// Adds the connect syscall tracepoints: UDP, AF_UNIX, early errno.
    Syscall,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Socket => "socket",
            Self::Syscall => "syscall",
        }
    }
}

/// What to load and how to filter in the kernel.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub mode: Mode,
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub failed_only: bool,
    /// Enable the eBPF programs' diagnostics (aya-log).
    pub debug_ebpf: bool,
    /// `--dns`: attach the DNS programs (probe/dns.rs).
    pub dns: bool,
}

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error(
        "cannot load eBPF programs: permission denied (need root, or CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN; this process has: {caps})"
    )]
    Privileges { caps: String },
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("cannot load the eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("the eBPF object has no program {0} (build mismatch)")]
    MissingProgram(&'static str),
    #[error("the eBPF object has no map {0} (build mismatch)")]
    MissingMap(&'static str),
    #[error("cannot load program {name}: {source}")]
    LoadProgram {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error(
        "this kernel lacks the hook {hook} ({why}): {source}; supported kernels are listed in the book, docs/src/kernels.md"
    )]
    MissingHook {
        hook: &'static str,
        why: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("cannot read the eBPF programs' diagnostics: {0}")]
    Logger(#[source] aya_log::Error),
    #[error(transparent)]
    Cgroup(#[from] CgroupTreeError),
    #[error("cannot open cgroup v2 root {path}: {source}")]
    OpenCgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot configure filter map {map}: {source}")]
    Filter {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot read map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// The eBPF object, loaded and attached. Dropping it detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    pub mode: Mode,
    debug_ebpf: bool,
    /// Where the proxy-exchange programs are attached (payload.rs).
    payload: payload::PayloadWatch,
    /// When `failed_early` last walked `CONNS`.
    last_sweep: std::time::Instant,
    /// Syscall mode: tracefs, unmounted on drop if the tracer mounted it.
    /// Declared after `ebpf` so the programs are detached first.
    _tracefs: Option<tracefs::Tracefs>,
}

/// How often `Probes::failed_early` walks `CONNS`.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// An attempt without SYN_SENT this long after connect4 failed early
/// (the move happens within microseconds, inside the same syscall).
const FAILED_EARLY_AFTER_NS: u64 = 1_000_000_000;

/// Still before the CLOSE -> SYN_SENT move, in socket mode's sense: no
/// outcome, no SYN, not a syscall-mode call that sys_exit_connect ends.
fn never_sent_syn(c: &Conn) -> bool {
    c.outcome == outcome::NONE && c.flags & (flags::SYN_SENT | flags::IN_SYSCALL) == 0
}

/// The attempt as failed before its SYN. connect() returned at once, and
/// the kernel saw no later moment: it ends where it started.
fn failed_early_from(mut conn: Conn) -> Conn {
    conn.outcome = outcome::FAILED_EARLY;
    conn.end_ns = conn.start_ns;
    conn
}

/// CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns().
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// The `CONNS` map: attempts in flight, by socket address.
fn conns_map(ebpf: &mut Ebpf) -> Result<BpfHashMap<&mut MapData, u64, Conn>, ProbeError> {
    let map = ebpf
        .map_mut("CONNS")
        .ok_or(ProbeError::MissingMap("CONNS"))?;
    BpfHashMap::try_from(map).map_err(|source| ProbeError::Map {
        map: "CONNS",
        source,
    })
}

/// The embedded object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

impl Probes {
    /// Load, configure and attach. Returns when every probe is attached.
    pub fn attach(config: &ProbeConfig) -> Result<Self, ProbeError> {
        if privileges::raise_memlock() == privileges::Memlock::RefusedOnOldKernel {
            log::warn!(
                "cannot raise RLIMIT_MEMLOCK (needs CAP_SYS_RESOURCE), and this kernel (before 5.11) charges BPF memory against it: loading may fail with EPERM"
            );
        }
        let offsets = btf::Btf::from_kernel()?.kernel_offsets()?;
        let filter_pid = u8::from(!config.pids.is_empty());
        let filter_comm = u8::from(!config.comms.is_empty());
        let failed_only = u8::from(config.failed_only);
        let syscall_mode = u8::from(config.mode == Mode::Syscall);
        let debug_ebpf = u8::from(config.debug_ebpf);
        // aya-log's level: 0 turns every log statement into dead code the
        // verifier never runs; Warn is the level of debug.rs's lines.
        let log_level: u8 = if config.debug_ebpf {
            aya_log::Level::Warn as u8
        } else {
            0
        };
        let own_tgid = std::process::id();
        let mut loader = EbpfLoader::new();
        lru::size_maps(&mut loader);
        let mut ebpf = loader
            .override_global("FILTER_PID", &filter_pid, true)
            .override_global("FILTER_COMM", &filter_comm, true)
            .override_global("FAILED_ONLY", &failed_only, true)
            .override_global("SYSCALL_MODE", &syscall_mode, true)
            .override_global("DEBUG_EBPF", &debug_ebpf, true)
            .override_global(aya_log::LEVEL, &log_level, true)
            .override_global("TRACER_TGID", &own_tgid, true)
            .override_global("OFFSETS", &offsets, true)
            .load(OBJECT)
            .map_err(|e| {
                if privileges::is_privilege_error(&e) {
                    ProbeError::Privileges {
                        caps: privileges::describe_caps(),
                    }
                } else {
                    ProbeError::Load(e)
                }
            })?;

        fill_filters(&mut ebpf, config)?;

        // Tracepoints first, the connect hooks last: an attempt is only
        // tracked once everything that can finish it is in place.
        // Raw tracepoints need no tracefs (attached by name through
        // BPF_RAW_TRACEPOINT_OPEN, Linux 4.17+), and the socket ones fire
        // for every TCP socket on the node, where the classic form would
        // build a trace record for each first.
        // The `sks` experiment (bench only): inet_sock_set_state is a BTF
        // tracepoint there (tracer-ebpf sock_state_sks.rs).
        #[cfg(feature = "sks")]
        {
            let name = "inet_sock_set_state";
            let btf = aya::Btf::from_sys_fs()
                .map_err(|e| load_error(name, aya::programs::ProgramError::Btf(e)))?;
            let program: &mut aya::programs::BtfTracePoint = program_of(&mut ebpf, name)?;
            program
                .load(name, &btf)
                .map_err(|source| load_error(name, source))?;
            program.attach().map_err(|source| ProbeError::MissingHook {
                hook: name,
                why: "tp_btf needs the kernel's BTF, Linux 5.5+",
                source,
            })?;
        }
        for (name, why) in [
            #[cfg(not(feature = "sks"))]
            ("inet_sock_set_state", "raw tracepoint, Linux 4.17+"),
            ("sched_process_exec", "raw tracepoint, Linux 4.17+"),
            ("sched_process_exit", "raw tracepoint, Linux 4.17+"),
        ] {
            let program: &mut RawTracePoint = program_of(&mut ebpf, name)?;
            program.load().map_err(|source| load_error(name, source))?;
            program
                .attach(name)
                .map_err(|source| ProbeError::MissingHook {
                    hook: name,
                    why,
                    source,
                })?;
        }
        // Syscall mode: the connect syscall tracepoints exist only in the
        // classic form, which needs tracefs for the event id.
        let tracefs = if config.mode == Mode::Syscall {
            let tracefs = tracefs::ensure()?;
            for name in ["sys_exit_connect", "sys_enter_connect"] {
                let program: &mut TracePoint = program_of(&mut ebpf, name)?;
                program.load().map_err(|source| load_error(name, source))?;
                program
                    .attach("syscalls", name)
                    .map_err(|source| ProbeError::MissingHook {
                        hook: name,
                        why: "syscall tracepoints need CONFIG_FTRACE_SYSCALLS",
                        source,
                    })?;
            }
            Some(tracefs)
        } else {
            None
        };

        // The node's hierarchy root, never a container's own subtree: the
        // connect hooks must see every process of the node.
        let tree = host_cgroups()?;
        let cgroup_root = tree.mount().to_path_buf();
        let cgroup = File::open(&cgroup_root).map_err(|source| ProbeError::OpenCgroup {
            path: cgroup_root.clone(),
            source,
        })?;
        if config.dns {
            dns::attach(&mut ebpf, &cgroup)?;
        }
        for name in ["connect4", "connect6"] {
            let program: &mut CgroupSockAddr = program_of(&mut ebpf, name)?;
            program.load().map_err(|source| load_error(name, source))?;
            // On Linux 5.7+ aya attaches through a bpf_link, which always
            // coexists with other programs on the cgroup (Cilium, systemd IP
            // accounting): the kernel treats links as BPF_F_ALLOW_MULTI and
            // rejects explicit attach flags, so the mode here must be the
            // default.
            program
                .attach(&cgroup, CgroupAttachMode::Single)
                .map_err(|source| ProbeError::MissingHook {
                    hook: name,
                    why: "cgroup/connect4 and connect6 need Linux 4.17+ and cgroup v2",
                    source,
                })?;
        }
        // Loaded now, attached per cgroup as processes with a proxy appear.
        let payload = payload::PayloadWatch::load(&mut ebpf, tree)?;
        Ok(Self {
            ebpf,
            mode: config.mode,
            debug_ebpf: config.debug_ebpf,
            payload,
            last_sweep: std::time::Instant::now(),
            _tracefs: tracefs,
        })
    }

    /// Mark sockets that dial `ip:port` for the proxy exchange.
    pub fn add_proxy(&mut self, ip: std::net::IpAddr, port: u16) -> Result<(), ProbeError> {
        payload::add_proxy(&mut self.ebpf, ip, port)
    }

    /// Watch the proxy exchanges of `pid`'s cgroup; its id when watched.
    pub fn watch_pid(&mut self, pid: u32, hint: Option<(u64, &str)>) -> Option<u64> {
        payload::watch_pid(&mut self.ebpf, &mut self.payload, pid, hint)
    }

    /// (cgroups the exchange programs are attached to, cgroups covered
    /// through an attached parent).
    pub fn watch_sizes(&self) -> (usize, usize) {
        self.payload.sizes()
    }

    /// Detach the exchange programs from cgroups whose watched processes
    /// are all gone; the ids no longer watched.
    pub fn prune_watches(&mut self) -> Vec<u64> {
        payload::prune(&mut self.ebpf, &mut self.payload)
    }

    /// The reader of the eBPF programs' diagnostics, when enabled. Its
    /// records go to the `log` logger (diag.rs).
    pub fn take_logger(
        &mut self,
    ) -> Result<Option<aya_log::EbpfLogger<&'static dyn log::Log>>, ProbeError> {
        if !self.debug_ebpf {
            return Ok(None);
        }
        aya_log::EbpfLogger::init(&mut self.ebpf)
            .map(Some)
            .map_err(ProbeError::Logger)
    }

    /// The ring buffer the probes write finished attempts to.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        self.take_ring("EVENTS")
    }

    /// The ring buffer of process announcements (read unbatched).
    pub fn take_procs(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        self.take_ring("PROCS")
    }

    fn take_ring(&mut self, name: &'static str) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(ProbeError::MissingMap(name))?;
        RingBuf::try_from(map).map_err(|source| ProbeError::Map { map: name, source })
    }

    /// Lost-record counters summed over CPUs, one per record kind.
    pub fn lost(&self) -> Result<LostCounts, ProbeError> {
        let map = self
            .ebpf
            .map("LOST")
            .ok_or(ProbeError::MissingMap("LOST"))?;
        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|source| ProbeError::Map {
                map: "LOST",
                source,
            })?;
        let sum = |index: u32| -> Result<u64, ProbeError> {
            let values = counters.get(&index, 0).map_err(|source| ProbeError::Map {
                map: "LOST",
                source,
            })?;
            Ok(values.iter().sum())
        };
        Ok(LostCounts {
            ringbuf_full: sum(lost::RINGBUF_FULL)?,
            inflight_full: sum(lost::INFLIGHT_FULL)?,
            announcements_full: sum(lost::ANNOUNCE_FULL)?,
            dns_full: sum(lost::DNS_FULL)?,
            exchange_full: sum(lost::EXCHANGE_FULL)?,
        })
    }

    /// The kernel's LRU maps: entries present, capacity, evictions.
    pub fn lru_maps(&self) -> Result<Vec<lru::LruMap>, ProbeError> {
        lru::read(&self.ebpf)
    }

    /// Socket mode: the attempts whose connect() failed before sending a
    /// SYN (no route, an address the kernel refuses, a denial by another
    /// cgroup program), taken out of `CONNS` as `FAILED_EARLY`.
    ///
    /// Such an attempt has no socket event after `connect4`: the SYN_SENT
    /// move is made inside the same connect() call, under the socket lock,
    /// so an entry still without it a second later failed there. Finding
    /// them here, rather than in a `tcp_destroy_sock` program that every
    /// TCP socket of the node would run once or twice, keeps that cost
    /// off every connect (issue 20: 1 of 4 program runs per refused
    /// connect, 2 of 9 per connect+accept). The walk costs two syscalls
    /// per attempt in flight, at most once per `SWEEP_EVERY`.
    ///
    /// The kernel reports such an entry itself when the same socket, or a
    /// new one at the same address, connects again (connect_hook.rs
    /// `track`), so one found there first is never reported twice.
    pub fn failed_early(&mut self) -> Result<Vec<Conn>, ProbeError> {
        if self.mode != Mode::Socket || self.last_sweep.elapsed() < SWEEP_EVERY {
            return Ok(Vec::new());
        }
        self.last_sweep = std::time::Instant::now();
        let now = monotonic_ns();
        let mut conns = conns_map(&mut self.ebpf)?;
        let stale: Vec<(u64, Conn)> = conns
            .iter()
            .flatten()
            .filter(|(_, c)| {
                never_sent_syn(c) && now.saturating_sub(c.start_ns) >= FAILED_EARLY_AFTER_NS
            })
            .collect();
        let mut out = Vec::with_capacity(stale.len());
        for (sk, conn) in stale {
            // Gone already: the kernel reported it (a new attempt on the
            // address) between the walk and now.
            if conns.remove(&sk).is_err() {
                continue;
            }
            out.push(failed_early_from(conn));
        }
        Ok(out)
    }

    /// Attempts still without an outcome, for the `pending` flush at
    /// shutdown. Includes connect() calls still blocked in syscall mode.
    /// In socket mode an attempt that never sent its SYN failed early
    /// (see `failed_early`), and says so.
    pub fn in_flight(&mut self) -> Result<Vec<InFlight>, ProbeError> {
        let mut out = Vec::new();
        let socket_mode = self.mode == Mode::Socket;
        let conns = conns_map(&mut self.ebpf)?;
        // Entries can vanish while we iterate (the probes keep running);
        // a failed read of one entry is skipped, not fatal.
        for (_, conn) in conns.iter().flatten() {
            let conn = match socket_mode && never_sent_syn(&conn) {
                true => failed_early_from(conn),
                false => conn,
            };
            out.push((conn, None));
        }
        if self.mode == Mode::Syscall {
            let map = self
                .ebpf
                .map("INFLIGHT")
                .ok_or(ProbeError::MissingMap("INFLIGHT"))?;
            let inflight: BpfHashMap<_, u64, Inflight> =
                BpfHashMap::try_from(map).map_err(|source| ProbeError::Map {
                    map: "INFLIGHT",
                    source,
                })?;
            for (_, entry) in inflight.iter().flatten() {
                // A TCP call with a socket is already in CONNS.
                if entry.sk != 0 && entry.event.conn.protocol == tracer_common::IPPROTO_TCP {
                    continue;
                }
                let path = (entry.event.conn.family == tracer_common::AF_UNIX).then(|| {
                    let len = (entry.event.path_len as usize).min(entry.event.path.len());
                    entry.event.path[..len].to_vec()
                });
                let mut conn = entry.event.conn;
                conn.flags |= tracer_common::flags::IN_SYSCALL;
                out.push((conn, path));
            }
        }
        Ok(out)
    }
}

/// An attempt without an outcome yet, with its raw AF_UNIX path if any.
pub type InFlight = (Conn, Option<Vec<u8>>);

/// Records lost in the kernel, by kind (`tracer_common::lost`). Only the
/// first two are attempts; the others lose detail, never an attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LostCounts {
    /// Finished attempts the EVENTS ring could not take.
    pub ringbuf_full: u64,
    /// Attempts never tracked: the in-flight table was full.
    pub inflight_full: u64,
    /// Process announcements or exits the PROCS ring could not take. No
    /// attempt is lost with them, so they are not in `total`.
    pub announcements_full: u64,
    /// DNS messages (`--dns`) the EVENTS ring could not take.
    pub dns_full: u64,
    /// Proxy exchange lines the EVENTS ring could not take.
    pub exchange_full: u64,
}

impl LostCounts {
    /// Attempts lost: attempts made = connect events + this, exactly.
    pub fn total(&self) -> u64 {
        self.ringbuf_full + self.inflight_full
    }

    /// The kernel's counts in the order of the first five series of
    /// `metrics::LOST_SERIES`.
    pub fn by_kind(&self) -> [u64; 5] {
        [
            self.ringbuf_full,
            self.inflight_full,
            self.announcements_full,
            self.dns_full,
            self.exchange_full,
        ]
    }

    /// The counts in words, for the lost-events record and the stats
    /// lines: every kind, so a lost DNS message or exchange line is never
    /// read as a lost attempt.
    pub fn describe(&self) -> String {
        format!(
            "{} attempts lost in the kernel ({} because the ring buffer was full, {} because the in-flight table was full); not attempts: {} process announcements lost (their proxy environment may be unknown), {} DNS messages lost, {} proxy exchange lines lost",
            self.total(),
            self.ringbuf_full,
            self.inflight_full,
            self.announcements_full,
            self.dns_full,
            self.exchange_full
        )
    }
}

fn fill_filters(ebpf: &mut Ebpf, config: &ProbeConfig) -> Result<(), ProbeError> {
    if !config.pids.is_empty() {
        let map = ebpf.map_mut("PIDS").ok_or(ProbeError::MissingMap("PIDS"))?;
        let mut pids: BpfHashMap<_, u32, u8> =
            BpfHashMap::try_from(map).map_err(|source| ProbeError::Filter {
                map: "PIDS",
                source,
            })?;
        for pid in &config.pids {
            pids.insert(pid, 1, 0)
                .map_err(|source| ProbeError::Filter {
                    map: "PIDS",
                    source,
                })?;
        }
    }
    if !config.comms.is_empty() {
        let map = ebpf
            .map_mut("COMMS")
            .ok_or(ProbeError::MissingMap("COMMS"))?;
        let mut comms: BpfHashMap<_, [u8; COMM_LEN], u8> =
            BpfHashMap::try_from(map).map_err(|source| ProbeError::Filter {
                map: "COMMS",
                source,
            })?;
        for comm in &config.comms {
            comms
                .insert(comm_key(comm), 1, 0)
                .map_err(|source| ProbeError::Filter {
                    map: "COMMS",
                    source,
                })?;
        }
    }
    Ok(())
}

/// The kernel keeps at most 15 bytes of a comm plus a NUL, so a longer
/// `--comm` is cut the same way to match.
pub fn comm_key(comm: &str) -> [u8; COMM_LEN] {
    let mut key = [0u8; COMM_LEN];
    let bytes = comm.as_bytes();
    let n = bytes.len().min(COMM_LEN - 1);
    key[..n].copy_from_slice(&bytes[..n]);
    key
}

/// The program `name` of the object, as the program type `P`.
fn program_of<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, ProbeError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?
        .try_into()
        .map_err(|source| ProbeError::LoadProgram { name, source })
}

fn load_error(name: &'static str, source: aya::programs::ProgramError) -> ProbeError {
    if privileges::is_privilege_error(&source) {
        ProbeError::Privileges {
            caps: privileges::describe_caps(),
        }
    } else {
        ProbeError::LoadProgram { name, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_keys_are_cut_like_the_kernel() {
        assert_eq!(&comm_key("curl")[..5], b"curl\0");
        let long = comm_key("a-very-long-command-name");
        assert_eq!(long[15], 0);
        assert_eq!(&long[..15], b"a-very-long-com");
    }
}
