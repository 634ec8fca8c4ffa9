//! `--rate-limit N/s`: at most N connect events per process per second;
//! the rest are dropped, counted (`tracer_events_rate_limited_total`) and
//! reported in one `event.action: "rate-limited"` summary line per process
//! and interval (the 1 s tick), so a runaway process in a retry loop cannot
//! flood the log pipeline, and other processes' events are untouched: each
//! process has its own budget.
//!
//! The second an event belongs to is its outcome's kernel time, so the
//! budget follows when the attempts happened, not when a batch was drained.
//! Per event: one lookup in a pid map, no allocation once the pid is known.

use std::collections::HashMap;

use serde::Serialize;

use crate::decode::{Attempt, Comm};

/// Processes tracked at most; beyond this the map starts over (a new
/// second's budget for everyone), like the other caches.
const MAX_PROCESSES: usize = 65536;

struct Bucket {
    /// The second (kernel time) `written` counts for.
    second: u64,
    written: u32,
    /// Dropped since the last summary.
    dropped: u64,
    /// Last second an event of this process was seen.
    seen: u64,
    comm: Comm,
}

/// One process's drops in one interval: becomes a summary line.
pub struct Dropped {
    pub pid: u32,
    pub comm: Comm,
    pub dropped: u64,
}

pub struct RateLimiter {
    per_second: u32,
    buckets: HashMap<u32, Bucket, foldhash::fast::RandomState>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            buckets: HashMap::default(),
        }
    }

    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// May this attempt's event be written? A `false` is counted as a drop.
    pub fn admit(&mut self, attempt: &Attempt) -> bool {
        let second = attempt.end_ns.max(attempt.start_ns) / 1_000_000_000;
        if self.buckets.len() >= MAX_PROCESSES && !self.buckets.contains_key(&attempt.pid) {
            self.buckets.clear();
        }
        let b = self.buckets.entry(attempt.pid).or_insert_with(|| Bucket {
            second,
            written: 0,
            dropped: 0,
            seen: second,
            comm: attempt.comm,
        });
        b.seen = b.seen.max(second);
        // Events of one process arrive roughly in time order; one from an
        // earlier second than the current budget's is counted in it.
        if second > b.second {
            b.second = second;
            b.written = 0;
        }
        if b.written < self.per_second {
            b.written += 1;
            true
        } else {
            b.dropped += 1;
            false
        }
    }

    /// The drops since the last call, one entry per process; forgets
    /// processes not seen for a few seconds.
    pub fn take(&mut self, out: &mut Vec<Dropped>) {
        let latest = self.buckets.values().map(|b| b.seen).max().unwrap_or(0);
        for (pid, b) in &mut self.buckets {
            if b.dropped > 0 {
                out.push(Dropped {
                    pid: *pid,
                    comm: b.comm,
                    dropped: b.dropped,
                });
                b.dropped = 0;
            }
        }
        out.sort_by_key(|d| d.pid);
        self.buckets.retain(|_, b| b.seen + 5 > latest);
    }
}

/// The summary line (schema/event.schema.json, `$defs/rate_limited`).
#[derive(Serialize)]
pub struct RateLimitedRecord<'a> {
    #[serde(rename = "@timestamp")]
    pub timestamp: &'a str,
    pub ecs: Ecs,
    pub event: Event,
    pub message: String,
    pub process: Process<'a>,
    pub tracer: Tracer,
}

#[derive(Serialize)]
pub struct Ecs {
    pub version: &'static str,
}

#[derive(Serialize)]
pub struct Event {
    pub kind: &'static str,
    pub category: [&'static str; 1],
    pub action: &'static str,
}

#[derive(Serialize)]
pub struct Process<'a> {
    pub pid: u32,
    pub name: &'a str,
}

#[derive(Serialize)]
pub struct Tracer {
    pub schema_version: u32,
    pub rate_limited: Counts,
}

#[derive(Serialize)]
pub struct Counts {
    /// Connect events of this process not written since its last summary.
    pub dropped: u64,
    /// The limit, events per process per second.
    pub limit_per_second: u32,
}

impl<'a> RateLimitedRecord<'a> {
    pub fn new(timestamp: &'a str, d: &'a Dropped, limit: u32) -> Self {
        let name = d.comm.as_str();
        Self {
            timestamp,
            ecs: Ecs { version: "8.11.0" },
            event: Event {
                kind: "metric",
                category: ["network"],
                action: "rate-limited",
            },
            message: format!(
                "{} connect events of {name} (pid {}) not written: over the limit of {limit} per second (--rate-limit)",
                d.dropped, d.pid
            ),
            process: Process { pid: d.pid, name },
            tracer: Tracer {
                schema_version: 1,
                rate_limited: Counts {
                    dropped: d.dropped,
                    limit_per_second: limit,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cli::parse_rate,
        decode::{comm_of, Peer, Verdict},
    };

    fn attempt(pid: u32, second: u64) -> Attempt {
        Attempt {
            start_ns: second * 1_000_000_000,
            end_ns: second * 1_000_000_000 + 500,
            pid,
            tid: pid,
            uid: 0,
            gid: 0,
            cgroup_id: 0,
            comm: comm_of(b"storm"),
            transport: None,
            destination: Peer::Unix("/x".into()),
            source: None,
            verdict: Verdict::Refused,
            errno: None,
            is_async: None,
        }
    }

    #[test]
    fn each_process_has_its_own_budget_per_second() {
        let mut r = RateLimiter::new(3);
        let admitted = (0..10).filter(|_| r.admit(&attempt(1, 7))).count();
        assert_eq!(admitted, 3);
        // Another process in the same second is not starved.
        assert_eq!((0..3).filter(|_| r.admit(&attempt(2, 7))).count(), 3);
        // The next second starts a new budget.
        assert_eq!((0..5).filter(|_| r.admit(&attempt(1, 8))).count(), 3);
        let mut out = Vec::new();
        r.take(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].pid, out[0].dropped), (1, 9));
        out.clear();
        r.take(&mut out);
        assert!(out.is_empty(), "drops are reported once");
    }

    /// The summary line, pinned (schema/event.schema.json,
    /// `$defs/rate_limited`; the integration tests validate real ones).
    #[test]
    fn the_summary_line_is_pinned() {
        let d = Dropped {
            pid: 4242,
            comm: comm_of(b"retry-loop"),
            dropped: 980,
        };
        let line = serde_json::to_string(&RateLimitedRecord::new(
            "2026-11-28T12:00:01.000000000Z",
            &d,
            20,
        ))
        .expect("json");
        assert_eq!(
            line,
            r#"{"@timestamp":"2026-11-28T12:00:01.000000000Z","ecs":{"version":"8.11.0"},"event":{"kind":"metric","category":["network"],"action":"rate-limited"},"message":"980 connect events of retry-loop (pid 4242) not written: over the limit of 20 per second (--rate-limit)","process":{"pid":4242,"name":"retry-loop"},"tracer":{"schema_version":1,"rate_limited":{"dropped":980,"limit_per_second":20}}}"#
        );
    }

    #[test]
    fn rates_parse_or_say_why_not() {
        assert_eq!(parse_rate("100/s"), Ok(100));
        assert_eq!(parse_rate("5"), Ok(5));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("fast").unwrap_err().contains("N/s"));
        assert!(parse_rate("-1/s").is_err());
    }
}
