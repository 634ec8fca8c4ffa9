//! Measuring from where the daemon dials: the doctor's connects run in the
//! network namespace of the daemon it examines, and the node's addresses
//! and host name come from the node's own namespaces, not from the
//! tracer's (a DaemonSet pod has a network and a UTS namespace of its own:
//! a proxy on the node's loopback, cntlm or px at 127.0.0.1:3128, is not on
//! the pod's loopback).
//!
//! A namespace is entered with setns(2) on a thread made for the purpose,
//! which ends afterwards: network and UTS namespaces belong to a thread
//! (nsproxy), so the rest of the process, and the tracer's own sockets
//! (the metrics port), stay where they were. Threads the work starts (the
//! bounded name lookup in reach.rs) inherit the namespace. setns(2) needs
//! CAP_SYS_ADMIN; without it the connects are made from the tracer's own
//! namespace, and the report says so (`measured_from: tracer`).
//!
//! The node's namespaces are those of a kernel thread: every kernel thread
//! lives in the initial namespaces, and a process cannot make itself one
//! (PF_KTHREAD in /proc/<pid>/stat is set by the kernel only). kthreadd is
//! pid 2 on every Linux; PID 1's namespaces are the fallback (on this
//! machine they cannot be read).

use std::{fs::File, os::unix::fs::MetadataExt, path::Path};

use serde::{Deserialize, Serialize};

/// `PF_KTHREAD` (include/linux/sched.h).
const PF_KTHREAD: u32 = 0x0020_0000;

/// Where a daemon's proxies and probe targets were dialled from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vantage {
    /// The daemon's own network namespace: entered, or the tracer's is the
    /// same one.
    Daemon,
    /// The tracer's network namespace: the daemon's could not be entered
    /// (`measured_from_error` says why). Reports written before this field
    /// existed were all measured so.
    #[default]
    Tracer,
}

/// A namespace kind: its file under /proc/<pid>/ns and setns(2)'s flag.
#[derive(Debug, Clone, Copy)]
pub struct Kind(&'static str, libc::c_int);

pub const NET: Kind = Kind("net", libc::CLONE_NEWNET);
pub const UTS: Kind = Kind("uts", libc::CLONE_NEWUTS);

/// A process that lives in the node's namespaces: kthreadd (pid 2) when
/// it is a kernel thread, else PID 1.
pub fn node_pid(proc_root: &Path) -> u32 {
    let kthread = procfs::process::Process::new_with_root(proc_root.join("2"))
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.flags & PF_KTHREAD != 0);
    if kthread {
        2
    } else {
        1
    }
}

/// The identity (device, inode) of `pid`'s namespace of `kind`.
pub fn ns_id(proc_root: &Path, pid: &str, kind: Kind) -> Option<(u64, u64)> {
    let m = std::fs::metadata(proc_root.join(pid).join("ns").join(kind.0)).ok()?;
    Some((m.dev(), m.ino()))
}

/// The identity of the calling thread's namespace of `kind`.
fn own_ns_id(kind: Kind) -> Option<(u64, u64)> {
    ns_id(Path::new("/proc"), "thread-self", kind)
}

/// Run `work` in `pid`'s namespaces of `kinds`: on this thread when they
/// are already this thread's, else on a thread that enters them first.
/// Err(why) when one could not be entered (`work` is then not run).
pub fn within<T: Send>(
    proc_root: &Path,
    pid: u32,
    kinds: &[Kind],
    work: impl FnOnce() -> T + Send,
) -> Result<T, String> {
    let dir = proc_root.join(pid.to_string()).join("ns");
    let mut to_enter = Vec::new();
    for &kind in kinds {
        let path = dir.join(kind.0);
        let file = File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let theirs = file
            .metadata()
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        if own_ns_id(kind) != Some(theirs) {
            to_enter.push((kind, file));
        }
    }
    if to_enter.is_empty() {
        return Ok(work());
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            for (kind, file) in &to_enter {
                use std::os::fd::AsRawFd;
                // SAFETY: a valid namespace descriptor and its own type;
                // only this thread's namespaces change, and it ends when
                // the work is done.
                if unsafe { libc::setns(file.as_raw_fd(), kind.1) } != 0 {
                    let e = std::io::Error::last_os_error();
                    let hint = if e.raw_os_error() == Some(libc::EPERM) {
                        " (entering a namespace needs CAP_SYS_ADMIN)"
                    } else {
                        ""
                    };
                    return Err(format!(
                        "cannot enter the {} namespace of pid {pid}: {e}{hint}",
                        kind.0
                    ));
                }
            }
            Ok(work())
        })
        .join()
        .map_err(|_| "the measuring thread panicked".to_string())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kthreadd_is_the_node() {
        assert_eq!(node_pid(Path::new("/proc")), 2);
    }

    #[test]
    fn own_namespace_runs_in_place() {
        let here = std::thread::current().id();
        let me = std::process::id();
        let ran_on = within(Path::new("/proc"), me, &[NET, UTS], || {
            std::thread::current().id()
        });
        assert_eq!(ran_on, Ok(here));
    }

    /// A process in a network namespace of its own (`unshare -n`): the
    /// work runs there (only a loopback, so no node address), and this
    /// thread's namespace is untouched.
    #[test]
    fn another_processs_namespace_is_entered_on_a_thread() {
        let mut child = std::process::Command::new("unshare")
            .args(["-n", "sleep", "10"])
            .spawn()
            .expect("unshare");
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while ns_id(Path::new("/proc"), &pid.to_string(), NET) == own_ns_id(NET) {
            assert!(std::time::Instant::now() < deadline, "unshare -n did not");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let ours = crate::doctor::discover::node_addresses();
        let theirs = within(Path::new("/proc"), pid, &[NET], || {
            (
                std::thread::current().id(),
                crate::doctor::discover::node_addresses(),
            )
        });
        let _ = child.kill();
        let _ = child.wait();
        let (thread, addresses) = theirs.expect("entered");
        assert_ne!(thread, std::thread::current().id());
        assert!(addresses.is_empty(), "{addresses:?}");
        assert!(!ours.is_empty(), "this machine has eth0's addresses");
        assert_eq!(crate::doctor::discover::node_addresses(), ours);
    }

    #[test]
    fn a_missing_process_says_why() {
        let err = within(Path::new("/proc"), u32::MAX, &[NET], || ()).unwrap_err();
        assert!(err.contains("cannot open"), "{err}");
    }
}
