//! `--dns`: load and attach the DNS programs (tracer-ebpf/src/probes/dns.rs).
//!
//! The packet programs go first, then the hooks that mark sockets, so a
//! marked socket's first query is already watched. All attach to the cgroup
//! v2 root beside the connect hooks and whatever else is there (Cilium,
//! systemd's IP accounting, the proxy-exchange programs): aya attaches
//! through a bpf_link on Linux 5.7+, which the kernel always treats as
//! BPF_F_ALLOW_MULTI. Asking for `CgroupAttachMode::Single`
//! explicitly makes aya 0.14 pass the flag to `bpf_link_create`, which this
//! kernel refuses with EINVAL (measured on 6.18: cgroup links take no
//! flags), so the mode is the default one, as for the connect hooks; the
//! attachment is multi all the same.

use std::fs::File;

use aya::{
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr},
    Ebpf,
};

use super::{load_error, program_of, ProbeError};

/// The programs `--dns` adds, in attach order.
pub const PROGRAMS: [&str; 6] = [
    "dns_egress",
    "dns_ingress",
    "dns_connect4",
    "dns_connect6",
    "dns_sendmsg4",
    "dns_sendmsg6",
];

pub fn attach(ebpf: &mut Ebpf, cgroup: &File) -> Result<(), ProbeError> {
    for (name, direction) in [
        ("dns_egress", CgroupSkbAttachType::Egress),
        ("dns_ingress", CgroupSkbAttachType::Ingress),
    ] {
        let program: &mut CgroupSkb = program_of(ebpf, name)?;
        program.load().map_err(|source| load_error(name, source))?;
        program
            .attach(cgroup, direction, CgroupAttachMode::Single)
            .map_err(|source| ProbeError::MissingHook {
                hook: name,
                why: "cgroup_skb egress/ingress on the cgroup v2 root, Linux 4.10+",
                source,
            })?;
    }
    for name in [
        "dns_connect4",
        "dns_connect6",
        "dns_sendmsg4",
        "dns_sendmsg6",
    ] {
        let program: &mut CgroupSockAddr = program_of(ebpf, name)?;
        program.load().map_err(|source| load_error(name, source))?;
        program
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(|source| ProbeError::MissingHook {
                hook: name,
                why: "cgroup/connect and cgroup/sendmsg need Linux 4.18+ and cgroup v2",
                source,
            })?;
    }
    Ok(())
}
