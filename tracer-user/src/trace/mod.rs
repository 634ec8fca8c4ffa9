//! `tracer trace`: wire the stages together and run until told to stop.
//!
//! This module is the loop: poll the ring buffers, drain them in batches,
//! report lost events, and on shutdown flush what is left. What happens to
//! one record is `pipeline`; telling the world we are up is `ready`.

mod exchange;
mod pipeline;
mod ratelimit;
mod ready;
mod watchdog;

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use thiserror::Error;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

pub use pipeline::Pipeline;

use crate::{
    cli::TraceArgs,
    decode, doctor,
    metrics::{self, server::ServerError},
    probe::{lru, LostCounts, ProbeConfig, ProbeError, Probes},
    sink::{Sink, SinkError},
};

#[derive(Debug, Error)]
pub enum TraceError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Metrics(#[from] ServerError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Register a ring buffer with the runtime's poller.
pub(crate) fn poll_ring<T: std::os::fd::AsRawFd>(ring: T) -> Result<AsyncFd<T>, TraceError> {
    // SAFETY: the AsyncFd owns the ring buffer (or the log reader that owns
    // one), so its fd stays open for as long as it is registered.
    unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }.map_err(|e| {
        TraceError::Io {
            what: "cannot poll the ring buffer",
            source: std::io::Error::other(e.to_string()),
        }
    })
}

/// Drain every record currently in the ring buffer.
/// Returns how many records were drained.
pub(crate) fn drain(
    ring: &mut RingBuf<MapData>,
    pipeline: &mut Pipeline,
) -> Result<usize, SinkError> {
    let mut n = 0;
    while let Some(item) = ring.next() {
        pipeline.handle_bytes(&item)?;
        // Dropping `item` hands its space back to the kernel; write out a
        // full buffer before taking more (see `Pipeline::flush_if_full`).
        drop(item);
        pipeline.flush_if_full()?;
        n += 1;
    }
    Ok(n)
}

/// Drain every record currently in the EVENTS ring, taking in the
/// announcements of PROCS first for each one.
///
/// Why per record: a process's announcement is committed to PROCS before
/// any attempt of it is committed to EVENTS (the announcement is written at
/// its connect, the attempt at the outcome, which comes after). So once an
/// attempt has been read, the announcement it depends on is already
/// readable in PROCS, and draining PROCS right then can never miss it. A
/// drain of PROCS only once before the whole batch did: announcements
/// written while the batch was drained stayed behind their attempts, and a
/// short-lived client's attempt was judged from a /proc that was gone (issue
/// 20: 584 of 2,000 busybox clients lost their environment). A pid reused by
/// a new process is covered too: its announcement replaces the old snapshot
/// before its attempt is judged. An empty PROCS costs two loads of the
/// ring's positions, so this adds nothing measurable per attempt; names a
/// fresh announcement asked for get the usual `LOOKUP_GRACE`.
pub(crate) fn drain_events(
    ring: &mut RingBuf<MapData>,
    procs: &mut RingBuf<MapData>,
    pipeline: &mut Pipeline,
) -> Result<(), SinkError> {
    while let Some(item) = ring.next() {
        if drain(procs, pipeline)? > 0 {
            pipeline.settle_lookups(LOOKUP_GRACE);
        }
        pipeline.handle_bytes(&item)?;
        drop(item);
        pipeline.flush_if_full()?;
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

/// How long a drain may wait for the first lookup of a proxy's host name,
/// so that a process's first attempt gets its verdict. Paid once per name
/// (per `RETRY` while DNS is dead), and only when a new name was asked.
pub(crate) const LOOKUP_GRACE: Duration = Duration::from_millis(50);

/// Run `tracer trace` until SIGINT/SIGTERM or until the reader goes away.
pub async fn run(args: TraceArgs) -> Result<(), TraceError> {
    // Open the output before loading anything: a bad path fails fast and
    // leaves the kernel untouched.
    let sink = match &args.output {
        Some(path) => Sink::file(path, args.format)?,
        None => Sink::stdout(args.format),
    };
    run_with(args, sink, std::future::pending()).await
}

/// The loop of `run`, writing to `sink`, until SIGINT/SIGTERM, until the
/// reader goes away, or until `stop` completes (`tracer top` quitting).
pub async fn run_with(
    args: TraceArgs,
    sink: Sink,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), TraceError> {
    tokio::pin!(stop);
    let mut pipeline = Pipeline::new(&args, sink);
    // The metrics endpoint binds before anything is loaded, like the
    // output: a taken port fails fast.
    let mut heartbeat = None;
    let server = match args.metrics_addr {
        Some(addr) => {
            let m = metrics::Metrics::new();
            let beat = metrics::server::Heartbeat::new(args.liveness_timeout);
            heartbeat = Some(beat.clone());
            let server = metrics::server::Server::start(addr, m.registry, beat)?;
            eprintln!("tracer: metrics on http://{}/metrics", server.addr);
            if !args.doctor_interval.is_zero() {
                let opts = doctor::DoctorOptions {
                    host_root: args.host_root.clone(),
                    extra_comms: args.doctor_comm.clone(),
                    ..doctor::DoctorOptions::default()
                };
                metrics::doctor::spawn(m.doctor, opts, args.doctor_interval).map_err(|source| {
                    TraceError::Io {
                        what: "cannot start the doctor thread",
                        source,
                    }
                })?;
            }
            pipeline = pipeline.with_metrics(m.counters);
            Some(server)
        }
        None => None,
    };

    let config = ProbeConfig {
        mode: args.mode,
        pids: args.pid.clone(),
        comms: args.comm.clone(),
        failed_only: args.failed_only,
        debug_ebpf: args.debug_ebpf,
        dns: args.dns,
    };
    let mut probes = Probes::attach(&config)?;
    start_exchange_watch(&mut probes, &mut pipeline);
    let mut ring = poll_ring(probes.take_events()?)?;
    let mut procs = poll_ring(probes.take_procs()?)?;
    // --debug-ebpf: the programs' diagnostics, polled like a ring buffer.
    let mut ebpf_log = match probes.take_logger()? {
        Some(logger) => Some(poll_ring(logger)?),
        None => None,
    };
    let mut sigint = signal(SignalKind::interrupt()).map_err(|source| TraceError::Io {
        what: "cannot handle SIGINT",
        source,
    })?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|source| TraceError::Io {
        what: "cannot handle SIGTERM",
        source,
    })?;
    // SIGUSR1: one line of cache sizes and losses on stderr (the soak
    // watches these; an operator can too).
    let mut sigusr1 = signal(SignalKind::user_defined1()).map_err(|source| TraceError::Io {
        what: "cannot handle SIGUSR1",
        source,
    })?;
    // SIGHUP: reopen the output file (logrotate's `create` mode). Handled
    // for stdout too, where it does nothing, so that a stray SIGHUP never
    // kills the tracer.
    let mut sighup = signal(SignalKind::hangup()).map_err(|source| TraceError::Io {
        what: "cannot handle SIGHUP",
        source,
    })?;
    ready::announce(&args);
    if let Some(server) = &server {
        server.set_ready();
    }
    let mut alive = watchdog::Alive::new(heartbeat);

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut lost_reported = LostCounts::default();
    let mut ticks = 0u64;
    let mut unwritten_reported = 0u64;
    let mut reader_gone = false;
    // When the EVENTS arm may drain again (BATCH_DELAY after its last drain).
    let mut events_not_before: Option<tokio::time::Instant> = None;
    let stop_reason = loop {
        let result = tokio::select! {
            // Batch: the kernel wakes us for every record while we keep
            // up, which at 50k connects/s costs more in wakeups and write(2)
            // calls than the work itself. Waiting a moment after each drain
            // lets records pile up (8 MiB of ring buffer holds 1.3 s of a
            // storm), so one wakeup and one write carry a thousand. The
            // wait is this arm's alone: announcements (below) are drained
            // at once meanwhile, while their processes still live.
            guard = async {
                if let Some(at) = events_not_before {
                    tokio::time::sleep_until(at).await;
                }
                ring.readable_mut().await
            } => {
                let mut guard = guard.map_err(|source| TraceError::Io { what: "ring buffer poll failed", source })?;
                // Announcements first, and again before each attempt
                // (`drain_events`): a process's announcement is written
                // before its attempt's outcome, and carries the proxy
                // environment of a process that may be gone by now.
                let r = drain(procs.get_mut(), &mut pipeline)
                    .map(|_| pipeline.settle_lookups(LOOKUP_GRACE))
                    .and_then(|()| drain_events(guard.get_inner_mut(), procs.get_mut(), &mut pipeline))
                    .and_then(|()| pipeline.flush());
                pipeline.ring_drained();
                guard.clear_ready();
                apply_exchange_watch(&mut probes, &mut pipeline);
                events_not_before = Some(tokio::time::Instant::now() + BATCH_DELAY);
                r
            }
            guard = procs.readable_mut() => {
                // Unbatched: /proc must be read while the process lives.
                let mut guard = guard.map_err(|source| TraceError::Io { what: "ring buffer poll failed", source })?;
                let r = drain(guard.get_inner_mut(), &mut pipeline).map(|_| ());
                guard.clear_ready();
                // Attach to a new proxied process's cgroup at once: its
                // next connection should already be watched.
                apply_exchange_watch(&mut probes, &mut pipeline);
                r
            }
            _ = tokio::time::sleep(pipeline.next_exchange_deadline().unwrap_or(Duration::from_secs(3600))) => {
                // Attempts to a proxy whose answer did not come in time.
                pipeline.expire_exchanges(Some(std::time::Instant::now()))
                    .and_then(|()| pipeline.flush())
            }
            guard = async { match ebpf_log.as_mut() {
                Some(log) => log.readable_mut().await,
                None => std::future::pending().await,
            } } => {
                let mut guard = guard.map_err(|source| TraceError::Io { what: "eBPF log ring poll failed", source })?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
                Ok(())
            }
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            () = &mut stop => break "quit",
            _ = sigusr1.recv() => {
                let lost = probes.lost()?;
                let (attached, covered) = probes.watch_sizes();
                eprintln!(
                    "tracer: stats: {} attempts written, {}, exchange watch {attached} cgroups attached + {covered} covered, {}, {}, {}",
                    pipeline.attempts,
                    pipeline.stats(),
                    lost.describe(),
                    lru::describe(&probes.lru_maps()?),
                    pipeline.output_stats()
                );
                Ok(())
            }
            _ = sighup.recv() => pipeline.reopen_output(),
            _ = tick.tick() => {
                // sweep may write lookups that got no answer (--dns).
                pipeline.sweep();
                report_failed_early(&mut probes, &mut pipeline)?;
                for id in probes.prune_watches() {
                    pipeline.set_watched(id, false);
                }
                let lost = probes.lost()?;
                pipeline.update_metrics(lost);
                // The LRU maps' walk costs a syscall per entry present:
                // every 10 s, not every second.
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(10) {
                    pipeline.update_evictions(&probes.lru_maps()?);
                }
                let summaries = pipeline.rate_limited_records();
                // A record when the kernel lost more, or when events could
                // not be written; the latter once the output works again,
                // so the record lands in the file right after the gap.
                let unwritten = pipeline.unwritten();
                let unwritten_news =
                    unwritten != unwritten_reported && !pipeline.output_failing();
                if lost != lost_reported || unwritten_news {
                    lost_reported = lost;
                    unwritten_reported = unwritten;
                    summaries
                        .and_then(|()| pipeline.lost_record(lost, false))
                        .and_then(|()| pipeline.flush())
                } else {
                    summaries.and_then(|()| pipeline.flush())
                }
            }
        };
        // The loop turned, so the drain is not stuck: tell systemd's
        // watchdog and /livez (watchdog.rs). Each branch above ends, so a
        // write(2) that never returns stops this.
        alive.turned();
        match result {
            Ok(()) => {}
            Err(SinkError::Closed) => {
                reader_gone = true;
                break "the output reader went away";
            }
            Err(e) => return Err(e.into()),
        }
    };

    // The eBPF diagnostics already queued: select! may pick the signal
    // before the log ring's readiness, and its records would be lost with
    // the ring (seen: the simultaneous-open warning of an attempt made just
    // before SIGINT missing from stderr in 6 of 7 runs).
    if let Some(log) = ebpf_log.as_mut() {
        log.get_mut().flush();
    }
    // Shutdown: what is already in the ring buffer, then what is still in
    // flight (as `pending`), then the final lost count.
    let mut pending = 0u64;
    let lost = probes.lost()?;
    if !reader_gone {
        match shutdown_flush([&mut procs, &mut ring], &mut probes, &mut pipeline, lost) {
            Ok(n) => pending = n,
            Err(TraceError::Sink(SinkError::Closed)) => {}
            Err(e) => return Err(e),
        }
    }
    let lru_maps = probes.lru_maps()?;
    pipeline.update_evictions(&lru_maps);
    eprintln!(
        "tracer: stopped ({stop_reason}): {} attempts written, {pending} still pending, {}, {}, {} unreadable records, {}",
        pipeline.attempts,
        lost.describe(),
        lru::describe(&lru_maps),
        pipeline.decode_errors,
        pipeline.output_stats()
    );
    Ok(())
}

/// Mark the `--proxy` endpoints, and adopt the processes that were running
/// before the tracer with proxy variables: the kernel announces a process
/// only at its next connect, too late to watch that connection.
fn start_exchange_watch(probes: &mut Probes, pipeline: &mut Pipeline) {
    for &(ip, port) in pipeline.listed() {
        if let Err(e) = probes.add_proxy(ip, port) {
            log::warn!("--proxy {ip}:{port}: {e}; its exchanges will not be seen");
        }
    }
    for pid in processes_with_proxy_variables() {
        pipeline.adopt_running(pid);
    }
    apply_exchange_watch(probes, pipeline);
}

/// Processes whose environment names a proxy variable (any case), read
/// from /proc/<pid>/environ. Only a byte search: the pipeline parses the
/// environment of those found.
fn processes_with_proxy_variables() -> Vec<u32> {
    let own = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0).any(|entry| {
                    let key = entry.split(|b| *b == b'=').next().unwrap_or_default();
                    key.len() > 6 && key[key.len() - 6..].eq_ignore_ascii_case(b"_proxy")
                })
            })
        })
        .collect()
}

/// Carry out what the pipeline asked for: mark proxy endpoints in the
/// kernel, attach the exchange programs to new proxied cgroups.
pub(crate) fn apply_exchange_watch(probes: &mut Probes, pipeline: &mut Pipeline) {
    for (ip, port) in std::mem::take(&mut pipeline.to_mark) {
        if let Err(e) = probes.add_proxy(ip, port) {
            log::warn!("proxy {ip}:{port}: {e}; its exchanges will not be seen");
        }
    }
    for (pid, hint) in std::mem::take(&mut pipeline.to_watch) {
        let hint_ref = hint.as_ref().map(|(id, path)| (*id, path.as_str()));
        match probes.watch_pid(pid, hint_ref) {
            Some(id) => pipeline.set_watched(id, true),
            // Refused (root cgroup, limit, gone): a proxy dial from that
            // cgroup no longer reads /proc to ask again.
            None => {
                if let Some((id, _)) = hint.filter(|(id, _)| *id != 0) {
                    pipeline.set_unwatchable(id);
                }
            }
        }
    }
}

/// The attempts whose connect() failed before a SYN (probe::failed_early).
pub(crate) fn report_failed_early(
    probes: &mut Probes,
    pipeline: &mut Pipeline,
) -> Result<(), TraceError> {
    for conn in probes.failed_early()? {
        pipeline.handle_attempt(&decode::attempt_from(&conn, None))?;
    }
    Ok(())
}

/// Drain the ring buffer, then report what is still in flight as `pending`,
/// then the final lost count. Returns the number of pending attempts.
pub(crate) fn shutdown_flush(
    [procs, ring]: [&mut AsyncFd<RingBuf<MapData>>; 2],
    probes: &mut Probes,
    pipeline: &mut Pipeline,
    lost: LostCounts,
) -> Result<u64, TraceError> {
    drain(procs.get_mut(), pipeline)?;
    drain_events(ring.get_mut(), procs.get_mut(), pipeline)?;
    // Attempts still waiting for their proxy's answer: written as they are.
    pipeline.expire_exchanges(None)?;
    let mut pending = 0;
    for (conn, path) in probes.in_flight()? {
        let path = path.map(|p| decode::unix_path(&p));
        let attempt = decode::attempt_from(&conn, path);
        pipeline.handle_attempt(&attempt)?;
        pending += 1;
    }
    pipeline.rate_limited_records()?;
    pipeline.lost_record(lost, true)?;
    pipeline.flush()?;
    Ok(pending)
}
