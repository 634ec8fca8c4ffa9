//! Which systemd unit / container a process belongs to, from `/proc/<pid>/cgroup`.
//!
//! The kernel writes one line per hierarchy, `hierarchy-ID:controller-list:path`
//! (cgroups(7)). On a pure cgroup v2 host there is a single `0::/path` line; on a
//! v1 host there is one line per controller plus systemd's own named hierarchy
//! `N:name=systemd:/path`; a "hybrid" host has both. systemd lays the cgroup tree
//! out after its units (systemd.slice(5), systemd.scope(5)): every service gets
//! `/<slice path>/<unit>.service`, every scope `/<slice path>/<unit>.scope`, and a
//! slice `a-b-c.slice` is nested as `a.slice/a-b.slice/a-b-c.slice`. Container
//! runtimes using the systemd cgroup driver put each container into a transient
//! scope unit named after the runtime (`cri-containerd-<id>.scope`,
//! `docker-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`); with the cgroupfs
//! driver they create plain directories (`/docker/<id>`,
//! `/kubepods/burstable/pod<uid>/<id>`).
//!
//! Everything here is a pure string transformation: nothing is read from disk,
//! and malformed input yields an empty or partial [`CgroupInfo`], never a panic.

use procfs::ProcessCGroup;

/// What a process's cgroup membership says about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupInfo {
    /// The cgroup path: the v2 (`0::`) path if it is non-empty and not `/`,
    /// else the v1 `name=systemd` path, else the first line's path.
    pub path: String,
    /// The systemd unit the process runs in, e.g. `containerd.service`,
    /// `session-3.scope` or, for a container, its scope
    /// `cri-containerd-<id>.scope`. `None` when the path names no unit, or when
    /// the deepest unit is only an *ancestor* of the container's cgroup (see
    /// [`parse_proc_cgroup`]).
    pub unit: Option<String>,
    /// 64-hex container id, when the process is inside a container.
    pub container_id: Option<String>,
    /// `"containerd"`, `"docker"`, `"cri-o"` or `"podman"` when the cgroup name
    /// tells; `None` for cgroupfs layouts that do not name the runtime.
    pub runtime: Option<String>,
    /// Kubernetes pod UID (dashed form) from a kubepods slice or `pod<uid>`
    /// directory.
    pub pod_uid: Option<String>,
    /// Which service manager `unit` belongs to; `Some` exactly when `unit`
    /// is. See [`UnitManager`].
    pub manager: Option<UnitManager>,
    /// The cgroup the manager of `unit` owns (`""` for the host's system
    /// manager, e.g. `/user.slice/user-1000.slice/user@1000.service` or a
    /// container's scope): units of one manager share it, so it keys their
    /// unit files.
    pub manager_cgroup: String,
    /// `unit` as metrics label it: the bare name for the host's system
    /// manager, else prefixed with the unit its manager runs in
    /// (`user@1000.service/containerd.service`,
    /// `docker-<id>.scope/containerd.service`), so a user's or a
    /// container's `containerd.service` never reads as the host's. Made
    /// once per process, so counting a dial does not allocate.
    pub qualified_unit: Option<String>,
}

/// The service manager a unit belongs to, from where its cgroup sits in the
/// tree. systemd only lets a unit's processes create cgroups below it when
/// the unit has `Delegate=yes` (systemd.resource-control(5)); whatever sits
/// below a delegated unit is managed by someone else. So a unit is the host
/// system manager's only when all of its ancestors are slices, and the
/// nearest ancestor that is not a slice names its manager. An unprivileged
/// user can create cgroups only inside its own `user@UID.service`, a
/// container only inside its own cgroup: neither can make its unit look
/// like one of the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnitManager {
    /// The host's system manager (PID 1): unit files under the host root.
    System,
    /// A user manager (`systemd --user`, `user@UID.service`): unit files in
    /// that user's search path.
    User { uid: u32 },
    /// A manager inside a container (a kind node's systemd, an nspawn
    /// machine, a systemd in a pod) or any other delegated subtree: unit
    /// files in that container's root, never the host's.
    Container,
}

impl UnitManager {
    /// The word in events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitManager::System => "system",
            UnitManager::User { .. } => "user",
            UnitManager::Container => "container",
        }
    }

    /// The user's uid for a user manager.
    pub fn uid(self) -> Option<u32> {
        match self {
            UnitManager::User { uid } => Some(uid),
            _ => None,
        }
    }
}

/// What a process's cgroup membership (`/proc/<pid>/cgroup`, parsed by
/// procfs) says about it.
///
/// Handles pure cgroup v2 (`0::/system.slice/containerd.service`), v1 (the
/// `N:name=systemd:/...` line) and hybrid (both). Never panics on garbage.
///
/// Unit attribution rule: the unit is the deepest path component that is a
/// valid `*.service` / `*.scope` unit name, *unless* a container cgroup lies
/// below it. A process in `/system.slice/containerd.service/<kubepods slice>:cri-containerd:<id>`
/// is accounted to `containerd.service` by systemd, but its environment comes
/// from the container's OCI spec, not from containerd's unit file; reporting
/// `containerd.service` would make the tracer blame containerd's drop-ins for a
/// container's proxy settings. In that case `unit` is `None` while
/// `container_id` is set. A unit *below* the container (a kind node's inner
/// `containerd.service`, or `init.scope` of a systemd running in a container)
/// is reported: it belongs to the systemd instance inside that container, so
/// its unit files live in the container's root file system, not the host's.
pub fn cgroup_info(groups: &[ProcessCGroup]) -> CgroupInfo {
    let mut v2_path: Option<&str> = None;
    let mut systemd_v1_path: Option<&str> = None;
    let mut first_path: Option<&str> = None;

    for group in groups {
        let path = strip_deleted(&group.pathname);
        if !path.starts_with('/') {
            continue;
        }
        if first_path.is_none() {
            first_path = Some(path);
        }
        // cgroups(7): the v2 line always has hierarchy ID 0 and an empty
        // controller list.
        if group.hierarchy == 0 && group.controllers.is_empty() {
            if v2_path.is_none() {
                v2_path = Some(path);
            }
        } else if group.controllers.iter().any(|c| c == "name=systemd") && systemd_v1_path.is_none()
        {
            systemd_v1_path = Some(path);
        }
    }

    // In hybrid mode systemd mirrors its tree into the unified hierarchy, but
    // a process can still show "0::/" there (e.g. when another manager moved it
    // in the v1 hierarchies only), so "/" defers to the named hierarchy.
    let chosen = match v2_path {
        Some(p) if !p.is_empty() && p != "/" => Some(p),
        _ => systemd_v1_path.or(first_path),
    };
    let Some(path) = chosen else {
        return CgroupInfo::default();
    };

    let mut info = analyse_path(path);
    info.path = path.to_string();
    info
}

/// The same from the text of `/proc/<pid>/cgroup`, parsed by procfs (which
/// splits each line at its first two colons only: containerd's
/// `slice:prefix:name` paths contain more). A file that does not parse
/// says nothing. Tests and the fuzz target describe memberships as text,
/// the kernel's format.
pub fn parse_proc_cgroup(text: &str) -> CgroupInfo {
    use procfs::{FromBufRead, ProcessCGroups};
    match ProcessCGroups::from_buf_read(text.as_bytes()) {
        Ok(groups) => cgroup_info(&groups.0),
        Err(_) => CgroupInfo::default(),
    }
}

/// The kernel appends " (deleted)" to a v2 path whose cgroup was removed
/// while the process still references it (kernel/cgroup/cgroup.c,
/// proc_cgroup_show); the suffix is not part of the name.
fn strip_deleted(path: &str) -> &str {
    path.strip_suffix(" (deleted)").unwrap_or(path)
}

/// A container found in one path component.
struct ContainerHit {
    id: String,
    runtime: Option<&'static str>,
    /// The component is itself a scope unit (systemd cgroup driver).
    is_scope: bool,
}

fn analyse_path(path: &str) -> CgroupInfo {
    // A reader in another cgroup namespace sees paths relative to its own
    // root, e.g. "/../../system.slice/containerd.service"; ".." and "." carry no
    // naming information, so they are skipped.
    let components: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
        .collect();

    let mut info = CgroupInfo::default();
    let mut container_at: Option<usize> = None;
    let mut unit_at: Option<(usize, String)> = None;
    let mut container_is_scope = false;
    let mut in_kubepods = false;

    for (idx, raw) in components.iter().enumerate() {
        let comp = cg_unescape(raw);

        if let Some(uid) = pod_uid_from_component(comp, in_kubepods) {
            info.pod_uid = Some(uid);
        }
        if comp.starts_with("kubepods") || comp.contains("-kubepods") {
            in_kubepods = true;
        }

        let parent = idx
            .checked_sub(1)
            .and_then(|i| components.get(i))
            .map(|p| cg_unescape(p));
        if let Some(hit) = container_from_component(comp, parent) {
            info.container_id = Some(hit.id);
            info.runtime = hit.runtime.map(str::to_string);
            container_at = Some(idx);
            container_is_scope = hit.is_scope;
        }

        if is_process_unit(comp) {
            unit_at = Some((idx, comp.to_string()));
        }
    }

    let unit_at = match (unit_at, container_at) {
        (Some((u, name)), Some(c)) if u > c || (u == c && container_is_scope) => Some((u, name)),
        (Some(_), Some(_)) => None,
        (Some(unit), None) => Some(unit),
        (None, _) => None,
    };
    if let Some((at, name)) = unit_at {
        let (manager, owner) = manager_of(&components, at);
        info.qualified_unit = Some(match owner.rsplit_once('/') {
            Some((_, delegate)) if manager != UnitManager::System => {
                format!("{}/{name}", cg_unescape(delegate))
            }
            _ => name.clone(),
        });
        info.manager = Some(manager);
        info.manager_cgroup = owner;
        info.unit = Some(name);
    }
    info
}

/// The manager of the unit at `components[at]`: the nearest ancestor that
/// is not a slice delegated it (see [`UnitManager`]), and that ancestor's
/// cgroup path.
fn manager_of(components: &[&str], at: usize) -> (UnitManager, String) {
    let Some(owner) = components[..at]
        .iter()
        .rposition(|c| !is_slice(cg_unescape(c)))
    else {
        return (UnitManager::System, String::new());
    };
    let mut path = String::new();
    for c in &components[..=owner] {
        path.push('/');
        path.push_str(c);
    }
    let delegate = cg_unescape(components[owner]);
    // A user manager is user@UID.service, itself a unit of the host's
    // system manager (all its ancestors are slices); a user@ inside a
    // container is that container's.
    let user = delegate
        .strip_prefix("user@")
        .and_then(|rest| rest.strip_suffix(".service"))
        .and_then(|uid| uid.parse::<u32>().ok())
        .filter(|_| components[..owner].iter().all(|c| is_slice(cg_unescape(c))));
    let manager = match user {
        Some(uid) => UnitManager::User { uid },
        None => UnitManager::Container,
    };
    (manager, path)
}

/// A slice unit name: inner nodes of a manager's own tree.
fn is_slice(name: &str) -> bool {
    name.strip_suffix(".slice").is_some_and(valid_unit_stem)
}

/// systemd escapes cgroup names that would clash with kernel files or
/// controller names by prefixing '_' (cg_escape() in systemd's
/// cgroup-util.c); cg_unescape() drops exactly one leading '_'.
fn cg_unescape(name: &str) -> &str {
    name.strip_prefix('_').unwrap_or(name)
}

/// Only services and scopes contain processes (slices are inner nodes;
/// systemd.slice(5)), so only they can name "the unit a process runs in".
fn is_process_unit(name: &str) -> bool {
    let Some((stem, suffix)) = name.rsplit_once('.') else {
        return false;
    };
    if suffix != "service" && suffix != "scope" {
        return false;
    }
    valid_unit_stem(stem)
}

/// The part of a unit name before ".type", validated like systemd's
/// unit_name_is_valid(): at most 255 bytes overall, characters from
/// `[A-Za-z0-9:_.\\-]` plus '@'; a template without instance ("foo@") cannot
/// own processes, so it is rejected here.
fn valid_unit_stem(stem: &str) -> bool {
    if stem.is_empty() || stem.len() > 255 - ".service".len() {
        return false;
    }
    if !stem
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
    {
        return false;
    }
    match stem.split_once('@') {
        Some((prefix, instance)) => !prefix.is_empty() && !instance.is_empty(),
        None => true,
    }
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Scope / directory prefixes used by runtimes, most specific first.
/// `Some(None)` marks a runtime's monitor process (conmon), which is *not*
/// inside the container.
const RUNTIME_PREFIXES: &[(&str, Option<&str>)] = &[
    ("cri-containerd-", Some("containerd")),
    ("crio-conmon-", None),
    ("crio-", Some("cri-o")),
    ("libpod-conmon-", None),
    ("libpod-", Some("podman")),
    ("docker-", Some("docker")),
    // nerdctl (containerd without Kubernetes) with the systemd cgroup driver.
    ("nerdctl-", Some("containerd")),
];

fn container_from_component(comp: &str, parent: Option<&str>) -> Option<ContainerHit> {
    // containerd's "slice:prefix:name" cgroupsPath (the systemd cgroup driver
    // syntax of runc) ends up as a literal directory when runc is driven with
    // cgroupfs while the CRI config says SystemdCgroup; the pod slice is the
    // first field.
    if let Some((_, rest)) = comp.split_once(':') {
        let (prefix, id) = rest.split_once(':')?;
        if !is_container_id(id) {
            return None;
        }
        let runtime = match prefix {
            "cri-containerd" | "nerdctl" => Some("containerd"),
            "crio" => Some("cri-o"),
            "docker" => Some("docker"),
            "libpod" => Some("podman"),
            _ => None,
        };
        return Some(ContainerHit {
            id: id.to_string(),
            runtime,
            is_scope: false,
        });
    }

    let (stem, is_scope) = match comp.strip_suffix(".scope") {
        Some(stem) => (stem, true),
        None => (comp, false),
    };
    for (prefix, runtime) in RUNTIME_PREFIXES {
        if let Some(id) = stem.strip_prefix(prefix) {
            return match runtime {
                Some(rt) if is_container_id(id) => Some(ContainerHit {
                    id: id.to_string(),
                    runtime: Some(rt),
                    is_scope,
                }),
                // conmon-<id> or a non-id suffix: not a container cgroup.
                _ => None,
            };
        }
    }

    // cgroupfs layouts: a bare id directory. Only docker's and podman's parents
    // name the runtime; kubelet's /kubepods/... tree is shared by all CRI
    // runtimes, and containerd's /<namespace>/<id> says nothing either.
    if !is_scope && is_container_id(stem) {
        let runtime = match parent {
            Some("docker") => Some("docker"),
            Some("libpod_parent") => Some("podman"),
            _ => None,
        };
        return Some(ContainerHit {
            id: stem.to_string(),
            runtime,
            is_scope: false,
        });
    }
    None
}

/// Pod UIDs appear as `kubepods[-qos]-pod<uid with '_'>.slice` (systemd driver;
/// '-' is the slice hierarchy separator in systemd.slice(5), so kubelet swaps
/// the UID's dashes for '_'), as `pod<uid>` directories under `/kubepods`
/// (cgroupfs driver), and as the first field of containerd's
/// `slice:prefix:name` form.
fn pod_uid_from_component(comp: &str, in_kubepods: bool) -> Option<String> {
    let slice_part = comp.split(':').next().unwrap_or(comp);
    if let Some(stem) = slice_part.strip_suffix(".slice") {
        if !stem.contains("kubepods") {
            return None;
        }
        let last = stem.rsplit('-').next()?;
        return normalise_pod_uid(last.strip_prefix("pod")?);
    }
    if in_kubepods {
        return normalise_pod_uid(comp.strip_prefix("pod")?);
    }
    None
}

/// Accepts a UUID (8-4-4-4-12 hex, with '-' or '_') or the 32-hex hash that
/// kubelet uses as UID of static pods; returns it with '-' separators.
fn normalise_pod_uid(raw: &str) -> Option<String> {
    let uid = raw.replace('_', "-");
    let groups: Vec<&str> = uid.split('-').collect();
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let ok = match groups.as_slice() {
        [single] => single.len() == 32 && hex(single),
        [a, b, c, d, e] => {
            [a.len(), b.len(), c.len(), d.len(), e.len()] == [8, 4, 4, 4, 12]
                && groups.iter().all(|g| hex(g))
        }
        _ => false,
    };
    ok.then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f9c2a7de1b04c5f8a6e2d9b7c1f0e4a5b6c7d8e9f0a1b2c3d4e5f60718293a4";
    const ID2: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    const UID: &str = "1b6e6c1c-8f4e-4d8e-9b53-2f2d8a3f6c11";
    const UID_US: &str = "1b6e6c1c_8f4e_4d8e_9b53_2f2d8a3f6c11";

    #[test]
    fn v2_system_service() {
        let info = parse_proc_cgroup("0::/system.slice/containerd.service\n");
        assert_eq!(
            info,
            CgroupInfo {
                path: "/system.slice/containerd.service".into(),
                unit: Some("containerd.service".into()),
                manager: Some(UnitManager::System),
                qualified_unit: Some("containerd.service".into()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn v2_user_session() {
        let info = parse_proc_cgroup("0::/user.slice/user-0.slice/session-3.scope\n");
        assert_eq!(info.unit.as_deref(), Some("session-3.scope"));
        assert_eq!(info.container_id, None);
        assert_eq!(info.path, "/user.slice/user-0.slice/session-3.scope");
    }

    #[test]
    fn v2_user_manager_service() {
        let info = parse_proc_cgroup(
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service\n",
        );
        assert_eq!(info.unit.as_deref(), Some("foo.service"));
        let info =
            parse_proc_cgroup("0::/user.slice/user-1000.slice/user@1000.service/init.scope\n");
        assert_eq!(info.unit.as_deref(), Some("init.scope"));
    }

    #[test]
    fn managers_of_units() {
        let of = |text: &str| {
            let info = parse_proc_cgroup(text);
            (info.manager, info.manager_cgroup)
        };
        assert_eq!(
            of("0::/system.slice/containerd.service\n"),
            (Some(UnitManager::System), String::new())
        );
        assert_eq!(
            of("0::/user.slice/user-0.slice/session-3.scope\n").0,
            Some(UnitManager::System)
        );
        // A user manager's service named like the host's containerd.
        assert_eq!(
            of("0::/user.slice/user-1000.slice/user@1000.service/app.slice/containerd.service\n"),
            (
                Some(UnitManager::User { uid: 1000 }),
                "/user.slice/user-1000.slice/user@1000.service".to_string()
            )
        );
        assert_eq!(
            parse_proc_cgroup(
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/containerd.service\n"
            )
            .qualified_unit
            .as_deref(),
            Some("user@1000.service/containerd.service")
        );
        // The user manager itself is a system unit.
        assert_eq!(
            of("0::/user.slice/user-1000.slice/user@1000.service\n").0,
            Some(UnitManager::System)
        );
        // A kind node's inner containerd, a systemd in a cgroupfs container,
        // rootless podman's systemd container, nspawn.
        for text in [
            format!("0::/system.slice/docker-{ID}.scope/system.slice/containerd.service\n"),
            format!("1:name=systemd:/docker/{ID}/system.slice/containerd.service\n"),
            format!("0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container/system.slice/containerd.service\n"),
            "0::/machine.slice/systemd-nspawn@box.service/payload/system.slice/containerd.service\n".to_string(),
            // A user@ below a delegated unit is not the host's user manager.
            "0::/system.slice/box.service/user.slice/user@0.service/app.slice/x.service\n".to_string(),
            "0::/user.slice/user@bob.service/app.slice/x.service\n".to_string(),
        ] {
            assert_eq!(of(&text).0, Some(UnitManager::Container), "{text}");
        }
        assert_eq!(
            of(&format!(
                "0::/system.slice/docker-{ID}.scope/system.slice/containerd.service\n"
            ))
            .1,
            format!("/system.slice/docker-{ID}.scope")
        );
        // No unit, no manager; a container's own scope is the system's.
        assert_eq!(of("0::/\n").0, None);
        assert_eq!(
            of(&format!(
                "0::/kubepods.slice/kubepods-pod{UID_US}.slice/cri-containerd-{ID}.scope\n"
            ))
            .0,
            Some(UnitManager::System)
        );
    }

    #[test]
    fn v2_kubepods_systemd_driver_containerd() {
        let content = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{ID}.scope\n"
        );
        let info = parse_proc_cgroup(&content);
        assert_eq!(info.unit, Some(format!("cri-containerd-{ID}.scope")));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.runtime.as_deref(), Some("containerd"));
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
        assert_ne!(info.unit.as_deref(), Some("containerd.service"));
    }

    #[test]
    fn v2_guaranteed_pod_and_besteffort() {
        let info = parse_proc_cgroup(&format!(
            "0::/kubepods.slice/kubepods-pod{UID_US}.slice/cri-containerd-{ID}.scope\n"
        ));
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
        let info = parse_proc_cgroup(&format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/crio-{ID}.scope\n"
        ));
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
        assert_eq!(info.runtime.as_deref(), Some("cri-o"));
        assert_eq!(info.unit, Some(format!("crio-{ID}.scope")));
    }

    #[test]
    fn crio_nested_container_cgroup_and_conmon() {
        let info = parse_proc_cgroup(&format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/crio-{ID}.scope/container\n"
        ));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.unit, Some(format!("crio-{ID}.scope")));

        // conmon monitors the container from outside it.
        let info = parse_proc_cgroup(&format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/crio-conmon-{ID}.scope\n"
        ));
        assert_eq!(info.container_id, None);
        assert_eq!(info.unit, Some(format!("crio-conmon-{ID}.scope")));
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn static_pod_hash_uid() {
        let hash = "6f2a5b1f8e2c3c8d7d5b8e0c9d2a1b3c";
        let info = parse_proc_cgroup(&format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice/cri-containerd-{ID}.scope\n"
        ));
        assert_eq!(info.pod_uid.as_deref(), Some(hash));
    }

    #[test]
    fn v1_cgroupfs_kubepods() {
        let content = format!(
            "12:pids:/kubepods/besteffort/pod{UID}/{ID}\n\
             11:memory:/kubepods/besteffort/pod{UID}/{ID}\n\
             2:cpu,cpuacct:/kubepods/besteffort/pod{UID}/{ID}\n\
             1:name=systemd:/kubepods/besteffort/pod{UID}/{ID}\n"
        );
        let info = parse_proc_cgroup(&content);
        assert_eq!(info.path, format!("/kubepods/besteffort/pod{UID}/{ID}"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.runtime, None);
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
        assert_eq!(info.unit, None);
    }

    #[test]
    fn v1_cgroupfs_guaranteed_pod() {
        let info = parse_proc_cgroup(&format!("1:name=systemd:/kubepods/pod{UID}/{ID}\n"));
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
        assert_eq!(info.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn v1_docker_cgroupfs() {
        let content =
            format!("12:blkio:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n");
        let info = parse_proc_cgroup(&content);
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.runtime.as_deref(), Some("docker"));
        assert_eq!(info.unit, None);
        assert_eq!(info.pod_uid, None);
    }

    #[test]
    fn v1_system_service() {
        let content = "11:memory:/system.slice/containerd.service\n\
                       4:devices:/system.slice/containerd.service\n\
                       1:name=systemd:/system.slice/containerd.service\n";
        let info = parse_proc_cgroup(content);
        assert_eq!(info.unit.as_deref(), Some("containerd.service"));
        assert_eq!(info.path, "/system.slice/containerd.service");
    }

    #[test]
    fn v1_without_systemd_uses_first_line() {
        let info = parse_proc_cgroup(&format!("3:memory:/docker/{ID}\n2:cpu:/docker/{ID}\n"));
        assert_eq!(info.path, format!("/docker/{ID}"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn hybrid_prefers_v2_then_named_systemd() {
        let content = "12:memory:/system.slice/docker.service\n\
                       1:name=systemd:/system.slice/docker.service\n\
                       0::/system.slice/docker.service\n";
        let info = parse_proc_cgroup(content);
        assert_eq!(info.unit.as_deref(), Some("docker.service"));

        let content = "12:memory:/user.slice\n\
                       1:name=systemd:/system.slice/kubelet.service\n\
                       0::/\n";
        let info = parse_proc_cgroup(content);
        assert_eq!(info.path, "/system.slice/kubelet.service");
        assert_eq!(info.unit.as_deref(), Some("kubelet.service"));
    }

    #[test]
    fn root_cgroup() {
        let info = parse_proc_cgroup("0::/\n");
        assert_eq!(info.path, "/");
        assert_eq!(info.unit, None);
        let info = parse_proc_cgroup("0::/init.scope\n");
        assert_eq!(info.unit.as_deref(), Some("init.scope"));
    }

    #[test]
    fn containerd_slice_prefix_name_form_is_not_containerd_service() {
        let content = format!(
            "0::/system.slice/containerd.service/kubepods-burstable-pod{UID_US}.slice:cri-containerd:{ID}\n"
        );
        let info = parse_proc_cgroup(&content);
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.runtime.as_deref(), Some("containerd"));
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
        assert_eq!(info.unit, None);
        assert_eq!(
            info.path,
            format!("/system.slice/containerd.service/kubepods-burstable-pod{UID_US}.slice:cri-containerd:{ID}")
        );
    }

    #[test]
    fn docker_systemd_driver() {
        let info = parse_proc_cgroup(&format!("0::/system.slice/docker-{ID}.scope\n"));
        assert_eq!(info.unit, Some(format!("docker-{ID}.scope")));
        assert_eq!(info.runtime.as_deref(), Some("docker"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn rootless_podman_with_container_subgroup() {
        let info = parse_proc_cgroup(&format!(
            "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n"
        ));
        assert_eq!(info.runtime.as_deref(), Some("podman"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.unit, Some(format!("libpod-{ID}.scope")));
    }

    #[test]
    fn kind_node_nested_containers() {
        // A kind node is a docker container running its own systemd; its pods
        // are containers inside it.
        let pod = format!(
            "0::/system.slice/docker-{ID}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_US}.slice/cri-containerd-{ID2}.scope\n"
        );
        let info = parse_proc_cgroup(&pod);
        assert_eq!(info.container_id.as_deref(), Some(ID2));
        assert_eq!(info.runtime.as_deref(), Some("containerd"));
        assert_eq!(info.unit, Some(format!("cri-containerd-{ID2}.scope")));
        assert_eq!(info.pod_uid.as_deref(), Some(UID));

        // The node's inner containerd: unit of the inner systemd, container of the outer docker.
        let inner = format!("0::/system.slice/docker-{ID}.scope/system.slice/containerd.service\n");
        let info = parse_proc_cgroup(&inner);
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.runtime.as_deref(), Some("docker"));
        assert_eq!(info.unit.as_deref(), Some("containerd.service"));
    }

    #[test]
    fn deleted_suffix_and_foreign_namespace() {
        let info = parse_proc_cgroup("0::/system.slice/containerd.service (deleted)\n");
        assert_eq!(info.path, "/system.slice/containerd.service");
        assert_eq!(info.unit.as_deref(), Some("containerd.service"));

        let info = parse_proc_cgroup("0::/../../system.slice/kubelet.service\n");
        assert_eq!(info.unit.as_deref(), Some("kubelet.service"));
    }

    #[test]
    fn escaped_and_invalid_unit_names() {
        // cg_escape() turns "cpu.service" into "_cpu.service".
        let info = parse_proc_cgroup("0::/system.slice/_cpu.service\n");
        assert_eq!(info.unit.as_deref(), Some("cpu.service"));
        // A template cannot own processes; ".service" alone has no name.
        assert_eq!(
            parse_proc_cgroup("0::/system.slice/foo@.service\n").unit,
            None
        );
        assert_eq!(parse_proc_cgroup("0::/system.slice/.service\n").unit, None);
        assert_eq!(
            parse_proc_cgroup("0::/system.slice/we ird.service\n").unit,
            None
        );
        assert_eq!(
            parse_proc_cgroup("0::/system.slice/system-getty.slice/getty@tty1.service\n")
                .unit
                .as_deref(),
            Some("getty@tty1.service")
        );
    }

    #[test]
    fn garbage_never_panics() {
        for input in [
            "",
            "\n\n",
            "garbage",
            "::::",
            "0:",
            "0::",
            "x::/system.slice/a.service",
            "0::relative/path",
            "\u{0}\u{0}:\u{0}",
            "4294967296::/a.service",
            "0::/kubepods/pod/abc",
            "0::/a:b:c:d",
            "0::/kubepods.slice/kubepods-pod.slice",
            "0::/docker/xyz.scope",
            "ÿÿÿ:ÿ:/ÿ.scope",
        ] {
            let _ = parse_proc_cgroup(input);
        }
        assert_eq!(parse_proc_cgroup("garbage\n"), CgroupInfo::default());
        assert_eq!(parse_proc_cgroup("0::relative\n"), CgroupInfo::default());
    }
}
