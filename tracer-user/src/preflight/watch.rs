//! Watching one daemon while it pulls: the tracer's own probes, filtered
//! in the kernel to the daemon's pid, and its own pipeline (decode, enrich,
//! verdict), writing the events into memory instead of a file. The events
//! are the same JSON records `tracer trace` writes.

use std::{
    io::Write,
    path::Path,
    sync::{Arc, Mutex},
};

use aya::maps::{MapData, RingBuf};
use serde_json::Value;
use tokio::io::unix::AsyncFd;

use crate::{
    cli::TraceArgs,
    probe::{Mode, ProbeConfig, Probes},
    sink::{Format, Sink},
    trace::{
        drain, drain_events, poll_ring, report_failed_early, shutdown_flush, Pipeline, TraceError,
        LOOKUP_GRACE,
    },
};

/// The JSON lines the pipeline writes, kept in memory.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("event buffer poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Probes attached to one process, and the events seen so far.
pub struct Watch {
    probes: Probes,
    events: AsyncFd<RingBuf<MapData>>,
    procs: AsyncFd<RingBuf<MapData>>,
    pipeline: Pipeline,
    lines: Lines,
}

impl Watch {
    /// Attach the probes (default mode, no tracefs needed) for `pid` only.
    pub fn start(pid: u32, host_root: &Path) -> Result<Self, TraceError> {
        let args = TraceArgs {
            output: None,
            format: Format::Json,
            comm: Vec::new(),
            pid: vec![pid],
            namespace: Vec::new(),
            pod: Vec::new(),
            runtime_state: Vec::new(),
            runtime_endpoint: Vec::new(),
            failed_only: false,
            proxy_only: false,
            mode: Mode::Socket,
            host_root: host_root.to_path_buf(),
            debug_ebpf: false,
            metrics_addr: None,
            liveness_timeout: std::time::Duration::from_secs(30),
            events: crate::cli::Events::All,
            rate_limit: None,
            doctor_interval: std::time::Duration::ZERO,
            doctor_comm: Vec::new(),
            dns: false,
            proxy: Vec::new(),
            process_args: crate::cli::ProcessArgs::Redacted,
        };
        let lines = Lines::default();
        let sink = Sink::new(
            Box::new(lines.clone()),
            "memory".into(),
            Format::Json,
            false,
        );
        let pipeline = Pipeline::new(&args, sink);
        let mut probes = Probes::attach(&ProbeConfig {
            mode: Mode::Socket,
            pids: vec![pid],
            comms: Vec::new(),
            failed_only: false,
            debug_ebpf: false,
            dns: false,
        })?;
        let events = poll_ring(probes.take_events()?)?;
        let procs = poll_ring(probes.take_procs()?)?;
        Ok(Self {
            probes,
            events,
            procs,
            pipeline,
            lines,
        })
    }

    /// Wait until records arrive, and take them in (announcements first:
    /// they carry the environment the verdicts need).
    pub async fn pump(&mut self) -> Result<(), TraceError> {
        tokio::select! {
            guard = self.events.readable_mut() => {
                let mut guard = guard.map_err(|source| TraceError::Io { what: "ring buffer poll failed", source })?;
                drain(self.procs.get_mut(), &mut self.pipeline)?;
                self.pipeline.settle_lookups(LOOKUP_GRACE);
                drain_events(guard.get_inner_mut(), self.procs.get_mut(), &mut self.pipeline)?;
                guard.clear_ready();
            }
            guard = self.procs.readable_mut() => {
                let mut guard = guard.map_err(|source| TraceError::Io { what: "ring buffer poll failed", source })?;
                drain(guard.get_inner_mut(), &mut self.pipeline)?;
                guard.clear_ready();
            }
        }
        report_failed_early(&mut self.probes, &mut self.pipeline)?;
        self.pipeline.flush()?;
        Ok(())
    }

    /// Connect attempts written so far, and how many of them failed (for
    /// the progress line).
    pub fn seen(&self) -> (usize, usize) {
        let Ok(bytes) = self.lines.0.lock() else {
            return (0, 0);
        };
        bytes
            .split(|&b| b == b'\n')
            .filter(|l| contains(l, b"\"action\":\"connect\""))
            .fold((0, 0), |(n, f), l| {
                (
                    n + 1,
                    f + usize::from(contains(l, b"\"outcome\":\"failure\"")),
                )
            })
    }

    /// Everything seen: what is in the rings, then the attempts still in
    /// flight (as `pending`). Detaches the probes.
    pub fn finish(mut self) -> Result<Vec<Value>, TraceError> {
        let lost = self.probes.lost()?;
        shutdown_flush(
            [&mut self.procs, &mut self.events],
            &mut self.probes,
            &mut self.pipeline,
            lost,
        )?;
        let bytes = self.lines.0.lock().map(|b| b.clone()).unwrap_or_default();
        Ok(String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
