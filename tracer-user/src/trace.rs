//! `tracer trace`: wire the stages together and run until told to stop.

use std::{path::PathBuf, time::Duration};

use aya::maps::{MapData, RingBuf};
use serde::Serialize;
use thiserror::Error;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use crate::{
    cli::TraceArgs,
    decode::{self, Attempt, Peer, Record},
    enrich::{
        proc::{ProcCache, ProcInfo},
        UnitCache,
    },
    probe::{LostCounts, Mode, ProbeConfig, ProbeError, Probes},
    sink::{
        ndjson::AttemptWriter,
        text,
        words::{self, Facts},
        Format, Sink, SinkError,
    },
    verdict::{
        judge, names_to_resolve,
        resolve::{Resolver, Root},
        EndpointCache,
    },
};

#[derive(Debug, Error)]
pub enum TraceError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Everything after the ring buffer: decode, enrich, verdict, sink.
pub struct Pipeline {
    procs: ProcCache,
    units: UnitCache,
    endpoints: EndpointCache,
    resolver: Resolver,
    sink: Sink,
    writer: AttemptWriter,
    mode: Mode,
    proxy_only: bool,
    wall_offset_ns: i128,
    pub attempts: u64,
    pub decode_errors: u64,
}

impl Pipeline {
    pub fn new(args: &TraceArgs, sink: Sink) -> Self {
        Self {
            procs: ProcCache::new(PathBuf::from("/proc")),
            units: UnitCache::new(args.host_root.clone()),
            endpoints: EndpointCache::new(),
            resolver: Resolver::new(&args.host_root),
            sink,
            writer: AttemptWriter::new(),
            mode: args.mode,
            proxy_only: args.proxy_only,
            wall_offset_ns: wall_offset_ns(),
            attempts: 0,
            decode_errors: 0,
        }
    }

    /// One ring-buffer record.
    pub fn handle_bytes(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        match decode::decode(bytes) {
            Ok(Record::Process { pid, env }) => {
                let proc = self.procs.refresh(pid, &env);
                // Resolve the proxies' names now, ahead of the attempt's
                // outcome: by the time it is drained the answer is usually
                // in.
                let root = root_of(pid, &proc);
                for name in names_to_resolve(self.endpoints.of(pid, &proc)) {
                    self.resolver.prefetch(name, root);
                }
                Ok(())
            }
            Ok(Record::Attempt(attempt)) => self.handle_attempt(&attempt),
            Err(e) => {
                // A record we cannot read is counted, not fatal: the
                // summary reports it.
                self.decode_errors += 1;
                log::warn!("skipping ring buffer record: {e}");
                Ok(())
            }
        }
    }

    pub fn handle_attempt(&mut self, attempt: &Attempt) -> Result<(), SinkError> {
        let proc = self.procs.get(attempt.pid);
        let dest = match &attempt.destination {
            Peer::Ip { ip, port } => Some((*ip, *port)),
            Peer::Unix(_) => None,
        };
        // Most processes have no proxy: then there is no verdict to make and
        // the unit's files are not consulted.
        let endpoints = self.endpoints.of(attempt.pid, &proc);
        let verdict = match proc.proxy_env() {
            Some(env) if !endpoints.is_empty() => {
                let unit_env = proc
                    .cgroup
                    .as_ref()
                    .and_then(|c| c.unit.as_deref())
                    .filter(|unit| unit.ends_with(".service"))
                    .and_then(|unit| self.units.get(unit));
                judge(
                    dest,
                    env,
                    endpoints,
                    unit_env.as_deref(),
                    &mut self.resolver,
                    root_of(attempt.pid, &proc),
                )
            }
            _ => None,
        };
        if self.proxy_only && verdict.is_none() {
            return Ok(());
        }
        let facts = Facts {
            attempt,
            proc: &proc,
            verdict: verdict.as_ref(),
            mode: self.mode,
            wall_offset_ns: self.wall_offset_ns,
        };
        match self.sink.format {
            // The hot path: written straight into the batch buffer.
            Format::Json => {
                let writer = &mut self.writer;
                self.sink.record(|out| writer.write(out, &facts, &proc));
            }
            Format::Text => {
                let line = text::render(&facts, self.sink.color);
                self.sink.line(&line);
            }
        }
        self.attempts += 1;
        Ok(())
    }

    /// A record of events lost in the kernel.
    pub fn lost_record(&mut self, lost: LostCounts, last: bool) -> Result<(), SinkError> {
        let now = words::rfc3339(now_epoch_ns());
        let message = format!(
            "{} events lost in the kernel so far: {} because the ring buffer was full, {} because the in-flight table was full",
            lost.total(),
            lost.ringbuf_full,
            lost.inflight_full
        );
        match self.sink.format {
            Format::Json => self.sink.json(&LostRecord {
                timestamp: now,
                ecs: LostEcs {
                    version: words::ECS_VERSION,
                },
                event: LostEvent {
                    kind: "metric",
                    category: ["network"],
                    action: if last {
                        "lost-events-final"
                    } else {
                        "lost-events"
                    },
                },
                message,
                tracer: LostTracer {
                    schema_version: words::SCHEMA_VERSION,
                    lost: LostFields {
                        total: lost.total(),
                        ringbuf_full: lost.ringbuf_full,
                        inflight_full: lost.inflight_full,
                    },
                },
            })?,
            Format::Text => self.sink.line(&format!("-- {message}")),
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.sink.flush()
    }
}

/// Whose view of names a process has (see verdict/resolve.rs).
fn root_of(pid: u32, proc: &ProcInfo) -> Root {
    Root {
        pid: Some(pid),
        mnt_ns: proc.mnt_ns,
    }
}

#[derive(Serialize)]
struct LostRecord {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    ecs: LostEcs,
    event: LostEvent,
    message: String,
    tracer: LostTracer,
}

#[derive(Serialize)]
struct LostEcs {
    version: &'static str,
}

#[derive(Serialize)]
struct LostEvent {
    kind: &'static str,
    category: [&'static str; 1],
    action: &'static str,
}

#[derive(Serialize)]
struct LostTracer {
    schema_version: u32,
    lost: LostFields,
}

#[derive(Serialize)]
struct LostFields {
    total: u64,
    ringbuf_full: u64,
    inflight_full: u64,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; both clocks always exist.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// bpf_ktime_get_ns() is CLOCK_MONOTONIC; this converts it to wall time.
fn wall_offset_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC)
}

fn now_epoch_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME).max(0) as u64
}

/// Tell systemd (Type=notify) that we are ready.
fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    use std::os::{linux::net::SocketAddrExt, unix::net::UnixDatagram};
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let result = match bytes.strip_prefix(b"@") {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(b"READY=1", &addr)),
        None => sock.send_to(b"READY=1", &path),
    };
    if let Err(e) = result {
        eprintln!("tracer: warning: cannot notify systemd at NOTIFY_SOCKET: {e}");
    }
}

/// Register a ring buffer with the runtime's poller.
fn poll_ring(ring: RingBuf<MapData>) -> Result<AsyncFd<RingBuf<MapData>>, TraceError> {
    // SAFETY: the AsyncFd owns the ring buffer, so its fd stays open for as
    // long as it is registered.
    unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }.map_err(|e| {
        TraceError::Io {
            what: "cannot poll the ring buffer",
            source: std::io::Error::other(e.to_string()),
        }
    })
}

/// Drain every record currently in the ring buffer.
fn drain(ring: &mut RingBuf<MapData>, pipeline: &mut Pipeline) -> Result<(), SinkError> {
    while let Some(item) = ring.next() {
        pipeline.handle_bytes(&item)?;
    }
    Ok(())
}

/// How long to let records accumulate after a wakeup; bounds the added
/// latency of an event. Measured on a 2-core VM during a loopback storm:
/// 5 ms costs 1.3 us of tracer CPU per event, 20 ms 1.0 us, 50 ms 0.9 us
/// (fewer wakeups, and the hot loop stays in cache). 20 ms is well below
/// what a person or a log pipeline notices, and the ring buffer holds 65
/// times that at full storm rate.
const BATCH_DELAY: Duration = Duration::from_millis(20);

/// Run `tracer trace` until SIGINT/SIGTERM or until the reader goes away.
pub async fn run(args: TraceArgs) -> Result<(), TraceError> {
    // Open the output before loading anything: a bad path fails fast and
    // leaves the kernel untouched.
    let sink = match &args.output {
        Some(path) => Sink::file(path, args.format)?,
        None => Sink::stdout(args.format),
    };
    let mut pipeline = Pipeline::new(&args, sink);

    let config = ProbeConfig {
        mode: args.mode,
        pids: args.pid.clone(),
        comms: args.comm.clone(),
        failed_only: args.failed_only,
    };
    let mut probes = Probes::attach(&config)?;
    let mut ring = poll_ring(probes.take_events()?)?;
    let mut procs = poll_ring(probes.take_procs()?)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|source| TraceError::Io {
        what: "cannot handle SIGINT",
        source,
    })?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|source| TraceError::Io {
        what: "cannot handle SIGTERM",
        source,
    })?;
    eprintln!(
        "tracer: ready: all probes attached (mode {}, output {})",
        args.mode.as_str(),
        args.output
            .as_ref()
            .map_or_else(|| "stdout".to_string(), |p| p.display().to_string())
    );
    notify_ready();

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut lost_reported = LostCounts::default();
    let mut reader_gone = false;
    let stop_reason = loop {
        let result = tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(|source| TraceError::Io { what: "ring buffer poll failed", source })?;
                // Announcements first: a process's announcement is written
                // before its attempt's outcome, and carries the proxy
                // environment of a process that may be gone by now.
                let r = drain(procs.get_mut(), &mut pipeline)
                    .and_then(|()| drain(guard.get_inner_mut(), &mut pipeline))
                    .and_then(|()| pipeline.flush());
                guard.clear_ready();
                // Batch: the kernel wakes us for every record while we keep
                // up, which at 50k connects/s costs more in wakeups and
                // write(2) calls than the work itself. Waiting a moment lets
                // records pile up (8 MiB of ring buffer holds 1.3 s of a
                // storm), so one wakeup and one write carry a thousand.
                tokio::time::sleep(BATCH_DELAY).await;
                r
            }
            guard = procs.readable_mut() => {
                // Unbatched: /proc must be read while the process lives.
                let mut guard = guard.map_err(|source| TraceError::Io { what: "ring buffer poll failed", source })?;
                let r = drain(guard.get_inner_mut(), &mut pipeline);
                guard.clear_ready();
                r
            }
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            _ = tick.tick() => {
                let lost = probes.lost()?;
                if lost.total() > lost_reported.total() {
                    lost_reported = lost;
                    pipeline.lost_record(lost, false).and_then(|()| pipeline.flush())
                } else {
                    Ok(())
                }
            }
        };
        match result {
            Ok(()) => {}
            Err(SinkError::Closed) => {
                reader_gone = true;
                break "the output reader went away";
            }
            Err(e) => return Err(e.into()),
        }
    };

    // Shutdown: what is already in the ring buffer, then what is still in
    // flight (as `pending`), then the final lost count.
    let mut pending = 0u64;
    let lost = probes.lost()?;
    if !reader_gone {
        match shutdown_flush([&mut procs, &mut ring], &probes, &mut pipeline, lost) {
            Ok(n) => pending = n,
            Err(TraceError::Sink(SinkError::Closed)) => {}
            Err(e) => return Err(e),
        }
    }
    eprintln!(
        "tracer: stopped ({stop_reason}): {} attempts written, {pending} still pending, {} events lost in the kernel (ring buffer full: {}, in-flight table full: {}), {} unreadable records",
        pipeline.attempts,
        lost.total(),
        lost.ringbuf_full,
        lost.inflight_full,
        pipeline.decode_errors
    );
    Ok(())
}

/// Drain the ring buffer, then report what is still in flight as `pending`,
/// then the final lost count. Returns the number of pending attempts.
fn shutdown_flush(
    rings: [&mut AsyncFd<RingBuf<MapData>>; 2],
    probes: &Probes,
    pipeline: &mut Pipeline,
    lost: LostCounts,
) -> Result<u64, TraceError> {
    for ring in rings {
        drain(ring.get_mut(), pipeline)?;
    }
    let mut pending = 0;
    for (conn, path) in probes.in_flight()? {
        let path = path.map(|p| decode::unix_path(&p));
        let attempt = decode::attempt_from(&conn, path);
        pipeline.handle_attempt(&attempt)?;
        pending += 1;
    }
    pipeline.lost_record(lost, true)?;
    pipeline.flush()?;
    Ok(pending)
}

#[cfg(test)]
mod tests {
    //! The per-event path must not allocate once warm (issue: "no
    //! allocation per event on the hot path"). A counting allocator for
    //! this test binary checks it.

    use super::*;
    use crate::{cli::Cli, sink::Format};
    use clap::Parser;
    use std::{
        alloc::{GlobalAlloc, Layout, System},
        cell::Cell,
    };
    use tracer_common::{kind, outcome, Conn, Event, AF_INET, IPPROTO_TCP};

    struct Counting;

    thread_local! {
        // Const-initialised: touching it never allocates.
        static ALLOCS: Cell<u64> = const { Cell::new(0) };
    }

    fn count() {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    }

    // SAFETY: forwards to the system allocator; only counts.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count();
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count();
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    fn allocations() -> u64 {
        ALLOCS.with(Cell::get)
    }

    pub(super) fn record(pid: u32, dport: u16, outcome: u8, errno: i32) -> Vec<u8> {
        let mut c = Conn::zeroed();
        c.pid_tgid = (u64::from(pid) << 32) | u64::from(pid);
        c.family = AF_INET;
        c.protocol = IPPROTO_TCP;
        c.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        c.dport = dport;
        c.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        c.sport = 40000;
        c.outcome = outcome;
        c.errno = errno;
        c.start_ns = 5_000_000_000 + u64::from(dport) * 1_000;
        c.end_ns = c.start_ns + 27_000;
        c.comm[..5].copy_from_slice(b"sleep");
        decode::event_bytes(&Event {
            kind: kind::CONNECT,
            conn: c,
            ..Event::zeroed()
        })
    }

    #[test]
    fn the_json_path_does_not_allocate_per_event() {
        // A real process with a known (empty) environment, read from /proc.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env_clear()
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let crate::cli::Command::Trace(args) = Cli::parse_from(["tracer", "trace"]).command;
        let sink = Sink::new(
            Box::new(std::io::sink()),
            "null".into(),
            Format::Json,
            false,
        );
        let mut pipeline = Pipeline::new(&args, sink);
        let records: Vec<Vec<u8>> = (0..64u16)
            .map(|i| match i % 3 {
                0 => record(pid, 1000 + i, outcome::ERROR, libc::ECONNREFUSED),
                1 => record(pid, 1000 + i, outcome::CONNECTED, 0),
                _ => record(pid, 1000 + i, outcome::ERROR, libc::ETIMEDOUT),
            })
            .collect();
        // Batches of 320 events, as a drain of the ring buffer gives.
        let batch = |pipeline: &mut Pipeline| {
            for _ in 0..5 {
                for r in &records {
                    pipeline.handle_bytes(r).expect("handle");
                }
            }
            pipeline.flush().expect("flush");
        };
        // Warm-up: the first event reads /proc and escapes the process's
        // fragments; the batch buffer grows to its working size.
        batch(&mut pipeline);
        let before = allocations();
        for _ in 0..10 {
            batch(&mut pipeline);
        }
        let during = allocations() - before;
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(pipeline.attempts, 64 * 5 * 11);
        assert_eq!(during, 0, "allocations while writing 3,200 events");
    }
}

#[cfg(test)]
mod timing {
    //! Throwaway-style timing of the JSON path, ignored by default:
    //! `cargo test --release -p tracer-user --lib json_path_timing -- --ignored --nocapture`

    use super::{tests::record, *};
    use crate::{cli::Cli, sink::Format};
    use clap::Parser;
    use tracer_common::outcome;

    #[test]
    #[ignore = "timing, not a check; run by hand in release mode"]
    fn json_path_timing() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env_clear()
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let crate::cli::Command::Trace(args) = Cli::parse_from(["tracer", "trace"]).command;
        let sink = Sink::new(
            Box::new(std::io::sink()),
            "null".into(),
            Format::Json,
            false,
        );
        let mut pipeline = Pipeline::new(&args, sink);
        let records: Vec<Vec<u8>> = (0..320u16)
            .map(|i| match i % 3 {
                0 => record(pid, 1000 + i, outcome::ERROR, libc::ECONNREFUSED),
                1 => record(pid, 1000 + i, outcome::CONNECTED, 0),
                _ => record(pid, 1000 + i, outcome::ERROR, libc::ETIMEDOUT),
            })
            .collect();
        let batch = |pipeline: &mut Pipeline| {
            for r in &records {
                pipeline.handle_bytes(r).expect("handle");
            }
            pipeline.flush().expect("flush");
        };
        for _ in 0..100 {
            batch(&mut pipeline);
        }
        let rounds = 3125; // 1,000,000 events
        for _ in 0..5 {
            let t = std::time::Instant::now();
            for _ in 0..rounds {
                batch(&mut pipeline);
            }
            let ns = t.elapsed().as_nanos() as f64 / (rounds * records.len()) as f64;
            eprintln!("json path: {ns:.1} ns/event");
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
