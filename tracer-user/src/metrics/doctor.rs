//! The doctor's view as metrics: every `--doctor-interval` (default 60 s) a
//! worker thread runs the same examination as `tracer doctor` and publishes
//! it, so that the fleet's horizontal comparison ("this node's containerd
//! proxy differs from the rest", "a runtime's proxy is unreachable on 3
//! nodes") is a PromQL query.
//!
//! Series (values redacted exactly as in `tracer doctor`):
//! - `tracer_doctor_proxy_info{daemon,unit,variable,proxy,source}` 1: one
//!   per runtime daemon and live proxy variable; `source` is the file:line
//!   that sets it, empty when no configuration does;
//! - `tracer_doctor_proxy_reachable{daemon,unit,proxy}` 1 or 0: a TCP
//!   connect to the proxy (`host:port`) from the daemon's network namespace;
//! - `tracer_doctor_findings{code,severity}`: how many findings of each;
//! - `tracer_doctor_daemons`, `tracer_doctor_runs_total{result}`,
//!   `tracer_doctor_last_run_timestamp_seconds`.
//!
//! The examination reads /proc and unit files and makes bounded connects
//! (`timeout` each): all of it on the worker, never on the drain.

use std::time::{Duration, SystemTime};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::doctor::{self, DoctorOptions, ReachResult, Report};

type InfoLabels = [(&'static str, String); 5];
type ReachLabels = [(&'static str, String); 3];
type FindingLabels = [(&'static str, String); 2];
type RunLabels = [(&'static str, &'static str); 1];

/// The doctor's families; cloned into the worker.
#[derive(Clone)]
pub struct DoctorMetrics {
    info: Family<InfoLabels, Gauge>,
    reachable: Family<ReachLabels, Gauge>,
    findings: Family<FindingLabels, Gauge>,
    daemons: Gauge,
    runs: Family<RunLabels, Counter>,
    last_run: Gauge,
}

/// Proxy variables reported as info series (NO_PROXY is a list, not a
/// proxy; the doctor's findings cover it).
const PROXY_VARIABLES: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

impl DoctorMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            info: Family::default(),
            reachable: Family::default(),
            findings: Family::default(),
            daemons: Gauge::default(),
            runs: Family::default(),
            last_run: Gauge::default(),
        };
        registry.register(
            "doctor_proxy_info",
            "1 per runtime daemon and live proxy variable, as `tracer doctor` sees it: the proxy URL (credentials redacted) and the file:line that sets it (empty: no configuration sets it)",
            m.info.clone(),
        );
        registry.register(
            "doctor_proxy_reachable",
            "1 when a TCP connect to the daemon's proxy (host:port), made from the daemon's network namespace, succeeded at the last examination, 0 when it did not",
            m.reachable.clone(),
        );
        registry.register(
            "doctor_findings",
            "Findings of the last examination, by code and severity (codes as in `tracer doctor`)",
            m.findings.clone(),
        );
        registry.register(
            "doctor_daemons",
            "Runtime daemons found at the last examination",
            m.daemons.clone(),
        );
        registry.register(
            "doctor_runs",
            "Examinations run, by result (ok, error)",
            m.runs.clone(),
        );
        registry.register(
            "doctor_last_run_timestamp_seconds",
            "When the last examination finished (Unix time)",
            m.last_run.clone(),
        );
        for result in ["ok", "error"] {
            let _ = m.runs.get_or_create_owned(&[("result", result)]);
        }
        m
    }

    /// Replace the published view with `report`.
    pub fn publish(&self, report: &Report) {
        self.info.clear();
        self.reachable.clear();
        self.findings.clear();
        for d in &report.daemons {
            let unit = d.unit.clone().unwrap_or_default();
            for v in &d.variables {
                let Some(live) = &v.live else { continue };
                if !PROXY_VARIABLES.contains(&v.name.as_str()) {
                    continue;
                }
                let source = v.source.as_ref().map(|s| s.location()).unwrap_or_default();
                self.info
                    .get_or_create(&[
                        ("daemon", d.name.clone()),
                        ("unit", unit.clone()),
                        ("variable", v.name.clone()),
                        ("proxy", live.clone()),
                        ("source", source),
                    ])
                    .set(1);
            }
            for p in &d.proxies {
                let up = i64::from(p.tcp.result == ReachResult::Connected);
                self.reachable
                    .get_or_create(&[
                        ("daemon", d.name.clone()),
                        ("unit", unit.clone()),
                        ("proxy", p.endpoint.clone()),
                    ])
                    .set(up);
            }
        }
        let all = report
            .findings
            .iter()
            .chain(report.daemons.iter().flat_map(|d| &d.findings));
        for f in all {
            self.findings
                .get_or_create(&[
                    ("code", f.code.clone()),
                    ("severity", f.severity.as_str().to_string()),
                ])
                .inc();
        }
        self.daemons
            .set(i64::try_from(report.daemons.len()).unwrap_or(i64::MAX));
    }

    /// One series in each family that starts empty, for
    /// `Metrics::catalogue` (the manual's list); never on a served registry.
    pub(super) fn placeholder(&self) {
        let empty = String::new;
        let _ = self.info.get_or_create_owned(&[
            ("daemon", empty()),
            ("unit", empty()),
            ("variable", empty()),
            ("proxy", empty()),
            ("source", empty()),
        ]);
        let _ = self.reachable.get_or_create_owned(&[
            ("daemon", empty()),
            ("unit", empty()),
            ("proxy", empty()),
        ]);
        let _ = self
            .findings
            .get_or_create_owned(&[("code", empty()), ("severity", empty())]);
    }

    fn finished(&self, ok: bool) {
        self.runs
            .get_or_create(&[("result", if ok { "ok" } else { "error" })])
            .inc();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_run.set(i64::try_from(now).unwrap_or(i64::MAX));
    }
}

/// Examine now and then every `interval`, on a thread of its own, for as
/// long as the process runs.
pub fn spawn(
    metrics: DoctorMetrics,
    opts: DoctorOptions,
    interval: Duration,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("doctor".into())
        .spawn(move || loop {
            match doctor::run(&opts) {
                Ok(report) => {
                    metrics.publish(&report);
                    metrics.finished(true);
                }
                Err(e) => {
                    log::warn!("periodic doctor examination failed: {e}");
                    metrics.finished(false);
                }
            }
            std::thread::sleep(interval);
        })
        .map(|_| ())
}
