//! Finding the daemons that pull images or talk to the control plane, and
//! the node facts findings compare against.
//!
//! A process's `comm` is whatever it chose (`prctl(PR_SET_NAME)`, or the
//! name of any file it execs), so it identifies nothing. A daemon is
//! identified by what an unprivileged process or a container cannot forge:
//! - its executable (`/proc/<pid>/exe`) is a known install path of that
//!   daemon and the same file (device and inode) as that path under the
//!   host root, owned by root and writable by no one else: only root puts
//!   a file there, and a container's copy is another file;
//! - it runs in a service of the host's system manager (its cgroup, see
//!   [`UnitManager`]): not a session, not a user manager's unit, not a
//!   container; only root starts those.
//!
//! A daemon installed elsewhere is examined with `--comm NAME` (its comm,
//! and it must still run in a service of the host's system manager) or
//! `--pid` (the operator names it).

use std::{
    net::IpAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::{DoctorError, Identification, IdentifiedBy};
use crate::enrich::{
    cgroup::{parse_proc_cgroup, CgroupInfo, UnitManager},
    systemd::host_file_metadata,
};

/// The runtime daemons, by the file name of their executable, and the name
/// they are reported under. `containerd-shim` is not one: shims never pull.
/// podman counts only as `podman system service`; k3s and rke2 run the
/// kubelet in-process and start an embedded containerd.
const KNOWN: &[(&str, &str)] = &[
    ("containerd", "containerd"),
    ("dockerd", "dockerd"),
    ("crio", "crio"),
    ("kubelet", "kubelet"),
    ("buildkitd", "buildkitd"),
    ("cri-dockerd", "cri-dockerd"),
    ("podman", "podman"),
    ("k3s", "k3s"),
    ("rke2", "rke2"),
];

/// Where packages, installers and node images put them: distribution
/// packages (/usr/bin, /usr/sbin, /bin, /sbin), release tarballs and the
/// k3s/rke2 installers (/usr/local/bin, /usr/local/sbin), Flatcar and
/// other read-only-/usr systems (/opt/bin), rke2's tarball on such systems
/// (/opt/rke2/bin).
const INSTALL_DIRS: &[&str] = &[
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/bin",
    "/sbin",
    "/opt/bin",
    "/opt/rke2/bin",
];

/// k3s and rke2 unpack their bundled binaries (containerd among them) to
/// `<data dir>/<hash or version>/bin/`.
const BUNDLE_DIRS: &[&str] = &["/var/lib/rancher/k3s/data", "/var/lib/rancher/rke2/data"];

/// k3s and rke2 set their comm to `k3s-server`, `k3s-agent`, `rke2` ...:
/// they run the kubelet in-process and start an embedded containerd.
pub fn is_k3s_like(comm: &str) -> bool {
    comm.starts_with("k3s") || comm.starts_with("rke2")
}

/// A directory a runtime's executable may be installed in.
fn is_install_dir(dir: &Path) -> bool {
    if INSTALL_DIRS.iter().any(|d| dir == Path::new(d)) {
        return true;
    }
    // <bundle>/<one component>/bin
    dir.file_name().is_some_and(|n| n == "bin")
        && dir
            .parent()
            .and_then(Path::parent)
            .is_some_and(|data| BUNDLE_DIRS.iter().any(|b| data == Path::new(b)))
}

/// The executable `pid` runs, when it is the host's own file at `path`
/// (same device and inode under the host root, owned by root, not
/// writable by group or others): that path.
fn host_executable(proc_root: &Path, host_root: &Path, pid: u32) -> Option<PathBuf> {
    let dir = proc_root.join(pid.to_string());
    // The path as the process's own mount namespace names it; a deleted
    // (replaced) file reads "<path> (deleted)" and matches nothing.
    let path = std::fs::read_link(dir.join("exe")).ok()?;
    let running = std::fs::metadata(dir.join("exe")).ok()?;
    let on_host = host_file_metadata(host_root, &path).ok()??;
    let same = running.dev() == on_host.dev && running.ino() == on_host.ino;
    let root_owned = on_host.uid == 0 && on_host.mode & 0o022 == 0;
    (same && root_owned).then_some(path)
}

/// The process's cgroup membership (`/proc/<pid>/cgroup`, written by the
/// kernel: small, and not the process's to choose).
fn cgroup_of(proc_root: &Path, pid: u32) -> Option<CgroupInfo> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    Some(parse_proc_cgroup(&text))
}

/// The unit, when the process runs in a service of the host's system
/// manager.
fn system_service(cgroup: Option<&CgroupInfo>) -> Option<String> {
    let c = cgroup?;
    (c.manager == Some(UnitManager::System))
        .then(|| c.unit.clone())
        .flatten()
        .filter(|u| u.ends_with(".service"))
}

/// The runtime `pid` is, identified by its executable and its unit (see
/// the module's documentation), with how; `None` for anything else,
/// whatever its comm.
pub fn identify(proc_root: &Path, host_root: &Path, pid: u32) -> Option<(String, Identification)> {
    // The cheap test first: the file name of the executable's path.
    let link = std::fs::read_link(proc_root.join(pid.to_string()).join("exe")).ok()?;
    let file = link.file_name()?.to_str()?;
    let &(_, name) = KNOWN.iter().find(|(bin, _)| *bin == file)?;
    if !link.parent().is_some_and(is_install_dir) {
        return None;
    }
    // podman is a client; only `podman system service` is a daemon.
    if name == "podman"
        && !cmdline(proc_root, pid)
            .windows(2)
            .any(|w| w[0] == "system" && w[1] == "service")
    {
        return None;
    }
    let unit = system_service(cgroup_of(proc_root, pid).as_ref())?;
    let exe = host_executable(proc_root, host_root, pid)?;
    Some((
        name.to_string(),
        Identification {
            by: IdentifiedBy::Executable,
            executable: Some(exe.display().to_string()),
            unit: Some(unit),
        },
    ))
}

/// `--comm NAME`: a process with that comm, in a service of the host's
/// system manager (so neither a user's process nor a container's).
fn identify_by_comm(proc_root: &Path, pid: u32) -> Option<Identification> {
    let unit = system_service(cgroup_of(proc_root, pid).as_ref())?;
    Some(Identification {
        by: IdentifiedBy::Comm,
        executable: None,
        unit: Some(unit),
    })
}

/// Every identified runtime, and every process of the host's system
/// services whose comm is one of `extra`, by pid, with the name it is
/// reported under and how it was identified.
pub fn find_daemons(
    proc_root: &Path,
    host_root: &Path,
    extra: &[String],
) -> Result<Vec<(u32, String, Identification)>, DoctorError> {
    let entries = std::fs::read_dir(proc_root).map_err(|source| DoctorError::ProcRoot {
        path: proc_root.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((name, how)) = identify(proc_root, host_root, pid) {
            out.push((pid, name, how));
            continue;
        }
        if extra.is_empty() {
            continue;
        }
        let Some(comm) = comm_of(proc_root, pid) else {
            continue;
        };
        if extra.iter().any(|e| truncate_comm(e) == comm) {
            if let Some(how) = identify_by_comm(proc_root, pid) {
                out.push((pid, comm, how));
            }
        }
    }
    out.sort_by_key(|(pid, ..)| *pid);
    Ok(out)
}

/// The kernel keeps 15 bytes of a comm.
fn truncate_comm(name: &str) -> &str {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

pub fn comm_of(proc_root: &Path, pid: u32) -> Option<String> {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
        .ok()
        .map(|c| c.trim_end().to_string())
}

fn cmdline(proc_root: &Path, pid: u32) -> Vec<String> {
    std::fs::read(proc_root.join(pid.to_string()).join("cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The process's arguments (for the kubelet's `--config`).
pub fn args_of(proc_root: &Path, pid: u32) -> Vec<String> {
    cmdline(proc_root, pid)
}

/// The process's network namespace is not the node's (a kernel thread's,
/// netns.rs; ours when that cannot be read): loopback there is another
/// loopback. Not compared with ours: a DaemonSet pod has its own.
pub fn own_network_namespace(proc_root: &Path, pid: u32) -> bool {
    let node = super::netns::node_pid(proc_root).to_string();
    let net = |root: &Path, pid: &str| super::netns::ns_id(root, pid, super::netns::NET);
    let host = net(proc_root, &node).or_else(|| net(Path::new("/proc"), "self"));
    match (host, net(proc_root, &pid.to_string())) {
        (Some(host), Some(its)) => host != its,
        _ => false,
    }
}

/// The node's own addresses, loopback and link-local left out: a daemon
/// that sends requests for them to a proxy cannot reach its own node.
pub fn node_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family says its type.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let ip = match family {
            libc::AF_INET => {
                // SAFETY: family AF_INET means a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
            }
            libc::AF_INET6 => {
                // SAFETY: family AF_INET6 means a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::from(sin6.sin6_addr.s6_addr)
            }
            _ => continue,
        };
        let skip = match ip {
            IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
            }
        };
        if !skip && !out.contains(&ip) {
            out.push(ip);
        }
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k3s_and_rke2_comms() {
        assert!(is_k3s_like("k3s-server"));
        assert!(is_k3s_like("rke2"));
        assert!(!is_k3s_like("containerd"));
        assert_eq!(truncate_comm("containerd-shim-runc-v2"), "containerd-shim");
    }

    #[test]
    fn install_dirs() {
        for dir in [
            "/usr/bin",
            "/usr/local/bin",
            "/opt/bin",
            "/var/lib/rancher/k3s/data/0123abcd/bin",
            "/var/lib/rancher/rke2/data/v1.30.1-rke2r1-abc/bin",
        ] {
            assert!(is_install_dir(Path::new(dir)), "{dir}");
        }
        for dir in [
            "/tmp",
            "/home/bob/bin",
            "/usr/bin/x",
            "/var/lib/rancher/k3s/data/bin",
            "/var/lib/rancher/k3s/data/a/b/bin",
            "/proc/self/root/usr/bin",
        ] {
            assert!(!is_install_dir(Path::new(dir)), "{dir}");
        }
    }

    /// This test process: not a runtime whatever its name, and found by
    /// `--comm` only when it runs in a service of the host's system
    /// manager.
    #[test]
    fn comm_alone_identifies_nothing() {
        let proc = Path::new("/proc");
        let me = std::process::id();
        assert!(identify(proc, Path::new("/"), me).is_none());
        let comm = comm_of(proc, me).unwrap();
        let found = find_daemons(proc, Path::new("/"), std::slice::from_ref(&comm)).unwrap();
        let in_service = system_service(cgroup_of(proc, me).as_ref()).is_some();
        assert_eq!(found.iter().any(|(pid, ..)| *pid == me), in_service);
        assert!(!own_network_namespace(proc, me));
    }
}
