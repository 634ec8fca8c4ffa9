//! Everything after the ring buffer, for one record: decode -> enrich ->
//! verdict -> sink. Also the lost-events record, which is described here,
//! once, as serde structs.

use std::{
    collections::HashSet,
    net::{IpAddr, ToSocketAddrs},
    path::PathBuf,
    sync::Arc,
    time::Instant,
};

use serde::Serialize;

use super::ratelimit::{Dropped, RateLimitedRecord, RateLimiter};
use crate::{
    cli::{Events, ProcessArgs, TraceArgs},
    decode::{self, Attempt, Record, Transport},
    enrich::{
        dns::{DnsWatch, Lookup},
        pod::{PodNamer, DEFAULT_CRI_SOCKETS, DEFAULT_STATE_DIRS},
        pod_cri::CriNames,
        proc::{ProcCache, ProcInfo},
        UnitCache,
    },
    exchange::{ExchangeState, ProxyExchange},
    metrics::Counters,
    probe::{LostCounts, Mode},
    sink::{
        dns as dns_record,
        ndjson::AttemptWriter,
        text,
        words::{self, Facts},
        Format, Sink, SinkError,
    },
    verdict::{
        judge, names_to_resolve,
        resolve::{Resolver, Root},
        EndpointCache, ProxyVerdict,
    },
};

use super::exchange::{self, Held, Pending};

/// Output bytes held at most before they are written (about 1,000 events):
/// large enough that a storm still costs one write(2) per thousand events,
/// small enough to bound the tracer's memory while the reader is slow.
pub const OUTPUT_BUFFER: usize = 1024 * 1024;

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
    /// `--dns`: queries waiting for answers, and the answers' names.
    dns: Option<DnsWatch>,
    pub attempts: u64,
    /// `dns-query` events written (failed or unanswered lookups).
    pub lookups: u64,
    pub decode_errors: u64,
    /// `--events notable`: write failures and proxy dials only.
    notable_only: bool,
    limiter: Option<RateLimiter>,
    /// Reused for the rate-limited summaries of one tick.
    dropped: Vec<Dropped>,
    /// `--metrics-addr`: what the pipeline counts into.
    metrics: Option<Counters>,
    /// Bytes of attempt records drained since the last `ring_drained`.
    ring_bytes: usize,
    /// `--proxy HOST:PORT`, resolved at start.
    listed: Vec<(IpAddr, u16)>,
    /// Attempts to a proxy waiting for its answer (trace/exchange.rs).
    held: Pending,
    /// Cgroup ids the exchange programs are attached to (set by the run
    /// loop, which owns the probes).
    watched: HashSet<u64>,
    /// For the run loop: pids whose cgroups should be watched, and proxy
    /// endpoints to mark in the kernel.
    /// (pid, the cgroup id and path an attempt of it carried).
    pub to_watch: Vec<(u32, Option<(u64, String)>)>,
    pub to_mark: Vec<(IpAddr, u16)>,
    marked: HashSet<(IpAddr, u16)>,
    /// Cgroup ids the exchange programs cannot be attached to (the root
    /// cgroup, past the limit, gone): not asked for again at every dial.
    unwatchable: HashSet<u64>,
    /// `--namespace` and `--pod`: only processes of these pods.
    pods: PodFilter,
}

/// `--namespace NS` and `--pod NAME`: like `--comm`, but the names are
/// known only in user space (enrich/pod.rs), so attempts of other
/// processes are dropped here, before they are counted or written.
struct PodFilter {
    namespaces: Vec<String>,
    pods: Vec<String>,
}

impl PodFilter {
    fn admits(&self, proc: &ProcInfo) -> bool {
        if self.namespaces.is_empty() && self.pods.is_empty() {
            return true;
        }
        let Some(pod) = &proc.pod else {
            return false;
        };
        (self.namespaces.is_empty() || self.namespaces.contains(&pod.namespace))
            && (self.pods.is_empty() || self.pods.contains(&pod.pod))
    }
}

/// Names the pods of containers from the runtimes' bundles under the host
/// root (`--runtime-state`, else the runtimes' default state folders).
fn pod_namer(args: &TraceArgs) -> PodNamer {
    let dirs = if args.runtime_state.is_empty() {
        DEFAULT_STATE_DIRS.iter().map(PathBuf::from).collect()
    } else {
        args.runtime_state.clone()
    };
    let namer = PodNamer::new(args.host_root.clone(), dirs);
    // The CRI sockets, under the host root; by default those present.
    let explicit = !args.runtime_endpoint.is_empty();
    let sockets: Vec<PathBuf> = if explicit {
        args.runtime_endpoint.iter().map(String::as_str).collect()
    } else {
        DEFAULT_CRI_SOCKETS.to_vec()
    }
    .into_iter()
    .map(|s| {
        let path = s.strip_prefix("unix://").unwrap_or(s);
        args.host_root.join(path.trim_start_matches('/'))
    })
    .filter(|p| explicit || p.exists())
    .collect();
    if sockets.is_empty() {
        return namer;
    }
    match CriNames::spawn(sockets) {
        Ok(cri) => namer.with_cri(cri),
        Err(e) => {
            log::warn!("cannot start the CRI worker ({e}): pods are named from bundles only");
            namer
        }
    }
}

/// Cgroups remembered as unwatchable before the set starts over.
const MAX_UNWATCHABLE: usize = 4096;

/// Processes read without a kernel announcement checked for liveness per
/// sweep (`ProcCache::audit`), i.e. per 1 s tick: at most this many reads
/// of /proc/<pid>/stat a second (about 20 µs each here).
const AUDIT_PER_TICK: usize = 64;

/// Size of the EVENTS ring buffer (tracer-ebpf/src/maps.rs), for the fill
/// ratio.
const EVENTS_RING_BYTES: f64 = (8 * 1024 * 1024) as f64;
/// Each ring-buffer record carries an 8-byte header and is padded to 8.
const RING_RECORD_OVERHEAD: usize = 8;

impl Pipeline {
    pub fn new(args: &TraceArgs, sink: Sink) -> Self {
        Self {
            procs: match args.process_args {
                ProcessArgs::Redacted => ProcCache::new(PathBuf::from("/proc")),
                ProcessArgs::None => ProcCache::new(PathBuf::from("/proc")).without_args(),
            }
            .with_pods(pod_namer(args)),
            units: UnitCache::new(args.host_root.clone()),
            endpoints: EndpointCache::new(),
            resolver: Resolver::new(&args.host_root),
            sink,
            writer: AttemptWriter::new(),
            mode: args.mode,
            proxy_only: args.proxy_only,
            wall_offset_ns: wall_offset_ns(),
            dns: args.dns.then(DnsWatch::new),
            attempts: 0,
            lookups: 0,
            decode_errors: 0,
            notable_only: args.events == Events::Notable,
            limiter: args.rate_limit.map(RateLimiter::new),
            dropped: Vec::new(),
            metrics: None,
            ring_bytes: 0,
            listed: resolve_listed(&args.proxy),
            held: Pending::default(),
            watched: HashSet::new(),
            to_watch: Vec::new(),
            to_mark: Vec::new(),
            marked: HashSet::new(),
            unwatchable: HashSet::new(),
            pods: PodFilter {
                namespaces: args.namespace.clone(),
                pods: args.pod.clone(),
            },
        }
    }

    /// Count into these metrics from now on.
    pub fn with_metrics(mut self, counters: Counters) -> Self {
        self.metrics = Some(counters);
        self
    }

    /// The `--proxy` endpoints, to mark in the kernel at start.
    pub fn listed(&self) -> &[(IpAddr, u16)] {
        &self.listed
    }

    /// The exchange programs are (or are no longer) attached to `cgroup_id`.
    pub fn set_watched(&mut self, cgroup_id: u64, watched: bool) {
        if watched {
            self.watched.insert(cgroup_id);
        } else {
            self.watched.remove(&cgroup_id);
        }
    }

    /// The exchange programs could not be attached to `cgroup_id`.
    pub fn set_unwatchable(&mut self, cgroup_id: u64) {
        if self.unwatchable.len() >= MAX_UNWATCHABLE {
            self.unwatchable.clear();
        }
        self.unwatchable.insert(cgroup_id);
    }

    /// A process running before the tracer started, with proxy variables
    /// in its environment: learn its proxies now, so its first attempt
    /// after start is already watched (it is announced only at its next
    /// connect, too late to attach before that connection talks).
    pub fn adopt_running(&mut self, pid: u32) {
        let proc = self.procs.get(pid, 0);
        self.learn_proxies(pid, &proc);
    }

    /// Queue `pid`'s proxy endpoints for marking and its cgroup for
    /// watching, when its environment names a proxy.
    fn learn_proxies(&mut self, pid: u32, proc: &Arc<ProcInfo>) {
        let endpoints = self.endpoints.of(pid, proc);
        if endpoints.is_empty() {
            return;
        }
        for ep in endpoints {
            if let Some(ip) = ep.url.ip() {
                if self.marked.insert((ip, ep.url.port)) {
                    self.to_mark.push((ip, ep.url.port));
                }
            }
        }
        self.to_watch.push((pid, None));
    }

    /// Write the held attempts whose bound passed (all, when `now` is None).
    pub fn expire_exchanges(&mut self, now: Option<Instant>) -> Result<(), SinkError> {
        if self.held.is_empty() {
            return Ok(());
        }
        for h in self.held.expired(now) {
            self.write_held(&h);
        }
        Ok(())
    }

    /// How long until a held attempt's bound passes.
    pub fn next_exchange_deadline(&self) -> Option<std::time::Duration> {
        self.held.next_deadline(Instant::now())
    }

    fn write_held(&mut self, h: &Held) {
        self.write_attempt(&h.attempt, &h.proc, h.verdict.as_ref(), Some(&h.exchange));
    }

    /// One ring-buffer record.
    pub fn handle_bytes(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        match decode::decode(bytes) {
            Ok(Record::Process { pid, since_ns, env }) => {
                let proc = self.procs.refresh(pid, since_ns, &env);
                self.learn_proxies(pid, &proc);
                // Resolve the proxies' names now, ahead of the attempt's
                // outcome: by the time it is drained the answer is usually
                // in.
                let root = root_of(&self.procs, pid, &proc);
                for name in names_to_resolve(self.endpoints.of(pid, &proc)) {
                    self.resolver.prefetch(name, root);
                }
                Ok(())
            }
            Ok(Record::Exit { pid }) => {
                self.procs.exited(pid, std::time::Instant::now());
                Ok(())
            }
            Ok(Record::Attempt(attempt)) => {
                self.ring_bytes += (bytes.len() + RING_RECORD_OVERHEAD).next_multiple_of(8);
                self.handle_attempt(&attempt)
            }
            Ok(Record::Dns(packet)) => {
                // --dns messages share the EVENTS ring with attempts.
                self.ring_bytes += (bytes.len() + RING_RECORD_OVERHEAD).next_multiple_of(8);
                if let Some(lookup) = self.dns.as_mut().and_then(|w| w.observe(&packet)) {
                    self.write_lookup(&lookup);
                }
                Ok(())
            }
            Ok(Record::Exchange(line)) => {
                if let Some(h) = self.held.line(&line) {
                    self.write_held(&h);
                }
                Ok(())
            }
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
        let proc = self.procs.get(attempt.pid, attempt.start_ns);
        if !self.pods.admits(&proc) {
            return Ok(());
        }
        let dest = attempt.destination.ip_port();
        // Most processes have no proxy: then there is no verdict to make and
        // the unit's files are not consulted.
        let endpoints = self.endpoints.of(attempt.pid, &proc);
        let verdict = match proc.proxy_env() {
            Some(env) if !endpoints.is_empty() => {
                let unit_env = proc
                    .cgroup
                    .as_ref()
                    .filter(|c| c.unit.as_deref().is_some_and(|u| u.ends_with(".service")))
                    .and_then(|c| self.units.get(attempt.pid, c));
                judge(
                    dest,
                    env,
                    endpoints,
                    unit_env.as_deref(),
                    &mut self.resolver,
                    root_of(&self.procs, attempt.pid, &proc),
                )
            }
            _ => None,
        };
        // Every attempt is counted, whatever is written.
        if let Some(m) = self.metrics.as_mut() {
            m.attempt(attempt, &proc, verdict.as_ref());
        }
        let listed = dest.is_some_and(|d| self.listed.contains(&d));
        if self.proxy_only && verdict.is_none() && !listed {
            return Ok(());
        }
        let via = verdict.as_ref().is_some_and(|v| v.via == Some(true));
        if self.notable_only && !attempt.verdict.is_failure() && !via && !listed {
            return Ok(());
        }
        if let Some(limiter) = self.limiter.as_mut() {
            if !limiter.admit(attempt) {
                if let Some(m) = &self.metrics {
                    m.rate_limited.inc();
                }
                return Ok(());
            }
        }
        if !(via || listed) {
            self.write_attempt(attempt, &proc, verdict.as_ref(), None);
            return Ok(());
        }
        // A dial to a proxy: the rare path, allowed to allocate.
        if let Some(d) = dest.filter(|d| self.marked.insert(*d)) {
            // A proxy named by host name, now resolved: mark its address.
            self.to_mark.push(d);
        }
        let watched = self.watched.contains(&attempt.cgroup_id);
        if !watched && !self.unwatchable.contains(&attempt.cgroup_id) {
            // Watch its cgroup from now on (a --proxy dialled by a process
            // without proxy variables; a cgroup the process moved to).
            let path = proc.cgroup.as_ref().map(|c| c.path.clone());
            self.to_watch
                .push((attempt.pid, path.map(|p| (attempt.cgroup_id, p))));
        }
        let talks = attempt.verdict == decode::Verdict::Connected
            && attempt.transport == Some(Transport::Tcp);
        if talks && watched {
            if let Some(h) = self
                .held
                .hold(attempt.clone(), proc, verdict, listed, Instant::now())
            {
                self.write_held(&h);
            }
            return Ok(());
        }
        let state = talks.then_some(ExchangeState::NotWatched);
        let x = exchange::unheld(listed, state);
        self.write_attempt(attempt, &proc, verdict.as_ref(), Some(&x));
        Ok(())
    }

    /// Write one attempt (the hot path when `exchange` is None).
    fn write_attempt(
        &mut self,
        attempt: &Attempt,
        proc: &Arc<ProcInfo>,
        verdict: Option<&ProxyVerdict>,
        exchange: Option<&ProxyExchange>,
    ) {
        let dest = attempt.destination.ip_port();
        let domain = match (&self.dns, dest) {
            (Some(watch), Some((ip, _))) => watch.domain_for(attempt.pid, ip, attempt.start_ns),
            _ => None,
        };
        let facts = Facts {
            attempt,
            proc,
            verdict,
            exchange,
            mode: self.mode,
            wall_offset_ns: self.wall_offset_ns,
            domain,
        };
        match self.sink.format {
            // The hot path: written straight into the batch buffer.
            Format::Json => {
                let writer = &mut self.writer;
                self.sink.record(|out| writer.write(out, &facts, proc));
            }
            Format::Text => {
                let line = text::render(&facts, self.sink.color);
                self.sink.line(&line);
            }
        }
        self.attempts += 1;
    }

    /// A failed or unanswered lookup (`--dns`), as a `dns-query` event.
    fn write_lookup(&mut self, lookup: &Lookup) {
        let proc = self.procs.get(lookup.pid, lookup.start_ns);
        if !self.pods.admits(&proc) {
            return;
        }
        let wall = self.wall_offset_ns;
        match self.sink.format {
            Format::Json => {
                let writer = &mut self.writer;
                self.sink
                    .record(|out| dns_record::write(out, writer, lookup, &proc, wall));
            }
            Format::Text => {
                let line = dns_record::render_text(lookup, &proc, wall, self.sink.color);
                self.sink.line(&line);
            }
        }
        self.lookups += 1;
    }

    /// A record of events lost in the kernel, and of events that could
    /// not be written to the output.
    pub fn lost_record(&mut self, lost: LostCounts, last: bool) -> Result<(), SinkError> {
        let now = words::rfc3339(now_epoch_ns());
        let unwritten = self.sink.unwritten();
        let mut message = format!("so far: {}", lost.describe());
        if unwritten > 0 {
            message.push_str(&format!(
                "; {unwritten} events could not be written to the output (disk full or write errors)"
            ));
        }
        match self.sink.format {
            Format::Json => self.sink.meta_json(&LostRecord {
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
                        announcements_full: lost.announcements_full,
                        dns_full: lost.dns_full,
                        exchange_full: lost.exchange_full,
                        unwritten,
                    },
                },
            })?,
            Format::Text => self
                .sink
                .meta_line(&format!("-- {}", crate::redact::printable(&message))),
        }
        Ok(())
    }

    /// Event lines that could not be written to the output (see `Sink`).
    pub fn unwritten(&self) -> u64 {
        self.sink.unwritten()
    }

    /// Whether the output is failing now.
    pub fn output_failing(&self) -> bool {
        self.sink.failing()
    }

    /// The output's failures in words, for SIGUSR1 and the summary.
    pub fn output_stats(&self) -> String {
        self.sink.describe_failures()
    }

    /// SIGHUP: write what is queued to the current file, then open the
    /// path again (logrotate's `create` mode).
    pub fn reopen_output(&mut self) -> Result<(), SinkError> {
        self.sink.reopen()
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.sink.flush()
    }

    /// One "rate-limited" line per process that had events dropped since
    /// the last call (`--rate-limit`).
    pub fn rate_limited_records(&mut self) -> Result<(), SinkError> {
        let Some(limiter) = self.limiter.as_mut() else {
            return Ok(());
        };
        let limit = limiter.per_second();
        limiter.take(&mut self.dropped);
        if self.dropped.is_empty() {
            return Ok(());
        }
        let now = words::rfc3339(now_epoch_ns());
        for d in self.dropped.drain(..) {
            let record = RateLimitedRecord::new(&now, &d, limit);
            match self.sink.format {
                Format::Json => self.sink.json(&record)?,
                Format::Text => self
                    .sink
                    .line(&format!("-- {}", crate::redact::printable(&record.message))),
            }
        }
        Ok(())
    }

    /// Bring the metrics' losses, cache sizes and series up to date (once
    /// a second).
    pub fn update_metrics(&mut self, lost: LostCounts) {
        let Some(m) = self.metrics.as_mut() else {
            return;
        };
        m.losses(lost.by_kind(), self.decode_errors, self.sink.unwritten());
        m.process_cache
            .set(i64::try_from(self.procs.len()).unwrap_or(i64::MAX));
        m.resolver_names
            .set(i64::try_from(self.resolver.names()).unwrap_or(i64::MAX));
        m.resolver_queue
            .set(i64::try_from(self.resolver.outstanding()).unwrap_or(i64::MAX));
        m.dials.sweep(std::time::Instant::now());
    }

    /// The kernel's LRU maps' evictions, into the metrics.
    pub fn update_evictions(&mut self, maps: &[crate::probe::lru::LruMap]) {
        if let Some(m) = self.metrics.as_mut() {
            for map in maps {
                m.evictions(map.name, map.evicted);
            }
        }
    }

    /// After a drain of the events ring: how full it was.
    pub fn ring_drained(&mut self) {
        if let Some(m) = &self.metrics {
            m.ring_fill
                .set((self.ring_bytes as f64 / EVENTS_RING_BYTES).min(1.0));
        }
        self.ring_bytes = 0;
    }

    /// Write the batch out once it holds `OUTPUT_BUFFER` bytes, so a slow
    /// reader holds the drain back instead of making the tracer buffer:
    /// the backpressure lands on the kernel ring buffer, whose overflow is
    /// counted (`ringbuf_full`), and the tracer's memory stays bounded.
    pub fn flush_if_full(&mut self) -> Result<(), SinkError> {
        if self.sink.pending() >= OUTPUT_BUFFER {
            self.sink.flush()?;
        }
        Ok(())
    }

    /// Forget the processes that exited a while ago (`EXIT_GRACE`), in every
    /// cache keyed by their snapshot, so memory follows the node's live
    /// processes rather than every process it ever ran.
    pub fn sweep(&mut self) {
        // Lookups without an answer first: they may name processes about
        // to be forgotten.
        let unanswered = match self.dns.as_mut() {
            Some(watch) => watch.expire(clock_ns(libc::CLOCK_MONOTONIC).max(0) as u64),
            None => Vec::new(),
        };
        for lookup in &unanswered {
            self.write_lookup(lookup);
        }
        let now = std::time::Instant::now();
        // Processes the kernel never announced get no exit record: a few
        // are checked per tick (300 residents are all seen within 5 s).
        self.procs.audit(now, AUDIT_PER_TICK);
        for (pid, snapshot) in self.procs.sweep(now) {
            self.endpoints.forget(pid, &snapshot);
            self.writer.forget(pid, &snapshot);
        }
        // A mount namespace whose last process went: its answers go too.
        for ns in self.procs.take_gone_namespaces() {
            self.resolver.forget_namespace(ns);
        }
    }

    /// Cache sizes, for `SIGUSR1` and the shutdown summary.
    pub fn stats(&self) -> String {
        let mut out = format!(
            "process cache {} ({} unannounced), pods' containers {}, proxy choices {}, escaped fragments {}, resolver names {} in {} namespaces, held for a proxy's answer {}",
            self.procs.len(),
            self.procs.unannounced(),
            self.procs.pods(),
            self.endpoints.len(),
            self.writer.cached(),
            self.resolver.names(),
            self.resolver.namespaces(),
            self.held.len()
        );
        if let Some(watch) = &self.dns {
            let (pending, per_process, node) = watch.sizes();
            out.push_str(&format!(
                ", dns: {pending} queries waiting, {per_process} process answers, {node} node answers, {} failed lookups written, {} unreadable messages",
                self.lookups, watch.unreadable
            ));
        }
        out
    }

    /// Let the names just-announced processes need be resolved, for at
    /// most `grace` (see `Resolver::settle`).
    pub fn settle_lookups(&mut self, grace: std::time::Duration) {
        self.resolver.settle(grace);
    }
}

/// `--proxy HOST:PORT` values as addresses. A name that does not resolve
/// is reported and left out (the flag is a hint, not a requirement).
fn resolve_listed(values: &[String]) -> Vec<(IpAddr, u16)> {
    let mut out = Vec::new();
    for value in values {
        let Some((host, port)) = crate::doctor::reach::split_host_port(value) else {
            continue;
        };
        match (host.as_str(), port).to_socket_addrs() {
            Ok(addrs) => {
                for a in addrs {
                    if !out.contains(&(a.ip(), a.port())) {
                        out.push((a.ip(), a.port()));
                    }
                }
            }
            Err(e) => log::warn!("--proxy {value}: cannot resolve {host}: {e}"),
        }
    }
    out
}

/// Whose view of names a process has (see verdict/resolve.rs), and who
/// may stand in for it once it is gone: its parent, and the oldest process
/// `procs` knows in its mount namespace.
fn root_of(procs: &ProcCache, pid: u32, proc: &ProcInfo) -> Root {
    Root {
        pid: Some(pid),
        mnt_ns: proc.mnt_ns,
        parent: proc.ppid,
        anchor: proc.mnt_ns.and_then(|ns| procs.anchor(ns)),
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
    announcements_full: u64,
    /// DNS messages and proxy exchange lines lost in the kernel (not
    /// attempts, so not part of `total`).
    dns_full: u64,
    exchange_full: u64,
    /// Events the tracer could not write to its output (not part of
    /// `total`, which counts the kernel's losses).
    unwritten: u64,
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

    /// A pipeline writing JSON into the void, and `n` records (refused,
    /// connected, timed out in turn) of a real process with a known
    /// (empty) environment, read from /proc. Kill the child when done.
    pub(super) fn null_pipeline(n: u16) -> (std::process::Child, Pipeline, Vec<Vec<u8>>) {
        null_pipeline_with(n, &[])
    }

    /// `null_pipeline` with more `tracer trace` arguments.
    pub(super) fn null_pipeline_with(
        n: u16,
        extra: &[&str],
    ) -> (std::process::Child, Pipeline, Vec<Vec<u8>>) {
        null_pipeline_env(n, extra, &[])
    }

    /// `null_pipeline_with`, the process having the environment `env`.
    fn null_pipeline_env(
        n: u16,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> (std::process::Child, Pipeline, Vec<Vec<u8>>) {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .env_clear()
            .envs(env.iter().copied())
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let argv = ["tracer", "trace"].iter().chain(extra);
        let crate::cli::Command::Trace(args) = Cli::parse_from(argv).command else {
            panic!("`tracer trace` parses as the trace command");
        };
        let sink = Sink::new(
            Box::new(std::io::sink()),
            "null".into(),
            Format::Json,
            false,
        );
        let pipeline = Pipeline::new(&args, sink);
        let records = (0..n)
            .map(|i| match i % 3 {
                0 => record(pid, 1000 + i, outcome::ERROR, libc::ECONNREFUSED),
                1 => record(pid, 1000 + i, outcome::CONNECTED, 0),
                _ => record(pid, 1000 + i, outcome::ERROR, libc::ETIMEDOUT),
            })
            .collect();
        (child, pipeline, records)
    }

    /// The same with everything of `--metrics-addr`, `--events notable`
    /// and `--rate-limit` on the per-event path: counting, filtering and
    /// the per-process budget allocate nothing once warm either.
    #[test]
    fn metrics_and_rate_limit_do_not_allocate_per_event() {
        let (mut child, pipeline, records) =
            null_pipeline_with(64, &["--events", "notable", "--rate-limit", "1000000/s"]);
        let metrics = crate::metrics::Metrics::new();
        let mut pipeline = pipeline.with_metrics(metrics.counters);
        let batch = |pipeline: &mut Pipeline| {
            for _ in 0..5 {
                for r in &records {
                    pipeline.handle_bytes(r).expect("handle");
                }
            }
            pipeline.ring_drained();
            pipeline.flush().expect("flush");
        };
        let during = allocations_after_warm_up(&mut pipeline, batch);
        let _ = child.kill();
        let _ = child.wait();
        // notable: the refused and timed-out two thirds are written.
        assert_eq!(pipeline.attempts, (22 + 21) * 5 * 11);
        let text = crate::metrics::encode(&metrics.registry).expect("encode");
        assert!(
            text.contains(r#"tracer_connect_attempts_total{result="connected",transport="tcp",via_proxy="false"} 1155"#),
            "every attempt is counted: {text}"
        );
        assert_eq!(during, 0, "allocations while handling 3,200 events");
    }

    /// A DNS answer naming 127.0.0.1 (the records' destination), as
    /// `pid` received it at kernel time 1 s.
    fn dns_answer(pid: u32) -> Vec<u8> {
        use tracer_common::{DnsEvent, DNS_PAYLOAD_MAX};
        let message = crate::enrich::dns::message::tests::answer(
            1,
            "named.test",
            0,
            &[std::net::Ipv4Addr::LOCALHOST],
            3600,
        );
        let mut ev = DnsEvent {
            kind: kind::DNS,
            len: message.len() as u32,
            conn: Conn::zeroed(),
            cookie: 1,
            flags: 0,
            wire_len: message.len() as u32,
            payload: [0; DNS_PAYLOAD_MAX],
        };
        ev.conn.pid_tgid = (u64::from(pid) << 32) | u64::from(pid);
        ev.conn.start_ns = 1_000_000_000;
        ev.conn.family = AF_INET;
        ev.conn.dport = 53;
        ev.payload[..message.len()].copy_from_slice(&message);
        // SAFETY: DnsEvent is plain old data; view it as bytes.
        unsafe {
            std::slice::from_raw_parts((&ev as *const DnsEvent).cast::<u8>(), size_of::<DnsEvent>())
        }
        .to_vec()
    }

    /// With --dns every record's destination has a name: writing it must
    /// not allocate either.
    #[test]
    fn the_json_path_with_names_does_not_allocate_per_event() {
        let (mut child, mut pipeline, records) = null_pipeline_with(64, &["--dns"]);
        pipeline
            .handle_bytes(&dns_answer(child.id()))
            .expect("answer");
        let named = pipeline
            .dns
            .as_ref()
            .and_then(|w| w.domain_for(child.id(), "127.0.0.1".parse().expect("ip"), 5_000_000_000))
            .map(|d| d.name.to_string());
        assert_eq!(named.as_deref(), Some("named.test"));
        let batch = |pipeline: &mut Pipeline| {
            for r in &records {
                pipeline.handle_bytes(r).expect("handle");
            }
            pipeline.flush().expect("flush");
        };
        let during = allocations_after_warm_up(&mut pipeline, batch);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(during, 0, "allocations while writing 640 named events");
    }

    /// Allocations during ten runs of `batch`, after one to warm up: the
    /// first event reads /proc and escapes the process's fragments, and the
    /// batch buffer grows to its working size.
    fn allocations_after_warm_up(pipeline: &mut Pipeline, batch: impl Fn(&mut Pipeline)) -> u64 {
        batch(pipeline);
        let before = allocations();
        for _ in 0..10 {
            batch(pipeline);
        }
        allocations() - before
    }

    /// A process with proxies (one by address with credentials, one by a
    /// host name its hosts file answers): every event carries a verdict
    /// (the redacted URL, the endpoint), two of them dial a proxy, and
    /// none allocates once warm (issue 20: `judge` allocated both strings
    /// per event).
    #[test]
    fn a_proxied_process_does_not_allocate_per_event() {
        let (mut child, mut pipeline, records) = null_pipeline_env(
            64,
            &[],
            &[
                ("HTTPS_PROXY", "http://user:s3cret@127.0.0.1:1000"),
                ("http_proxy", "http://localhost:1003"),
            ],
        );
        let batch = |pipeline: &mut Pipeline| {
            for _ in 0..5 {
                for r in &records {
                    pipeline.handle_bytes(r).expect("handle");
                }
            }
            pipeline.flush().expect("flush");
        };
        // Warm up: the /proc read, the name's lookup (answered from the
        // hosts file within the grace), the proxy marked, and the cgroup
        // asked for once (the run loop would attach, or refuse: refused).
        batch(&mut pipeline);
        pipeline.settle_lookups(std::time::Duration::from_secs(2));
        batch(&mut pipeline);
        pipeline.to_watch.clear();
        pipeline.set_unwatchable(0);
        let during = allocations_after_warm_up(&mut pipeline, batch);
        let mut via = |port: u16| {
            let pid = child.id();
            let proc = pipeline.procs.get(pid, 0);
            let endpoints = pipeline.endpoints.of(pid, &proc).to_vec();
            let root = root_of(&pipeline.procs, pid, &proc);
            judge(
                Some(("127.0.0.1".parse().expect("ip"), port)),
                proc.proxy_env().expect("env read"),
                &endpoints,
                None,
                &mut pipeline.resolver,
                root,
            )
        };
        let by_address = via(1000).expect("a verdict");
        assert_eq!(by_address.via, Some(true));
        assert_eq!(&*by_address.url, "http://REDACTED@127.0.0.1:1000");
        assert_eq!(via(1003).and_then(|v| v.via), Some(true), "by name");
        assert_eq!(via(1001).and_then(|v| v.via), Some(false));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(pipeline.attempts, 64 * 5 * 13);
        assert_eq!(during, 0, "allocations while writing 3,200 proxied events");
    }

    #[test]
    fn the_json_path_does_not_allocate_per_event() {
        let (mut child, mut pipeline, records) = null_pipeline(64);
        // Batches of 320 events, as a drain of the ring buffer gives.
        let batch = |pipeline: &mut Pipeline| {
            for _ in 0..5 {
                for r in &records {
                    pipeline.handle_bytes(r).expect("handle");
                }
            }
            pipeline.flush().expect("flush");
        };
        let during = allocations_after_warm_up(&mut pipeline, batch);
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

    use super::{tests::null_pipeline, Pipeline};

    #[test]
    #[ignore = "timing, not a check; run by hand in release mode"]
    fn json_path_timing() {
        time_json_path(false);
    }

    /// The same with --metrics-addr's counting and --rate-limit's budget
    /// (a limit no process reaches, so every event is still written).
    #[test]
    #[ignore = "timing, not a check; run by hand in release mode"]
    fn json_path_timing_with_metrics() {
        time_json_path(true);
    }

    fn time_json_path(metrics: bool) {
        let (mut child, pipeline, records) = if metrics {
            super::tests::null_pipeline_with(320, &["--rate-limit", "4000000000/s"])
        } else {
            null_pipeline(320)
        };
        let mut pipeline = if metrics {
            pipeline.with_metrics(crate::metrics::Metrics::new().counters)
        } else {
            pipeline
        };
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
