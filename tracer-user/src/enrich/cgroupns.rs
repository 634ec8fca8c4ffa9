//! The node's cgroup v2 tree, whatever cgroup namespace the tracer runs in.
//!
//! `/proc/<pid>/cgroup` shows a path relative to the root of the *reader's*
//! cgroup namespace (cgroup_namespaces(7); kernel/cgroup/cgroup.c,
//! proc_cgroup_show -> cgroup_path_ns). A DaemonSet pod on a cgroup v2 node
//! gets a private cgroup namespace (the CRI default), so a host daemon in
//! `/system.slice/containerd.service` reads as
//! `0::/../../system.slice/containerd.service` to the tracer, and the
//! `root` field of the cgroup2 line in `/proc/self/mountinfo` (the mount of
//! the node's hierarchy, a hostPath volume) reads `/../..`
//! (cgroup_show_path: also relative to the reader's namespace root).
//!
//! Joining such a path under the mount lands outside it, and the names
//! above the namespace root (`kubepods`, for a pod that shares an ancestor
//! with the tracer's) are not in the text at all. So the tracer learns once,
//! at first use, where its own namespace root sits in the node's tree: the
//! mount's root says how many levels up the hierarchy root is (k), and the
//! directory k levels down from the mount that holds the tracer's own
//! cgroup (its pid in `cgroup.procs`) names them. A namespace root never
//! moves, so every later path is translated by string work alone
//! ([`resolve`]): attach, prune, naming and the root-cgroup guard all use
//! the node's paths, and in the host's namespace (the systemd unit) the
//! translation is the identity and nothing is searched.

use std::{
    io::Read,
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// Directories visited at most while looking for the tracer's own cgroup:
/// a node has a few thousand cgroups; the bound keeps a hostile tree (or a
/// runaway one) from stalling start-up.
const MAX_WALK: usize = 100_000;
/// Longest `cgroup.procs` read while looking for the tracer's pid.
const MAX_PROCS: u64 = 1024 * 1024;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CgroupTreeError {
    #[error("no cgroup v2 hierarchy is mounted (looked in /proc/self/mountinfo); the connect hooks attach to its root")]
    NoCgroup2,
    #[error(
        "the cgroup v2 mount at {0} is not the root of the node's hierarchy (a container's own cgroup namespace shows only its subtree): mount the node's /sys/fs/cgroup into the container (a hostPath volume, as deploy/kubernetes/tracer.yaml does)"
    )]
    NotRoot(PathBuf),
}

/// The node's cgroup v2 hierarchy as this process can reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCgroups {
    /// Where the hierarchy's root is mounted: /sys/fs/cgroup on a pure v2
    /// node, /sys/fs/cgroup/unified on a hybrid one.
    mount: PathBuf,
    /// The node's path of this process's cgroup namespace root, as
    /// components (empty in the node's own namespace). None when it could
    /// not be found: paths that climb above the namespace root then stay
    /// untranslated.
    ns_root: Option<Vec<String>>,
}

impl HostCgroups {
    /// Where the hierarchy's root is mounted.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// This process's cgroup namespace is the node's (or was placed).
    pub fn ns_root_known(&self) -> bool {
        self.ns_root.is_some()
    }

    /// The node's path (`/system.slice/containerd.service`) of a v2 path as
    /// this process reads it in /proc/<pid>/cgroup. None when it cannot be
    /// placed.
    pub fn host_path(&self, ns_path: &str) -> Option<String> {
        resolve(self.ns_root.as_deref()?, ns_path)
    }

    /// The node's v2 path of `pid` (its `0::` line, translated).
    pub fn path_of(&self, proc_root: &Path, pid: u32) -> Option<String> {
        let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
        let raw = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        self.host_path(raw)
    }

    /// The directory of a node path under the mount; None for a path that
    /// is not plain (`..`, `.`, empty parts), so nothing outside the
    /// hierarchy can be named.
    pub fn dir(&self, host_path: &str) -> Option<PathBuf> {
        let rel = host_path.strip_prefix('/')?;
        if rel.is_empty() {
            return Some(self.mount.clone());
        }
        rel.split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
            .then(|| self.mount.join(rel))
    }

    /// Whether `dir` is the root of the hierarchy. Asked of the kernel, not
    /// of a path's spelling: `cgroup.events` exists in every cgroup but the
    /// root (CFTYPE_NOT_ON_ROOT in kernel/cgroup/cgroup.c, Linux 4.5+).
    pub fn is_root_dir(dir: &Path) -> bool {
        dir.join("cgroup.procs").exists() && !dir.join("cgroup.events").exists()
    }

    /// Look at this process's mounts and namespace.
    pub fn discover() -> Result<HostCgroups, CgroupTreeError> {
        let mounts = procfs::process::Process::myself()
            .and_then(|p| p.mountinfo())
            .map_err(|_| CgroupTreeError::NoCgroup2)?;
        // A later line is mounted over an earlier one at the same point:
        // look from the last, once per mount point.
        let mut seen: Vec<&Path> = Vec::new();
        let mut not_root = None;
        for m in mounts.0.iter().rev().filter(|m| m.fs_type == "cgroup2") {
            if seen.contains(&m.mount_point.as_path()) {
                continue;
            }
            seen.push(&m.mount_point);
            if !Self::is_root_dir(&m.mount_point) {
                not_root.get_or_insert_with(|| m.mount_point.clone());
                continue;
            }
            let ns_root = match ups_only(&m.root) {
                Some(0) => Some(Vec::new()),
                Some(k) => find_ns_root(&m.mount_point, k),
                // The hierarchy's root is an ancestor of every namespace
                // root, so its path from ours is only "..": anything else
                // is a kernel we do not understand.
                None => None,
            };
            if ns_root.is_none() {
                log::warn!(
                    "cannot place this process's cgroup namespace in the node's cgroup tree (mount root {:?}): cgroup paths of other processes are reported as read",
                    m.root
                );
            }
            return Ok(HostCgroups {
                mount: m.mount_point.clone(),
                ns_root,
            });
        }
        Err(not_root.map_or(CgroupTreeError::NoCgroup2, CgroupTreeError::NotRoot))
    }
}

/// The tree, learned once per process (a namespace root never moves).
pub fn host_cgroups() -> Result<&'static HostCgroups, CgroupTreeError> {
    static TREE: OnceLock<Result<HostCgroups, CgroupTreeError>> = OnceLock::new();
    TREE.get_or_init(HostCgroups::discover)
        .as_ref()
        .map_err(Clone::clone)
}

/// `ns_root` joined with `ns_path`, `..` and `.` resolved; None when the
/// path climbs above the hierarchy's root or is not absolute. The kernel's
/// " (deleted)" suffix is kept.
pub fn resolve(ns_root: &[String], ns_path: &str) -> Option<String> {
    let (path, deleted) = match ns_path.strip_suffix(" (deleted)") {
        Some(p) => (p, " (deleted)"),
        None => (ns_path, ""),
    };
    let rel = path.strip_prefix('/')?;
    let mut out: Vec<&str> = ns_root.iter().map(String::as_str).collect();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            name => out.push(name),
        }
    }
    Some(format!("/{}{deleted}", out.join("/")))
}

/// `/../../..` -> 3, `/` -> 0; None when the path names a directory.
fn ups_only(path: &str) -> Option<usize> {
    let mut n = 0;
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => n += 1,
            _ => return None,
        }
    }
    Some(n)
}

/// The node's path of this process's namespace root, `depth` levels below
/// the hierarchy's root mounted at `mount`: the directory at that depth
/// under which this process's own cgroup (`/proc/self/cgroup`, relative to
/// the namespace root) lists its pid.
fn find_ns_root(mount: &Path, depth: usize) -> Option<Vec<String>> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    // Moved above its namespace root after unshare: the names between are
    // not in the text; not a layout any runtime makes.
    if own.split('/').any(|c| c == "..") {
        return None;
    }
    let own_rel = own.trim_start_matches('/');
    let pid = std::process::id().to_string();
    let holds_us = |dir: &Path| {
        let procs = if own_rel.is_empty() {
            dir.join("cgroup.procs")
        } else {
            dir.join(own_rel).join("cgroup.procs")
        };
        let mut text = String::new();
        std::fs::File::open(procs)
            .and_then(|f| f.take(MAX_PROCS).read_to_string(&mut text))
            .is_ok()
            && text.lines().any(|l| l.trim() == pid)
    };
    let mut stack: Vec<(PathBuf, usize)> = vec![(PathBuf::new(), 0)];
    let mut visited = 0;
    while let Some((rel, d)) = stack.pop() {
        visited += 1;
        if visited > MAX_WALK {
            return None;
        }
        let dir = mount.join(&rel);
        if d == depth {
            if holds_us(&dir) {
                return Some(
                    rel.iter()
                        .map(|c| c.to_string_lossy().into_owned())
                        .collect(),
                );
            }
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((rel.join(e.file_name()), d + 1));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn host_namespace_is_the_identity() {
        assert_eq!(
            resolve(&[], "/system.slice/containerd.service").as_deref(),
            Some("/system.slice/containerd.service")
        );
        assert_eq!(resolve(&[], "/").as_deref(), Some("/"));
    }

    #[test]
    fn a_private_namespace_climbs_back_to_the_node() {
        // podman --cgroupns private with cgroupfs: the container's cgroup
        // is the namespace root, two levels down.
        let ns = root(&["libpod_parent", "libpod-0123"]);
        assert_eq!(
            resolve(&ns, "/../../system.slice/containerd.service").as_deref(),
            Some("/system.slice/containerd.service")
        );
        // A host process in the root cgroup: the root guard must see "/".
        assert_eq!(resolve(&ns, "/../..").as_deref(), Some("/"));
        // The tracer's own cgroup.
        assert_eq!(
            resolve(&ns, "/").as_deref(),
            Some("/libpod_parent/libpod-0123")
        );
    }

    #[test]
    fn names_above_the_namespace_root_are_restored() {
        // A tracer pod and another pod under kubepods: the other's path
        // shares "kubepods" with ours, and the text never says it.
        let ns = root(&["kubepods", "besteffort", "pod1", "c1"]);
        assert_eq!(
            resolve(&ns, "/../../../burstable/pod2/c2").as_deref(),
            Some("/kubepods/burstable/pod2/c2")
        );
    }

    #[test]
    fn paths_above_the_root_or_relative_are_refused() {
        let ns = root(&["a"]);
        assert_eq!(resolve(&ns, "/../../x"), None);
        assert_eq!(resolve(&ns, "relative"), None);
        assert_eq!(resolve(&ns, ""), None);
        assert_eq!(
            resolve(&ns, "/../b (deleted)").as_deref(),
            Some("/b (deleted)")
        );
    }

    #[test]
    fn mount_roots_count_levels() {
        assert_eq!(ups_only("/"), Some(0));
        assert_eq!(ups_only("/../../.."), Some(3));
        assert_eq!(ups_only("/a/.."), None);
    }

    #[test]
    fn directories_stay_inside_the_mount() {
        let tree = HostCgroups {
            mount: PathBuf::from("/sys/fs/cgroup"),
            ns_root: Some(Vec::new()),
        };
        assert_eq!(
            tree.dir("/system.slice/x.service"),
            Some(PathBuf::from("/sys/fs/cgroup/system.slice/x.service"))
        );
        assert_eq!(tree.dir("/"), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(tree.dir("/../etc"), None);
        assert_eq!(tree.dir("/a//b"), None);
        assert_eq!(tree.dir("a"), None);
    }

    #[test]
    fn this_machine_has_a_root_mount_and_places_this_process() {
        let tree = HostCgroups::discover().expect("a cgroup2 root mount");
        assert!(HostCgroups::is_root_dir(tree.mount()));
        assert!(tree.ns_root_known());
        let me = tree
            .path_of(Path::new("/proc"), std::process::id())
            .expect("own path");
        let dir = tree.dir(&me).expect("own dir");
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).expect("procs");
        assert!(procs.lines().any(|l| l == std::process::id().to_string()));
    }
}
