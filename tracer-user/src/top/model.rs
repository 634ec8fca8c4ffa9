//! The view model of `tracer top`: the JSON lines `tracer trace` writes,
//! read back into groups with per-second counts, and the rows a screen
//! shows. Pure: no terminal, no clock of its own (every call is given
//! "now"), so a recorded file and the live pipeline give the same rows.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use serde::Deserialize;

/// Seconds of history per group (the sparkline's minute).
pub const HISTORY: usize = 60;
/// The window of the attempts/s and failures/s columns.
pub const RATE_WINDOW: usize = 10;
/// Attempts kept per group for the drill-down.
pub const RECENT: usize = 50;
/// Groups kept per grouping; the least recently seen one makes room.
/// Bounds memory on a node with many short-lived processes or
/// destinations.
pub const MAX_GROUPS: usize = 5000;

/// How rows are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Grouping {
    /// Pod name when known, else container, else systemd unit.
    Unit,
    Process,
    Destination,
    Proxy,
}

impl Grouping {
    pub const ALL: [Grouping; 4] = [
        Grouping::Unit,
        Grouping::Process,
        Grouping::Destination,
        Grouping::Proxy,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Grouping::Unit => "UNIT/POD",
            Grouping::Process => "PROCESS",
            Grouping::Destination => "DESTINATION",
            Grouping::Proxy => "PROXY",
        }
    }

    pub fn next(self) -> Grouping {
        match self {
            Grouping::Unit => Grouping::Process,
            Grouping::Process => Grouping::Destination,
            Grouping::Destination => Grouping::Proxy,
            Grouping::Proxy => Grouping::Unit,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Sort orders (k9s style: Shift+letter picks a column, again reverses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Failing rows first, then by failures/s, failure %, attempts/s.
    Failing,
    Name,
    Attempts,
    Failures,
    Percent,
    /// Most recently seen first.
    Recent,
}

/// What the rows are filtered and sorted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewSpec {
    pub grouping: Grouping,
    pub sort: Sort,
    pub reverse: bool,
    /// Case-insensitive text any cell of the row must contain.
    pub filter: String,
}

impl Default for ViewSpec {
    fn default() -> Self {
        Self {
            grouping: Grouping::Unit,
            sort: Sort::Failing,
            reverse: false,
            filter: String::new(),
        }
    }
}

impl ViewSpec {
    /// Apply a sort key: a new column sorts by it, the same one reverses.
    pub fn sort_by(&mut self, sort: Sort) {
        if self.sort == sort {
            self.reverse = !self.reverse;
        } else {
            self.sort = sort;
            self.reverse = false;
        }
    }
}

/// The proxy side of an attempt, from `tracer.proxy`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// dead, 407, 500, ok, no answer, bypassed, unresolved, listed...
    pub state: String,
    pub variable: Option<String>,
    /// file:line of the unit file, drop-in or env file that sets it.
    pub source: Option<String>,
    pub url: Option<String>,
    /// The attempt dialled the proxy (not a direct connection of a
    /// process that has one).
    pub dialled: bool,
}

impl Verdict {
    /// One cell: state, variable, file:line (the file's base name unless
    /// `full`).
    pub fn cell(&self, full: bool) -> String {
        let mut parts = vec![self.state.clone()];
        parts.extend(self.variable.clone());
        if let Some(src) = &self.source {
            parts.push(if full {
                src.clone()
            } else {
                src.rsplit('/').next().unwrap_or(src).to_string()
            });
        }
        parts.join(" ")
    }
}

/// One connect attempt, as the view needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// Unix time, seconds.
    pub ts: f64,
    pub ok: bool,
    /// tracer.result: connected, refused, timeout...
    pub result: String,
    /// error.code and error.message, for a failure.
    pub error: Option<String>,
    pub pid: u64,
    pub process: String,
    pub destination: String,
    pub domain: Option<String>,
    /// The unit/pod group.
    pub owner: String,
    pub verdict: Option<Verdict>,
    pub message: String,
    /// The record as written (the drill-down's full event).
    pub raw: String,
}

impl Attempt {
    pub fn key(&self, grouping: Grouping) -> &str {
        match grouping {
            Grouping::Unit => &self.owner,
            Grouping::Process => &self.process,
            Grouping::Destination => &self.destination,
            Grouping::Proxy => self
                .verdict
                .as_ref()
                .and_then(|v| v.url.as_deref())
                .unwrap_or("(direct)"),
        }
    }
}

/// Counts of the lost-events records (the same counters `trace` writes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Lost {
    pub total: u64,
    pub ringbuf_full: u64,
    pub inflight_full: u64,
    pub announcements_full: u64,
    pub unwritten: u64,
}

/// What one line was.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Attempt(Box<Attempt>),
    Lost(Lost),
    /// A record the view does not show (dns-query, rate-limited).
    Other,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LineError {
    #[error("not a JSON record: {0}")]
    Json(String),
    #[error("no readable @timestamp")]
    Timestamp,
}

// The subset of the record the view reads. Every field is optional, so
// records from older or newer tracers (fields added by other features,
// such as orchestrator.* or tracer.unit_manager) are read all the same.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Record {
    #[serde(rename = "@timestamp")]
    timestamp: Option<String>,
    event: EventPart,
    error: Option<ErrorPart>,
    message: String,
    process: ProcessPart,
    destination: DestinationPart,
    container: Option<ContainerPart>,
    orchestrator: Option<OrchestratorPart>,
    tracer: TracerPart,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EventPart {
    kind: String,
    action: String,
    outcome: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorPart {
    code: String,
    message: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ProcessPart {
    pid: u64,
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DestinationPart {
    address: Option<String>,
    ip: Option<String>,
    port: Option<u64>,
    domain: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ContainerPart {
    id: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OrchestratorPart {
    namespace: Option<String>,
    resource: Option<ResourcePart>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResourcePart {
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TracerPart {
    result: String,
    unit: Option<String>,
    pod_uid: Option<String>,
    proxy: Option<ProxyPart>,
    lost: Option<Lost>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ProxyPart {
    variable: Option<String>,
    url: Option<String>,
    via: Option<bool>,
    unresolved: Option<String>,
    listed: Option<bool>,
    source: Option<SourcePart>,
    exchange: Option<String>,
    response: Option<ResponsePart>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SourcePart {
    file: String,
    line: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResponsePart {
    status_code: u64,
}

/// Read one NDJSON line.
pub fn parse_line(line: &str) -> Result<Line, LineError> {
    let r: Record = serde_json::from_str(line).map_err(|e| LineError::Json(e.to_string()))?;
    if r.event.kind == "metric" {
        return Ok(match r.tracer.lost {
            Some(lost) if r.event.action.starts_with("lost-events") => Line::Lost(lost),
            _ => Line::Other,
        });
    }
    if r.event.action != "connect" {
        return Ok(Line::Other);
    }
    let ts = r
        .timestamp
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
        .ok_or(LineError::Timestamp)?;
    let ok = r.event.outcome == "success";
    let destination = r.destination.address.clone().unwrap_or_else(|| {
        match (&r.destination.ip, r.destination.port) {
            (Some(ip), Some(port)) => format!("{ip}:{port}"),
            (Some(ip), None) => ip.clone(),
            _ => "(unknown)".into(),
        }
    });
    let verdict = r
        .tracer
        .proxy
        .as_ref()
        .map(|p| verdict_of(p, ok, &r.tracer.result));
    Ok(Line::Attempt(Box::new(Attempt {
        ts,
        ok,
        owner: owner_of(&r),
        result: if r.tracer.result.is_empty() {
            r.event.outcome.clone()
        } else {
            r.tracer.result.clone()
        },
        error: r
            .error
            .as_ref()
            .map(|e| format!("{} {}", e.code, e.message).trim().to_string()),
        pid: r.process.pid,
        process: r.process.name,
        destination,
        domain: r.destination.domain,
        verdict,
        message: r.message,
        raw: line.to_string(),
    })))
}

/// Pod (namespace/name) when the record names one, else the container,
/// else the systemd unit, else the pod UID.
fn owner_of(r: &Record) -> String {
    if let Some(o) = &r.orchestrator {
        if let Some(name) = o.resource.as_ref().and_then(|r| r.name.as_deref()) {
            return match &o.namespace {
                Some(ns) => format!("{ns}/{name}"),
                None => name.to_string(),
            };
        }
    }
    if let Some(c) = r.container.as_ref().filter(|c| !c.id.is_empty()) {
        return format!("container {}", c.id.get(..12).unwrap_or(&c.id));
    }
    if let Some(unit) = &r.tracer.unit {
        return unit.clone();
    }
    if let Some(uid) = &r.tracer.pod_uid {
        return format!("pod {uid}");
    }
    "(no unit)".into()
}

fn verdict_of(p: &ProxyPart, ok: bool, result: &str) -> Verdict {
    // Dialled: the attempt went to the proxy its environment names, or to
    // one listed with --proxy.
    let dialled = p.via == Some(true) || p.listed == Some(true);
    let state = if dialled {
        match (&p.response, p.exchange.as_deref()) {
            (Some(r), _) if r.status_code / 100 == 2 => "ok".to_string(),
            (Some(r), _) => r.status_code.to_string(),
            (None, _) if !ok => "dead".to_string(),
            (None, Some("no_answer")) => "no answer".to_string(),
            (None, Some("not_seen")) => "silent".to_string(),
            (None, _) => "reached".to_string(),
        }
    } else if p.via == Some(false) {
        "direct".to_string()
    } else if p.unresolved.is_some() {
        "unresolved".to_string()
    } else {
        result.to_string()
    };
    Verdict {
        state,
        variable: p.variable.clone(),
        source: p
            .source
            .as_ref()
            .filter(|s| !s.file.is_empty())
            .map(|s| format!("{}:{}", s.file, s.line)),
        url: p.url.clone(),
        dialled,
    }
}

/// Attempts and failures of one second.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: i64,
    attempts: u32,
    failures: u32,
}

/// One group's counts and recent attempts.
#[derive(Debug, Clone)]
pub struct Group {
    pub key: String,
    buckets: [Bucket; HISTORY],
    pub total: u64,
    pub failed: u64,
    pub last: Arc<Attempt>,
    pub last_failure: Option<Arc<Attempt>>,
    /// The latest proxy verdict seen in the group.
    pub verdict: Option<Verdict>,
    pub domain: Option<String>,
    /// Newest last.
    pub recent: VecDeque<Arc<Attempt>>,
}

impl Group {
    fn new(key: String, first: &Arc<Attempt>) -> Self {
        Self {
            key,
            buckets: [Bucket::default(); HISTORY],
            total: 0,
            failed: 0,
            last: first.clone(),
            last_failure: None,
            verdict: None,
            domain: None,
            recent: VecDeque::with_capacity(RECENT),
        }
    }

    fn add(&mut self, a: &Arc<Attempt>) {
        let second = a.ts.floor() as i64;
        let b = &mut self.buckets[second.rem_euclid(HISTORY as i64) as usize];
        if b.second != second {
            *b = Bucket {
                second,
                ..Bucket::default()
            };
        }
        b.attempts = b.attempts.saturating_add(1);
        self.total += 1;
        if !a.ok {
            b.failures = b.failures.saturating_add(1);
            self.failed += 1;
            self.last_failure = Some(a.clone());
        }
        // Records arrive in order of their outcome; an older one (an
        // attempt written at shutdown as pending) does not replace the
        // latest.
        if a.ts >= self.last.ts || self.total == 1 {
            self.last = a.clone();
        }
        // A dial to the proxy says more than a direct connection of the
        // same process (NO_PROXY): it is kept until the next dial.
        if let Some(v) = &a.verdict {
            if v.dialled || self.verdict.as_ref().is_none_or(|old| !old.dialled) {
                self.verdict = Some(v.clone());
            }
        }
        if a.domain.is_some() {
            self.domain = a.domain.clone();
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(a.clone());
    }

    /// (attempts, failures) per second for the `n` seconds up to `now`,
    /// oldest first.
    pub fn history(&self, now: f64, n: usize) -> Vec<(u32, u32)> {
        let now = now.floor() as i64;
        let n = n.min(HISTORY) as i64;
        (0..n)
            .rev()
            .map(|ago| {
                let second = now - ago;
                let b = &self.buckets[second.rem_euclid(HISTORY as i64) as usize];
                if b.second == second {
                    (b.attempts, b.failures)
                } else {
                    (0, 0)
                }
            })
            .collect()
    }

    fn sums(&self, now: f64, n: usize) -> (u64, u64) {
        self.history(now, n)
            .iter()
            .fold((0, 0), |(a, f), &(x, y)| (a + x as u64, f + y as u64))
    }

    fn row(&self, now: f64, full: bool) -> Row {
        let (att, fail) = self.sums(now, RATE_WINDOW);
        let (att_min, fail_min) = self.sums(now, HISTORY);
        let failures: Vec<u32> = self.history(now, HISTORY).iter().map(|h| h.1).collect();
        Row {
            key: self.key.clone(),
            attempts_per_s: att as f64 / RATE_WINDOW as f64,
            failures_per_s: fail as f64 / RATE_WINDOW as f64,
            fail_percent: (att_min > 0).then(|| 100.0 * fail_min as f64 / att_min as f64),
            failing: fail_min > 0,
            failures,
            last_result: self.last.result.clone(),
            last_error: self
                .last_failure
                .as_ref()
                .and_then(|f| f.error.clone())
                .unwrap_or_default(),
            verdict: self
                .verdict
                .as_ref()
                .map(|v| v.cell(full))
                .unwrap_or_default(),
            domain: self.domain.clone().unwrap_or_default(),
            last_seen: self.last.ts,
            total: self.total,
            failed: self.failed,
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: String,
    pub attempts_per_s: f64,
    pub failures_per_s: f64,
    /// Over the last minute; None when there was no attempt in it.
    pub fail_percent: Option<f64>,
    /// A failure in the last minute.
    pub failing: bool,
    /// Failures per second over the last minute, oldest first.
    pub failures: Vec<u32>,
    pub last_result: String,
    pub last_error: String,
    pub verdict: String,
    pub domain: String,
    pub last_seen: f64,
    pub total: u64,
    pub failed: u64,
}

impl Row {
    fn matches(&self, needle: &str) -> bool {
        needle.is_empty()
            || [
                &self.key,
                &self.last_result,
                &self.last_error,
                &self.verdict,
                &self.domain,
            ]
            .iter()
            .any(|cell| cell.to_lowercase().contains(needle))
    }
}

/// Everything seen so far, grouped every way at once (switching the
/// grouping is then instant and loses nothing).
#[derive(Debug, Default)]
pub struct Model {
    groups: [HashMap<String, Group>; 4],
    /// The latest lost-events record.
    pub lost: Lost,
    /// Lines that were not records (a damaged or foreign file).
    pub unreadable: u64,
    pub attempts: u64,
    /// Timestamp of the newest attempt.
    pub newest: Option<f64>,
}

impl Model {
    /// Take in one line; false when it could not be read.
    pub fn ingest_line(&mut self, line: &str) -> bool {
        match parse_line(line) {
            Ok(Line::Attempt(a)) => {
                self.add(Arc::from(a));
                true
            }
            Ok(Line::Lost(lost)) => {
                self.lost = lost;
                true
            }
            Ok(Line::Other) => true,
            Err(_) => {
                self.unreadable += 1;
                false
            }
        }
    }

    pub fn add(&mut self, a: Arc<Attempt>) {
        self.attempts += 1;
        self.newest = Some(self.newest.map_or(a.ts, |n| n.max(a.ts)));
        for g in Grouping::ALL {
            let map = &mut self.groups[g.index()];
            let key = a.key(g);
            if let Some(group) = map.get_mut(key) {
                group.add(&a);
                continue;
            }
            if map.len() >= MAX_GROUPS {
                let oldest = map
                    .iter()
                    .min_by(|x, y| x.1.last.ts.total_cmp(&y.1.last.ts))
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    map.remove(&k);
                }
            }
            let mut group = Group::new(key.to_string(), &a);
            group.add(&a);
            map.insert(key.to_string(), group);
        }
    }

    pub fn group(&self, grouping: Grouping, key: &str) -> Option<&Group> {
        self.groups[grouping.index()].get(key)
    }

    pub fn group_count(&self, grouping: Grouping) -> usize {
        self.groups[grouping.index()].len()
    }

    /// The rows for `spec` at time `now`, filtered and sorted. `full`
    /// keeps whole file paths in the verdict cell (a wide screen).
    pub fn rows(&self, spec: &ViewSpec, now: f64, full: bool) -> Vec<Row> {
        let needle = spec.filter.to_lowercase();
        let mut rows: Vec<Row> = self.groups[spec.grouping.index()]
            .values()
            .map(|g| g.row(now, full))
            .filter(|r| r.matches(&needle))
            .collect();
        sort_rows(&mut rows, spec.sort, spec.reverse);
        rows
    }
}

/// Sort in place; the name breaks every tie, so the order is stable from
/// one frame to the next.
pub fn sort_rows(rows: &mut [Row], sort: Sort, reverse: bool) {
    use std::cmp::Ordering;
    let by_name = |a: &Row, b: &Row| a.key.cmp(&b.key);
    let desc = |x: f64, y: f64| y.total_cmp(&x);
    rows.sort_by(|a, b| {
        let primary = match sort {
            Sort::Failing => b
                .failing
                .cmp(&a.failing)
                .then(desc(a.failures_per_s, b.failures_per_s))
                .then(desc(
                    a.fail_percent.unwrap_or(0.0),
                    b.fail_percent.unwrap_or(0.0),
                ))
                .then(desc(a.attempts_per_s, b.attempts_per_s)),
            Sort::Name => Ordering::Equal,
            Sort::Attempts => desc(a.attempts_per_s, b.attempts_per_s),
            Sort::Failures => desc(a.failures_per_s, b.failures_per_s),
            Sort::Percent => desc(
                a.fail_percent.unwrap_or(-1.0),
                b.fail_percent.unwrap_or(-1.0),
            ),
            Sort::Recent => desc(a.last_seen, b.last_seen),
        };
        let o = primary.then_with(|| by_name(a, b));
        if reverse {
            o.reverse()
        } else {
            o
        }
    });
}

/// A sparkline of `values` in `width` characters (each the maximum of its
/// share of the values), scaled to the largest value; blank for zero.
pub fn sparkline(values: &[u32], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if width == 0 || values.is_empty() {
        return String::new();
    }
    let cells: Vec<u32> = (0..width)
        .map(|i| {
            let start = i * values.len() / width;
            let end = ((i + 1) * values.len() / width).max(start + 1);
            values
                .get(start..end.min(values.len()))
                .and_then(|s| s.iter().max().copied())
                .unwrap_or(0)
        })
        .collect();
    let max = cells.iter().copied().max().unwrap_or(0);
    cells
        .iter()
        .map(|&v| {
            if v == 0 || max == 0 {
                ' '
            } else {
                let i = ((v as u64 * 8).div_ceil(max as u64) as usize).saturating_sub(1);
                BARS[i.min(7)]
            }
        })
        .collect()
}

/// attempts/s as a short cell: 0, 0.3, 12, 1.2k.
pub fn rate_cell(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v < 10.0 {
        format!("{v:.1}")
    } else if v < 10_000.0 {
        format!("{v:.0}")
    } else {
        format!("{:.0}k", v / 1000.0)
    }
}

/// One line per attempt for the drill-down.
pub fn attempt_line(a: &Attempt) -> String {
    let time = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(a.ts.max(0.0)),
    )
    .to_string();
    let clock = time.get(11..23).unwrap_or(&time);
    let dest = match &a.domain {
        Some(d) => format!("{d} ({})", a.destination),
        None => a.destination.clone(),
    };
    let verdict = a
        .verdict
        .as_ref()
        .map(|v| format!("  [{}]", v.cell(false)))
        .unwrap_or_default();
    format!(
        "{clock} {} ({}) -> {dest} {}{verdict}",
        a.process, a.pid, a.result
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN: &str = include_str!("../sink/golden.ndjson");

    fn line(ts: &str, unit: &str, ok: bool, proxy: &str) -> String {
        let outcome = if ok { "success" } else { "failure" };
        let result = if ok { "connected" } else { "refused" };
        let error = if ok {
            String::new()
        } else {
            r#""error":{"code":"ECONNREFUSED","message":"connection refused"},"#.to_string()
        };
        format!(
            r#"{{"@timestamp":"{ts}","event":{{"kind":"event","action":"connect","outcome":"{outcome}"}},{error}"message":"m","process":{{"pid":7,"name":"p-{unit}"}},"destination":{{"ip":"127.0.0.1","port":9,"address":"127.0.0.1:9"}},"tracer":{{"result":"{result}","unit":"{unit}"{proxy}}}}}"#
        )
    }

    const DEAD: &str = r#","proxy":{"variable":"HTTPS_PROXY","url":"http://127.0.0.1:9","via":true,"rules":"go","source":{"file":"/etc/systemd/system/containerd.service.d/proxy.conf","line":3,"directive":"environment"}}"#;

    fn t(s: u32) -> String {
        format!("2025-01-01T00:00:{s:02}.500000000Z")
    }
    const T0: f64 = 1_735_689_600.0;

    #[test]
    fn every_golden_line_is_read() {
        let mut m = Model::default();
        for l in GOLDEN.lines() {
            assert!(m.ingest_line(l), "unread: {l}");
        }
        assert!(m.attempts > 0);
        assert_eq!(m.unreadable, 0);
    }

    #[test]
    fn a_dead_proxy_verdict_names_variable_and_file_line() {
        let Ok(Line::Attempt(a)) = parse_line(&line(&t(1), "containerd.service", false, DEAD))
        else {
            panic!("not an attempt")
        };
        let v = a.verdict.expect("verdict");
        assert_eq!(v.state, "dead");
        assert_eq!(
            v.cell(true),
            "dead HTTPS_PROXY /etc/systemd/system/containerd.service.d/proxy.conf:3"
        );
        assert_eq!(v.cell(false), "dead HTTPS_PROXY proxy.conf:3");
        assert_eq!(a.owner, "containerd.service");
        assert_eq!(a.error.as_deref(), Some("ECONNREFUSED connection refused"));
    }

    #[test]
    fn status_codes_from_the_exchange() {
        let l = GOLDEN
            .lines()
            .find(|l| l.contains("\"status_code\":500"))
            .expect("a 500 line in the golden file");
        let Ok(Line::Attempt(a)) = parse_line(l) else {
            panic!("not an attempt")
        };
        assert_eq!(a.verdict.expect("verdict").state, "500");
    }

    #[test]
    fn pods_group_by_name_when_the_record_has_one() {
        let l = line(&t(1), "cri-containerd-x.scope", true, "").replacen(
            "\"tracer\":",
            r#""orchestrator":{"namespace":"kube-system","resource":{"name":"coredns-1"}},"tracer":"#,
            1,
        );
        let Ok(Line::Attempt(a)) = parse_line(&l) else {
            panic!("not an attempt")
        };
        assert_eq!(a.owner, "kube-system/coredns-1");
    }

    #[test]
    fn failing_rows_come_first_and_sort_keys_reorder() {
        let mut m = Model::default();
        for s in 0..5 {
            m.ingest_line(&line(&t(s), "a-ok.service", true, ""));
            m.ingest_line(&line(&t(s), "a-ok.service", true, ""));
            m.ingest_line(&line(&t(s), "containerd.service", false, DEAD));
        }
        let mut spec = ViewSpec::default();
        let now = T0 + 5.0;
        let rows = m.rows(&spec, now, false);
        assert_eq!(rows[0].key, "containerd.service");
        assert!(rows[0].failing);
        assert_eq!(rows[0].fail_percent, Some(100.0));
        assert_eq!(rows[0].last_result, "refused");
        assert!(rows[0].verdict.contains("HTTPS_PROXY proxy.conf:3"));
        assert_eq!(rows[1].fail_percent, Some(0.0));
        assert!((rows[1].attempts_per_s - 1.0).abs() < 1e-9);
        spec.sort_by(Sort::Name);
        assert_eq!(m.rows(&spec, now, false)[0].key, "a-ok.service");
        spec.sort_by(Sort::Name);
        assert!(spec.reverse);
        assert_eq!(m.rows(&spec, now, false)[0].key, "containerd.service");
        spec.sort_by(Sort::Attempts);
        assert_eq!(m.rows(&spec, now, false)[0].key, "a-ok.service");
    }

    #[test]
    fn the_filter_matches_any_cell() {
        let mut m = Model::default();
        m.ingest_line(&line(&t(1), "a.service", true, ""));
        m.ingest_line(&line(&t(1), "b.service", false, DEAD));
        let spec = ViewSpec {
            filter: "PROXY.CONF".into(),
            ..ViewSpec::default()
        };
        let rows = m.rows(&spec, T0 + 2.0, false);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].key, "b.service");
    }

    #[test]
    fn groupings_see_the_same_attempts() {
        let mut m = Model::default();
        m.ingest_line(&line(&t(1), "a.service", true, ""));
        m.ingest_line(&line(&t(1), "b.service", false, DEAD));
        let mut spec = ViewSpec {
            grouping: Grouping::Proxy,
            ..ViewSpec::default()
        };
        let keys: Vec<String> = m
            .rows(&spec, T0 + 2.0, false)
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, ["http://127.0.0.1:9", "(direct)"]);
        spec.grouping = Grouping::Destination;
        let rows = m.rows(&spec, T0 + 2.0, false);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].total, 2);
        assert_eq!(rows[0].failed, 1);
    }

    #[test]
    fn rates_forget_what_is_older_than_the_window() {
        let mut m = Model::default();
        m.ingest_line(&line(&t(1), "a.service", false, ""));
        let spec = ViewSpec::default();
        let row = &m.rows(&spec, T0 + 1.0, false)[0];
        assert!((row.failures_per_s - 0.1).abs() < 1e-9);
        let later = &m.rows(&spec, T0 + 30.0, false)[0];
        assert_eq!(later.failures_per_s, 0.0);
        assert!(later.failing, "still within the minute");
        let much_later = &m.rows(&spec, T0 + 200.0, false)[0];
        assert!(!much_later.failing);
        assert_eq!(much_later.fail_percent, None);
        assert_eq!(much_later.last_result, "refused");
    }

    #[test]
    fn lost_records_and_damaged_lines() {
        let mut m = Model::default();
        assert!(m.ingest_line(r#"{"@timestamp":"x","event":{"kind":"metric","action":"lost-events"},"tracer":{"lost":{"total":3,"ringbuf_full":3,"unwritten":2}}}"#));
        assert_eq!(m.lost.total, 3);
        assert_eq!(m.lost.unwritten, 2);
        assert!(!m.ingest_line("{not json"));
        assert!(!m.ingest_line(r#"{"event":{"action":"connect"}}"#));
        assert_eq!(m.unreadable, 2);
    }

    #[test]
    fn groups_and_recent_attempts_are_bounded() {
        let mut m = Model::default();
        for i in 0..(MAX_GROUPS + 10) {
            m.ingest_line(&line(&t(1), &format!("u{i}.service"), true, ""));
        }
        assert_eq!(m.group_count(Grouping::Unit), MAX_GROUPS);
        for _ in 0..(RECENT * 2) {
            m.ingest_line(&line(&t(2), "x.service", true, ""));
        }
        assert_eq!(
            m.group(Grouping::Unit, "x.service")
                .expect("group")
                .recent
                .len(),
            RECENT
        );
    }

    #[test]
    fn sparkline_scales_and_keeps_its_width() {
        assert_eq!(sparkline(&[0; 60], 12), " ".repeat(12));
        let mut v = vec![0; 60];
        v[59] = 4;
        v[0] = 1;
        let s = sparkline(&v, 12);
        assert_eq!(s.chars().count(), 12);
        assert!(s.ends_with('█'));
        assert!(s.starts_with('▂'));
        assert_eq!(sparkline(&[1, 2], 4).chars().count(), 4);
    }

    #[test]
    fn rate_cells_are_short() {
        assert_eq!(rate_cell(0.0), "0");
        assert_eq!(rate_cell(0.25), "0.2");
        assert_eq!(rate_cell(123.4), "123");
        assert_eq!(rate_cell(52_000.0), "52k");
    }
}
