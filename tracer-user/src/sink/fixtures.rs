//! The facts the sink's tests write lines for: a refused dial by
//! containerd in a Kubernetes container, with a proxy in its environment.

use std::sync::Arc;

use crate::{
    decode::{comm_of, Attempt, Peer, Transport, Verdict},
    enrich::{
        cgroup::parse_proc_cgroup,
        pod::{ImageRef, PodNames},
        proc::EnvState,
        proc::ProcInfo,
        proxy_env::ProxyEnv,
    },
};

pub(super) fn attempt() -> Attempt {
    Attempt {
        start_ns: 1_000_000_123,
        end_ns: 1_000_270_000,
        pid: 812,
        tid: 815,
        uid: 1000,
        gid: 5,
        cgroup_id: 4242,
        comm: comm_of(b"containerd"),
        transport: Some(Transport::Tcp),
        destination: Peer::Ip {
            ip: "10.0.0.1".parse().expect("ip"),
            port: 7897,
        },
        source: Some(("127.0.0.1".parse().expect("ip"), 40000)),
        verdict: Verdict::Refused,
        errno: Some(libc::ECONNREFUSED),
        is_async: Some(true),
    }
}

pub(super) fn proc_info() -> ProcInfo {
    let env = ProxyEnv::from_environ(b"HTTPS_PROXY=http://10.0.0.1:7897\0");
    ProcInfo {
        start_time: Some(77),
        ppid: Some(1),
        exe: Some("/usr/bin/containerd".into()),
        args: Some(vec!["containerd".into(), "--say \"hi\"\\\n\u{1}".into()]),
        cgroup: Some(parse_proc_cgroup(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12345678_1234_1234_1234_123456789abc.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope\n",
        )),
        env: Some(EnvState::Read(env)),
        ..ProcInfo::default()
    }
}

/// `proc_info` in a pod's container, named from its bundle: the incident's
/// calico-node in kube-system.
pub(super) fn pod_proc_info(image: &str) -> ProcInfo {
    ProcInfo {
        pod: Some(Arc::new(PodNames {
            namespace: "kube-system".into(),
            pod: "calico-node-x7k2p".into(),
            container: Some("calico-node".into()),
            image: ImageRef::parse(image),
        })),
        ..proc_info()
    }
}
