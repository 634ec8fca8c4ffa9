//! Finding the daemons that pull images or talk to the control plane, by
//! their comm in /proc, and the node facts findings compare against.

use std::{net::IpAddr, path::Path};

use super::DoctorError;

/// Comms of the runtime daemons, exactly as the kernel shows them (cut to
/// 15 bytes). `containerd-shim` is not one: shims never pull.
const KNOWN: &[&str] = &[
    "containerd",
    "dockerd",
    "crio",
    "kubelet",
    "buildkitd",
    "cri-dockerd",
];

/// k3s and rke2 set their comm to `k3s-server`, `k3s-agent`, `rke2` ...:
/// they run the kubelet in-process and start an embedded containerd.
pub fn is_k3s_like(comm: &str) -> bool {
    comm.starts_with("k3s") || comm.starts_with("rke2")
}

/// The runtime name a process is recognised as, if any.
pub fn classify(proc_root: &Path, pid: u32, comm: &str) -> Option<String> {
    if KNOWN.contains(&comm) {
        return Some(comm.to_string());
    }
    if is_k3s_like(comm) {
        return Some(
            if comm.starts_with("k3s") {
                "k3s"
            } else {
                "rke2"
            }
            .to_string(),
        );
    }
    // podman is a client; only `podman system service` is a daemon.
    if comm == "podman" {
        let args = cmdline(proc_root, pid);
        if args
            .windows(2)
            .any(|w| w[0] == "system" && w[1] == "service")
        {
            return Some("podman".to_string());
        }
    }
    None
}

/// Every process that is a known runtime or has one of `extra` as its comm,
/// by pid, with the name it is reported under.
pub fn find_daemons(proc_root: &Path, extra: &[String]) -> Result<Vec<(u32, String)>, DoctorError> {
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
        let Some(comm) = comm_of(proc_root, pid) else {
            continue;
        };
        if let Some(name) = classify(proc_root, pid, &comm) {
            out.push((pid, name));
        } else if extra.iter().any(|e| truncate_comm(e) == comm) {
            out.push((pid, comm));
        }
    }
    out.sort();
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
    fn this_process_is_found_by_extra_comm() {
        let me = std::process::id();
        let comm = comm_of(Path::new("/proc"), me).unwrap();
        let found = find_daemons(Path::new("/proc"), std::slice::from_ref(&comm)).unwrap();
        assert!(found.contains(&(me, comm)));
        assert!(!own_network_namespace(Path::new("/proc"), me));
    }
}
