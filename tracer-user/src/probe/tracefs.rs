//! tracefs, for the classic tracepoints of `--mode syscall`.
//!
//! aya attaches a classic tracepoint by reading its event id from
//! `<tracefs>/events/<category>/<name>/id`, and looks for tracefs at
//! `/sys/kernel/tracing` and `/sys/kernel/debug/tracing` only. On a node
//! as it boots, and in most containers (a DaemonSet pod gets a fresh sysfs),
//! neither is mounted. The default mode needs no tracefs at all (raw
//! tracepoints and cgroup hooks); syscall mode does.
//!
//! When it is missing, the tracer mounts it in a mount namespace of its
//! own (`unshare(CLONE_NEWNS)`, then `/` made a slave so nothing propagates
//! back to the host). The mount is taken down on exit, and since it never
//! existed outside the tracer's namespace, even a SIGKILL cannot leave it
//! behind on the node. Mounts the host makes later still propagate in.

use std::{ffi::CString, io, path::PathBuf};

use thiserror::Error;

/// Where aya looks, in its order.
const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
/// Where the tracer mounts it when neither is there.
const MOUNT_POINT: &str = "/sys/kernel/tracing";

#[derive(Debug, Error)]
pub enum TracefsError {
    #[error(
        "--mode syscall attaches the syscalls:sys_enter_connect/sys_exit_connect tracepoints, which need tracefs; it is mounted at neither /sys/kernel/tracing nor /sys/kernel/debug/tracing, and mounting it in a private mount namespace failed ({step}: {source}). Mount it with `mount -t tracefs nodev /sys/kernel/tracing` (in a container: give it CAP_SYS_ADMIN or mount /sys/kernel/tracing from the host), or use --mode socket, which needs no tracefs"
    )]
    Mount {
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// tracefs as found or mounted. Dropping it unmounts what the tracer
/// mounted, and nothing else.
#[derive(Debug)]
pub struct Tracefs {
    pub path: PathBuf,
    /// The tracer mounted it (in its own mount namespace).
    pub ours: bool,
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        if !self.ours {
            return;
        }
        if let Ok(path) = CString::new(MOUNT_POINT) {
            // SAFETY: umount2 on a path we mounted; failure is harmless
            // (the namespace, and the mount with it, ends with the process).
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// A mounted tracefs, as aya judges it: the directory exists and is not
/// empty (the kernel creates /sys/kernel/tracing even when nothing is
/// mounted there).
pub fn find() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| std::fs::read_dir(p).is_ok_and(|mut entries| entries.next().is_some()))
}

/// tracefs, mounted privately if it is not mounted. Must run on the thread
/// that attaches the tracepoints: the namespace belongs to it (and to the
/// threads it starts afterwards).
pub fn ensure() -> Result<Tracefs, TracefsError> {
    if let Some(path) = find() {
        return Ok(Tracefs { path, ours: false });
    }
    // SAFETY: plain syscalls with valid NUL-terminated strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(mount_error("unshare(CLONE_NEWNS)"));
        }
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        ) != 0
        {
            return Err(mount_error("making / a slave mount"));
        }
        let target = c"/sys/kernel/tracing";
        let fstype = c"tracefs";
        if libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ) != 0
        {
            return Err(mount_error("mount -t tracefs /sys/kernel/tracing"));
        }
    }
    let tracefs = Tracefs {
        path: PathBuf::from(MOUNT_POINT),
        ours: true,
    };
    if find().is_none() {
        return Err(TracefsError::Mount {
            step: "checking the new mount",
            source: io::Error::other("tracefs mounted but empty"),
        });
    }
    Ok(tracefs)
}

fn mount_error(step: &'static str) -> TracefsError {
    TracefsError::Mount {
        step,
        source: io::Error::last_os_error(),
    }
}
