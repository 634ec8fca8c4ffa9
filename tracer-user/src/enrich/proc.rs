//! What /proc says about a process: executable, arguments, parent, cgroup,
//! and the proxy part of its environment.
//!
//! Read once per process (pid + start time) and cached: the kernel announces
//! a process at its first connect after exec or pid reuse (a `Process`
//! record), which is when the cache entry is (re)read. A process may exit at
//! any moment: every field is best effort, and what could be read is kept.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use tracer_common::envcap;

use crate::{
    decode::KernelEnv,
    enrich::{
        cgroup::{cgroup_info, CgroupInfo},
        cgroupns::host_cgroups,
        pod::{PodNamer, PodNames},
        proxy_env::ProxyEnv,
    },
    redact::args::redact_args,
};

/// Longest environment read: /proc/<pid>/environ is the exec-time
/// environment, normally a few KB; some CI jobs carry hundreds of KB. 4 MiB
/// bounds the memory a hostile process can make us use.
const MAX_ENVIRON: u64 = 4 * 1024 * 1024;
/// Arguments kept per event: enough to recognise a command line, bounded so
/// one process cannot bloat every event.
const MAX_ARGS: usize = 64;
const MAX_ARG_LEN: usize = 1024;
/// Processes remembered; beyond this the cache starts over (a node has far
/// fewer processes that make connections).
const MAX_ENTRIES: usize = 16384;

/// The proxy environment of a process, or why it is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvState {
    Read(ProxyEnv),
    Unavailable(String),
}

#[derive(Debug, Clone, Default)]
pub struct ProcInfo {
    pub start_time: Option<u64>,
    pub ppid: Option<u32>,
    pub exe: Option<String>,
    pub args: Option<Vec<String>>,
    pub cgroup: Option<CgroupInfo>,
    /// Its mount namespace (the inode of /proc/<pid>/ns/mnt): processes in
    /// one namespace share one view of /etc/hosts.
    pub mnt_ns: Option<u64>,
    pub env: Option<EnvState>,
    /// The pod's names, for a process in a pod's container (enrich/pod.rs),
    /// shared by every process of that container.
    pub pod: Option<Arc<PodNames>>,
}

impl ProcInfo {
    pub fn proxy_env(&self) -> Option<&ProxyEnv> {
        match &self.env {
            Some(EnvState::Read(env)) => Some(env),
            _ => None,
        }
    }
}

/// Read everything about `pid` that can still be read. `kernel_env` is the
/// proxy part of its environment as the kernel read it at its first
/// connect (`Record::Process`), which outlives the process.
pub fn read_proc(proc_root: &Path, pid: u32, kernel_env: Option<&KernelEnv>) -> ProcInfo {
    read_proc_keeping(proc_root, pid, kernel_env, true)
}

/// `read_proc`, with the command line read (redacted) only when `args`.
fn read_proc_keeping(
    proc_root: &Path,
    pid: u32,
    kernel_env: Option<&KernelEnv>,
    args: bool,
) -> ProcInfo {
    let dir = proc_root.join(pid.to_string());
    let mut info = ProcInfo::default();
    if let Ok(process) = procfs::process::Process::new_with_root(dir.clone()) {
        if let Ok(stat) = process.stat() {
            // Also what `audit` compares against (`start_time`).
            info.start_time = Some(stat.starttime);
            info.ppid = u32::try_from(stat.ppid).ok();
        }
        info.exe = process.exe().ok().map(|p| p.to_string_lossy().into_owned());
        if args {
            info.args = process.cmdline().ok().map(command_line);
        }
        info.cgroup = process
            .cgroups()
            .ok()
            .map(|groups| cgroup_info(&on_the_node(groups.0)));
    }
    // /proc's namespace is the one the resolver will reach through the
    // process's root; the kernel's (read at its connect) serves a process
    // already gone, a zombie without namespaces.
    info.mnt_ns = mount_namespace(&dir).or(kernel_env.and_then(|k| k.mnt_ns));
    // Likewise its parent: a reaped process has no stat to read.
    info.ppid = info.ppid.or(kernel_env.and_then(|k| k.parent));
    info.env = Some(environment(&dir, kernel_env));
    info
}

/// The v2 line's path as the node names it, whatever cgroup namespace the
/// tracer runs in (cgroupns.rs): naming (unit, container, pod) and the
/// exchange watch then see `/system.slice/containerd.service`, not
/// `/../../system.slice/containerd.service`. Left as read when it cannot be
/// placed.
fn on_the_node(mut groups: Vec<procfs::ProcessCGroup>) -> Vec<procfs::ProcessCGroup> {
    let Ok(tree) = host_cgroups() else {
        return groups;
    };
    for g in groups
        .iter_mut()
        .filter(|g| g.hierarchy == 0 && g.controllers.is_empty())
    {
        if let Some(path) = tree.host_path(&g.pathname) {
            g.pathname = path;
        }
    }
    groups
}

/// The start time (clock ticks since boot) of the process `pid` is now,
/// if any: with the pid, what tells a process from a later one reusing it.
fn start_time(proc_root: &Path, pid: u32) -> Option<u64> {
    let process = procfs::process::Process::new_with_root(proc_root.join(pid.to_string())).ok()?;
    process.stat().ok().map(|stat| stat.starttime)
}

/// "mnt:[4026531841]" -> 4026531841.
pub(crate) fn mount_namespace(dir: &Path) -> Option<u64> {
    let link = std::fs::read_link(dir.join("ns/mnt")).ok()?;
    let text = link.to_str()?;
    text.strip_prefix("mnt:[")?.strip_suffix(']')?.parse().ok()
}

/// The proxy environment: the kernel's read when it is complete (it is the
/// process's own block at the moment of the connect, and spares reading a
/// large /proc/<pid>/environ); else /proc; else whatever part the kernel
/// did read, which beats nothing for a process that is gone.
fn environment(dir: &Path, kernel_env: Option<&KernelEnv>) -> EnvState {
    if let Some(k) = kernel_env.filter(|k| k.is_complete()) {
        return EnvState::Read(proxy_env_of(k));
    }
    match (read_environ(dir), kernel_env) {
        (EnvState::Read(env), _) => EnvState::Read(env),
        (EnvState::Unavailable(_), Some(k)) if !k.entries.is_empty() => {
            EnvState::Read(proxy_env_of(k))
        }
        (EnvState::Unavailable(why), Some(k)) => match k.shortfall() {
            Some(short) => EnvState::Unavailable(format!("{why}, and {short}")),
            None => EnvState::Unavailable(why),
        },
        (unavailable, None) => unavailable,
    }
}

/// The kernel's `KEY=VALUE\0` entries are environ bytes already; the CGI
/// facts come as flag bits (the value of REQUEST_METHOD never leaves the
/// kernel).
fn proxy_env_of(k: &KernelEnv) -> ProxyEnv {
    let mut env = ProxyEnv::from_environ(&k.entries);
    env.request_method_present = k.flags & envcap::REQUEST_METHOD_PRESENT != 0;
    env.request_method_set = k.flags & envcap::REQUEST_METHOD_SET != 0;
    env
}

fn read_environ(dir: &Path) -> EnvState {
    use std::io::Read;
    let file = match std::fs::File::open(dir.join("environ")) {
        Ok(f) => f,
        Err(e) => return EnvState::Unavailable(unavailable_reason(&e)),
    };
    let mut raw = Vec::new();
    match file.take(MAX_ENVIRON).read_to_end(&mut raw) {
        // An exited zombie or kernel thread reads as empty: nothing to say.
        Ok(_) => EnvState::Read(ProxyEnv::from_environ(&raw)),
        Err(e) => EnvState::Unavailable(unavailable_reason(&e)),
    }
}

fn unavailable_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            "process exited before its environment could be read".into()
        }
        std::io::ErrorKind::PermissionDenied => {
            "permission denied reading /proc/<pid>/environ".into()
        }
        _ => format!("cannot read environment: {e}"),
    }
}

/// The arguments as they may be emitted: at most `MAX_ARGS` of at most
/// `MAX_ARG_LEN` bytes, secrets redacted (`redact::args`: passwords,
/// tokens, secret headers, URL credentials). Cut before redaction, so a
/// huge argument costs no more than a short one, and again after it.
fn command_line(args: Vec<String>) -> Vec<String> {
    let cut: Vec<String> = args
        .into_iter()
        .take(MAX_ARGS)
        .map(|mut a| {
            truncate_at_char(&mut a, MAX_ARG_LEN);
            a
        })
        .collect();
    redact_args(&cut)
        .into_iter()
        .map(|mut a| {
            truncate_at_char(&mut a, MAX_ARG_LEN);
            a
        })
        .collect()
}

fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// A map keyed by pid. Looked up for every event; pids are chosen by the
/// kernel, not by an attacker, so a fast non-DoS-resistant hash is fine.
pub type PidMap<V> = foldhash::HashMap<u32, V>;

/// pid -> what we know, valid until the kernel announces the pid again.
pub struct ProcCache {
    proc_root: PathBuf,
    /// Read and keep command lines (`--args redacted`); `--args none`
    /// drops them altogether.
    args: bool,
    entries: PidMap<Entry>,
    /// Processes the kernel reported gone, oldest first, with the snapshot
    /// they had: evicted once `EXIT_GRACE` has passed, so their last
    /// attempts (still in the batched ring) find them.
    exited: std::collections::VecDeque<(std::time::Instant, u32, Arc<ProcInfo>)>,
    /// Names the pod of a container's process, once per container.
    pods: Option<PodNamer>,
    /// Mount namespace -> entries whose current snapshot is in it: when a
    /// count drops to zero, the namespace's last known process is gone and
    /// the caches keyed by namespace (the resolver's) can forget it.
    namespaces: foldhash::HashMap<u64, Members>,
    /// Namespaces whose count dropped to zero since `take_gone_namespaces`.
    gone_namespaces: Vec<u64>,
    /// Pids read without a kernel announcement (`get` on a miss: adopted
    /// at start, or an announcement lost to a full ring), with the start
    /// time read then. The kernel sends an exit record only for a process
    /// it announced, so nothing else would ever tell the cache these are
    /// gone: `audit` checks a few of them on every tick.
    unannounced: std::collections::VecDeque<(u32, Option<u64>)>,
}

/// The cached processes of one mount namespace.
#[derive(Default)]
struct Members {
    count: u32,
    /// The oldest of them still cached (as far as this cache knows): the
    /// namespace's stand-in when a process of it is gone before its proxy's
    /// name could be resolved through its own root (`ProcCache::anchor`).
    anchor: u32,
}

/// The snapshot of a pid's current image, and of the one before.
///
/// An attempt of the old image can be reported after the new image was
/// announced: when one thread is in connect() and another calls execve,
/// exec closes the close-on-exec socket (`begin_new_exec()` ->
/// `do_close_on_exec()`, fs/exec.c) and the attempt ends `aborted` before
/// the new image connects; both records then reach userspace in one batch,
/// and announcements are handled first. Such an attempt started before the
/// new image's first attempt (`since_ns`), so it gets the old snapshot
/// instead of the new image's command line. The same holds for a late
/// outcome of a dead process whose pid was reused.
struct Entry {
    current: Arc<ProcInfo>,
    /// Start of the attempt that announced `current`; 0 when unknown.
    since_ns: u64,
    previous: Option<Arc<ProcInfo>>,
}

/// How long an exited process's snapshot is kept for attempts still in the
/// ring buffer: far longer than the 20 ms batching, short enough that a
/// node with churning processes holds only a few seconds of them.
pub const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

impl ProcCache {
    pub fn new(proc_root: PathBuf) -> Self {
        Self {
            proc_root,
            args: true,
            entries: PidMap::default(),
            exited: std::collections::VecDeque::new(),
            pods: None,
            namespaces: foldhash::HashMap::default(),
            gone_namespaces: Vec::new(),
            unannounced: std::collections::VecDeque::new(),
        }
    }

    /// Keep no command lines (`--args none`).
    pub fn without_args(mut self) -> Self {
        self.args = false;
        self
    }

    /// Name the pods of containers' processes from now on.
    pub fn with_pods(mut self, namer: PodNamer) -> Self {
        self.pods = Some(namer);
        self
    }

    /// Containers whose pod names are remembered.
    pub fn pods(&self) -> usize {
        self.pods.as_ref().map_or(0, PodNamer::len)
    }

    /// The kernel says `pid` connects for the first time since exec (or is
    /// a new process reusing the pid), with an attempt that started at
    /// `since_ns`: read it now, while it is alive. Returns the snapshot now
    /// cached for `pid`.
    pub fn refresh(&mut self, pid: u32, since_ns: u64, kernel_env: &KernelEnv) -> Arc<ProcInfo> {
        let fresh = read_proc_keeping(&self.proc_root, pid, Some(kernel_env), self.args);
        if let Some(old) = self.entries.get(&pid) {
            // Announced again (the kernel forgot it) but already gone, and
            // the kernel could not read its environment either: the older
            // snapshot is all there is.
            if fresh.start_time.is_none()
                && old.current.start_time.is_some()
                && !kernel_env.is_complete()
            {
                return Arc::clone(&old.current);
            }
        }
        let previous = self.entries.get(&pid).map(|e| Arc::clone(&e.current));
        self.insert(pid, fresh, since_ns, previous)
    }

    /// The snapshot for an attempt of `pid` that started at `start_ns`:
    /// the image before the latest announcement when the attempt started
    /// before it (see [`Entry`]). Read now on a miss (the tracer started
    /// after the process's first connect, or the announcement was lost).
    pub fn get(&mut self, pid: u32, start_ns: u64) -> Arc<ProcInfo> {
        if let Some(e) = self.entries.get(&pid) {
            if let Some(previous) = &e.previous {
                if start_ns != 0 && start_ns < e.since_ns {
                    return Arc::clone(previous);
                }
            }
            return Arc::clone(&e.current);
        }
        let info = read_proc_keeping(&self.proc_root, pid, None, self.args);
        // Bounded like the entries: an item whose entry went another way
        // (announced and exited since) waits in the queue until the audit
        // reaches it, so the queue could outgrow the cache without this.
        if self.unannounced.len() >= MAX_ENTRIES {
            self.unannounced.pop_front();
        }
        self.unannounced.push_back((pid, info.start_time));
        self.insert(pid, info, 0, None)
    }

    /// Check up to `budget` of the processes read without an announcement
    /// (`unannounced`), oldest first: one that is gone (its /proc entry
    /// missing, or its pid now another process, told by the start time) is
    /// handled as if the kernel had said it exited; one still running goes
    /// to the back. An entry the kernel has announced since (its snapshot
    /// replaced by `refresh`) is the kernel's to report and leaves the
    /// queue. Bounded work per call: at most `budget` reads of
    /// /proc/<pid>/stat.
    pub fn audit(&mut self, now: std::time::Instant, budget: usize) {
        for _ in 0..budget.min(self.unannounced.len()) {
            let Some((pid, start)) = self.unannounced.pop_front() else {
                break;
            };
            let same = self
                .entries
                .get(&pid)
                .is_some_and(|e| e.current.start_time == start && e.since_ns == 0);
            if !same {
                continue;
            }
            let running = start.is_some() && start_time(&self.proc_root, pid) == start;
            if running {
                self.unannounced.push_back((pid, start));
            } else {
                self.exited(pid, now);
            }
        }
    }

    /// Processes read without an announcement and still checked by `audit`.
    pub fn unannounced(&self) -> usize {
        self.unannounced.len()
    }

    /// The kernel says `pid` exited: forget it after `EXIT_GRACE`.
    pub fn exited(&mut self, pid: u32, now: std::time::Instant) {
        if let Some(entry) = self.entries.get(&pid) {
            self.exited
                .push_back((now, pid, Arc::clone(&entry.current)));
        }
    }

    /// Evict the processes that exited more than `EXIT_GRACE` before `now`
    /// (unless the pid has a new snapshot since: reused by a new process).
    /// Returns the evicted snapshots, for the caches keyed by them.
    pub fn sweep(&mut self, now: std::time::Instant) -> Vec<(u32, Arc<ProcInfo>)> {
        let mut evicted = Vec::new();
        while let Some((at, _, _)) = self.exited.front() {
            if now.duration_since(*at) < EXIT_GRACE {
                break;
            }
            let Some((_, pid, info)) = self.exited.pop_front() else {
                break;
            };
            if self
                .entries
                .get(&pid)
                .is_some_and(|entry| Arc::ptr_eq(&entry.current, &info))
            {
                if let Some(entry) = self.entries.remove(&pid) {
                    self.uncount(entry.current.mnt_ns, pid);
                    evicted.extend(entry.previous.map(|previous| (pid, previous)));
                }
                evicted.push((pid, info));
            }
        }
        if let Some(namer) = self.pods.as_mut() {
            // After the evictions: a container whose last process just
            // went is forgotten now (the caller drops `evicted` next, and
            // the sweep after that sees it).
            namer.sweep(now);
        }
        evicted
    }

    /// Mount namespaces whose last cached process was evicted since the
    /// last call (each at most once per time it emptied).
    pub fn take_gone_namespaces(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.gone_namespaces)
    }

    /// Mount namespaces of the processes cached now.
    pub fn namespaces(&self) -> usize {
        self.namespaces.len()
    }

    /// A process of mount namespace `mnt_ns` cached now, the oldest the
    /// cache knows (an adopted resident, a container's first process to
    /// connect), which may have exited since: whoever uses it checks
    /// that it is still in that namespace.
    pub fn anchor(&self, mnt_ns: u64) -> Option<u32> {
        self.namespaces
            .get(&mnt_ns)
            .map(|m| m.anchor)
            .filter(|&pid| pid != 0)
    }

    fn count(&mut self, mnt_ns: Option<u64>, pid: u32) {
        if let Some(ns) = mnt_ns {
            let members = self.namespaces.entry(ns).or_default();
            if members.anchor == 0 {
                members.anchor = pid;
            }
            members.count += 1;
        }
    }

    fn uncount(&mut self, mnt_ns: Option<u64>, pid: u32) {
        let Some(ns) = mnt_ns else { return };
        if let Some(members) = self.namespaces.get_mut(&ns) {
            members.count = members.count.saturating_sub(1);
            if members.count == 0 {
                self.namespaces.remove(&ns);
                self.gone_namespaces.push(ns);
            } else if members.anchor == pid {
                // The next process of the namespace to be cached takes over.
                members.anchor = 0;
            }
        }
    }

    /// Processes cached now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(
        &mut self,
        pid: u32,
        mut info: ProcInfo,
        since_ns: u64,
        previous: Option<Arc<ProcInfo>>,
    ) -> Arc<ProcInfo> {
        // Per process, never per event: the first process of a container
        // reads its bundle, the others share the answer.
        if let (Some(namer), Some(cgroup)) = (self.pods.as_mut(), info.cgroup.as_ref()) {
            if let Some(id) = &cgroup.container_id {
                info.pod = namer.names_of(id, cgroup.pod_uid.as_deref());
            }
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
            self.unannounced.clear();
            // Starting over: every namespace counted so far is let go (the
            // ones still in use are read again with their processes).
            self.gone_namespaces
                .extend(self.namespaces.drain().map(|(ns, _)| ns));
        }
        let info = Arc::new(info);
        self.count(info.mnt_ns, pid);
        let replaced = self.entries.insert(
            pid,
            Entry {
                current: Arc::clone(&info),
                since_ns,
                previous,
            },
        );
        if let Some(old) = replaced {
            self.uncount(old.current.mnt_ns, pid);
        }
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel read of an environment: `entries`, with `flags`.
    fn kernel_env(entries: Vec<u8>, flags: u32) -> KernelEnv {
        KernelEnv {
            entries,
            flags,
            mnt_ns: None,
            parent: None,
        }
    }

    #[test]
    fn reads_our_own_process() {
        let info = read_proc(Path::new("/proc"), std::process::id(), None);
        assert!(info.start_time.is_some());
        assert!(info.exe.is_some());
        assert!(info.args.as_ref().is_some_and(|a| !a.is_empty()));
        assert!(matches!(info.env, Some(EnvState::Read(_))));
        assert!(info.mnt_ns.is_some_and(|ns| ns > 0));
    }

    /// An attempt that started before the latest announcement of its pid
    /// (an old image's attempt ended by exec, reported after the new image
    /// announced itself) gets the old snapshot; the announcing attempt and
    /// later ones get the new one.
    #[test]
    fn attempts_before_a_new_announcement_keep_the_old_snapshot() {
        let me = std::process::id();
        let env = kernel_env(
            b"HTTPS_PROXY=http://127.0.0.1:1\0".to_vec(),
            envcap::COMPLETE,
        );
        let mut cache = ProcCache::new(PathBuf::from("/proc"));
        let old = cache.refresh(me, 1_000, &env);
        let new = cache.refresh(me, 5_000, &env);
        assert!(Arc::ptr_eq(&cache.get(me, 4_999), &old));
        assert!(Arc::ptr_eq(&cache.get(me, 5_000), &new));
        assert!(Arc::ptr_eq(&cache.get(me, 9_000), &new));
        // Unknown start time: the current snapshot.
        assert!(Arc::ptr_eq(&cache.get(me, 0), &new));
    }

    #[test]
    fn a_vanished_process_yields_what_it_can() {
        // pid_max is at most 2^22, so this pid cannot exist.
        let info = read_proc(Path::new("/proc"), 99_999_999, None);
        assert!(info.start_time.is_none());
        match info.env {
            Some(EnvState::Unavailable(reason)) => assert!(reason.contains("exited")),
            other => panic!("expected unavailable, got {other:?}"),
        }
    }

    #[test]
    fn a_gone_process_keeps_the_proxy_env_the_kernel_read() {
        let kernel = kernel_env(
            b"HTTPS_PROXY=http://u:secret@127.0.0.1:9\0".to_vec(),
            envcap::COMPLETE | envcap::REQUEST_METHOD_PRESENT,
        );
        let info = read_proc(Path::new("/proc"), 99_999_999, Some(&kernel));
        let env = info.proxy_env().expect("the kernel's read");
        assert_eq!(env.get("HTTPS_PROXY"), Some("http://u:secret@127.0.0.1:9"));
        assert!(env.request_method_present && !env.request_method_set);
        // A partial read still beats nothing...
        let partial = KernelEnv {
            flags: envcap::FAULT,
            ..kernel
        };
        let info = read_proc(Path::new("/proc"), 99_999_999, Some(&partial));
        assert!(info.proxy_env().is_some());
        // ...and an empty one says why both reads failed.
        let nothing = kernel_env(Vec::new(), envcap::FAULT);
        let info = read_proc(Path::new("/proc"), 99_999_999, Some(&nothing));
        match info.env {
            Some(EnvState::Unavailable(reason)) => {
                assert!(
                    reason.contains("exited") && reason.contains("not resident"),
                    "{reason}"
                )
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
    }

    #[test]
    fn a_complete_kernel_read_is_preferred_to_proc() {
        // Our own process is alive, but the kernel's read wins.
        let kernel = kernel_env(
            b"http_proxy=http://127.0.0.1:8\0".to_vec(),
            envcap::COMPLETE,
        );
        let info = read_proc(Path::new("/proc"), std::process::id(), Some(&kernel));
        let env = info.proxy_env().expect("read");
        assert_eq!(env.get("http_proxy"), Some("http://127.0.0.1:8"));
    }

    #[test]
    fn processes_never_announced_are_found_gone_by_the_audit() {
        let mut cache = ProcCache::new(PathBuf::from("/proc"));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let me = std::process::id();
        let _ = cache.get(pid, 0);
        let _ = cache.get(me, 0);
        assert_eq!(cache.unannounced(), 2);
        let t0 = std::time::Instant::now();
        // Both alive: kept, still audited.
        cache.audit(t0, 64);
        assert_eq!(cache.unannounced(), 2);
        assert!(cache.sweep(t0 + EXIT_GRACE).is_empty());
        child.kill().expect("kill");
        child.wait().expect("reap");
        // A budget of one reaches the child only on the second call.
        cache.audit(t0, 1);
        cache.audit(t0, 1);
        assert_eq!(cache.unannounced(), 1, "the gone child leaves the audit");
        let evicted = cache.sweep(t0 + EXIT_GRACE);
        assert_eq!(evicted.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [pid]);
        assert_eq!(cache.len(), 1);
        // Announced by the kernel since: the kernel reports its exit, the
        // audit lets it go without reading /proc.
        cache.refresh(me, 7, &kernel_env(Vec::new(), envcap::COMPLETE));
        cache.audit(t0, 64);
        assert_eq!(cache.unannounced(), 0);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn exited_processes_are_evicted_after_the_grace() {
        let mut cache = ProcCache::new(PathBuf::from("/proc"));
        let me = std::process::id();
        let first = cache.get(me, 0);
        let t0 = std::time::Instant::now();
        cache.exited(me, t0);
        assert!(cache.sweep(t0).is_empty(), "kept during the grace");
        assert!(Arc::ptr_eq(&cache.get(me, 0), &first));
        let evicted = cache.sweep(t0 + EXIT_GRACE);
        assert_eq!(evicted.len(), 1);
        assert!(cache.is_empty());
        // A pid reused (a new snapshot) before the sweep is kept.
        let _ = cache.get(me, 0);
        cache.exited(me, t0);
        cache.refresh(me, 0, &kernel_env(Vec::new(), envcap::COMPLETE));
        assert!(cache.sweep(t0 + EXIT_GRACE).is_empty());
        assert_eq!(cache.len(), 1);
    }

    /// The namespace of our own process is let go when its last cached
    /// process is evicted, not before, and once.
    #[test]
    fn a_namespace_is_gone_with_its_last_process() {
        let mut cache = ProcCache::new(PathBuf::from("/proc"));
        let me = std::process::id();
        let ns = cache.get(me, 0).mnt_ns.expect("our namespace");
        let _ = cache.get(1, 0);
        assert!(cache.namespaces() >= 1);
        // The oldest process cached in a namespace is its anchor.
        assert_eq!(cache.anchor(ns), Some(me));
        let t0 = std::time::Instant::now();
        cache.exited(me, t0);
        cache.sweep(t0 + EXIT_GRACE);
        // pid 1 may share our namespace (not in a container): then the
        // namespace is still used.
        let shared = cache.get(1, 0).mnt_ns == Some(ns);
        assert_eq!(cache.take_gone_namespaces().contains(&ns), !shared);
        cache.exited(1, t0);
        cache.sweep(t0 + EXIT_GRACE);
        let gone = cache.take_gone_namespaces();
        assert_eq!(gone.contains(&ns), shared, "{gone:?}");
        assert_eq!(cache.namespaces(), 0);
        assert!(cache.take_gone_namespaces().is_empty());
    }

    #[test]
    fn command_lines_are_bounded_and_redacted() {
        let mut args = vec![
            "curl".to_string(),
            "-u".into(),
            "bob:S3CR3T".into(),
            format!("--token={}", "x".repeat(5000)),
        ];
        args.extend((0..100).map(|i| i.to_string()));
        let out = command_line(args);
        assert_eq!(out.len(), MAX_ARGS);
        assert_eq!(out[2], "bob:REDACTED");
        assert_eq!(out[3], "--token=REDACTED");
        assert!(out.iter().all(|a| a.len() <= MAX_ARG_LEN));
    }

    #[test]
    fn without_args_no_command_line_is_kept() {
        let mut cache = ProcCache::new(PathBuf::from("/proc")).without_args();
        let me = std::process::id();
        assert!(cache.get(me, 0).args.is_none());
        let mut cache = ProcCache::new(PathBuf::from("/proc"));
        assert!(cache.get(me, 0).args.is_some());
    }

    #[test]
    fn long_arguments_are_cut_on_a_char_boundary() {
        let mut s = "é".repeat(1000);
        truncate_at_char(&mut s, 1023);
        assert!(s.len() <= 1023);
        assert!(s.chars().all(|c| c == 'é'));
    }
}
