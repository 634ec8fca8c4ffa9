//! Names behind addresses (`tracer trace --dns`).
//!
//! The kernel hands over every DNS message of a socket some process used
//! for lookups (tracer-ebpf/src/probes/dns.rs). Here:
//! - a query is remembered by (socket cookie, DNS id) until its answer
//!   comes, or until `QUERY_TIMEOUT` passes: then it is a lookup without an
//!   answer;
//! - an answer ends its query. A failure (any RCODE but NOERROR) is handed
//!   back to be written as a `dns-query` event; the addresses of a
//!   successful answer go into two caches, the asking process's and the
//!   node's, so that a later connect to one of them gets the name the
//!   process asked for (`destination.domain`).
//!
//! Successful lookups are not events of their own: on a busy node they
//! would outnumber the connects, and their content shows up where it is
//! used, on the connect.
//!
//! Every table is bounded; when one is full its expired entries go, and if
//! that is not enough it starts over (as the tracer's other caches do).
//! This runs only for DNS messages, never per connect event, except
//! `domain_for`, which is two hash lookups and does not allocate.

pub mod message;

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use crate::decode::{Comm, DnsPacket, Transport};

/// How long a query may wait for its answer before it is reported as
/// unanswered: glibc's default per-try timeout (resolv.conf `timeout:5`),
/// so a resolver that is slow but within what clients wait for is not
/// called dead.
pub const QUERY_TIMEOUT_NS: u64 = 5_000_000_000;
/// Answers are kept for their TTL, but at least this long: dnsmasq's local
/// answers and many service-discovery names have TTL 0, and the client
/// connects right after receiving them.
pub const MIN_KEEP_NS: u64 = 10_000_000_000;
/// And at most a day, whatever the TTL says.
pub const MAX_KEEP_NS: u64 = 86_400_000_000_000;
/// Queries waiting for an answer, at most. A process that floods a dead
/// server with distinct queries fills this; the table then starts over and
/// those queries are never reported as unanswered.
const MAX_PENDING: usize = 4096;
/// Addresses remembered per table (process table and node table).
const MAX_ANSWERS: usize = 65536;

/// Where a connect's `destination.domain` came from (`tracer.domain_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainSource {
    /// An answer the connecting process itself received.
    Process,
    /// An answer another process on the node received (a local caching
    /// resolver, or a helper that looked the name up).
    Node,
}

impl DomainSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Node => "node",
        }
    }
}

/// The name behind a connect's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainHint<'a> {
    pub name: &'a str,
    pub source: DomainSource,
}

/// A lookup that failed or got no answer: one `dns-query` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// When the query left (kernel ns).
    pub start_ns: u64,
    /// When the answer came; None: no answer within `QUERY_TIMEOUT_NS`.
    pub end_ns: Option<u64>,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: Comm,
    pub server: (IpAddr, u16),
    pub transport: Transport,
    pub id: u16,
    /// Question name (no trailing dot) and QTYPE; None when no message of
    /// the exchange carried a readable question.
    pub question: Option<(String, u16)>,
    /// RCODE of the answer; None for no answer.
    pub rcode: Option<u8>,
    /// Addresses the answer carried anyway (ECS `dns.resolved_ip`).
    pub resolved: Vec<IpAddr>,
}

impl Lookup {
    /// A lookup that started with `pkt` (its query, or the answer when the
    /// query was not seen), not answered yet.
    fn started(pkt: &DnsPacket, id: u16, question: Option<(String, u16)>) -> Lookup {
        Lookup {
            start_ns: pkt.time_ns,
            end_ns: None,
            pid: pkt.pid,
            tid: pkt.tid,
            uid: pkt.uid,
            gid: pkt.gid,
            cgroup_id: pkt.cgroup_id,
            comm: pkt.comm,
            server: pkt.server,
            transport: pkt.transport,
            id,
            question,
            rcode: None,
            resolved: Vec::new(),
        }
    }
}

/// A query waiting for its answer.
struct Pending {
    lookup: Lookup,
}

/// A remembered answer.
struct Answer {
    name: Arc<str>,
    expires_ns: u64,
}

/// The DNS state of one `tracer trace --dns` run.
#[derive(Default)]
pub struct DnsWatch {
    pending: HashMap<(u64, u16), Pending>,
    by_process: HashMap<(u32, IpAddr), Answer>,
    node: HashMap<IpAddr, (Answer, u32)>,
    /// Messages that did not even have a DNS header (a TCP continuation
    /// segment, junk to port 53).
    pub unreadable: u64,
}

impl DnsWatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// One message from the kernel. Returns the failed lookup it ends, if
    /// any.
    pub fn observe(&mut self, pkt: &DnsPacket) -> Option<Lookup> {
        let Some(msg) = message::parse(&pkt.message) else {
            self.unreadable += 1;
            return None;
        };
        if pkt.egress && !msg.is_response {
            self.query(pkt, msg);
            None
        } else if !pkt.egress && msg.is_response {
            self.answer(pkt, msg)
        } else {
            // A server's traffic on a socket that also asked (rare): not a
            // lookup of this process.
            None
        }
    }

    fn query(&mut self, pkt: &DnsPacket, msg: message::Message) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.clear();
        }
        // A retransmission (same socket, same id) keeps the first send
        // time: the wait is counted from the first try.
        self.pending
            .entry((pkt.cookie, msg.id))
            .or_insert_with(|| Pending {
                lookup: Lookup::started(pkt, msg.id, msg.question),
            });
    }

    fn answer(&mut self, pkt: &DnsPacket, msg: message::Message) -> Option<Lookup> {
        let pending = self.pending.remove(&(pkt.cookie, msg.id));
        // The name the process asked for, as it asked it: the connect
        // that follows is to that name, whatever CNAMEs lie between.
        let question = msg
            .question
            .clone()
            .or_else(|| pending.as_ref().and_then(|p| p.lookup.question.clone()));
        if msg.rcode == 0 {
            if let Some((name, _)) = &question {
                self.remember(pkt, name, &msg.addresses);
            }
            return None;
        }
        let mut lookup = match pending {
            Some(p) => p.lookup,
            // The query was not seen (the socket was marked by this very
            // send, or the table started over): the answer alone still
            // tells who failed to resolve what.
            None => Lookup::started(pkt, msg.id, None),
        };
        lookup.end_ns = Some(pkt.time_ns);
        lookup.question = question;
        lookup.rcode = Some(msg.rcode);
        lookup.resolved = msg.addresses.iter().map(|(ip, _)| *ip).collect();
        Some(lookup)
    }

    fn remember(&mut self, pkt: &DnsPacket, name: &str, addresses: &[(IpAddr, u32)]) {
        if addresses.is_empty() {
            return;
        }
        let name: Arc<str> = Arc::from(name.trim_end_matches('.'));
        if self.by_process.len() + addresses.len() > MAX_ANSWERS {
            self.by_process.retain(|_, a| a.expires_ns > pkt.time_ns);
            if self.by_process.len() + addresses.len() > MAX_ANSWERS {
                self.by_process.clear();
            }
        }
        if self.node.len() + addresses.len() > MAX_ANSWERS {
            self.node.retain(|_, (a, _)| a.expires_ns > pkt.time_ns);
            if self.node.len() + addresses.len() > MAX_ANSWERS {
                self.node.clear();
            }
        }
        for (ip, ttl) in addresses {
            let keep = (u64::from(*ttl) * 1_000_000_000).clamp(MIN_KEEP_NS, MAX_KEEP_NS);
            let expires_ns = pkt.time_ns.saturating_add(keep);
            let answer = || Answer {
                name: Arc::clone(&name),
                expires_ns,
            };
            self.by_process.insert((pkt.pid, *ip), answer());
            self.node.insert(*ip, (answer(), pkt.pid));
        }
    }

    /// Queries that waited longer than `QUERY_TIMEOUT_NS` by `now_ns`
    /// (kernel monotonic time): each is a lookup without an answer.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Lookup> {
        let mut out = Vec::new();
        self.pending.retain(|_, p| {
            if now_ns.saturating_sub(p.lookup.start_ns) >= QUERY_TIMEOUT_NS {
                out.push(p.lookup.clone());
                false
            } else {
                true
            }
        });
        out.sort_by_key(|l| l.start_ns);
        out
    }

    /// The name behind `ip` for a connect of `pid` at `at_ns`: from an
    /// answer the process itself received, else from one another process
    /// on the node received, while it is fresh. No allocation.
    pub fn domain_for(&self, pid: u32, ip: IpAddr, at_ns: u64) -> Option<DomainHint<'_>> {
        if let Some(a) = self.by_process.get(&(pid, ip)) {
            if a.expires_ns > at_ns {
                return Some(DomainHint {
                    name: &a.name,
                    source: DomainSource::Process,
                });
            }
        }
        match self.node.get(&ip) {
            Some((a, owner)) if a.expires_ns > at_ns => Some(DomainHint {
                name: &a.name,
                source: if *owner == pid {
                    DomainSource::Process
                } else {
                    DomainSource::Node
                },
            }),
            _ => None,
        }
    }

    /// Sizes, for the stats line.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.pending.len(), self.by_process.len(), self.node.len())
    }
}

#[cfg(test)]
mod tests {
    use super::message::tests::{answer, query};
    use super::*;
    use crate::decode::comm_of;
    use simple_dns::TYPE;
    use std::net::Ipv4Addr;

    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

    fn packet(pid: u32, cookie: u64, time_ns: u64, egress: bool, message: Vec<u8>) -> DnsPacket {
        DnsPacket {
            time_ns,
            pid,
            tid: pid,
            uid: 0,
            gid: 0,
            cgroup_id: 1,
            comm: comm_of(b"getent"),
            server: (IpAddr::V4(SERVER), 53),
            transport: Transport::Udp,
            cookie,
            egress,
            cut: false,
            message,
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn an_answer_names_the_connects_of_the_asker_and_of_the_node() {
        let mut w = DnsWatch::new();
        let ip = Ipv4Addr::new(198, 51, 100, 6);
        assert_eq!(
            w.observe(&packet(10, 1, S, true, query(5, "reg.test", TYPE::A))),
            None
        );
        assert_eq!(
            w.observe(&packet(
                10,
                1,
                2 * S,
                false,
                answer(5, "reg.test", 0, &[ip], 60)
            )),
            None
        );
        let hint = w.domain_for(10, IpAddr::V4(ip), 3 * S).expect("named");
        assert_eq!(
            (hint.name, hint.source),
            ("reg.test", DomainSource::Process)
        );
        let other = w.domain_for(11, IpAddr::V4(ip), 3 * S).expect("named");
        assert_eq!(other.source, DomainSource::Node);
        // The TTL (60 s) ends it.
        assert_eq!(w.domain_for(10, IpAddr::V4(ip), 63 * S), None);
        assert_eq!(w.domain_for(10, IpAddr::V4(SERVER), 3 * S), None);
        assert_eq!(w.expire(100 * S), vec![], "the query was answered");
    }

    #[test]
    fn a_ttl_of_zero_still_names_the_connect_that_follows() {
        let mut w = DnsWatch::new();
        let ip = Ipv4Addr::new(198, 51, 100, 6);
        w.observe(&packet(
            10,
            1,
            S,
            false,
            answer(5, "zero.test", 0, &[ip], 0),
        ));
        assert!(w.domain_for(10, IpAddr::V4(ip), S + 1).is_some());
        assert!(w.domain_for(10, IpAddr::V4(ip), S + MIN_KEEP_NS).is_none());
    }

    #[test]
    fn nxdomain_and_servfail_are_failed_lookups() {
        let mut w = DnsWatch::new();
        w.observe(&packet(10, 1, S, true, query(5, "nope.test", TYPE::A)));
        let l = w
            .observe(&packet(
                10,
                1,
                S + 300,
                false,
                answer(5, "nope.test", 3, &[], 0),
            ))
            .expect("failure");
        assert_eq!(l.rcode, Some(3));
        assert_eq!(l.question, Some(("nope.test".into(), 1)));
        assert_eq!((l.start_ns, l.end_ns), (S, Some(S + 300)));
        let l = w
            .observe(&packet(12, 2, S, false, answer(6, "sf.test", 2, &[], 0)))
            .expect("an answer whose query was not seen");
        assert_eq!((l.pid, l.rcode), (12, Some(2)));
    }

    #[test]
    fn an_unanswered_query_times_out_once_from_its_first_try() {
        let mut w = DnsWatch::new();
        w.observe(&packet(10, 1, S, true, query(5, "dead.test", TYPE::A)));
        // A retransmission does not restart the clock.
        w.observe(&packet(10, 1, 4 * S, true, query(5, "dead.test", TYPE::A)));
        assert_eq!(w.expire(S + QUERY_TIMEOUT_NS - 1), vec![]);
        let out = w.expire(S + QUERY_TIMEOUT_NS);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rcode, None);
        assert_eq!(out[0].end_ns, None);
        assert_eq!(w.expire(100 * S), vec![], "reported once");
    }

    #[test]
    fn tables_stay_bounded() {
        let mut w = DnsWatch::new();
        for i in 0..(MAX_PENDING as u64 + 10) {
            w.observe(&packet(10, i, S, true, query(1, "x.test", TYPE::A)));
        }
        assert!(w.sizes().0 <= MAX_PENDING);
        let ips: Vec<Ipv4Addr> = (0..200u32)
            .map(|i| Ipv4Addr::from(0x0a00_0000 + i))
            .collect();
        for round in 0..400u64 {
            w.observe(&packet(
                round as u32,
                1,
                S,
                false,
                answer(1, "many.test", 0, &ips, 300),
            ));
        }
        let (_, per_process, node) = w.sizes();
        assert!(per_process <= MAX_ANSWERS && node <= MAX_ANSWERS);
    }

    #[test]
    fn a_message_without_a_header_is_counted() {
        let mut w = DnsWatch::new();
        assert_eq!(w.observe(&packet(1, 1, S, false, vec![1, 2, 3])), None);
        assert_eq!(w.unreadable, 1);
    }
}
