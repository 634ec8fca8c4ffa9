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

/// At most this many cgroups carry the payload programs; a node with more
/// proxied services than this keeps the first ones (a warning says so).
const MAX_WATCHED: usize = 256;

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

/// Where the payload programs are attached, and for whom.
pub struct PayloadWatch {
    /// The node's cgroup v2 tree: paths are the node's, whatever cgroup
    /// namespace the tracer runs in (enrich/cgroupns.rs).
    tree: &'static HostCgroups,
    /// False when the programs did not load (an old kernel): nothing is
    /// attached and every proxy attempt is `not_watched`.
    pub enabled: bool,
    by_path: HashMap<String, Watched>,
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
            refused: HashSet::new(),
        })
    }

    /// Cgroup ids currently watched.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_path.values().map(|w| w.id)
    }
}

/// Put a proxy endpoint into the kernel's `PROXY_ADDRS`.
pub(super) fn add_proxy(ebpf: &mut Ebpf, ip: IpAddr, port: u16) -> Result<(), ProbeError> {
    let map = ebpf
        .map_mut("PROXY_ADDRS")
        .ok_or(ProbeError::MissingMap("PROXY_ADDRS"))?;
    let mut addrs: BpfHashMap<_, ProxyKey, u8> =
        BpfHashMap::try_from(map).map_err(|source| ProbeError::Map {
            map: "PROXY_ADDRS",
            source,
        })?;
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
    addrs.insert(key, 1, 0).map_err(|source| ProbeError::Map {
        map: "PROXY_ADDRS",
        source,
    })?;
    // Only now may connect4/6 look destinations up (maps::PROXIES_KNOWN).
    let map = ebpf
        .map_mut("PROXIES_KNOWN")
        .ok_or(ProbeError::MissingMap("PROXIES_KNOWN"))?;
    let mut known: aya::maps::Array<_, u32> =
        aya::maps::Array::try_from(map).map_err(|source| ProbeError::Map {
            map: "PROXIES_KNOWN",
            source,
        })?;
    known.set(0, 1, 0).map_err(|source| ProbeError::Map {
        map: "PROXIES_KNOWN",
        source,
    })
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
    if w.refused.contains(&path) {
        return None;
    }
    let dir = w.tree.dir(&path);
    // The root asked of the kernel too (no `cgroup.events`), not only of
    // the path's spelling.
    let is_root = dir.as_deref().is_none_or(HostCgroups::is_root_dir);
    if is_root || w.by_path.len() >= MAX_WATCHED {
        log::warn!(
            "not watching the proxy exchanges of pid {pid}: its cgroup is {}",
            if is_root {
                "the root cgroup (attaching there would make every packet of the node pay)"
            } else {
                "beyond the limit of watched cgroups"
            }
        );
        w.refused.insert(path);
        return None;
    }
    let dir = dir?;
    let attached = File::open(&dir).and_then(|f| {
        let id = f.metadata()?.ino();
        Ok((f, id))
    });
    let (file, id) = match attached {
        Ok(x) => x,
        Err(e) => {
            log::warn!("cannot open cgroup {}: {e}", dir.display());
            w.refused.insert(path);
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
                error_chain(&e)
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
        w.refused.insert(path);
        return None;
    }
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

/// Detach from cgroups that no process is left in (the service stopped,
/// the container ended). A cgroup stays watched while any process lives
/// in it, so the next short-lived client of a proxied unit is watched from
/// its first packet. Returns the ids of the cgroups no longer watched.
pub(super) fn prune(ebpf: &mut Ebpf, w: &mut PayloadWatch) -> Vec<u64> {
    let mut gone = Vec::new();
    let tree = w.tree;
    w.by_path.retain(|path, watched| {
        watched
            .pids
            .retain(|pid| Path::new(&format!("/proc/{pid}")).exists());
        let procs = tree
            .dir(path)
            .and_then(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
            .unwrap_or_default();
        if !watched.pids.is_empty() || !procs.trim().is_empty() {
            return true;
        }
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
        gone.push(watched.id);
        false
    });
    gone
}

/// An error with its sources, "a: b: c" (aya's syscall errors keep the
/// errno in the source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
