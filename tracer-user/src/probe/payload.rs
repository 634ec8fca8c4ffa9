//! The proxy-exchange programs (`proxy_egress`, `proxy_ingress`, in
//! tracer-ebpf `probes/proxy_payload.rs`): where they are attached, and the
//! proxy endpoints whose sockets they read.
//!
//! cgroup_skb programs run for every packet of the cgroups they are
//! attached to. Attached at the cgroup v2 root, even empty, they made a
//! 1 GiB loopback transfer about 5% slower (PLATFORM.md), so they are
//! attached only to the cgroup v2 directories of processes that have a
//! proxy (or dialled a `--proxy`), and detached once no such process
//! remains there. A process in the root cgroup is never watched: attaching
//! there would make the whole node pay; its proxy attempts are written at
//! once with `exchange: not_watched`.
//!
//! Past a few cgroups under one parent (`FAN_IN`), or once `MAX_WATCHED`
//! attachments exist, the programs are attached once at a common parent
//! instead (a pod's slice, `kubepods-burstable.slice`, `system.slice`):
//! the kernel runs a cgroup's programs for every descendant's packets
//! (`__cgroup_bpf_run_filter_skb()` runs the effective array, which
//! includes the ancestors' multi-attached links), so one attachment covers
//! the proxied children, those to come, and, the price, their unproxied
//! siblings, whose packets then cost one socket-cookie lookup each. The
//! children's own attachments are detached, so no packet is seen twice.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    net::IpAddr,
    os::unix::fs::MetadataExt,
    path::Path,
};

use aya::{
    maps::HashMap as BpfHashMap,
    programs::{cgroup_skb::CgroupSkbLinkId, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType},
    Ebpf,
};
use tracer_common::{ProxyKey, AF_INET, AF_INET6};

use super::{load_error, program_of, ProbeError};
use crate::enrich::cgroupns::HostCgroups;

/// At most this many cgroups carry the payload programs; past that, new
/// proxied cgroups are covered by attaching at a common parent.
const MAX_WATCHED: usize = 256;
/// Attachments under one parent before the parent is watched instead.
const FAN_IN: usize = 16;

pub const EGRESS: &str = "proxy_egress";
pub const INGRESS: &str = "proxy_ingress";

/// One watched cgroup.
struct Watched {
    /// The cgroup id (inode of the v2 directory), as attempts carry it.
    id: u64,
    pids: HashSet<u32>,
    egress: Option<CgroupSkbLinkId>,
    ingress: Option<CgroupSkbLinkId>,
}

/// A cgroup watched through an ancestor's attachment.
struct Covered {
    id: u64,
    pids: HashSet<u32>,
    /// The attached ancestor's path (a key of `by_path`).
    under: String,
}

/// Where the payload programs are attached, and for whom.
pub struct PayloadWatch {
    /// The node's cgroup v2 tree: paths are the node's, whatever cgroup
    /// namespace the tracer runs in (enrich/cgroupns.rs).
    tree: &'static HostCgroups,
    /// False when the programs did not load (an old kernel): nothing is
    /// attached and every proxy attempt is `not_watched`.
    pub enabled: bool,
    by_path: HashMap<String, Watched>,
    /// Proxied cgroups covered by an ancestor in `by_path`.
    covered: HashMap<String, Covered>,
    /// Paths already refused (root cgroup, attach failure), warned once.
    refused: HashSet<String>,
}

impl PayloadWatch {
    pub(super) fn load(ebpf: &mut Ebpf, tree: &'static HostCgroups) -> Result<Self, ProbeError> {
        let mut enabled = true;
        for name in [EGRESS, INGRESS] {
            let program: &mut CgroupSkb = program_of(ebpf, name)?;
            if let Err(source) = program.load() {
                // The exchange is an addition: the tracer still works
                // without it, and says so.
                log::warn!(
                    "{}; proxy exchanges will not be reported",
                    load_error(name, source)
                );
                enabled = false;
            }
        }
        Ok(Self {
            tree,
            enabled,
            by_path: HashMap::new(),
            covered: HashMap::new(),
            refused: HashSet::new(),
        })
    }

    /// Cgroup ids currently watched (attached, or covered by an ancestor).
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_path
            .values()
            .map(|w| w.id)
            .chain(self.covered.values().map(|c| c.id))
    }

    /// (cgroups attached to, cgroups covered through an ancestor).
    pub fn sizes(&self) -> (usize, usize) {
        (self.by_path.len(), self.covered.len())
    }
}

/// The ancestors of a cgroup path, nearest first, without the root:
/// "/a/b/c" -> "/a/b", "/a".
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |p| p.rsplit_once('/').map(|(a, _)| a))
        .skip(1)
        .filter(|a| !a.is_empty())
}

/// `path` lies under `ancestor`.
fn is_under(path: &str, ancestor: &str) -> bool {
    path.strip_prefix(ancestor)
        .is_some_and(|r| r.starts_with('/'))
}

/// Where to attach for a new proxied cgroup `path` instead of at `path`
/// itself: the nearest ancestor with `FAN_IN - 1` attachments under it,
/// or, once `full`, the ancestor covering the most of them (the nearest
/// on a tie; at least one). None: attach at `path`.
fn common_parent<'a>(path: &'a str, attached: &[&str], full: bool) -> Option<&'a str> {
    let under = |a: &str| attached.iter().filter(|p| is_under(p, a)).count();
    let mut best: Option<(&str, usize)> = None;
    for a in ancestors(path) {
        let n = under(a);
        if n + 1 >= FAN_IN {
            return Some(a);
        }
        if best.is_none_or(|(_, m)| n > m) {
            best = Some((a, n));
        }
    }
    // When full, only an ancestor that folds at least one attachment in:
    // the count of attachments then never grows past `MAX_WATCHED`.
    best.filter(|&(_, n)| full && n > 0).map(|(a, _)| a)
}

/// The word of `PROXY_PORTS` that holds `port`, and its bit there
/// (tracer-ebpf's `maps::proxy_port`).
fn port_bit(port: u16) -> (u32, u64) {
    (u32::from(port) / 64, 1u64 << (port % 64))
}

/// Put a proxy endpoint into the kernel's `PROXY_ADDRS` (its port into
/// `PROXY_PORTS` first).
pub(super) fn add_proxy(ebpf: &mut Ebpf, ip: IpAddr, port: u16) -> Result<(), ProbeError> {
    let mut key = ProxyKey {
        addr: [0; 16],
        port,
        family: AF_INET,
        _pad: 0,
    };
    // `::ffff:a.b.c.d` is stored as the IPv4 key: connect6 looks a
    // v4-mapped destination up that way (connect_hook.rs), so a proxy is
    // marked however a client spells it.
    match ip.to_canonical() {
        IpAddr::V4(v4) => key.addr[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => {
            key.addr = v6.octets();
            key.family = AF_INET6;
        }
    }
    // The port first: the payload programs skip every socket whose peer
    // port is not set there (maps::PROXY_PORTS), so it must be set before
    // connect4/6 can mark a socket to this endpoint. Never cleared.
    let (word, bit) = port_bit(port);
    let mut ports = array_mut::<u64>(ebpf, "PROXY_PORTS")?;
    let bits = ports.get(&word, 0).map_err(map_error("PROXY_PORTS"))?;
    ports
        .set(word, bits | bit, 0)
        .map_err(map_error("PROXY_PORTS"))?;
    let map = ebpf
        .map_mut("PROXY_ADDRS")
        .ok_or(ProbeError::MissingMap("PROXY_ADDRS"))?;
    let mut addrs: BpfHashMap<_, ProxyKey, u8> =
        BpfHashMap::try_from(map).map_err(map_error("PROXY_ADDRS"))?;
    addrs.insert(key, 1, 0).map_err(map_error("PROXY_ADDRS"))?;
    // Only now may connect4/6 look destinations up (maps::PROXIES_KNOWN).
    array_mut::<u32>(ebpf, "PROXIES_KNOWN")?
        .set(0, 1, 0)
        .map_err(map_error("PROXIES_KNOWN"))
}

/// One of the programs' array maps, by name.
fn array_mut<'a, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<aya::maps::Array<&'a mut aya::maps::MapData, V>, ProbeError> {
    let map = ebpf.map_mut(name).ok_or(ProbeError::MissingMap(name))?;
    aya::maps::Array::try_from(map).map_err(map_error(name))
}

/// A map operation's error, naming the map.
fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> ProbeError {
    move |source| ProbeError::Map { map, source }
}

/// Attach the payload programs to `pid`'s cgroup (once per cgroup) and
/// remember `pid` there. Returns the cgroup id when it is watched.
///
/// `hint` is the cgroup (id, path) an attempt of `pid` carried, for a
/// process that is gone by now (a short-lived client): the directory is
/// used only if its id is the attempt's.
pub(super) fn watch_pid(
    ebpf: &mut Ebpf,
    w: &mut PayloadWatch,
    pid: u32,
    hint: Option<(u64, &str)>,
) -> Option<u64> {
    if !w.enabled {
        return None;
    }
    let path = match (w.tree.path_of(Path::new("/proc"), pid), hint) {
        (Some(p), _) => p,
        (None, Some((id, p))) if id != 0 => {
            let dir = w.tree.dir(p)?;
            let ino = std::fs::metadata(&dir).ok()?.ino();
            if ino != id {
                return None;
            }
            p.to_string()
        }
        _ => return None,
    };
    if let Some(watched) = w.by_path.get_mut(&path) {
        watched.pids.insert(pid);
        return Some(watched.id);
    }
    if let Some(covered) = w.covered.get_mut(&path) {
        covered.pids.insert(pid);
        return Some(covered.id);
    }
    if w.refused.contains(&path) {
        return None;
    }
    let dir = w.tree.dir(&path);
    // The root asked of the kernel too (no `cgroup.events`), not only of
    // the path's spelling.
    let is_root = dir.as_deref().is_none_or(HostCgroups::is_root_dir);
    if is_root {
        log::warn!(
            "not watching the proxy exchanges of pid {pid}: its cgroup is the root cgroup (attaching there would make every packet of the node pay)"
        );
        w.refused.insert(path);
        return None;
    }
    let dir = dir?;
    let Ok(id) = std::fs::metadata(&dir).map(|m| m.ino()) else {
        w.refused.insert(path);
        return None;
    };
    // Under an attached ancestor: covered already.
    let under = ancestors(&path)
        .find(|a| w.by_path.contains_key(*a))
        .map(str::to_string);
    if let Some(under) = under {
        w.covered.insert(
            path,
            Covered {
                id,
                pids: HashSet::from([pid]),
                under,
            },
        );
        return Some(id);
    }
    let full = w.by_path.len() >= MAX_WATCHED;
    let attached: Vec<&str> = w.by_path.keys().map(String::as_str).collect();
    if let Some(parent) = common_parent(&path, &attached, full).map(str::to_string) {
        if cover_from(ebpf, w, &parent) {
            w.covered.insert(
                path,
                Covered {
                    id,
                    pids: HashSet::from([pid]),
                    under: parent,
                },
            );
            return Some(id);
        }
    }
    if w.by_path.len() >= MAX_WATCHED {
        log::warn!(
            "not watching the proxy exchanges of pid {pid}: its cgroup is beyond the limit of watched cgroups"
        );
        w.refused.insert(path);
        return None;
    }
    let Some((id, egress, ingress)) = attach_at(ebpf, &dir) else {
        w.refused.insert(path);
        return None;
    };
    w.by_path.insert(
        path,
        Watched {
            id,
            pids: HashSet::from([pid]),
            egress,
            ingress,
        },
    );
    Some(id)
}

/// Attach at `parent` and fold the attachments below it into it: their
/// cgroups become covered (attach first, then detach, so no packet goes
/// unseen; for that moment one may be seen twice). False when `parent`
/// cannot be attached to (then nothing changed).
fn cover_from(ebpf: &mut Ebpf, w: &mut PayloadWatch, parent: &str) -> bool {
    let Some(dir) = w.tree.dir(parent).filter(|d| !HostCgroups::is_root_dir(d)) else {
        return false;
    };
    let Some((id, egress, ingress)) = attach_at(ebpf, &dir) else {
        return false;
    };
    log::info!("watching the proxy exchanges of the cgroups under {parent} at {parent}");
    let below: Vec<String> = w
        .by_path
        .keys()
        .filter(|p| is_under(p, parent))
        .cloned()
        .collect();
    for path in below {
        if let Some(mut watched) = w.by_path.remove(&path) {
            detach(ebpf, &mut watched);
            w.covered.insert(
                path,
                Covered {
                    id: watched.id,
                    pids: watched.pids,
                    under: parent.to_string(),
                },
            );
        }
    }
    for c in w.covered.values_mut() {
        if is_under(&c.under, parent) {
            c.under = parent.to_string();
        }
    }
    w.by_path.insert(
        parent.to_string(),
        Watched {
            id,
            pids: HashSet::new(),
            egress,
            ingress,
        },
    );
    true
}

fn detach(ebpf: &mut Ebpf, watched: &mut Watched) {
    for (name, link) in [
        (EGRESS, watched.egress.take()),
        (INGRESS, watched.ingress.take()),
    ] {
        let Some(link) = link else { continue };
        if let Ok(program) = program_of::<CgroupSkb>(ebpf, name) {
            if let Err(e) = program.detach(link) {
                log::warn!("cannot detach {name}: {e}");
            }
        }
    }
}

/// Attach both programs to the cgroup directory `dir`: its id and links,
/// or None (warned) when either cannot be attached.
fn attach_at(
    ebpf: &mut Ebpf,
    dir: &Path,
) -> Option<(u64, Option<CgroupSkbLinkId>, Option<CgroupSkbLinkId>)> {
    let attached = File::open(dir).and_then(|f| {
        let id = f.metadata()?.ino();
        Ok((f, id))
    });
    let (file, id) = match attached {
        Ok(x) => x,
        Err(e) => {
            log::warn!("cannot open cgroup {}: {e}", dir.display());
            return None;
        }
    };
    let mut links = [None, None];
    for (i, (name, kind)) in [
        (EGRESS, CgroupSkbAttachType::Egress),
        (INGRESS, CgroupSkbAttachType::Ingress),
    ]
    .into_iter()
    .enumerate()
    {
        let program: &mut CgroupSkb = match program_of(ebpf, name) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("{e}");
                return None;
            }
        };
        // On Linux 5.7+ aya attaches through a bpf_link, which always
        // coexists with other programs on the cgroup (the DNS watch,
        // Cilium, systemd's IP accounting): the kernel treats links as
        // multi-attach and refuses explicit flags (measured here:
        // AllowMultiple makes bpf_link_create fail), so links get the
        // default mode, as the connect hooks do (probe/mod.rs).
        match program.attach(&file, kind, CgroupAttachMode::Single) {
            Ok(link) => links[i] = Some(link),
            Err(e) => log::warn!(
                "cannot attach {name} to {}: {}",
                dir.display(),
                crate::diag::error_chain(&e)
            ),
        }
    }
    let [egress, ingress] = links;
    if egress.is_none() || ingress.is_none() {
        // Half a pair sees only one side of the exchange: give up on this
        // cgroup rather than wait for answers that cannot be seen.
        for (name, link) in [(EGRESS, egress), (INGRESS, ingress)] {
            if let (Some(link), Ok(program)) = (link, program_of::<CgroupSkb>(ebpf, name)) {
                let _ = program.detach(link);
            }
        }
        return None;
    }
    Some((id, egress, ingress))
}

/// Detach from cgroups that no process is left in (the service stopped,
/// the container ended). A cgroup stays watched while any process lives
/// in it, so the next short-lived client of a proxied unit is watched from
/// its first packet. Returns the ids of the cgroups no longer watched.
pub(super) fn prune(ebpf: &mut Ebpf, w: &mut PayloadWatch) -> Vec<u64> {
    let mut gone = Vec::new();
    let tree = w.tree;
    let in_use = |path: &str, pids: &mut HashSet<u32>| {
        pids.retain(|pid| Path::new(&format!("/proc/{pid}")).exists());
        let procs = tree
            .dir(path)
            .and_then(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
            .unwrap_or_default();
        !pids.is_empty() || !procs.trim().is_empty()
    };
    w.covered.retain(|path, c| {
        let keep = in_use(path, &mut c.pids);
        if !keep {
            gone.push(c.id);
        }
        keep
    });
    // A parent stays attached while a covered cgroup under it lives.
    let anchors: HashSet<String> = w.covered.values().map(|c| c.under.clone()).collect();
    w.by_path.retain(|path, watched| {
        if anchors.contains(path) || in_use(path, &mut watched.pids) {
            return true;
        }
        detach(ebpf, watched);
        gone.push(watched.id);
        false
    });
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_port_has_its_own_bit_in_1024_words() {
        assert_eq!(port_bit(0), (0, 1));
        assert_eq!(port_bit(63), (0, 1 << 63));
        assert_eq!(port_bit(64), (1, 1));
        assert_eq!(port_bit(3128), (48, 1 << 56));
        assert_eq!(port_bit(u16::MAX), (1023, 1 << 63));
    }

    #[test]
    fn ancestors_nearest_first_without_the_root() {
        let a: Vec<&str> = ancestors("/kubepods.slice/k-b.slice/pod1.slice/c.scope").collect();
        assert_eq!(
            a,
            [
                "/kubepods.slice/k-b.slice/pod1.slice",
                "/kubepods.slice/k-b.slice",
                "/kubepods.slice"
            ]
        );
        assert!(ancestors("/system.slice").next().is_none());
        assert!(
            is_under("/a/b/c", "/a/b") && !is_under("/a/bc", "/a/b") && !is_under("/a/b", "/a/b")
        );
    }

    /// Containers of many pods: each pod's scope attached on its own until
    /// `FAN_IN` pods share a parent; once full, the ancestor covering the
    /// most attachments; a lone cgroup is attached where it is.
    #[test]
    fn a_common_parent_when_many_children_need_it() {
        let pods: Vec<String> = (0..FAN_IN)
            .map(|i| format!("/kubepods.slice/k-b.slice/pod{i}.slice/c{i}.scope"))
            .collect();
        let refs: Vec<&str> = pods.iter().map(String::as_str).collect();
        let new = "/kubepods.slice/k-b.slice/podx.slice/cx.scope";
        assert_eq!(common_parent(new, &refs[..3], false), None);
        assert_eq!(
            common_parent(new, &refs[..3], true),
            Some("/kubepods.slice/k-b.slice")
        );
        assert_eq!(
            common_parent(new, &refs[..FAN_IN - 1], false),
            Some("/kubepods.slice/k-b.slice")
        );
        // Siblings in one pod: the pod's slice, the nearest.
        let siblings: Vec<String> = (0..FAN_IN - 1)
            .map(|i| format!("/kubepods.slice/k-b.slice/pod1.slice/c{i}.scope"))
            .collect();
        let refs: Vec<&str> = siblings.iter().map(String::as_str).collect();
        assert_eq!(
            common_parent(
                "/kubepods.slice/k-b.slice/pod1.slice/cz.scope",
                &refs,
                false
            ),
            Some("/kubepods.slice/k-b.slice/pod1.slice")
        );
        // A top-level cgroup has no parent but the root: never chosen.
        assert_eq!(common_parent("/system.slice", &refs, true), None);
    }
}
