//! Prometheus metrics (`tracer trace --metrics-addr ADDR`).
//!
//! The pipeline counts into atomics ([`Counters`]); a thread of its own
//! ([`server`]) encodes them when Prometheus scrapes; another
//! ([`doctor`]) repeats `tracer doctor` every minute and publishes what it
//! found. Nothing here blocks or slows the drain: a scrape reads atomics
//! and takes the families' read locks, which the drain only takes to
//! create a series.
//!
//! Cardinality is bounded by design (README, "Metrics"):
//! - attempts: result (7) x transport (4) x via_proxy (3), all created at
//!   start, so the per-event update is an array index and an atomic add;
//! - proxy dials: unit (at most [`MAX_UNITS`], the rest `other`) x its
//!   manager (4) x the pod's namespace (at most [`MAX_NAMESPACES`], the
//!   rest `other`; empty outside pods) x variable (8 names) x proxy (at
//!   most [`MAX_PROXIES`], the rest `other`) x result (7); a series not
//!   counted for [`IDLE`] is dropped. Destinations are
//!   never a label, except proxies, which are few on a node;
//! - losses: one series per cause and record kind (7, fixed); internals:
//!   one series each;
//! - doctor: one series per runtime daemon, variable and proxy.

pub mod doctor;
pub mod server;

use std::time::{Duration, Instant};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{
    decode::{Attempt, Transport, Verdict},
    enrich::{cgroup::UnitManager, proc::ProcInfo},
    verdict::ProxyVerdict,
};

/// Units (or containers) with series of their own in the proxy-dial
/// family; dials of further ones are counted under `unit="other"`.
pub const MAX_UNITS: usize = 64;
/// Distinct proxies (host:port) with series of their own; the rest are
/// `proxy="other"`.
pub const MAX_PROXIES: usize = 32;
/// Pod namespaces with series of their own; dials from pods of further
/// ones are counted under `namespace="other"`.
pub const MAX_NAMESPACES: usize = 32;
/// A proxy-dial series not counted for this long is dropped, so series of
/// a unit that has gone do not pile up. Long enough for an alert over a
/// 5 minute window to see the last failure.
pub const IDLE: Duration = Duration::from_secs(15 * 60);

const RESULTS: [Verdict; 7] = [
    Verdict::Connected,
    Verdict::Refused,
    Verdict::TimedOut,
    Verdict::Unreachable,
    Verdict::Aborted,
    Verdict::Failed,
    Verdict::Pending,
];
const TRANSPORTS: [&str; 4] = ["tcp", "udp", "unix", "unknown"];
const VIA: [&str; 3] = ["true", "false", "unknown"];

/// The series of `tracer_events_lost_total`: (cause, kind). The first
/// five are the kernel's counts, in `LostCounts::by_kind` order; `kind`
/// says what was lost, so that a lost DNS message or exchange line is
/// never read as a lost attempt. Fixed, so the label is bounded.
pub const LOST_SERIES: [(&str, &str); 7] = [
    ("ringbuf_full", "attempt"),
    ("inflight_full", "attempt"),
    ("announcements_full", "announcement"),
    ("ringbuf_full", "dns"),
    ("ringbuf_full", "exchange"),
    ("unreadable", "unknown"),
    ("output", "any"),
];
/// The kernel's LRU maps, the `map` label of `tracer_map_evictions_total`
/// (probe/lru.rs). Fixed, so the label is bounded.
pub const LRU_MAPS: [&str; 3] = ["SEEN", "PROXY_SOCKS", "DNS_SOCKS"];

/// How many of `LOST_SERIES` the kernel counts.
pub const KERNEL_LOSSES: usize = 5;

type Labels3 = [(&'static str, &'static str); 3];
type DialLabels = [(&'static str, String); 6];
type LostLabels = [(&'static str, &'static str); 2];

/// The registry (for the server) and the handles the pipeline and the
/// doctor worker count into.
pub struct Metrics {
    pub counters: Counters,
    pub doctor: doctor::DoctorMetrics,
    pub registry: Registry,
}

/// What the pipeline updates. Each handle is an `Arc` around an atomic.
pub struct Counters {
    /// Indexed by [`attempt_index`].
    attempts: Vec<Counter>,
    pub dials: ProxyDials,
    lost: Vec<Counter>,
    /// Last cumulative counts seen, to add the difference.
    lost_seen: [u64; LOST_SERIES.len()],
    pub rate_limited: Counter,
    pub ring_fill: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub process_cache: Gauge,
    pub resolver_names: Gauge,
    pub resolver_queue: Gauge,
    /// Indexed like `LRU_MAPS`.
    map_evictions: Vec<Counter>,
    evictions_seen: [u64; LRU_MAPS.len()],
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tracer");

        let attempt_family = Family::<Labels3, Counter>::default();
        registry.register(
            "connect_attempts",
            "Connect attempts by outcome (result), transport and whether they dialled the process's proxy (via_proxy: true, false, unknown while the proxy's name is being resolved). Counted whether or not --events or --rate-limit let the event through",
            attempt_family.clone(),
        );
        let mut attempts = Vec::with_capacity(RESULTS.len() * TRANSPORTS.len() * VIA.len());
        for result in RESULTS {
            for transport in TRANSPORTS {
                for via in VIA {
                    attempts.push(attempt_family.get_or_create_owned(&[
                        ("result", result.as_str()),
                        ("transport", transport),
                        ("via_proxy", via),
                    ]));
                }
            }
        }

        let dial_family = Family::<DialLabels, Counter>::default();
        registry.register(
            "proxy_dials",
            "Attempts that dialled the caller's proxy, by the caller's systemd unit (or container; a unit of a user's or a container's own service manager is prefixed with the unit that manager runs in, e.g. user@1000.service/containerd.service), the unit's manager (system, user, container, none), its pod's Kubernetes namespace (empty outside pods), the proxy variable, the proxy as host:port (credentials never appear) and the result. Units beyond 64, namespaces beyond 32 and proxies beyond 32 are counted as \"other\"; a series idle for 15 minutes is dropped",
            dial_family.clone(),
        );

        let lost_family = Family::<LostLabels, Counter>::default();
        registry.register(
            "events_lost",
            "Events lost, by cause and kind: cause ringbuf_full or inflight_full with kind attempt (attempts lost in the kernel), ringbuf_full with kind dns or exchange (DNS messages or proxy exchange lines lost in the kernel; no attempt lost), announcements_full (process announcements lost; no attempt lost), unreadable (ring records that could not be decoded), output (events of any kind the output could not write)",
            lost_family.clone(),
        );
        let lost = LOST_SERIES
            .iter()
            .map(|(cause, kind)| {
                lost_family.get_or_create_owned(&[("cause", *cause), ("kind", *kind)])
            })
            .collect();

        let rate_limited = Counter::default();
        registry.register(
            "events_rate_limited",
            "Connect events not written because their process exceeded --rate-limit (each is still counted in tracer_connect_attempts_total, and reported in a rate-limited summary line)",
            rate_limited.clone(),
        );
        let ring_fill = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "ringbuf_fill_ratio",
            "How full the events ring buffer was at the last drain (bytes drained / ring size); near 1, events are about to be lost",
            ring_fill.clone(),
        );
        let process_cache = Gauge::default();
        registry.register(
            "process_cache_entries",
            "Processes in the enrichment cache",
            process_cache.clone(),
        );
        let resolver_names = Gauge::default();
        registry.register(
            "resolver_names",
            "Proxy host names in the resolver's cache",
            resolver_names.clone(),
        );
        let resolver_queue = Gauge::default();
        registry.register(
            "resolver_queue",
            "Name lookups asked of the resolver's workers and not answered yet",
            resolver_queue.clone(),
        );
        let evictions_family = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "map_evictions",
            "Entries the kernel's LRU maps dropped to make room, by map: SEEN (an evicted process is announced again), PROXY_SOCKS (a proxied socket whose exchange lines go unseen), DNS_SOCKS (a socket that talked to port 53, possibly closed since: never deleted otherwise)",
            evictions_family.clone(),
        );
        let map_evictions = LRU_MAPS
            .iter()
            .map(|m| evictions_family.get_or_create_owned(&[("map", *m)]))
            .collect();
        // A gauge at 1 rather than an OpenMetrics info metric: the classic
        // text parser (promtool check metrics, older scrapers) knows no
        // `info` type.
        let build = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        build
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register("build_info", "The tracer's version", build);

        let doctor = doctor::DoctorMetrics::register(&mut registry);
        Self {
            counters: Counters {
                attempts,
                dials: ProxyDials::new(dial_family),
                lost,
                lost_seen: [0; LOST_SERIES.len()],
                rate_limited,
                ring_fill,
                process_cache,
                resolver_names,
                resolver_queue,
                map_evictions,
                evictions_seen: [0; LRU_MAPS.len()],
            },
            doctor,
            registry,
        }
    }
}

impl Metrics {
    /// Every family with at least one series, for the manual's list of
    /// families (`tracer manual`): the text exposition leaves out a family
    /// with none, as proxy dials and the doctor's are until something is
    /// counted. The placeholder series are empty strings; this registry is
    /// never served.
    pub fn catalogue() -> Self {
        let m = Self::new();
        let _ = m
            .counters
            .dials
            .family
            .get_or_create_owned(&ProxyDials::labels("", "", "", "", "", ""));
        m.doctor.placeholder();
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Position of an attempt's series in `Counters::attempts`.
fn attempt_index(attempt: &Attempt, verdict: Option<&ProxyVerdict>) -> usize {
    let result = RESULTS
        .iter()
        .position(|r| *r == attempt.verdict)
        .unwrap_or(RESULTS.len() - 1);
    let transport = match attempt.transport {
        Some(Transport::Tcp) => 0,
        Some(Transport::Udp) => 1,
        Some(Transport::Unix) => 2,
        None => 3,
    };
    let via = match verdict.map(|v| v.via) {
        Some(Some(true)) => 0,
        None | Some(Some(false)) => 1,
        Some(None) => 2,
    };
    (result * TRANSPORTS.len() + transport) * VIA.len() + via
}

impl Counters {
    /// Count one attempt (and its proxy dial). No allocation once the
    /// dial's series exists.
    pub fn attempt(&mut self, attempt: &Attempt, proc: &ProcInfo, verdict: Option<&ProxyVerdict>) {
        if let Some(c) = self.attempts.get(attempt_index(attempt, verdict)) {
            c.inc();
        }
        if let Some(v) = verdict.filter(|v| v.via == Some(true)) {
            let cgroup = proc.cgroup.as_ref();
            let unit = cgroup
                .and_then(|c| c.qualified_unit.as_deref())
                .or_else(|| cgroup.and_then(|c| c.container_id.as_deref()))
                .unwrap_or("none");
            let manager = cgroup
                .and_then(|c| c.manager)
                .map_or("none", UnitManager::as_str);
            let namespace = proc.pod.as_ref().map_or("", |p| p.namespace.as_str());
            // The clock is read for proxy dials only (idle-series sweep).
            let now = Instant::now();
            self.dials.count(
                Caller {
                    unit,
                    manager,
                    namespace,
                },
                v.variable,
                &v.endpoint,
                attempt.verdict.as_str(),
                now,
            );
        }
    }

    /// Add what the kernel's cumulative loss counts, the decoder's
    /// unreadable count and the output's unwritten count grew by since the
    /// last call.
    pub fn losses(&mut self, kernel: [u64; KERNEL_LOSSES], unreadable: u64, unwritten: u64) {
        let now = [
            kernel[0], kernel[1], kernel[2], kernel[3], kernel[4], unreadable, unwritten,
        ];
        for (i, (seen, now)) in self.lost_seen.iter_mut().zip(now).enumerate() {
            if now > *seen {
                if let Some(c) = self.lost.get(i) {
                    c.inc_by(now - *seen);
                }
                *seen = now;
            }
        }
    }

    /// Add what an LRU map's cumulative eviction count grew by.
    pub fn evictions(&mut self, map: &str, evicted: u64) {
        let Some(i) = LRU_MAPS.iter().position(|m| *m == map) else {
            return;
        };
        if evicted > self.evictions_seen[i] {
            if let Some(c) = self.map_evictions.get(i) {
                c.inc_by(evicted - self.evictions_seen[i]);
            }
            self.evictions_seen[i] = evicted;
        }
    }

    /// Total of `tracer_events_lost_total{cause=...,kind=...}` (tests).
    pub fn lost(&self, cause: &str, kind: &str) -> Option<u64> {
        let i = LOST_SERIES.iter().position(|s| *s == (cause, kind))?;
        self.lost.get(i).map(Counter::get)
    }
}

/// Who dialled: the unit label (see [`crate::enrich::cgroup::CgroupInfo::qualified_unit`])
/// and the manager it belongs to.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    pub unit: &'a str,
    /// `system`, `user`, `container`, or `none` for no unit.
    pub manager: &'static str,
    /// The pod's Kubernetes namespace; empty outside pods.
    pub namespace: &'a str,
}

/// One proxy-dial series and when it was last counted.
struct Dial {
    unit: String,
    manager: &'static str,
    namespace: String,
    variable: &'static str,
    proxy: String,
    result: &'static str,
    counter: Counter,
    last: Instant,
}

/// The proxy-dial family and the handles of its live series: found by a
/// hash of their borrowed labels (O(1), no allocation, however many series
/// churning container ids leave); created, capped and dropped here.
pub struct ProxyDials {
    family: Family<DialLabels, Counter>,
    series: hashbrown::HashTable<Dial>,
    /// Series per value of the capped labels: a value is known, and the
    /// number of distinct values read, in O(1) (it was a scan of every
    /// series per distinct value, O(n^2) per dial past the caps).
    units: Distinct,
    proxies: Distinct,
    namespaces: Distinct,
    hasher: foldhash::fast::FixedState,
}

/// How many series carry each value of one label.
#[derive(Default)]
struct Distinct(std::collections::HashMap<String, u32>);

impl Distinct {
    /// `value` when it already has series or there is room for one more
    /// distinct value, else `"other"` (which, like the empty value, takes
    /// no place).
    fn bounded<'a>(&self, value: &'a str, cap: usize) -> &'a str {
        if self.0.contains_key(value) {
            return value;
        }
        let free = usize::from(self.0.contains_key("other")) + usize::from(self.0.contains_key(""));
        if self.0.len() - free < cap {
            value
        } else {
            "other"
        }
    }

    fn add(&mut self, value: &str) {
        match self.0.get_mut(value) {
            Some(n) => *n += 1,
            None => {
                self.0.insert(value.to_string(), 1);
            }
        }
    }

    fn remove(&mut self, value: &str) {
        if let Some(n) = self.0.get_mut(value) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.0.remove(value);
            }
        }
    }
}

/// The labels that tell series apart, borrowed (lookup) or owned (a `Dial`).
type DialKey<'a> = (
    &'a str,
    &'static str,
    &'a str,
    &'static str,
    &'a str,
    &'static str,
);

impl Dial {
    fn key(&self) -> DialKey<'_> {
        (
            &self.unit,
            self.manager,
            &self.namespace,
            self.variable,
            &self.proxy,
            self.result,
        )
    }
}

impl ProxyDials {
    fn new(family: Family<DialLabels, Counter>) -> Self {
        Self {
            family,
            series: hashbrown::HashTable::new(),
            units: Distinct::default(),
            proxies: Distinct::default(),
            namespaces: Distinct::default(),
            hasher: foldhash::fast::FixedState::default(),
        }
    }

    fn count(
        &mut self,
        caller: Caller<'_>,
        variable: &'static str,
        proxy: &str,
        result: &'static str,
        now: Instant,
    ) {
        use std::hash::BuildHasher;
        let manager = caller.manager;
        let unit = self.units.bounded(caller.unit, MAX_UNITS);
        let proxy = self.proxies.bounded(proxy, MAX_PROXIES);
        // Outside pods the label is empty (Prometheus: no label), which
        // takes no place among the namespaces.
        let namespace = if caller.namespace.is_empty() {
            caller.namespace
        } else {
            self.namespaces.bounded(caller.namespace, MAX_NAMESPACES)
        };
        let key: DialKey<'_> = (unit, manager, namespace, variable, proxy, result);
        let hash = self.hasher.hash_one(key);
        if let Some(d) = self.series.find_mut(hash, |d| d.key() == key) {
            d.counter.inc();
            d.last = now;
            return;
        }
        let (unit, namespace, proxy) = (unit.to_string(), namespace.to_string(), proxy.to_string());
        let counter = self.family.get_or_create_owned(&Self::labels(
            &unit, manager, &namespace, variable, &proxy, result,
        ));
        counter.inc();
        self.units.add(&unit);
        self.proxies.add(&proxy);
        self.namespaces.add(&namespace);
        let hasher = &self.hasher;
        self.series.insert_unique(
            hash,
            Dial {
                unit,
                manager,
                namespace,
                variable,
                proxy,
                result,
                counter,
                last: now,
            },
            |d| hasher.hash_one(d.key()),
        );
    }

    fn labels(
        unit: &str,
        manager: &str,
        namespace: &str,
        variable: &str,
        proxy: &str,
        result: &str,
    ) -> DialLabels {
        [
            ("unit", unit.to_string()),
            ("manager", manager.to_string()),
            ("namespace", namespace.to_string()),
            ("variable", variable.to_string()),
            ("proxy", proxy.to_string()),
            ("result", result.to_string()),
        ]
    }

    /// Drop the series not counted for `IDLE`.
    pub fn sweep(&mut self, now: Instant) {
        let family = &self.family;
        let (units, proxies, namespaces) =
            (&mut self.units, &mut self.proxies, &mut self.namespaces);
        self.series.retain(|d| {
            let keep = now.saturating_duration_since(d.last) < IDLE;
            if !keep {
                units.remove(&d.unit);
                proxies.remove(&d.proxy);
                namespaces.remove(&d.namespace);
                family.remove(&Self::labels(
                    &d.unit,
                    d.manager,
                    &d.namespace,
                    d.variable,
                    &d.proxy,
                    d.result,
                ));
            }
            keep
        });
    }

    /// Live series (tests, SIGUSR1).
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

/// The text exposition of everything registered.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_evictions_count_what_the_kernel_maps_dropped() {
        let mut m = Metrics::new();
        m.counters.evictions("PROXY_SOCKS", 40);
        // Cumulative counts: only the growth is added, never a drop.
        m.counters.evictions("PROXY_SOCKS", 30);
        m.counters.evictions("PROXY_SOCKS", 55);
        // Unknown names add no series.
        m.counters.evictions("CONNS", 9);
        let text = encode(&m.registry).expect("encode");
        assert!(
            text.contains("tracer_map_evictions_total{map=\"PROXY_SOCKS\"} 55"),
            "{text}"
        );
        assert!(text.contains("tracer_map_evictions_total{map=\"SEEN\"} 0"));
        assert!(!text.contains("CONNS"));
    }

    #[test]
    fn every_attempt_series_exists_from_the_start() {
        let m = Metrics::new();
        let text = encode(&m.registry).expect("encode");
        let n = text
            .lines()
            .filter(|l| l.starts_with("tracer_connect_attempts_total{"))
            .count();
        assert_eq!(n, 7 * 4 * 3);
        for (cause, kind) in LOST_SERIES {
            assert!(
                text.contains(&format!(
                    "tracer_events_lost_total{{cause=\"{cause}\",kind=\"{kind}\"}} 0"
                )),
                "{cause} {kind}: {text}"
            );
        }
        assert!(text.contains("tracer_build_info{version=\""), "{text}");
    }

    #[test]
    fn units_and_proxies_are_capped_and_idle_series_dropped() {
        let mut m = Metrics::new();
        let t0 = Instant::now();
        let dials = &mut m.counters.dials;
        for i in 0..(MAX_UNITS + 10) {
            dials.count(
                Caller {
                    unit: &format!("u{i}.service"),
                    manager: "system",
                    namespace: "",
                },
                "HTTPS_PROXY",
                "10.0.0.1:3128",
                "refused",
                t0,
            );
        }
        assert_eq!(dials.len(), MAX_UNITS + 1, "64 units and `other`");
        let text = encode(&m.registry).expect("encode");
        assert!(
            text.contains(r#"tracer_proxy_dials_total{unit="other",manager="system",namespace="",variable="HTTPS_PROXY",proxy="10.0.0.1:3128",result="refused"} 10"#),
            "{text}"
        );
        let dials = &mut m.counters.dials;
        for i in 0..(MAX_PROXIES + 3) {
            dials.count(
                Caller {
                    unit: "a.service",
                    manager: "system",
                    namespace: "",
                },
                "HTTP_PROXY",
                &format!("p{i}:1"),
                "connected",
                t0,
            );
        }
        let text = encode(&m.registry).expect("encode");
        assert!(
            text.contains(r#"proxy="other",result="connected"} "#),
            "{text}"
        );
        // Fresh counts keep a series; idle ones go.
        let later = t0 + IDLE + Duration::from_secs(1);
        let dials = &mut m.counters.dials;
        dials.count(
            Caller {
                unit: "a.service",
                manager: "system",
                namespace: "",
            },
            "HTTP_PROXY",
            "p0:1",
            "connected",
            later,
        );
        dials.sweep(later);
        assert_eq!(dials.len(), 1);
        let text = encode(&m.registry).expect("encode");
        assert_eq!(
            text.matches("tracer_proxy_dials_total{").count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn pod_namespaces_are_capped_and_empty_outside_pods() {
        let mut m = Metrics::new();
        let t0 = Instant::now();
        let dials = &mut m.counters.dials;
        dials.count(
            Caller {
                unit: "containerd.service",
                manager: "system",
                namespace: "",
            },
            "HTTPS_PROXY",
            "p:1",
            "refused",
            t0,
        );
        for i in 0..(MAX_NAMESPACES + 5) {
            dials.count(
                Caller {
                    unit: "c1",
                    manager: "none",
                    namespace: &format!("ns{i}"),
                },
                "HTTPS_PROXY",
                "p:1",
                "refused",
                t0,
            );
        }
        // The unit outside pods does not take a namespace's place.
        assert_eq!(dials.len(), 1 + MAX_NAMESPACES + 1);
        let text = encode(&m.registry).expect("encode");
        assert!(
            text.contains(r#"tracer_proxy_dials_total{unit="c1",manager="none",namespace="other",variable="HTTPS_PROXY",proxy="p:1",result="refused"} 5"#),
            "{text}"
        );
        assert!(text.contains(r#"namespace="ns31""#), "{text}");
        assert!(
            text.contains(r#"{unit="containerd.service",manager="system",namespace="",variable"#),
            "{text}"
        );
    }

    #[test]
    fn kernel_losses_are_added_as_differences() {
        let mut m = Metrics::new();
        m.counters.losses([3, 0, 1, 0, 2], 0, 0);
        m.counters.losses([5, 2, 1, 6, 2], 4, 7);
        assert_eq!(m.counters.lost("ringbuf_full", "attempt"), Some(5));
        assert_eq!(m.counters.lost("inflight_full", "attempt"), Some(2));
        assert_eq!(
            m.counters.lost("announcements_full", "announcement"),
            Some(1)
        );
        // DNS and exchange losses are series of their own, not attempts.
        assert_eq!(m.counters.lost("ringbuf_full", "dns"), Some(6));
        assert_eq!(m.counters.lost("ringbuf_full", "exchange"), Some(2));
        assert_eq!(m.counters.lost("unreadable", "unknown"), Some(4));
        assert_eq!(m.counters.lost("output", "any"), Some(7));
    }
}
