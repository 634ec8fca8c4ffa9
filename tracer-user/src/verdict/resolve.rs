//! Resolving a proxy's host name the way the traced process would.
//!
//! A proxy named `proxy.corp:3128` is only recognisable in a trace of
//! `connect()` calls once its addresses are known. The process resolves it
//! through its own root's `/etc/hosts` first (glibc's and Go's default
//! `hosts: files dns` order), then DNS; [`HostResolver`] does the same with
//! the hosts file under the process's root (e.g. `/proc/<pid>/root`), then
//! falls back to the tracer's own system resolver.
//!
//! Resolution can block (getaddrinfo), so every answer is cached, failures
//! included, and the hot path only ever does a map lookup.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long answers (positive and negative) and the parsed hosts file are
/// trusted.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// Cache entries kept at most; beyond this expired entries are dropped, and
/// if that is not enough the cache starts over. Bounds memory when a traced
/// process names many hosts.
const MAX_CACHE_ENTRIES: usize = 4096;

/// Hosts files larger than this are not read (a real one is a few KB; a
/// huge or endless file must not stall the tracer).
const MAX_HOSTS_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Longest DNS name (RFC 1035), so absurd inputs never reach getaddrinfo.
const MAX_NAME_LEN: usize = 253;

/// The fallback lookup used after the hosts file: host name in, addresses
/// out, empty on failure.
pub type Lookup = Box<dyn FnMut(&str) -> Vec<IpAddr> + Send>;

/// Resolves proxy host names for one root file system, with caching.
pub struct HostResolver {
    hosts_path: PathBuf,
    ttl: Duration,
    cache: HashMap<String, (Instant, Vec<IpAddr>)>,
    /// Parsed hosts file and when it was read (`None`: not yet).
    hosts: HashMap<String, Vec<IpAddr>>,
    hosts_read_at: Option<Instant>,
    lookup: Lookup,
}

impl fmt::Debug for HostResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostResolver")
            .field("hosts_path", &self.hosts_path)
            .field("ttl", &self.ttl)
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl HostResolver {
    /// A resolver reading `host_root/etc/hosts`, then the system resolver
    /// (`getaddrinfo` via [`ToSocketAddrs`]), with a [`DEFAULT_TTL`] cache.
    pub fn new(host_root: &Path) -> Self {
        HostResolver {
            hosts_path: host_root.join("etc/hosts"),
            ttl: DEFAULT_TTL,
            cache: HashMap::new(),
            hosts: HashMap::new(),
            hosts_read_at: None,
            lookup: Box::new(system_lookup),
        }
    }

    /// Replaces the cache lifetime.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Replaces the lookup done after the hosts file (for tests, or to resolve
    /// inside the process's network namespace).
    pub fn with_lookup(mut self, lookup: Lookup) -> Self {
        self.lookup = lookup;
        self
    }

    /// The hosts file this resolver reads.
    pub fn hosts_path(&self) -> &Path {
        &self.hosts_path
    }

    /// Addresses of `host`, in hosts-file or resolver order without
    /// duplicates. IP literals (also bracketed IPv6, with or without zone) are
    /// returned as they are, without any lookup. Empty when the name does not
    /// resolve. Never panics.
    pub fn resolve(&mut self, host: &str) -> Vec<IpAddr> {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Some(ip) = parse_ip_literal(host) {
            return vec![ip];
        }
        if host.is_empty() || host.len() > MAX_NAME_LEN || host.contains('\0') {
            return Vec::new();
        }
        // Names are case-insensitive in DNS and in glibc's hosts lookup.
        let key = host.to_ascii_lowercase();
        let now = Instant::now();
        if let Some((at, addrs)) = self.cache.get(&key) {
            if now.duration_since(*at) < self.ttl {
                return addrs.clone();
            }
        }
        let mut addrs = self.hosts_file(now).get(&key).cloned().unwrap_or_default();
        if addrs.is_empty() {
            addrs = (self.lookup)(host);
            dedup_in_order(&mut addrs);
        }
        self.remember(key, now, addrs.clone());
        addrs
    }

    fn remember(&mut self, key: String, now: Instant, addrs: Vec<IpAddr>) {
        if self.cache.len() >= MAX_CACHE_ENTRIES {
            let ttl = self.ttl;
            self.cache
                .retain(|_, (at, _)| now.duration_since(*at) < ttl);
            if self.cache.len() >= MAX_CACHE_ENTRIES {
                self.cache.clear();
            }
        }
        self.cache.insert(key, (now, addrs));
    }

    /// The parsed hosts file, re-read once the TTL has passed so edits are
    /// picked up.
    fn hosts_file(&mut self, now: Instant) -> &HashMap<String, Vec<IpAddr>> {
        let stale = self
            .hosts_read_at
            .is_none_or(|at| now.duration_since(at) >= self.ttl);
        if stale {
            // A missing or unreadable file counts as empty: the process's own
            // lookup would then go straight to DNS as well.
            self.hosts = read_hosts_file(&self.hosts_path)
                .map(|text| parse_hosts(&text))
                .unwrap_or_default();
            self.hosts_read_at = Some(now);
        }
        &self.hosts
    }
}

/// The system resolver. `(host, 0)` goes to getaddrinfo (std parses IP
/// literals itself, but those never get here).
fn system_lookup(host: &str) -> Vec<IpAddr> {
    match (host, 0u16).to_socket_addrs() {
        Ok(addrs) => addrs.map(|sa| sa.ip()).collect(),
        Err(_) => Vec::new(),
    }
}

/// An IP literal, ignoring an IPv6 zone (`fe80::1%eth0`).
fn parse_ip_literal(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let (addr, zone) = s.split_once('%')?;
    if zone.is_empty() {
        return None;
    }
    addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
}

fn dedup_in_order(addrs: &mut Vec<IpAddr>) {
    let mut seen = Vec::with_capacity(addrs.len());
    addrs.retain(|ip| {
        if seen.contains(ip) {
            false
        } else {
            seen.push(*ip);
            true
        }
    });
}

fn read_hosts_file(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_HOSTS_FILE_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Parses hosts(5) text: `#` starts a comment; each line is an address
/// followed by a canonical name and aliases, separated by blanks. Names are
/// lower-cased. A name on several lines collects the addresses of all of
/// them in file order, IPv4 and IPv6 alike, as glibc's files backend returns
/// them for an unspecified family. Lines whose address does not parse are
/// skipped.
pub fn parse_hosts(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_ascii_whitespace();
        let Some(ip) = fields.next().and_then(parse_ip_literal) else {
            continue;
        };
        for name in fields {
            let addrs = map.entry(name.to_ascii_lowercase()).or_default();
            if !addrs.contains(&ip) {
                addrs.push(ip);
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A fresh directory under /tmp holding `etc/hosts` with `content`.
    fn root_with_hosts(content: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "resolve-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/hosts"), content).unwrap();
        dir
    }

    /// A lookup that must not be reached, or counts how often it is.
    fn counting_lookup(answer: Vec<IpAddr>) -> (Lookup, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        (
            Box::new(move |_host: &str| {
                c.fetch_add(1, Ordering::SeqCst);
                answer.clone()
            }),
            calls,
        )
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    const HOSTS: &str = "\
# comment line
127.0.0.1\tlocalhost
::1 localhost ip6-localhost   # trailing comment
10.0.0.1  Proxy.Corp proxy   squid.internal
10.0.0.2  proxy.corp
fd00::10  proxy6.corp
not-an-ip broken.example
   # indented comment 10.9.9.9 commented.example
fe80::1%eth0 zoned.example
";

    #[test]
    fn hosts_file_parsing_rules() {
        let map = parse_hosts(HOSTS);
        assert_eq!(map["proxy.corp"], vec![v4(10, 0, 0, 1), v4(10, 0, 0, 2)]);
        assert_eq!(map["proxy"], vec![v4(10, 0, 0, 1)]);
        assert_eq!(map["squid.internal"], vec![v4(10, 0, 0, 1)]);
        assert_eq!(
            map["localhost"],
            vec![v4(127, 0, 0, 1), IpAddr::V6(Ipv6Addr::LOCALHOST)]
        );
        assert_eq!(map["ip6-localhost"], vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]);
        assert_eq!(
            map["proxy6.corp"],
            vec!["fd00::10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            map["zoned.example"],
            vec!["fe80::1".parse::<IpAddr>().unwrap()]
        );
        assert!(!map.contains_key("broken.example"));
        assert!(!map.contains_key("commented.example"));
        assert!(!map.contains_key("comment"));
    }

    #[test]
    fn resolves_from_hosts_file_case_insensitively_without_lookup() {
        let root = root_with_hosts(HOSTS);
        let (lookup, calls) = counting_lookup(vec![v4(192, 0, 2, 1)]);
        let mut r = HostResolver::new(&root).with_lookup(lookup);
        assert_eq!(
            r.resolve("proxy.corp"),
            vec![v4(10, 0, 0, 1), v4(10, 0, 0, 2)]
        );
        assert_eq!(
            r.resolve("PROXY.CORP"),
            vec![v4(10, 0, 0, 1), v4(10, 0, 0, 2)]
        );
        assert_eq!(
            r.resolve("proxy6.corp"),
            vec!["fd00::10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn ip_literals_need_no_lookup() {
        let root = root_with_hosts("");
        let (lookup, calls) = counting_lookup(Vec::new());
        let mut r = HostResolver::new(&root).with_lookup(lookup);
        assert_eq!(r.resolve("10.0.0.1"), vec![v4(10, 0, 0, 1)]);
        assert_eq!(r.resolve("::1"), vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]);
        assert_eq!(r.resolve("[::1]"), vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]);
        assert_eq!(
            r.resolve("fe80::1%eth0"),
            vec!["fe80::1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn fallback_results_are_cached_positive_and_negative() {
        let root = root_with_hosts("10.0.0.1 proxy.corp\n");
        let (lookup, calls) = counting_lookup(Vec::new());
        let mut r = HostResolver::new(&root).with_lookup(lookup);
        assert!(r.resolve("unknown.invalid").is_empty());
        assert!(r.resolve("UNKNOWN.invalid").is_empty());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "negative answer cached");

        let (lookup, calls) = counting_lookup(vec![v4(192, 0, 2, 7), v4(192, 0, 2, 7)]);
        let mut r = HostResolver::new(&root).with_lookup(lookup);
        assert_eq!(r.resolve("other.invalid"), vec![v4(192, 0, 2, 7)]);
        assert_eq!(r.resolve("other.invalid"), vec![v4(192, 0, 2, 7)]);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "positive answer cached");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn expired_entries_are_looked_up_again_and_hosts_file_reread() {
        let root = root_with_hosts("10.0.0.1 proxy.corp\n");
        let (lookup, calls) = counting_lookup(Vec::new());
        let mut r = HostResolver::new(&root)
            .with_lookup(lookup)
            .with_ttl(Duration::ZERO);
        assert!(r.resolve("gone.invalid").is_empty());
        assert!(r.resolve("gone.invalid").is_empty());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(r.resolve("proxy.corp"), vec![v4(10, 0, 0, 1)]);
        std::fs::write(root.join("etc/hosts"), "10.0.0.9 proxy.corp\n").unwrap();
        assert_eq!(r.resolve("proxy.corp"), vec![v4(10, 0, 0, 9)]);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn missing_hosts_file_and_bad_input_do_not_panic() {
        let root = root_with_hosts("");
        std::fs::remove_file(root.join("etc/hosts")).unwrap();
        let (lookup, calls) = counting_lookup(Vec::new());
        let mut r = HostResolver::new(&root).with_lookup(lookup);
        assert!(r.resolve("").is_empty());
        assert!(r.resolve(&"a".repeat(300)).is_empty());
        assert!(r.resolve("nul\0byte").is_empty());
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert!(r.resolve("absent.invalid").is_empty());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(format!("{r:?}").contains("etc/hosts"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn cache_stays_bounded() {
        let root = root_with_hosts("");
        let (lookup, _calls) = counting_lookup(Vec::new());
        let mut r = HostResolver::new(&root).with_lookup(lookup);
        for i in 0..(MAX_CACHE_ENTRIES + 10) {
            r.resolve(&format!("h{i}.invalid"));
        }
        assert!(r.cache.len() <= MAX_CACHE_ENTRIES);
        std::fs::remove_dir_all(root).unwrap();
    }
}
