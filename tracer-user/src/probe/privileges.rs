//! What loading needs from the process: capabilities, the memlock limit on
//! old kernels, and telling a missing privilege from a rejected program.

use std::{error::Error, io};

/// Capability bit numbers, include/uapi/linux/capability.h.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set, from /proc/self/status (`CapEff`).
pub fn effective_caps() -> Option<u64> {
    procfs::process::Process::myself()
        .and_then(|me| me.status())
        .ok()
        .map(|status| status.capeff)
}

/// Whether this process lacks what loading needs: CAP_SYS_ADMIN covers
/// everything; otherwise CAP_BPF with CAP_PERFMON for the tracing programs.
/// Unknown capabilities count as lacking.
pub fn lacks_privileges() -> bool {
    effective_caps().is_none_or(|bits| !sufficient(bits))
}

fn sufficient(bits: u64) -> bool {
    let has = |bit: u32| bits & (1u64 << bit) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// The capabilities relevant to loading, for an error message.
pub fn describe_caps() -> String {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let Some(bits) = effective_caps() else {
        return format!("uid {uid}, capabilities unknown");
    };
    describe(uid, bits)
}

fn describe(uid: u32, bits: u64) -> String {
    let names = [
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_BPF, "CAP_BPF"),
    ];
    let have: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| bits & (1u64 << bit) != 0)
        .map(|(_, name)| *name)
        .collect();
    if have.is_empty() {
        format!("uid {uid}, none of CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN")
    } else {
        format!("uid {uid}, {}", have.join(", "))
    }
}

/// The first `io::Error` in an error's chain of sources. aya keeps the
/// syscall's error inside several layers (`ProgramError` ->
/// `SyscallError` -> `io::Error`), each exposing the next as `source()`.
pub fn io_error_in<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a io::Error> {
    let mut current: Option<&(dyn Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        current = e.source();
    }
    None
}

/// EPERM or EACCES anywhere in the chain.
pub fn is_denied(err: &(dyn Error + 'static)) -> bool {
    io_error_in(err)
        .and_then(io::Error::raw_os_error)
        .is_some_and(|code| code == libc::EPERM || code == libc::EACCES)
}

/// A denial from a process that lacks the capabilities is a privilege
/// problem. The verifier also answers EACCES when it rejects a program, so
/// a denial to a process that has them is a rejected program (its log is
/// in the error), not missing privileges.
pub fn is_privilege_error(err: &(dyn Error + 'static)) -> bool {
    is_denied(err) && lacks_privileges()
}

/// What raising RLIMIT_MEMLOCK gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memlock {
    Raised,
    /// Refused (no CAP_SYS_RESOURCE), on a kernel that charges BPF memory
    /// to the memory cgroup (5.11+), where the limit does not apply.
    RefusedHarmless,
    /// Refused on a kernel older than 5.11, where maps and programs count
    /// against RLIMIT_MEMLOCK: loading may fail with EPERM.
    RefusedOnOldKernel,
}

/// Lift RLIMIT_MEMLOCK. Before Linux 5.11 BPF maps and programs are charged
/// against it (the default 64 KiB or 8 MiB is far below the tracer's ring
/// buffers); since 5.11 they are charged to the memory cgroup instead
/// (commit "bpf: Eliminate rlimit-based memory accounting"), and a refusal
/// is harmless, as on this project's machines, which lack CAP_SYS_RESOURCE.
pub fn raise_memlock() -> Memlock {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } == 0 {
        return Memlock::Raised;
    }
    match kernel_version() {
        Some(v) if v < (5, 11) => Memlock::RefusedOnOldKernel,
        _ => Memlock::RefusedHarmless,
    }
}

/// The running kernel's version, from /proc/sys/kernel/osrelease.
pub fn kernel_version() -> Option<(u32, u32)> {
    procfs::KernelVersion::current()
        .ok()
        .map(|v| (u32::from(v.major), u32::from(v.minor)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_sets() {
        assert!(sufficient(1 << CAP_SYS_ADMIN));
        assert!(sufficient((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(!sufficient(1 << CAP_BPF));
        assert!(!sufficient(1 << CAP_NET_ADMIN));
        assert_eq!(
            describe(65534, 0),
            "uid 65534, none of CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN"
        );
        assert_eq!(
            describe(0, (1 << CAP_BPF) | (1 << CAP_NET_ADMIN)),
            "uid 0, CAP_NET_ADMIN, CAP_BPF"
        );
    }

    #[test]
    fn our_own_capabilities_are_read_through_procfs() {
        assert!(effective_caps().is_some());
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);
    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner(#[source] io::Error);

    #[test]
    fn denials_are_found_through_the_source_chain() {
        let denied = Outer(Inner(io::Error::from_raw_os_error(libc::EPERM)));
        assert!(is_denied(&denied));
        let denied = Outer(Inner(io::Error::from_raw_os_error(libc::EACCES)));
        assert!(is_denied(&denied));
        let other = Outer(Inner(io::Error::from_raw_os_error(libc::EINVAL)));
        assert!(!is_denied(&other));
        assert_eq!(
            io_error_in(&other).and_then(io::Error::raw_os_error),
            Some(libc::EINVAL)
        );
    }

    #[test]
    fn the_kernel_version_is_read() {
        let (major, _) = kernel_version().expect("osrelease");
        assert!(major >= 5);
    }
}
