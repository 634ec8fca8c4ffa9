//! Resolving a proxy's host name the way the traced process would, without
//! ever making the drain path wait.
//!
//! A proxy named `proxy.corp:3128` is only recognisable in a trace of
//! `connect()` calls once its addresses are known. The process resolves it
//! through its own root's `/etc/hosts` first (glibc's and Go's default
//! `hosts: files dns` order), then DNS. The worker threads here do the same:
//! the hosts file under the process's root (`/proc/<pid>/root/etc/hosts`,
//! so a container's own hosts file counts), else the host's
//! (`<host-root>/etc/hosts`), then getaddrinfo(3), which asks the DNS
//! servers of the tracer's own `/etc/resolv.conf`. (A container that uses a
//! different DNS server than the node is the one case where the answer may
//! differ from the process's; daemons on the node share the node's.)
//!
//! getaddrinfo blocks, for seconds when DNS is slow or dead, and the thread
//! that drains the ring buffer must never wait for it: during the very
//! incident an operator is looking at, a stalled drain would fill the ring
//! and lose events. So lookups run on `WORKERS` threads fed through a
//! bounded queue, and the pipeline only ever reads the cache:
//! - an answer in the cache is used at once (and refreshed in the
//!   background once it is older than `TTL`);
//! - a name not answered yet yields [`Unresolved`], the event is written at
//!   once with `tracer.proxy.via` null and the reason, and later events use
//!   the answer when it comes. No event is ever held back for a lookup.
//! - a lookup still unanswered after `TIMEOUT` is reported as timed out.
//!
//! Names are resolved ahead of need when a process is announced (its first
//! connect), which is usually well before its first attempt is drained.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::Path,
    sync::{
        mpsc::{self, Receiver, SyncSender, TrySendError},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use crate::nodefs::{NodeRoot, HOST_CONFIG, PROCESS_FILES};

/// How long answers (positive and NXDOMAIN alike) are trusted before a
/// background refresh.
pub const TTL: Duration = Duration::from_secs(60);
/// A temporary failure (EAI_AGAIN: DNS did not answer) is retried after this.
const RETRY: Duration = Duration::from_secs(10);
/// After this long without an answer, events say the lookup timed out
/// rather than that it is in progress. glibc's own default is 5 s per try.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Lookup threads. Two, so that one slow name does not hold up another;
/// proxies are few.
const WORKERS: usize = 2;
/// Lookups queued at most. A node's processes name a handful of proxies; a
/// full queue means the resolver is dead and more requests would not help.
const QUEUE: usize = 256;
/// Answers remembered (one per name per mount namespace); beyond this the
/// cache starts over. A namespace's answers are also forgotten when its last
/// process exits (`forget_namespace`), so the cache follows the namespaces
/// alive, not every one the node ever had.
pub const MAX_NAMES: usize = 4096;
/// Hosts files larger than this are not read (a real one is a few KB).
const MAX_HOSTS_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Longest DNS name (RFC 1035), so absurd inputs never reach getaddrinfo.
const MAX_NAME_LEN: usize = 253;

/// Whose view of names to use: the process's root, identified by its mount
/// namespace (processes in one namespace see one `/etc/hosts`). Answers are
/// cached per namespace: `pid` only says how to reach that root, so every
/// process of a container shares one answer, whichever asked first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Root {
    /// A process in that namespace, to reach its root through /proc.
    pub pid: Option<u32>,
    /// Its mount namespace inode; None: the host's view.
    pub mnt_ns: Option<u64>,
    /// Its parent, where the namespace's root is looked for when `pid` is
    /// already gone (`open_view`).
    pub parent: Option<u32>,
    /// Another process known in that namespace, looked at after the
    /// ancestors (`ProcCache::anchor`).
    pub anchor: Option<u32>,
}

impl Root {
    /// The host's view (`<host-root>/etc/hosts`).
    pub const HOST: Root = Root {
        pid: None,
        mnt_ns: None,
        parent: None,
        anchor: None,
    };
}

/// Why a name has no answer yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    /// Asked, not answered yet.
    InProgress,
    /// Asked more than `TIMEOUT` ago, still not answered.
    TimedOut,
    /// The lookup queue was full: the resolver is stuck.
    QueueFull,
    /// DNS failed temporarily (EAI_AGAIN), e.g. no server answered.
    TemporaryFailure,
    /// The process exited before its root could be opened, and no answer
    /// for its mount namespace is known yet: its own view of names cannot
    /// be read through it. The next process of that namespace asks again.
    ProcessGone,
}

impl Unresolved {
    pub fn describe(self) -> &'static str {
        match self {
            Self::InProgress => "its host name is still being resolved",
            Self::TimedOut => {
                "resolving its host name has taken more than 5 s (DNS is slow or dead)"
            }
            Self::QueueFull => "the tracer's lookup queue is full (DNS is slow or dead)",
            Self::TemporaryFailure => "DNS failed temporarily for its host name",
            Self::ProcessGone => {
                "the process exited before its own /etc/hosts could be read to resolve its host name"
            }
        }
    }
}

/// A cached answer.
pub enum Answer<'a> {
    /// The name's addresses (empty: it does not resolve).
    Addrs(&'a [IpAddr]),
    Unknown(Unresolved),
}

/// What a lookup function reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupResult {
    Addrs(Vec<IpAddr>),
    /// NXDOMAIN, no address, or a name no resolver accepts.
    NotFound,
    /// EAI_AGAIN: try again later.
    Temporary,
}

/// The lookup done after the hosts files: host name in, result out.
pub type Lookup = Arc<dyn Fn(&str) -> LookupResult + Send + Sync>;

enum Entry {
    Ready {
        at: Instant,
        addrs: Vec<IpAddr>,
        refreshing: bool,
    },
    Pending {
        since: Instant,
    },
    Failed {
        at: Instant,
        why: Unresolved,
    },
}

struct Request {
    name: String,
    root: Root,
    /// The root directory of `root.pid`, opened when the request was made
    /// (see `Resolver::ask`); None: the host's view.
    dir: Option<NodeRoot>,
}

/// What became of a request to the workers.
enum Asked {
    Sent,
    /// The queue was full.
    Full,
    /// The process whose view was asked for is gone (see `Resolver::ask`).
    Gone,
}

struct Reply {
    name: String,
    root: Root,
    result: LookupResult,
}

/// The cache key of a view of names: the mount namespace (None: the host's).
type View = Option<u64>;

/// The cache the pipeline reads, and the workers that fill it.
pub struct Resolver {
    /// mount namespace -> name (lower case) -> answer: two hash lookups
    /// per verdict, no scan, and a namespace's answers go in one removal.
    views: HashMap<View, HashMap<String, Entry>>,
    /// Answers in `views`, all namespaces together (bounded by MAX_NAMES).
    entries: usize,
    requests: SyncSender<Request>,
    replies: Receiver<Reply>,
    /// Requests sent and not yet answered: when 0, nothing to collect.
    outstanding: usize,
    /// When the latest request was sent (for `settle`).
    last_ask: Option<Instant>,
}

impl Resolver {
    /// Workers that read hosts files under `host_root` and the processes'
    /// roots, then ask getaddrinfo(3).
    pub fn new(host_root: &Path) -> Self {
        Self::with_lookup(host_root, Arc::new(system_lookup))
    }

    /// The same, with another lookup after the hosts files (tests).
    pub fn with_lookup(host_root: &Path, lookup: Lookup) -> Self {
        let (requests, queue) = mpsc::sync_channel::<Request>(QUEUE);
        let (answer, replies) = mpsc::channel::<Reply>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..WORKERS {
            let queue = Arc::clone(&queue);
            let answer = answer.clone();
            let lookup = Arc::clone(&lookup);
            let host_root = host_root.to_path_buf();
            let spawned = std::thread::Builder::new()
                .name(format!("resolver-{i}"))
                .spawn(move || work(&queue, &answer, &host_root, &*lookup));
            if let Err(e) = spawned {
                // Without workers every name stays unresolved, which the
                // events then say; the trace itself goes on.
                log::warn!("cannot start a resolver thread: {e}");
            }
        }
        Self {
            views: HashMap::new(),
            entries: 0,
            requests,
            replies,
            outstanding: 0,
            last_ask: None,
        }
    }

    /// Give requests sent less than `bound` ago the rest of `bound` to be
    /// answered. Called once per drain, after the process announcements
    /// (which prefetch their proxies' names) and before their attempts: a
    /// hosts-file answer takes microseconds and a healthy DNS server a
    /// millisecond or two, so the first attempt of a process gets its
    /// verdict too. Waits at most `bound`, and only right after new names
    /// were asked; a dead DNS server costs one such wait per name per
    /// `RETRY`, never a stalled drain.
    pub fn settle(&mut self, bound: Duration) {
        let Some(asked) = self.last_ask else {
            return;
        };
        let deadline = asked + bound;
        while self.outstanding > 0 {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            match self.replies.recv_timeout(deadline - now) {
                Ok(reply) => self.absorb(reply),
                Err(_) => return,
            }
        }
    }

    /// The addresses of `name` as seen from `root`, or why they are not
    /// known yet. Never blocks: a name not in the cache is queued for the
    /// workers. IP literals are for the caller to handle.
    pub fn lookup(&mut self, name: &str, root: Root) -> Answer<'_> {
        self.collect();
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains('\0') {
            return Answer::Addrs(&[]);
        }
        let now = Instant::now();
        // Names are case-insensitive in DNS and in glibc's hosts lookup.
        // The common case is already lower case: no allocation then.
        let lower;
        let key = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        let state = self
            .views
            .get(&root.mnt_ns)
            .and_then(|names| names.get(key))
            .map(|entry| match entry {
                Entry::Ready { at, refreshing, .. } => {
                    if now.duration_since(*at) >= TTL && !refreshing {
                        State::Refresh
                    } else {
                        State::Ready
                    }
                }
                Entry::Pending { since } => State::Pending(*since),
                Entry::Failed { at, why } => {
                    if now.duration_since(*at) >= RETRY {
                        State::Ask
                    } else {
                        State::Failed(*why)
                    }
                }
            })
            .unwrap_or(State::Ask);
        match state {
            State::Ready => {}
            State::Refresh => {
                // Serve the old answer while a new one is fetched.
                if let Asked::Sent = self.ask(key, root) {
                    if let Some(Entry::Ready { refreshing, .. }) = self.entry_mut(key, root) {
                        *refreshing = true;
                    }
                }
            }
            State::Pending(since) => {
                return Answer::Unknown(if now.duration_since(since) >= TIMEOUT {
                    Unresolved::TimedOut
                } else {
                    Unresolved::InProgress
                });
            }
            State::Failed(why) => return Answer::Unknown(why),
            State::Ask => {
                let (entry, why) = match self.ask(key, root) {
                    Asked::Sent => (Entry::Pending { since: now }, Unresolved::InProgress),
                    Asked::Full => (
                        Entry::Failed {
                            at: now,
                            why: Unresolved::QueueFull,
                        },
                        Unresolved::QueueFull,
                    ),
                    // Nothing is stored: the namespace's next process asks.
                    Asked::Gone => return Answer::Unknown(Unresolved::ProcessGone),
                };
                self.store(key, root, entry);
                return Answer::Unknown(why);
            }
        }
        match self.entry_mut(key, root) {
            Some(Entry::Ready { addrs, .. }) => Answer::Addrs(addrs),
            _ => Answer::Unknown(Unresolved::InProgress),
        }
    }

    /// Answers cached (one per name per mount namespace it was asked
    /// from); at most `MAX_NAMES`.
    pub fn names(&self) -> usize {
        self.entries
    }

    /// Mount namespaces with cached answers.
    pub fn namespaces(&self) -> usize {
        self.views.len()
    }

    /// The last process of mount namespace `mnt_ns` is gone: its answers
    /// can serve no one any more. A late reply for it is stored again and
    /// goes with the next start-over; that is bounded too.
    pub fn forget_namespace(&mut self, mnt_ns: u64) {
        if let Some(names) = self.views.remove(&Some(mnt_ns)) {
            self.entries = self.entries.saturating_sub(names.len());
        }
    }

    /// Start resolving `name` now, ahead of the first attempt that needs it.
    /// Lookups sent to the workers and not answered yet (metrics).
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    pub fn prefetch(&mut self, name: &str, root: Root) {
        let _ = self.lookup(name, root);
    }

    /// Queue a lookup.
    ///
    /// A namespace's view is read through the root of the process that
    /// asked, and that root is opened here, now: the announcement that
    /// asks is handled while the process is usually still alive, but a
    /// short-lived client is often gone by the time a worker gets to the
    /// request (300 started at once: most of them). The open handle keeps
    /// reaching the namespace's files for as long as the namespace lives.
    /// Opening follows the procfs magic link only and asks nothing of the
    /// process's file system (`NodeRoot::of_process`), so it cannot hang
    /// the caller. A process already gone yields `Asked::Gone`, never the
    /// host's view in its place: the host's /etc/hosts is not the
    /// container's, and an answer from it would be cached for the whole
    /// namespace (a name only the container's hosts file knows came back
    /// "not found", and every later client was judged not to use its
    /// proxy).
    fn ask(&mut self, name: &str, root: Root) -> Asked {
        // An answer is cached per namespace; without one it is the host's
        // view, so ask as the host.
        let root = Root {
            pid: root.pid.filter(|_| root.mnt_ns.is_some()),
            ..root
        };
        let dir = match root.pid {
            Some(pid) => match open_view(Path::new("/proc"), pid, root) {
                Some(dir) => Some(dir),
                None => return Asked::Gone,
            },
            None => None,
        };
        let request = Request {
            name: name.to_string(),
            root,
            dir,
        };
        match self.requests.try_send(request) {
            Ok(()) => {
                self.outstanding += 1;
                self.last_ask = Some(Instant::now());
                Asked::Sent
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Asked::Full,
        }
    }

    /// Take in whatever the workers have answered.
    fn collect(&mut self) {
        while self.outstanding > 0 {
            let Ok(reply) = self.replies.try_recv() else {
                return;
            };
            self.absorb(reply);
        }
    }

    fn absorb(&mut self, reply: Reply) {
        self.outstanding = self.outstanding.saturating_sub(1);
        let now = Instant::now();
        let entry = match reply.result {
            LookupResult::Addrs(addrs) => Entry::Ready {
                at: now,
                addrs,
                refreshing: false,
            },
            LookupResult::NotFound => Entry::Ready {
                at: now,
                addrs: Vec::new(),
                refreshing: false,
            },
            LookupResult::Temporary => match self.entry_mut(&reply.name, reply.root) {
                // A failed refresh keeps the answer it had.
                Some(Entry::Ready { refreshing, at, .. }) => {
                    *refreshing = false;
                    *at = now;
                    return;
                }
                _ => Entry::Failed {
                    at: now,
                    why: Unresolved::TemporaryFailure,
                },
            },
        };
        self.store(&reply.name, reply.root, entry);
    }

    fn entry_mut(&mut self, name: &str, root: Root) -> Option<&mut Entry> {
        self.views.get_mut(&root.mnt_ns)?.get_mut(name)
    }

    fn store(&mut self, name: &str, root: Root, entry: Entry) {
        if let Some(slot) = self.entry_mut(name, root) {
            *slot = entry;
            return;
        }
        if self.entries >= MAX_NAMES {
            self.views.clear();
            self.entries = 0;
        }
        self.views
            .entry(root.mnt_ns)
            .or_default()
            .insert(name.to_string(), entry);
        self.entries += 1;
    }
}

/// The root of `pid`, or, that process being gone (a zombie has no root
/// any more), of another process still in the same mount namespace
/// (`root.mnt_ns`; from the kernel's read when /proc no longer shows it):
/// its closest ancestor there (the shell or `xargs` that started a
/// short-lived client, a container's init; at most `ANCESTORS`
/// generations), else the namespace's anchor, the oldest process the
/// tracer knows in it (`ProcCache::anchor`: an adopted resident, a
/// container's main process). Each step is a few reads of procfs, which
/// cannot hang. None when no process of that namespace is found.
fn open_view(proc_root: &Path, pid: u32, root: Root) -> Option<NodeRoot> {
    const ANCESTORS: usize = 4;
    if let Ok(dir) = NodeRoot::of_process(proc_root, pid, &PROCESS_FILES) {
        return Some(dir);
    }
    let in_namespace = |candidate: u32| {
        let dir = proc_root.join(candidate.to_string());
        let view = (crate::enrich::proc::mount_namespace(&dir) == root.mnt_ns)
            .then(|| NodeRoot::of_process(proc_root, candidate, &PROCESS_FILES).ok())
            .flatten();
        (view, dir)
    };
    let mut candidate = root.parent;
    for _ in 0..ANCESTORS {
        let Some(ancestor) = candidate.filter(|&p| p > 0) else {
            break;
        };
        let (view, dir) = in_namespace(ancestor);
        if view.is_some() {
            return view;
        }
        candidate = procfs::process::Process::new_with_root(dir)
            .and_then(|p| p.stat())
            .ok()
            .and_then(|stat| u32::try_from(stat.ppid).ok());
    }
    root.anchor
        .filter(|&p| p > 0 && p != pid)
        .and_then(|anchor| in_namespace(anchor).0)
}

enum State {
    Ready,
    Refresh,
    Pending(Instant),
    Failed(Unresolved),
    Ask,
}

/// A worker: take a request, answer it, until the resolver is dropped.
fn work(
    queue: &Mutex<Receiver<Request>>,
    answer: &mpsc::Sender<Reply>,
    host_root: &Path,
    lookup: &(dyn Fn(&str) -> LookupResult + Send + Sync),
) {
    // The host root, opened once it is first needed (and again after a
    // failure): one handle for the worker's life.
    let mut host: Option<NodeRoot> = None;
    loop {
        // The lock is held only while waiting for the next request.
        let request = match queue.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(Request { name, root, dir }) = request else {
            return;
        };
        if host.is_none() {
            host = NodeRoot::open(host_root, &HOST_CONFIG).ok();
        }
        let result = resolve_blocking(&name, dir.as_ref(), host.as_ref(), lookup);
        if answer.send(Reply { name, root, result }).is_err() {
            return;
        }
    }
}

/// The process's hosts file (under `dir`, its root), else the host's,
/// then the lookup.
fn resolve_blocking(
    name: &str,
    dir: Option<&NodeRoot>,
    host: Option<&NodeRoot>,
    lookup: &(dyn Fn(&str) -> LookupResult + Send + Sync),
) -> LookupResult {
    // The process's file is read inside its own root, so its absolute
    // symlinks and its mounts are the ones it sees, and never parks this
    // worker: a FIFO or device there is refused, a hung file system is
    // given up after `PROCESS_FILES`' deadline. A root without a readable
    // hosts file leaves the host's file.
    let text = dir
        .and_then(read_hosts_file)
        .or_else(|| host.and_then(read_hosts_file));
    if let Some(addrs) = text.and_then(|t| parse_hosts(&t).remove(name)) {
        if !addrs.is_empty() {
            return LookupResult::Addrs(addrs);
        }
    }
    lookup(name)
}

/// getaddrinfo(3), telling "no such name" from "DNS did not answer".
fn system_lookup(name: &str) -> LookupResult {
    let hints = dns_lookup::AddrInfoHints {
        socktype: libc::SOCK_STREAM,
        ..dns_lookup::AddrInfoHints::default()
    };
    match dns_lookup::getaddrinfo(Some(name), None, Some(hints)) {
        Ok(iter) => {
            let mut addrs: Vec<IpAddr> = Vec::new();
            for info in iter.flatten() {
                let ip = info.sockaddr.ip();
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
            }
            LookupResult::Addrs(addrs)
        }
        Err(e) => match e.kind() {
            dns_lookup::LookupErrorKind::Again => LookupResult::Temporary,
            _ => LookupResult::NotFound,
        },
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

fn read_hosts_file(root: &NodeRoot) -> Option<String> {
    match root.read(Path::new("/etc/hosts"), MAX_HOSTS_FILE_BYTES) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => {
            if !e.is_missing() {
                // Debug only: a container can make this happen at will.
                log::debug!("hosts file not used: {e}");
            }
            None
        }
    }
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
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

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

    /// A lookup that counts its calls and answers `answer`, after `delay`.
    fn counting_lookup(answer: LookupResult, delay: Duration) -> (Lookup, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        (
            Arc::new(move |_name: &str| {
                c.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(delay);
                answer.clone()
            }),
            calls,
        )
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    /// The view of mount namespace `ns`, reached through `pid`.
    fn in_ns(pid: u32, ns: u64) -> Root {
        Root {
            pid: Some(pid),
            mnt_ns: Some(ns),
            parent: None,
            anchor: None,
        }
    }

    /// Poll until the name has an answer (bounded: 5 s).
    fn settled(r: &mut Resolver, name: &str, root: Root) -> Result<Vec<IpAddr>, Unresolved> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match r.lookup(name, root) {
                Answer::Addrs(a) => return Ok(a.to_vec()),
                Answer::Unknown(Unresolved::InProgress) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Answer::Unknown(why) => return Err(why),
            }
        }
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
    fn hosts_file_answers_case_insensitively_without_lookup() {
        let root = root_with_hosts(HOSTS);
        let (lookup, calls) = counting_lookup(LookupResult::NotFound, Duration::ZERO);
        let mut r = Resolver::with_lookup(&root, lookup);
        assert_eq!(
            settled(&mut r, "proxy.corp", Root::HOST),
            Ok(vec![v4(10, 0, 0, 1), v4(10, 0, 0, 2)])
        );
        assert_eq!(
            settled(&mut r, "PROXY.CORP", Root::HOST),
            Ok(vec![v4(10, 0, 0, 1), v4(10, 0, 0, 2)])
        );
        assert_eq!(
            settled(&mut r, "proxy6.corp", Root::HOST),
            Ok(vec!["fd00::10".parse::<IpAddr>().unwrap()])
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_process_root_has_its_own_hosts_file() {
        // Our own process's root is "/", whose /etc/hosts has localhost;
        // the host root given here has a different answer for it.
        let root = root_with_hosts("10.9.9.9 localhost\n");
        let (lookup, _) = counting_lookup(LookupResult::NotFound, Duration::ZERO);
        let mut r = Resolver::with_lookup(&root, lookup);
        let me = in_ns(std::process::id(), 1);
        let mine = settled(&mut r, "localhost", me).expect("answer");
        assert!(!mine.contains(&v4(10, 9, 9, 9)), "{mine:?}");
        assert!(mine.iter().any(IpAddr::is_loopback), "{mine:?}");
        assert_eq!(
            settled(&mut r, "localhost", Root::HOST),
            Ok(vec![v4(10, 9, 9, 9)])
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_slow_lookup_never_blocks_the_caller() {
        let root = root_with_hosts("");
        let (lookup, calls) = counting_lookup(
            LookupResult::Addrs(vec![v4(198, 51, 100, 7)]),
            Duration::from_millis(300),
        );
        let mut r = Resolver::with_lookup(&root, lookup);
        let started = Instant::now();
        for _ in 0..1000 {
            assert!(matches!(
                r.lookup("slow.example", Root::HOST),
                Answer::Unknown(Unresolved::InProgress)
            ));
        }
        assert!(started.elapsed() < Duration::from_millis(250));
        assert_eq!(
            settled(&mut r, "slow.example", Root::HOST),
            Ok(vec![v4(198, 51, 100, 7)])
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1, "asked once");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn settle_waits_for_a_quick_answer_but_not_for_a_slow_one() {
        let root = root_with_hosts("10.0.0.1 proxy.corp\n");
        let (lookup, _) = counting_lookup(LookupResult::NotFound, Duration::from_secs(3));
        let mut r = Resolver::with_lookup(&root, lookup);
        // A hosts-file answer arrives within the bound.
        r.prefetch("proxy.corp", Root::HOST);
        r.settle(Duration::from_millis(500));
        assert!(matches!(
            r.lookup("proxy.corp", Root::HOST),
            Answer::Addrs([_])
        ));
        // A hanging lookup costs the bound, once.
        r.prefetch("hangs.example", Root::HOST);
        let started = Instant::now();
        r.settle(Duration::from_millis(100));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(90) && waited < Duration::from_millis(1000));
        let started = Instant::now();
        r.settle(Duration::from_millis(100));
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "no second wait"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn negative_and_temporary_answers() {
        let root = root_with_hosts("");
        let (lookup, calls) = counting_lookup(LookupResult::NotFound, Duration::ZERO);
        let mut r = Resolver::with_lookup(&root, lookup);
        assert_eq!(settled(&mut r, "gone.invalid", Root::HOST), Ok(vec![]));
        assert_eq!(settled(&mut r, "gone.invalid", Root::HOST), Ok(vec![]));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "NXDOMAIN cached");

        let (lookup, _) = counting_lookup(LookupResult::Temporary, Duration::ZERO);
        let mut r = Resolver::with_lookup(&root, lookup);
        assert_eq!(
            settled(&mut r, "dead.example", Root::HOST),
            Err(Unresolved::TemporaryFailure)
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn bad_names_are_refused_without_a_lookup() {
        let root = root_with_hosts("");
        let (lookup, calls) = counting_lookup(LookupResult::NotFound, Duration::ZERO);
        let mut r = Resolver::with_lookup(&root, lookup);
        for name in ["", &"a".repeat(300), "nul\0byte"] {
            assert!(matches!(r.lookup(name, Root::HOST), Answer::Addrs([])));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        std::fs::remove_dir_all(root).unwrap();
    }

    /// Processes of one mount namespace share one answer (one lookup, one
    /// entry, whichever pid asked); another namespace asks on its own; a
    /// namespace forgotten (its last process gone) takes its answers along.
    #[test]
    fn answers_are_kept_per_mount_namespace() {
        let root = root_with_hosts("");
        let (lookup, calls) = counting_lookup(
            LookupResult::Addrs(vec![v4(198, 51, 100, 9)]),
            Duration::ZERO,
        );
        let mut r = Resolver::with_lookup(&root, lookup);
        let me = std::process::id();
        assert!(settled(&mut r, "proxy.example", in_ns(me, 7)).is_ok());
        for pid in 0..1000 {
            assert!(matches!(
                r.lookup("proxy.example", in_ns(99_000_000 + pid, 7)),
                Answer::Addrs([_])
            ));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one lookup per namespace");
        assert_eq!((r.names(), r.namespaces()), (1, 1));
        assert!(settled(&mut r, "proxy.example", in_ns(me, 8)).is_ok());
        assert_eq!((r.names(), r.namespaces()), (2, 2));
        r.forget_namespace(7);
        assert_eq!((r.names(), r.namespaces()), (1, 1));
        assert!(matches!(
            r.lookup("proxy.example", in_ns(99_999_991, 8)),
            Answer::Addrs([_])
        ));
        // Bounded: past MAX_NAMES the cache starts over.
        for ns in 0..(MAX_NAMES as u64 + 10) {
            r.store(
                "n.example",
                in_ns(1, 1000 + ns),
                Entry::Pending {
                    since: Instant::now(),
                },
            );
            assert!(r.names() <= MAX_NAMES);
        }
        std::fs::remove_dir_all(root).unwrap();
    }

    /// A short-lived client's view of names: its root is opened when its
    /// name is asked, so the answer comes from its own hosts file even when
    /// it has exited before a worker reads it; one already gone when asked
    /// leaves no answer for its namespace (never the host's in its place),
    /// and the namespace's next process asks again.
    #[test]
    fn a_namespace_is_read_through_the_root_of_the_process_that_asked() {
        // Ours is "/", whose /etc/hosts has localhost; the host root's
        // file has another answer for it.
        let root = root_with_hosts("10.9.9.9 localhost\n");
        let (lookup, calls) = counting_lookup(LookupResult::NotFound, Duration::from_millis(300));
        let mut r = Resolver::with_lookup(&root, lookup);
        assert!(matches!(
            r.lookup("localhost", in_ns(99_999_990, 9)),
            Answer::Unknown(Unresolved::ProcessGone)
        ));
        assert_eq!((r.names(), calls.load(Ordering::SeqCst)), (0, 0));
        // Both workers busy for 300 ms, so the client below is gone before
        // its request is read.
        r.prefetch("busy-1.example", Root::HOST);
        r.prefetch("busy-2.example", Root::HOST);
        let mut client = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        assert!(matches!(
            r.lookup("localhost", in_ns(client.id(), 9)),
            Answer::Unknown(Unresolved::InProgress)
        ));
        client.kill().expect("kill");
        client.wait().expect("reap");
        let answer = settled(&mut r, "localhost", in_ns(99_999_990, 9)).expect("answer");
        assert!(!answer.contains(&v4(10, 9, 9, 9)), "{answer:?}");
        assert!(answer.iter().any(IpAddr::is_loopback), "{answer:?}");
        std::fs::remove_dir_all(root).unwrap();
    }

    /// A client gone before its name was asked is stood in for by its
    /// closest ancestor in the same mount namespace; never by one in
    /// another namespace.
    #[test]
    fn a_gone_client_is_stood_in_for_by_an_ancestor_in_its_namespace() {
        let me = std::process::id();
        let ns = crate::enrich::proc::mount_namespace(Path::new(&format!("/proc/{me}")));
        let gone = |parent: u32, mnt_ns: Option<u64>| Root {
            pid: Some(99_999_990),
            mnt_ns,
            parent: Some(parent),
            anchor: None,
        };
        let proc_root = Path::new("/proc");
        assert!(open_view(proc_root, 99_999_990, gone(me, ns)).is_some());
        // A parent in a mount namespace of its own (`unshare -m`) is
        // passed over for its own parent, us.
        let mut child = std::process::Command::new("unshare")
            .args(["-m", "sleep", "30"])
            .spawn()
            .expect("unshare");
        let child_dir = std::path::PathBuf::from(format!("/proc/{}", child.id()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while crate::enrich::proc::mount_namespace(&child_dir) == ns && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_ne!(crate::enrich::proc::mount_namespace(&child_dir), ns);
        assert!(open_view(proc_root, 99_999_990, gone(child.id(), ns)).is_some());
        child.kill().expect("kill");
        child.wait().expect("reap");
        // Another namespace's process is no stand-in.
        assert!(open_view(proc_root, 99_999_990, gone(me, Some(1))).is_none());
        assert!(open_view(proc_root, 99_999_990, gone(0, ns)).is_none());
        // No ancestor left, but a process the cache knows in that
        // namespace (its anchor): it stands in, if still there.
        let anchored = |anchor: u32| Root {
            anchor: Some(anchor),
            ..gone(0, ns)
        };
        assert!(open_view(proc_root, 99_999_990, anchored(me)).is_some());
        assert!(open_view(proc_root, 99_999_990, anchored(99_999_991)).is_none());
    }

    #[test]
    fn the_queue_is_bounded() {
        let root = root_with_hosts("");
        let (lookup, _) = counting_lookup(LookupResult::NotFound, Duration::from_secs(2));
        let mut r = Resolver::with_lookup(&root, lookup);
        let mut full = 0;
        for i in 0..(QUEUE + WORKERS + 10) {
            if let Answer::Unknown(Unresolved::QueueFull) =
                r.lookup(&format!("h{i}.invalid"), Root::HOST)
            {
                full += 1;
            }
        }
        assert!(full >= 10, "{full} lookups refused");
        std::fs::remove_dir_all(root).unwrap();
    }
}
