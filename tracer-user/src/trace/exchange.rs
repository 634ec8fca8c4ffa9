//! Attempts to a proxy, held until the proxy answers (or `ANSWER_BOUND`
//! passes), so that each attempt is still written once, with its exchange.
//!
//! Only attempts that connected to a proxy from a watched cgroup are held;
//! every other attempt is written at once. Lines arrive on the same ring
//! buffer after their attempt (the kernel writes the attempt at
//! ESTABLISHED, before the client can send), and find it by (pid, start).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    decode::Attempt,
    enrich::proc::ProcInfo,
    exchange::{Direction, ExchangeState, Line, ProxyExchange, ANSWER_BOUND, TLS_BOUND},
    verdict::ProxyVerdict,
};

/// Attempts held at most; beyond this the oldest are written at once
/// (without waiting for their answer), so a storm of proxy dials cannot
/// grow the tracer's memory. Each entry is a few hundred bytes.
pub const MAX_HELD: usize = 4096;

/// One attempt waiting for its exchange.
pub struct Held {
    pub attempt: Attempt,
    pub proc: Arc<ProcInfo>,
    pub verdict: Option<ProxyVerdict>,
    pub exchange: ProxyExchange,
    deadline: Instant,
}

#[derive(Default)]
pub struct Pending {
    held: HashMap<(u32, u64), Held>,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Hold an attempt. Returns one to write now when the table is full.
    pub fn hold(
        &mut self,
        attempt: Attempt,
        proc: Arc<ProcInfo>,
        verdict: Option<ProxyVerdict>,
        listed: bool,
        now: Instant,
    ) -> Option<Held> {
        let evicted = if self.held.len() >= MAX_HELD {
            let oldest = self
                .held
                .iter()
                .min_by_key(|(_, h)| h.deadline)
                .map(|(k, _)| *k);
            oldest.and_then(|k| self.held.remove(&k)).map(|mut h| {
                h.exchange.expire();
                h
            })
        } else {
            None
        };
        let key = (attempt.pid, attempt.start_ns);
        self.held.insert(
            key,
            Held {
                attempt,
                proc,
                verdict,
                exchange: ProxyExchange::new(listed, None),
                deadline: now + ANSWER_BOUND,
            },
        );
        evicted
    }

    /// A line from the kernel. Returns the attempt once its status line is
    /// in. A line of an attempt not held (not judged a proxy dial, or
    /// already written) is dropped.
    pub fn line(&mut self, line: &Line) -> Option<Held> {
        let key = (line.pid, line.start_ns);
        let held = self.held.get_mut(&key)?;
        let done = held.exchange.take(line);
        if done {
            self.held.remove(&key)
        } else {
            if held.exchange.tunnel && line.direction == Direction::Response {
                // A proxy that took long to answer must not leave the
                // hellos that follow its 2xx without time to arrive.
                held.deadline = held.deadline.max(Instant::now() + TLS_BOUND);
            }
            None
        }
    }

    /// Attempts whose bound passed (all of them with `now` = None, at
    /// shutdown), each marked with what was missing.
    pub fn expired(&mut self, now: Option<Instant>) -> Vec<Held> {
        let keys: Vec<_> = self
            .held
            .iter()
            .filter(|(_, h)| now.is_none_or(|now| h.deadline <= now))
            .map(|(k, _)| *k)
            .collect();
        let mut out: Vec<Held> = keys
            .into_iter()
            .filter_map(|k| self.held.remove(&k))
            .map(|mut h| {
                h.exchange.expire();
                h
            })
            .collect();
        // In the order the attempts started.
        out.sort_by_key(|h| h.attempt.start_ns);
        out
    }

    /// How long until the next deadline (for the run loop's timer).
    pub fn next_deadline(&self, now: Instant) -> Option<Duration> {
        self.held
            .values()
            .map(|h| h.deadline.saturating_duration_since(now))
            .min()
    }
}

/// An exchange for an attempt written at once (not held).
pub fn unheld(listed: bool, state: Option<ExchangeState>) -> ProxyExchange {
    ProxyExchange::new(listed, state)
}
